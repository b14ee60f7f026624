/*
 * Hyper-V-style checkpoints: production and automatic checkpoints
 *
 * Copyright (c) 2026 The Hyper-V checkpoints project
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 *
 * A production checkpoint holds the disks only, taken while the
 * guest's filesystems are frozen through its agent.  Its job: sync
 * with the agent, freeze, the pause in which the disks switch (as for
 * a standard checkpoint, without memory), thaw, and check the guest
 * says "thawed".  The freeze is not a pause: the vCPUs run while the
 * agent freezes and thaws.
 *
 * Type production falls back to a standard checkpoint, in the same
 * job and with the same id, when the guest cannot freeze (no agent,
 * no answer in time, the freeze fails); production-only fails with
 * that reason and changes nothing.
 */

#include "qemu/osdep.h"
#include "qemu/error-report.h"
#include "qemu/job.h"
#include "qemu/main-loop.h"
#include "qapi/error.h"
#include "qapi/qapi-events-checkpoint.h"
#include "system/runstate.h"
#include "system/system.h"
#include "checkpoint.h"
#include "agent.h"

typedef struct ProductionJob {
    CheckpointCreateJob create;     /* first: a fallback waits with it */
    char *id;
    char *name;
    bool only;                      /* production-only */
    bool busy;                      /* holds the store's create slot */
    Error *err;                     /* of the last main-loop step */
} ProductionJob;

static ProductionJob *job_of(Job *job)
{
    return container_of(job, ProductionJob, create.common);
}

/* -- the main-loop steps of the job -- */

static void release_busy(ProductionJob *s)
{
    if (s->busy) {
        s->busy = false;
        checkpoint_op_save_ended();
    }
}

/* The pause: the disks switch to children of their frozen state */
static void switch_disks_bh(void *opaque)
{
    ProductionJob *s = opaque;

    release_busy(s);
    checkpoint_settle();
    if (checkpoint_create_allowed(&s->err)) {
        checkpoint_create_disks_only(s->id, s->name,
                                     CHECKPOINT_CONSISTENCY_APPLICATION,
                                     &s->err);
    }
}

/* A standard checkpoint instead, in this job, with this id */
static void fall_back_bh(void *opaque)
{
    ProductionJob *s = opaque;
    g_autofree char *reason = g_strdup(error_get_pretty(s->err));

    g_clear_pointer(&s->err, error_free);
    release_busy(s);
    warn_report("Checkpoint %s: a standard checkpoint instead of a"
                " production one: %s", s->id, reason);
    checkpoint_create_standard_in_job(s->id, s->name, reason, &s->create,
                                      &s->err);
}

static void failed_bh(void *opaque)
{
    ProductionJob *s = opaque;

    release_busy(s);
    qapi_event_send_checkpoint_create_failed(s->id,
                                             error_get_pretty(s->err));
}

/* -- the job -- */

/* The job fails with s->err: CHECKPOINT_CREATE_FAILED, and @ret */
static int coroutine_fn job_fails(ProductionJob *s, int ret, Error **errp)
{
    checkpoint_main_call(failed_bh, s);
    error_propagate(errp, s->err);
    s->err = NULL;
    return ret;
}

/* The freeze or the sync failed with s->err: fall back, or fail */
static int coroutine_fn fall_back_or_fail(ProductionJob *s, Error **errp)
{
    if (s->only) {
        error_prepend(&s->err, "No production checkpoint (type"
                      " production-only): ");
        return job_fails(s, -EIO, errp);
    }
    checkpoint_main_call(fall_back_bh, s);
    if (s->err) {
        return job_fails(s, -EIO, errp);
    }
    return checkpoint_create_job_wait(&s->create, errp);
}

/*
 * Thaw, say so when the guest may still be frozen, and end the agent
 * session
 */
static void coroutine_fn thaw_and_end(ProductionJob *s)
{
    Error *local_err = NULL;

    if (!checkpoint_agent_co_thaw(checkpoint_freeze_timeout_ms(),
                                  &local_err)) {
        warn_reportf_err(local_err, "Checkpoint %s: the guest may still be"
                         " frozen; QEMU keeps sending guest-fsfreeze-thaw: ",
                         s->id);
    }
    checkpoint_agent_end();
}

static int coroutine_fn production_run(Job *job, Error **errp)
{
    ProductionJob *s = job_of(job);
    int64_t timeout = checkpoint_freeze_timeout_ms();

    job_progress_set_remaining(job, 1);
    if (!checkpoint_agent_co_begin(timeout, &s->err)) {
        return fall_back_or_fail(s, errp);
    }
    if (!checkpoint_agent_co_freeze(timeout, &s->err)) {
        thaw_and_end(s);
        return fall_back_or_fail(s, errp);
    }
    if (job_is_cancelled(job)) {
        thaw_and_end(s);
        error_setg(&s->err, "The checkpoint was cancelled");
        return job_fails(s, -ECANCELED, errp);
    }
    checkpoint_main_call(switch_disks_bh, s);
    thaw_and_end(s);
    if (s->err) {
        return job_fails(s, -EIO, errp);
    }
    job_progress_update(job, 1);
    return 0;
}

static void production_clean(Job *job)
{
    release_busy(job_of(job));
}

static void production_free(Job *job)
{
    ProductionJob *s = job_of(job);

    g_free(s->create.error);
    g_free(s->id);
    g_free(s->name);
    error_free(s->err);
}

static const JobDriver production_job_driver = {
    .instance_size = sizeof(ProductionJob),
    .job_type      = JOB_TYPE_CHECKPOINT_CREATE,
    .run           = production_run,
    .clean         = production_clean,
    .free          = production_free,
};

/* Why a production checkpoint cannot even ask the agent, or NULL */
static const char *agent_absent(void)
{
    checkpoint_agent_channel_find_port();
    if (checkpoint_agent_channel_connected()) {
        return NULL;
    }
    return checkpoint_agent_channel_absent_reason();
}

char *checkpoint_production_start(const char *name, bool only,
                                  const char *job_id,
                                  char **fallback_reason, Error **errp)
{
    g_autofree char *default_job = NULL;
    const char *absent = agent_absent();
    ProductionJob *s;
    char *id;

    if (absent && only) {
        error_setg(errp, "No production checkpoint (type production-only):"
                   " %s", absent);
        return NULL;
    }
    if (absent) {
        *fallback_reason = g_strdup(absent);
        return checkpoint_create_start(name, job_id, absent, errp);
    }
    checkpoint_merge_interrupt();
    checkpoint_settle();
    if (!checkpoint_create_allowed(errp)) {
        return NULL;
    }
    id = checkpoint_new_id();
    if (!job_id) {
        default_job = g_strdup_printf("checkpoint-%s", id);
        job_id = default_job;
    }
    s = job_create(job_id, &production_job_driver, NULL,
                   qemu_get_aio_context(), JOB_DEFAULT, NULL, NULL, errp);
    if (!s) {
        g_free(id);
        return NULL;
    }
    s->id = g_strdup(id);
    s->name = g_strdup(name);
    s->only = only;
    /* No other create, apply or delete until the disks have switched */
    checkpoint_op_save_started();
    s->busy = true;
    job_start(&s->create.common);
    return id;
}

/* -- automatic checkpoints -- */

static char *auto_name(void)
{
    g_autoptr(GDateTime) now = g_date_time_new_now_local();
    g_autofree char *when = g_date_time_format(now, "%Y-%m-%d - %H:%M:%S");
    const char *vm = qemu_get_vm_name();

    return g_strdup_printf("Automatic Checkpoint - %s - (%s)",
                           vm ? vm : "VM", when);
}

bool checkpoint_auto_at_start(Error **errp)
{
    g_autofree char *id = NULL;
    g_autofree char *name = NULL;

    if (!checkpoint_store_dir() || runstate_check(RUN_STATE_INMIGRATE)) {
        return true;    /* no store yet; or the state comes from elsewhere */
    }
    if (checkpoint_default_type() == CHECKPOINT_DEFAULT_TYPE_DISABLED) {
        return true;
    }
    id = checkpoint_new_id();
    name = auto_name();
    if (!checkpoint_create_disks_only(id, name,
                                      CHECKPOINT_CONSISTENCY_POWERED_OFF,
                                      errp)) {
        error_prepend(errp, "The automatic checkpoint failed: ");
        return false;
    }
    return true;
}
