/*
 * Hyper-V-style checkpoints: applying a checkpoint
 *
 * Copyright (c) 2026 The Hyper-V checkpoints project
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 *
 * Every check that can fail runs before the VM changes: the state file
 * is validated as a whole, the checkpoint's disks are matched against
 * the VM's.  Then:
 *
 *   manifest: operation "apply" with the children about to be made
 *   the children are made beside the frozen images (the VM still runs)
 *   the vCPUs stop; every disk moves to its child
 *   manifest: "Now" under the checkpoint, the children active, the
 *             replaced images listed as stale            (commit point)
 *   memory and devices loaded (standard) or the VM reset (production)
 *   the vCPUs run again; the replaced images are deleted and the
 *   operation forgotten
 *
 * A failure before the commit point puts the old images back and
 * resumes the VM as it was; a crash before it has the new children
 * removed when the store is opened again, a crash after it the stale
 * images.
 */

#include "qemu/osdep.h"
#include "qemu/coroutine.h"
#include "qemu/error-report.h"
#include "qemu/job.h"
#include "qemu/main-loop.h"
#include "qemu/uuid.h"
#include "qapi/error.h"
#include "qapi/qapi-commands-checkpoint.h"
#include "qapi/qapi-events-checkpoint.h"
#include "block/aio.h"
#include "block/aio-wait.h"
#include "system/block-backend.h"
#include "system/runstate.h"
#include "system/system.h"
#include "migration/cow-snapshot/cow-snapshot.h"
#include "checkpoint.h"

/*
 * What the apply replaces and may delete after its commit: the image
 * each disk used, if a checkpoint made it and none holds it, with the
 * images under it that only it used
 */
static strList *stale_files(GPtrArray *disks)
{
    strList *stale = NULL;
    int i, j;

    for (i = disks->len - 1; i >= 0; i--) {
        CheckpointDisk *d = g_ptr_array_index(disks, i);

        if (!checkpoint_leftover_name_valid(d->old_filename) ||
            checkpoint_store_is_frozen(d->old_filename)) {
            warn_report("Checkpoint apply keeps '%s' (disk '%s'): it is not"
                        " an image a checkpoint made", d->old_filename,
                        d->device);
            continue;
        }
        QAPI_LIST_PREPEND(stale, g_strdup(d->old_filename));
        for (j = 0; j < d->hidden->len; j++) {
            const char *name = g_ptr_array_index(d->hidden, j);

            if (checkpoint_leftover_name_valid(name)) {
                QAPI_LIST_PREPEND(stale, g_strdup(name));
            }
        }
    }
    return stale;
}

/*
 * The commit point: "Now" under @e, the children active, the replaced
 * images recorded as stale.  On failure the manifest is as it was.
 */
static bool commit_manifest(CheckpointManifestEntry *e, GPtrArray *disks,
                            Error **errp)
{
    return checkpoint_store_commit_apply(e->id,
                                         checkpoint_disks_images(disks, true),
                                         stale_files(disks), errp);
}

/* After the command has returned: nothing waits for this */
static void remove_stale_bh(void *opaque)
{
    checkpoint_settle();
}

/*
 * After the commit: drop the old images' nodes and delete their files,
 * then forget the operation (the step checkpoint_defer() runs)
 */
static void remove_stale(void *opaque)
{
    g_autoptr(GPtrArray) disks = opaque;
    CheckpointManifest *m = checkpoint_store_manifest();
    strList *f;

    checkpoint_disks_close_old(disks);
    for (f = m->operation->stale_files; f; f = f->next) {
        if (checkpoint_unlink(f->value) < 0 && errno != ENOENT) {
            warn_report("Cannot delete '%s', an image the VM no longer"
                        " uses: %s", f->value, strerror(errno));
        }
    }
    checkpoint_store_end_operation();
    /* The old chain's frozen images are closed now: guard the others */
    checkpoint_guard_frozen_images();
    /* An image the old one was built on may be mergeable now */
    checkpoint_merge_schedule(NULL, NULL);
}

/* Record the children about to be made, for a crash to remove them */
static bool record_children(CheckpointManifestEntry *e, GPtrArray *disks,
                            Error **errp)
{
    return checkpoint_store_begin_operation(CHECKPOINT_OPERATION_APPLY,
                                            e->id,
                                            checkpoint_disks_children(disks),
                                            errp);
}

static bool apply_allowed(CheckpointManifestEntry *e, Error **errp)
{
    if (!checkpoint_online_or_error("apply a checkpoint", errp)) {
        return false;
    }
    if (e->state != CHECKPOINT_STATE_READY) {
        error_setg(errp, "Checkpoint '%s' is still being created; it can be"
                   " applied once it is ready", e->name);
        return false;
    }
    if (checkpoint_op_applying()) {
        error_setg(errp, "A checkpoint is being applied already");
        return false;
    }
    if (checkpoint_op_saving()) {
        error_setg(errp, "Cannot apply a checkpoint while one is being"
                   " created");
        return false;
    }
    if (!checkpoint_vm_idle("apply a checkpoint", errp)) {
        return false;
    }
    /* Prelaunch: started with -S, to be applied before it runs */
    if (!runstate_is_running() && !runstate_check(RUN_STATE_PAUSED) &&
        !runstate_check(RUN_STATE_PRELAUNCH)) {
        error_setg(errp, "Cannot apply a checkpoint in VM state '%s'",
                   RunState_str(runstate_get()));
        return false;
    }
    return true;
}

/* How far apply_stopped() got */
typedef enum ApplyOutcome {
    APPLY_FAILED,           /* before the commit point: nothing changed */
    APPLY_LOAD_FAILED,      /* committed, but the memory did not load */
    APPLY_DONE,
} ApplyOutcome;

/*
 * With the vCPUs stopped and the children made: move the disks to them,
 * commit, load @e's memory.  The replaced images are left to
 * remove_stale().
 */
static ApplyOutcome apply_stopped(CheckpointManifestEntry *e,
                                  GPtrArray *disks, const char *state,
                                  Error **errp)
{
    if (!checkpoint_disks_replace(disks, errp)) {
        return APPLY_FAILED;
    }
    checkpoint_crash_point("apply-after-switch");
    if (!commit_manifest(e, disks, errp)) {
        checkpoint_disks_switch_back(disks);
        return APPLY_FAILED;
    }
    checkpoint_crash_point("apply-after-commit");
    checkpoint_guard_frozen_images();

    if (state) {
        if (!cow_snapshot_load_mode(state, checkpoint_apply_lazily(),
                                    errp)) {
            error_prepend(errp, "The disks are those of checkpoint '%s', but"
                          " its memory could not be loaded (the VM stays"
                          " stopped; a reset or a new apply starts it"
                          " again): ", e->name);
            return APPLY_LOAD_FAILED;
        }
    } else {
        /* A production checkpoint: the VM boots from its disks */
        qemu_system_reset(SHUTDOWN_CAUSE_SNAPSHOT_LOAD);
    }
    return APPLY_DONE;
}

/*
 * Record the children in the manifest, then make them; the VM may run
 * (they are new files, and the images under them are frozen)
 */
static bool prepare_children(CheckpointManifestEntry *e, GPtrArray *disks,
                             Error **errp)
{
    if (!record_children(e, disks, errp)) {
        return false;
    }
    if (!checkpoint_disks_make_children(disks, true, errp)) {
        checkpoint_store_end_operation();
        return false;
    }
    checkpoint_crash_point("apply-after-children");
    return true;
}

/*
 * The state file of standard checkpoint @e, validated as a whole
 * (NULL for a production checkpoint, and on error)
 */
static bool state_to_load(CheckpointManifestEntry *e, char **state,
                          Error **errp)
{
    *state = NULL;
    if (e->type != CHECKPOINT_TYPE_STANDARD) {
        return true;
    }
    *state = g_build_filename(checkpoint_store_dir(), e->state_file, NULL);
    if (!cow_snapshot_validate(*state, errp)) {
        error_prepend(errp, "Cannot apply checkpoint '%s': ", e->name);
        g_clear_pointer(state, g_free);
        return false;
    }
    return true;
}

/* An apply, from its checks to its end: what its phases share */
typedef struct CheckpointApply {
    char *target;               /* id of the checkpoint applied */
    GPtrArray *disks;
    char *state;                /* its state file (standard) */
    char *first_id;             /* the checkpoint taken first, if any */
    bool was_running;
    bool resume;
} CheckpointApply;

static void checkpoint_apply_free(CheckpointApply *a)
{
    g_free(a->target);
    if (a->disks) {
        g_ptr_array_unref(a->disks);
    }
    g_free(a->state);
    g_free(a->first_id);
    g_free(a);
}
G_DEFINE_AUTOPTR_CLEANUP_FUNC(CheckpointApply, checkpoint_apply_free)

/* The apply ends without a change: the VM goes on as before */
static void apply_abandon(CheckpointApply *a)
{
    checkpoint_op_set_applying(false);
    if (a->was_running && !runstate_is_running()) {
        vm_start();
    }
}

/*
 * The checks, then, with @checkpoint_first, the start of a standard
 * checkpoint of the current state, with the VM stopped so that nothing
 * changes between that state and the apply (its memory is saved in the
 * background: apply_finish() comes once it is).
 */
static CheckpointApply *apply_begin(const char *checkpoint,
                                    bool checkpoint_first, bool has_resume,
                                    bool resume, Error **errp)
{
    g_autoptr(CheckpointApply) a = g_new0(CheckpointApply, 1);
    g_autofree char *child_id = NULL;
    CheckpointManifestEntry *e;
    QemuUUID uuid;

    /*
     * The merge that runs ends first: its end rewrites the manifest,
     * which @e points into
     */
    checkpoint_merge_interrupt();
    checkpoint_settle();
    e = checkpoint_store_find(checkpoint, errp);
    if (!e || !apply_allowed(e, errp) ||
        !state_to_load(e, &a->state, errp)) {
        return NULL;
    }
    a->target = g_strdup(e->id);
    qemu_uuid_generate(&uuid);
    child_id = qemu_uuid_unparse_strdup(&uuid);
    a->disks = checkpoint_disks_plan_apply(e, child_id, errp);
    if (!a->disks) {
        return NULL;
    }
    a->was_running = runstate_is_running();
    a->resume = has_resume ? resume :
                a->was_running && e->type == CHECKPOINT_TYPE_STANDARD;
    checkpoint_op_set_applying(true);
    if (checkpoint_first) {
        if (a->was_running) {
            vm_stop(RUN_STATE_PAUSED);
        }
        a->first_id = checkpoint_create_start(NULL, NULL, NULL, errp);
        if (!a->first_id) {
            error_prepend(errp, "Cannot checkpoint the current state"
                          " first: ");
            apply_abandon(a);
            return NULL;
        }
    }
    return g_steal_pointer(&a);
}

/*
 * The checkpoint taken first has ended (its memory save ran in the
 * background): is it ready?  Then @a's target, else NULL.
 */
static CheckpointManifestEntry *target_after_first(CheckpointApply *a,
                                                   Error **errp)
{
    CheckpointManifestEntry *e = checkpoint_store_find(a->first_id, NULL);

    if (!e || e->state != CHECKPOINT_STATE_READY) {
        error_setg(errp, "Cannot checkpoint the current state first: %s",
                   checkpoint_create_last_error() ?: "its memory save failed");
        return NULL;
    }
    return checkpoint_store_find(a->target, errp);
}

/*
 * Make the children (while the VM runs, unless checkpoint-first stopped
 * it already), stop the vCPUs, switch, commit and load.  Main loop, not
 * in a coroutine; the memory save of checkpoint-first has ended.
 */
static bool apply_finish(CheckpointApply *a, Error **errp)
{
    CheckpointManifestEntry *e;
    ApplyOutcome outcome;

    e = a->first_id ? target_after_first(a, errp)
                    : checkpoint_store_find(a->target, errp);
    if (!e || !prepare_children(e, a->disks, errp)) {
        apply_abandon(a);
        return false;
    }
    if (runstate_is_running()) {
        vm_stop(RUN_STATE_PAUSED);
    }
    outcome = apply_stopped(e, a->disks, a->state, errp);
    if (outcome == APPLY_FAILED) {
        checkpoint_disks_remove_children(a->disks);
        checkpoint_store_end_operation();
        apply_abandon(a);
        return false;
    }
    if (outcome == APPLY_DONE) {
        qapi_event_send_checkpoint_applied(a->target);
        if (a->resume) {
            vm_start();
        }
    }
    /* Once the command has returned (or when the next one starts) */
    checkpoint_op_set_applying(false);
    checkpoint_defer(remove_stale, g_steal_pointer(&a->disks));
    aio_bh_schedule_oneshot(qemu_get_aio_context(), remove_stale_bh, NULL);
    return outcome == APPLY_DONE;
}

/* checkpoint-apply with a job-id: the phases after the checks */
typedef struct CheckpointApplyJob {
    Job common;
    CheckpointApply *apply;
    Coroutine *co;
    bool ok;
    Error *err;
} CheckpointApplyJob;

/* apply_finish() (or the abandon of a cancelled job) in the main loop */
static void apply_job_bh(void *opaque)
{
    CheckpointApplyJob *s = opaque;

    if (job_is_cancelled(&s->common)) {
        apply_abandon(s->apply);
        error_setg(&s->err, "The apply was cancelled");
        s->ok = false;
    } else {
        s->ok = apply_finish(s->apply, &s->err);
    }
    aio_co_wake(s->co);
}

/* checkpoint-first's memory save has ended: the job goes on */
static void apply_job_wake(void *opaque)
{
    job_enter(opaque);
}

static int coroutine_fn apply_job_run(Job *job, Error **errp)
{
    CheckpointApplyJob *s = container_of(job, CheckpointApplyJob, common);

    job_progress_set_remaining(job, 1);
    /* checkpoint-first: its memory save ends in the main loop */
    while (checkpoint_op_saving() && !job_is_cancelled(job)) {
        checkpoint_op_when_saved(apply_job_wake, job);
        job_yield(job);
    }
    checkpoint_op_forget_waiter(job);
    /* As snapshot-load: the switch and the load run outside coroutines */
    s->co = qemu_coroutine_self();
    aio_bh_schedule_oneshot(qemu_get_aio_context(), apply_job_bh, s);
    qemu_coroutine_yield();
    if (!s->ok) {
        error_propagate(errp, s->err);
        s->err = NULL;
        return -EIO;
    }
    job_progress_update(job, 1);
    return 0;
}

static void apply_job_free(Job *job)
{
    CheckpointApplyJob *s = container_of(job, CheckpointApplyJob, common);

    if (s->apply) {
        checkpoint_apply_free(s->apply);
    }
    error_free(s->err);
}

static const JobDriver checkpoint_apply_job_driver = {
    .instance_size = sizeof(CheckpointApplyJob),
    .job_type      = JOB_TYPE_CHECKPOINT_APPLY,
    .run           = apply_job_run,
    .free          = apply_job_free,
};

CheckpointApplyResult *qmp_checkpoint_apply(const char *checkpoint,
                                            bool has_checkpoint_first,
                                            bool checkpoint_first,
                                            bool has_resume, bool resume,
                                            const char *job_id,
                                            Error **errp)
{
    g_autoptr(CheckpointApply) a = NULL;
    CheckpointApplyResult *ret;
    CheckpointApplyJob *s;
    Job *job = NULL;

    if (job_id) {
        job = job_create(job_id, &checkpoint_apply_job_driver, NULL,
                         qemu_get_aio_context(), JOB_DEFAULT, NULL, NULL,
                         errp);
        if (!job) {
            return NULL;
        }
    }
    a = apply_begin(checkpoint, has_checkpoint_first && checkpoint_first,
                    has_resume, resume, errp);
    /* While the apply runs, merges wait for it */
    checkpoint_merge_release();
    if (!a) {
        if (job) {
            job_early_fail(job);
        }
        return NULL;
    }
    ret = g_new0(CheckpointApplyResult, 1);
    ret->created = g_strdup(a->first_id);
    /* A production checkpoint holds no memory: the VM is left off */
    ret->powered_off = !a->state;
    if (job) {
        s = container_of(job, CheckpointApplyJob, common);
        s->apply = g_steal_pointer(&a);
        job_start(job);
        return ret;
    }
    /* Without a job: the save ends in a bottom half of the main context */
    AIO_WAIT_WHILE(NULL, checkpoint_op_saving());
    if (!apply_finish(a, errp)) {
        qapi_free_CheckpointApplyResult(ret);
        return NULL;
    }
    return ret;
}
