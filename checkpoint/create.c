/*
 * Hyper-V-style checkpoints: creating a standard checkpoint
 *
 * Copyright (c) 2026 The Hyper-V checkpoints project
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 *
 * Inside one pause of the vCPUs: the memory snapshot begins (device
 * state captured, RAM write-protected) and every writable disk moves to
 * a new differencing child; the manifest records the checkpoint as
 * "creating" before the vCPUs run again.  A job waits for the
 * background RAM save and marks the checkpoint "ready", or drops it.
 */

#include "qemu/osdep.h"
#include "qemu/cutils.h"
#include "qemu/error-report.h"
#include "qemu/job.h"
#include "qemu/main-loop.h"
#include "qemu/uuid.h"
#include "qapi/clone-visitor.h"
#include "qapi/error.h"
#include "qapi/qapi-visit-checkpoint.h"
#include "qapi/qapi-commands-checkpoint.h"
#include "qapi/qapi-events-checkpoint.h"
#include "block/block_int-common.h"
#include "block/block-global-state.h"
#include "system/block-backend.h"
#include "system/runstate.h"
#include "system/system.h"
#include "migration/cow-snapshot/cow-snapshot.h"
#include "checkpoint.h"

/* State shared by the pause, the engine's callback and the job */
typedef struct CheckpointCreate {
    char *id;
    char *state_dir;
    CheckpointCreateJob *job;
    bool recorded;              /* in the manifest, job started */
    bool abandoned;             /* failed inside the pause */
    bool saved;                 /* the engine has called back */
    CowSnapshotStatus status;
    char *save_error;
    CheckpointType type;
    CheckpointConsistency consistency;
    char *fallback_reason;      /* a production checkpoint was asked for */
} CheckpointCreate;

/* Why the last memory save failed (checkpoint-apply's checkpoint-first) */
static char *last_error;

const char *checkpoint_create_last_error(void)
{
    return last_error;
}

int coroutine_fn checkpoint_create_job_wait(CheckpointCreateJob *s,
                                            Error **errp)
{
    Job *job = &s->common;
    bool cancel_sent = false;

    job_progress_set_remaining(job, 1);
    while (!s->finished) {
        if (job_is_cancelled(job) && !cancel_sent) {
            cancel_sent = true;
            cow_snapshot_cancel();
            continue;
        }
        job_yield(job);
    }
    if (s->error) {
        error_setg(errp, "%s", s->error);
        return -EIO;
    }
    job_progress_update(job, 1);
    return 0;
}

static int coroutine_fn checkpoint_create_run(Job *job, Error **errp)
{
    return checkpoint_create_job_wait(
        container_of(job, CheckpointCreateJob, common), errp);
}

static void checkpoint_create_free(Job *job)
{
    CheckpointCreateJob *s = container_of(job, CheckpointCreateJob, common);

    g_free(s->error);
}

static const JobDriver checkpoint_create_job_driver = {
    .instance_size = sizeof(CheckpointCreateJob),
    .job_type      = JOB_TYPE_CHECKPOINT_CREATE,
    .run           = checkpoint_create_run,
    .free          = checkpoint_create_free,
};

static void remove_state_dir(const char *dir)
{
    g_autofree char *state = NULL;
    g_autofree char *config = NULL;

    if (!dir) {
        return;     /* disks only */
    }
    state = g_build_filename(dir, "state", NULL);
    config = g_build_filename(dir, CHECKPOINT_CONFIG_NAME, NULL);
    /* A save that failed late leaves a state file as large as RAM */
    checkpoint_unlink(state);
    unlink(config);
    rmdir(dir);
}

static void checkpoint_create_free_state(CheckpointCreate *c)
{
    g_free(c->id);
    g_free(c->state_dir);
    g_free(c->save_error);
    g_free(c->fallback_reason);
    g_free(c);
}

/*
 * Write back what the frozen images of checkpoint @id still cache, so
 * that the identity recorded next is that of their final content
 */
static void flush_frozen_images(const char *id)
{
    CheckpointManifestEntry *e = checkpoint_store_find(id, NULL);
    CheckpointManifestDiskList *l;

    for (l = e ? e->disks : NULL; l; l = l->next) {
        BlockDriverState *bs = checkpoint_find_image(l->value->filename);

        if (bs) {
            bdrv_flush(bs);
        }
    }
}

/* The save has ended and the checkpoint is recorded: finish it */
static void checkpoint_create_finish(CheckpointCreate *c)
{
    Error *local_err = NULL;
    g_autofree char *why = NULL;

    checkpoint_crash_point("create-saving");
    if (c->status == COW_SNAPSHOT_STATUS_COMPLETED) {
        flush_frozen_images(c->id);
        if (checkpoint_store_set_state(c->id, CHECKPOINT_STATE_READY,
                                       &local_err)) {
            qapi_event_send_checkpoint_created(c->id, c->type, c->consistency,
                                               c->fallback_reason);
        } else {
            why = g_strdup(error_get_pretty(local_err));
            error_free(local_err);
            local_err = NULL;
        }
    } else {
        why = g_strdup_printf("Saving the memory of checkpoint %s %s%s%s",
                              c->id,
                              c->status == COW_SNAPSHOT_STATUS_CANCELLED ?
                              "was cancelled" : "failed",
                              c->save_error ? ": " : "",
                              c->save_error ? c->save_error : "");
    }
    if (why) {
        /*
         * Drop the checkpoint; the disks stay on their new children.
         * The state file goes first: until the drop is saved, the
         * manifest lists it for removal.
         */
        remove_state_dir(c->state_dir);
        if (!checkpoint_store_drop(c->id, &local_err)) {
            error_report_err(local_err);
        }
        qapi_event_send_checkpoint_create_failed(c->id, why);
        g_free(last_error);
        last_error = g_strdup(why);
        c->job->error = g_steal_pointer(&why);
    } else {
        g_clear_pointer(&last_error, g_free);
    }
    c->job->finished = true;
    job_enter(&c->job->common);
    checkpoint_create_free_state(c);
    checkpoint_op_save_ended();
}

/* Failed inside the pause, after the save began: nothing is recorded */
static void checkpoint_create_abandon(CheckpointCreate *c)
{
    remove_state_dir(c->state_dir);
    checkpoint_create_free_state(c);
    checkpoint_op_save_ended();
}

/*
 * The engine's done callback: main loop, BQL held.  It can come while
 * the pause is still going on (the disk switch runs nested event loops
 * and a small VM is saved quickly); then the pause finishes the job.
 */
static void checkpoint_create_done(void *opaque, CowSnapshotStatus status,
                                   const Error *err)
{
    CheckpointCreate *c = opaque;

    c->saved = true;
    c->status = status;
    c->save_error = err ? g_strdup(error_get_pretty(err)) : NULL;
    if (c->abandoned) {
        checkpoint_create_abandon(c);
    } else if (c->recorded) {
        checkpoint_create_finish(c);
    }
}

static char *default_name(void)
{
    g_autoptr(GDateTime) now = g_date_time_new_now_local();
    g_autofree char *when = g_date_time_format(now, "%Y-%m-%d %H:%M:%S");
    const char *vm = qemu_get_vm_name();

    return g_strdup_printf("%s - %s", vm ? vm : "VM", when);
}

bool checkpoint_create_allowed(Error **errp)
{
    if (!checkpoint_online_or_error("take a checkpoint", errp)) {
        return false;
    }
    if (!checkpoint_store_dir()) {
        error_setg(errp, "No checkpoint store is set (-checkpoints dir=DIR"
                   " or checkpoint-set-parameters)");
        return false;
    }
    if (checkpoint_op_saving()) {
        error_setg(errp, "A checkpoint is being created already");
        return false;
    }
    if (!checkpoint_vm_idle("take a checkpoint", errp)) {
        return false;
    }
    if (!runstate_is_running() && !runstate_check(RUN_STATE_PAUSED)) {
        error_setg(errp, "Cannot take a checkpoint in VM state '%s'",
                   RunState_str(runstate_get()));
        return false;
    }
    return true;
}

/* The manifest entry of the new checkpoint @c */
static CheckpointManifestEntry *new_entry(CheckpointCreate *c,
                                          const char *name, GPtrArray *disks)
{
    CheckpointManifestEntry *e = g_new0(CheckpointManifestEntry, 1);

    e->id = g_strdup(c->id);
    e->name = name ? g_strdup(name) : default_name();
    e->type = c->type;
    e->has_consistency = true;
    e->consistency = c->consistency;
    e->fallback_reason = g_strdup(c->fallback_reason);
    e->state = CHECKPOINT_STATE_CREATING;
    e->created = time(NULL);
    if (c->state_dir) {
        e->state_file = g_build_filename(c->id, "state", NULL);
        e->config_file = g_build_filename(c->id, CHECKPOINT_CONFIG_NAME,
                                          NULL);
    }
    e->disks = checkpoint_disks_images(disks, false);
    return e;
}

/*
 * Everything the create makes (the children, the state file and its
 * folder), for the manifest to list until the create ends
 */
static strList *creation_files(GPtrArray *disks, const char *state_dir)
{
    strList *files = checkpoint_disks_children(disks);

    /* The files before their folder: recovery removes in order */
    if (state_dir) {
        QAPI_LIST_PREPEND(files, g_strdup(state_dir));
        QAPI_LIST_PREPEND(files, g_build_filename(state_dir,
                                                  CHECKPOINT_CONFIG_NAME,
                                                  NULL));
        QAPI_LIST_PREPEND(files, g_build_filename(state_dir, "state", NULL));
    }
    return files;
}

/*
 * Record the files the create is about to make, before it makes them:
 * a crash from here on has them removed when the store opens again
 */
static bool begin(const char *id, GPtrArray *disks, const char *state_dir,
                  Error **errp)
{
    return checkpoint_store_begin_create(id,
                                         checkpoint_disks_images(disks, false),
                                         creation_files(disks, state_dir),
                                         errp);
}

/*
 * Remove what a create that failed before its commit point made, then
 * forget it; the active images are @old_active (taken over) again
 */
static void abort_before_record(GPtrArray *disks, const char *state_dir,
                                CheckpointManifestDiskList *old_active)
{
    checkpoint_disks_remove_children(disks);
    remove_state_dir(state_dir);
    checkpoint_store_abort_create(old_active);
}

/*
 * The commit point, before the pause: the checkpoint "creating", "Now"
 * under it, the children active, and the state file as the operation's
 * new file.  A crash from here on leaves a store whose disks are the
 * children (they hold nothing yet: the parent's content shows through)
 * and whose "creating" checkpoint is dropped when it is opened again.
 */
static bool record(CheckpointCreate *c, const char *name, GPtrArray *disks,
                   Error **errp)
{
    strList *files = NULL;

    if (c->state_dir) {
        QAPI_LIST_PREPEND(files, g_strdup(c->state_dir));
        QAPI_LIST_PREPEND(files, g_build_filename(c->state_dir, "state",
                                                  NULL));
    }
    return checkpoint_store_add(new_entry(c, name, disks),
                                checkpoint_disks_images(disks, true), files,
                                errp);
}

/*
 * Undo record() (the disks are on their images of before, @old_active,
 * taken over): the manifest first lists the children for removal
 * again, then they go.  If that manifest cannot be written, the one on
 * disk may still name the children: they stay, listed for removal in
 * the manifest in memory, for the next write and the next open.
 */
static void unrecord(const char *id, GPtrArray *disks,
                     const char *state_dir,
                     CheckpointManifestDiskList *old_active)
{
    Error *local_err = NULL;

    if (!checkpoint_store_unadd(id, old_active,
                                creation_files(disks, state_dir),
                                &local_err)) {
        error_report_err(local_err);
        remove_state_dir(state_dir);
        checkpoint_disks_forget_children(disks);
        return;
    }
    checkpoint_disks_remove_children(disks);
    remove_state_dir(state_dir);
    checkpoint_store_end_operation();
}

/* The job that waits for the memory save, created but not started */
static Job *create_job(const char *id, const char *job_id, Error **errp)
{
    g_autofree char *default_job = NULL;

    if (!job_id) {
        default_job = g_strdup_printf("checkpoint-%s", id);
        job_id = default_job;
    }
    return job_create(job_id, &checkpoint_create_job_driver, NULL,
                      qemu_get_aio_context(), JOB_DEFAULT, NULL, NULL, errp);
}

/* A standard checkpoint @id (a production one if @fallback_reason) */
static CheckpointCreate *checkpoint_create_new(const char *id,
                                              const char *fallback_reason)
{
    CheckpointCreate *c = g_new0(CheckpointCreate, 1);

    c->id = g_strdup(id);
    c->state_dir = g_build_filename(checkpoint_store_dir(), id, NULL);
    c->type = CHECKPOINT_TYPE_STANDARD;
    c->consistency = CHECKPOINT_CONSISTENCY_SAVED_STATE;
    c->fallback_reason = g_strdup(fallback_reason);
    return c;
}

/* The folder of a standard checkpoint, with its configuration copy */
static bool make_state_dir(const char *dir, Error **errp)
{
    g_autofree char *config = g_build_filename(dir, CHECKPOINT_CONFIG_NAME,
                                               NULL);

    if (g_mkdir_with_parents(dir, 0700) < 0) {
        error_setg_errno(errp, errno, "Cannot create '%s'", dir);
        return false;
    }
    return checkpoint_config_copy_store(checkpoint_store_dir(), config,
                                        errp);
}

/*
 * Everything that grows with disks or RAM happens here, while the VM
 * runs: the files are listed in the manifest, then made; the memory
 * save is prepared; then the commit point.  On failure nothing is left
 * and @old_active is taken over.
 */
static bool prepare(CheckpointCreate *c, const char *name, GPtrArray *disks,
                    const char *state, CowSnapshotOptions *opts,
                    CheckpointManifestDiskList *old_active, Error **errp)
{
    if (!begin(c->id, disks, c->state_dir, errp)) {
        qapi_free_CheckpointManifestDiskList(old_active);
        return false;
    }
    if (c->state_dir && !make_state_dir(c->state_dir, errp)) {
        goto fail_begun;
    }
    if (!checkpoint_disks_make_children(disks, false, errp)) {
        error_prepend(errp, "Cannot make the differencing images of the"
                      " checkpoint: ");
        goto fail_begun;
    }
    checkpoint_crash_point("create-after-children");
    if (state && !cow_snapshot_prepare(state, opts, errp)) {
        goto fail_begun;
    }
    if (!record(c, name, disks, errp)) {
        if (state) {
            cow_snapshot_abort_prepared();
        }
        unrecord(c->id, disks, c->state_dir, old_active);
        return false;
    }
    return true;

fail_begun:
    abort_before_record(disks, c->state_dir, old_active);
    return false;
}

/*
 * The disks could not be switched after the memory save began: the
 * save is dropped (@c goes now, or with the save's callback) and so is
 * the record
 */
static void abandon_in_pause(CheckpointCreate *c, GPtrArray *disks,
                             CheckpointManifestDiskList *old_active)
{
    g_autofree char *id = g_strdup(c->id);
    g_autofree char *state_dir = g_strdup(c->state_dir);

    c->abandoned = true;
    c->job = NULL;
    if (c->saved) {
        checkpoint_create_abandon(c);
    } else {
        /* The callback cleans up */
        cow_snapshot_cancel();
    }
    unrecord(id, disks, state_dir, old_active);
}

/*
 * The pause: memory and disks of the same instant.  On failure the
 * record is undone, @c is gone (or goes with the save's callback) and
 * @old_active is taken over.
 */
static bool pause_and_switch(CheckpointCreate *c, GPtrArray *disks, Job *job,
                             const char *state, CowSnapshotOptions *opts,
                             CheckpointManifestDiskList *old_active,
                             Error **errp)
{
    bool was_running = runstate_is_running();
    Error *local_err = NULL;

    /*
     * vm_stop() flushes every disk with the vCPUs stopped: flushing first,
     * while the guest runs, leaves it almost nothing to write (the first
     * create's pause went from about 2.5 ms to 0.1 ms for this step).
     */
    bdrv_flush_all();
    vm_stop(RUN_STATE_PAUSED);
    if (!cow_snapshot_begin(state, opts, errp)) {
        if (was_running) {
            vm_start();
        }
        unrecord(c->id, disks, c->state_dir, old_active);
        checkpoint_create_free_state(c);
        return false;
    }
    checkpoint_op_save_started();
    c->job = container_of(job, CheckpointCreateJob, common);
    checkpoint_crash_point("create-before-switch");
    if (!checkpoint_disks_snapshot(disks, &local_err)) {
        error_propagate_prepend(errp, local_err, "Cannot switch the disks"
                                " to new differencing images: ");
        abandon_in_pause(c, disks, old_active);
        if (was_running) {
            vm_start();
        }
        return false;
    }
    checkpoint_crash_point("create-after-switch");
    checkpoint_guard_frozen_images();
    if (was_running) {
        vm_start();
    }
    return true;
}

/*
 * The pause of a checkpoint of the disks only: they switch, nothing
 * else.  On failure the record is undone and @old_active taken over.
 */
static bool pause_and_switch_disks(CheckpointCreate *c, GPtrArray *disks,
                                   CheckpointManifestDiskList *old_active,
                                   Error **errp)
{
    bool was_running = runstate_is_running();
    Error *local_err = NULL;
    bool ok;

    vm_stop(RUN_STATE_PAUSED);
    checkpoint_crash_point("create-before-switch");
    ok = checkpoint_disks_snapshot(disks, &local_err);
    if (ok) {
        checkpoint_crash_point("create-after-switch");
        checkpoint_guard_frozen_images();
    }
    if (was_running) {
        vm_start();
    }
    if (!ok) {
        error_propagate_prepend(errp, local_err, "Cannot switch the disks"
                                " to new differencing images: ");
        unrecord(c->id, disks, NULL, old_active);
    }
    return ok;
}

/* A checkpoint of the disks only, switched: it is ready */
static bool finish_disks_only(CheckpointCreate *c, Error **errp)
{
    Error *local_err = NULL;

    flush_frozen_images(c->id);
    if (!checkpoint_store_set_state(c->id, CHECKPOINT_STATE_READY, errp)) {
        /* The disks stay on their children; the checkpoint goes */
        if (!checkpoint_store_drop(c->id, &local_err)) {
            error_report_err(local_err);
        }
        return false;
    }
    qapi_event_send_checkpoint_created(c->id, c->type, c->consistency,
                                       c->fallback_reason);
    return true;
}

bool checkpoint_create_disks_only(const char *id, const char *name,
                                  CheckpointConsistency consistency,
                                  Error **errp)
{
    g_autoptr(GPtrArray) disks = checkpoint_disks_plan_create(id, errp);
    CheckpointManifestDiskList *old_active;
    CheckpointCreate *c;
    bool ok;

    if (!disks) {
        return false;
    }
    c = g_new0(CheckpointCreate, 1);
    c->id = g_strdup(id);
    c->type = CHECKPOINT_TYPE_PRODUCTION;
    c->consistency = consistency;
    old_active = QAPI_CLONE(CheckpointManifestDiskList,
                            checkpoint_store_manifest()->active);
    ok = prepare(c, name, disks, NULL, NULL, old_active, errp) &&
         pause_and_switch_disks(c, disks, old_active, errp);
    if (ok) {
        qapi_free_CheckpointManifestDiskList(old_active);
        ok = finish_disks_only(c, errp);
    }
    checkpoint_create_free_state(c);
    return ok;
}

/*
 * Begin standard checkpoint @c for @job: the files, the pause, the
 * switch.  On failure @c is gone (or goes with the save's callback).
 */
static bool start_standard(CheckpointCreate *c, const char *name, Job *job,
                           Error **errp)
{
    CowSnapshotOptions opts = { .done = checkpoint_create_done,
                                .opaque = c };
    g_autoptr(GPtrArray) disks = NULL;
    g_autofree char *state = NULL;
    CheckpointManifestDiskList *old_active;

    disks = checkpoint_disks_plan_create(c->id, errp);
    if (!disks) {
        checkpoint_create_free_state(c);
        return false;
    }
    state = g_build_filename(c->state_dir, "state", NULL);
    old_active = QAPI_CLONE(CheckpointManifestDiskList,
                            checkpoint_store_manifest()->active);
    if (!prepare(c, name, disks, state, &opts, old_active, errp)) {
        checkpoint_create_free_state(c);
        return false;
    }
    if (!pause_and_switch(c, disks, job, state, &opts, old_active, errp)) {
        return false;
    }
    qapi_free_CheckpointManifestDiskList(old_active);
    return true;
}

/* @c is begun and its job runs: the save may have ended already */
static void started(CheckpointCreate *c)
{
    c->recorded = true;
    if (c->saved) {
        /* The save ended inside the pause */
        checkpoint_create_finish(c);
    }
}

char *checkpoint_new_id(void)
{
    QemuUUID uuid;

    qemu_uuid_generate(&uuid);
    return qemu_uuid_unparse_strdup(&uuid);
}

char *checkpoint_create_start(const char *name, const char *job_id,
                              const char *fallback_reason, Error **errp)
{
    g_autofree char *id = NULL;
    CheckpointCreate *c;
    Job *job;

    /* The merge that runs ends first (its end rewrites the manifest) */
    checkpoint_merge_interrupt();
    checkpoint_settle();
    if (!checkpoint_create_allowed(errp)) {
        return NULL;
    }
    id = checkpoint_new_id();
    job = create_job(id, job_id, errp);
    if (!job) {
        return NULL;
    }
    c = checkpoint_create_new(id, fallback_reason);
    if (!start_standard(c, name, job, errp)) {
        job_early_fail(job);
        return NULL;
    }
    job_start(job);
    started(c);
    return g_steal_pointer(&id);
}

bool checkpoint_create_standard_in_job(const char *id, const char *name,
                                       const char *fallback_reason,
                                       CheckpointCreateJob *job,
                                       Error **errp)
{
    CheckpointCreate *c;

    checkpoint_settle();
    if (!checkpoint_create_allowed(errp)) {
        return false;
    }
    c = checkpoint_create_new(id, fallback_reason);
    if (!start_standard(c, name, &job->common, errp)) {
        return false;
    }
    started(c);
    return true;
}

/* The type a checkpoint-create without one takes; refuse @disabled */
static bool create_type(bool has_type, CheckpointDefaultType *type,
                        Error **errp)
{
    if (!has_type) {
        *type = checkpoint_default_type();
    }
    if (*type == CHECKPOINT_DEFAULT_TYPE_DISABLED) {
        error_setg(errp, "Checkpoints are disabled for this VM (type"
                   " 'disabled'; see checkpoint-set-parameters)");
        return false;
    }
    return true;
}

CheckpointCreateResult *qmp_checkpoint_create(const char *name,
                                              bool has_type,
                                              CheckpointDefaultType type,
                                              const char *job_id,
                                              Error **errp)
{
    g_autoptr(CheckpointCreateResult) ret = g_new0(CheckpointCreateResult, 1);

    if (!checkpoint_store_dir()) {
        error_setg(errp, "No checkpoint store is set (-checkpoints dir=DIR"
                   " or checkpoint-set-parameters)");
        return NULL;
    }
    if (!create_type(has_type, &type, errp)) {
        return NULL;
    }
    if (name && !checkpoint_name_valid(name, errp)) {
        return NULL;
    }
    if (checkpoint_op_applying()) {
        error_setg(errp, "A checkpoint is being applied");
        return NULL;
    }
    if (type == CHECKPOINT_DEFAULT_TYPE_STANDARD) {
        ret->id = checkpoint_create_start(name, job_id, NULL, errp);
    } else {
        ret->id = checkpoint_production_start(
            name, type == CHECKPOINT_DEFAULT_TYPE_PRODUCTION_ONLY, job_id,
            &ret->fallback_reason, errp);
    }
    checkpoint_merge_release();
    return ret->id ? g_steal_pointer(&ret) : NULL;
}
