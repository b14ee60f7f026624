/*
 * Hyper-V-style checkpoints: the merges, in a checkpoint-merge job
 *
 * Copyright (c) 2026 The Hyper-V checkpoints project
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 *
 * One job runs the merges one after the other, planning again after
 * each (plan.c): a merge may make another possible.  Each merge is
 * recorded in the manifest before it starts and marked "copied" once
 * its target holds the content, so that a killed QEMU finishes it or
 * runs it again (checkpoint_merge_recover()).  A full filesystem
 * pauses the merge and the job (the VM goes on); job-resume or
 * checkpoint-merge-resume go on.  A create or an apply stops a merge
 * (checkpoint_merge_interrupt()): it is planned again afterwards, from
 * the disks as they are then.
 */

#include "qemu/osdep.h"
#include "qemu/error-report.h"
#include "qemu/main-loop.h"
#include "qemu/option.h"
#include "qapi/clone-visitor.h"
#include "qapi/error.h"
#include "qapi/qapi-commands-checkpoint.h"
#include "qapi/qapi-events-checkpoint.h"
#include "qapi/qapi-visit-checkpoint.h"
#include "block/aio-wait.h"
#include "block/block_int-common.h"
#include "block/block-global-state.h"
#include "block/graph-lock.h"
#include "system/runstate.h"
#include "system/runstate-action.h"
#include "merge.h"

#define DEFAULT_JOB_ID "checkpoint-merge"
#define POLL_NS (100 * SCALE_MS)

typedef struct MergeJob {
    Job common;
    Coroutine *co;
} MergeJob;

static struct {
    MergeJob *job;
    Merge *cur;
    GHashTable *busy;           /* the images of cur, by name */
    GHashTable *failed;         /* top -> why its merge failed */
    bool hold;                  /* a create or an apply runs */
    bool exiting;               /* QEMU shuts down (merges_wait_for_exit) */
    Notifier shutdown;
    unsigned ended;             /* merges ended so far */
} merges;

/*
 * QEMU quits.  Until job_cancel_sync_all() cancels the merge job, the
 * merge leaves its inner block job alone: vm_shutdown() flushes every
 * node in nested event loops, where the merge's steps would run too,
 * and a commit finalized or cancelled there, with its requests to the
 * base still in flight (they hold a reference to its BlockBackend),
 * fails on a permission conflict and aborts QEMU in commit_abort().
 * Once cancelled, in job_cancel_sync_all()'s drained section, the merge
 * cancels its copy and ends as when a create interrupts it (the image
 * made writable for the copy read-only again); the merge stays recorded
 * and the next start resumes it.
 */
static void merge_shutdown_notify(Notifier *n, void *data)
{
    if (shutdown_action == SHUTDOWN_ACTION_POWEROFF) {
        merges.exiting = true;
    }
}

/* QEMU quits and the merge job is not cancelled yet: do nothing now */
static bool merges_wait_for_exit(void)
{
    return merges.exiting && merges.job &&
           !job_is_cancelled(&merges.job->common);
}

static void watch_shutdown(void)
{
    if (!merges.shutdown.notify) {
        merges.shutdown.notify = merge_shutdown_notify;
        qemu_register_shutdown_notifier(&merges.shutdown);
    }
}

static void merge_free(Merge *mg)
{
    qapi_free_CheckpointManifestMerge(mg->rec);
    g_free(mg->target);
    g_free(mg->error);
    g_free(mg->inner_id);
    g_free(mg->made_writable);
    if (mg->leaving) {
        g_ptr_array_unref(mg->leaving);
    }
    g_free(mg);
}

void merge_wake(Merge *mg)
{
    /* Called with the job lock held (the inner job's notifiers) */
    if (merges.job && merges.cur == mg) {
        job_enter_cond_locked(&merges.job->common, NULL);
    }
}

bool checkpoint_merge_uses(const char *filename)
{
    g_autofree char *key = checkpoint_canonical_path(filename);

    return merges.busy && g_hash_table_contains(merges.busy, key);
}

bool checkpoint_merge_running(void)
{
    return merges.cur != NULL;
}

GHashTable *checkpoint_merge_busy(void)
{
    return merges.busy;
}

static GHashTable *failed_table(void)
{
    if (!merges.failed) {
        merges.failed = g_hash_table_new_full(g_str_hash, g_str_equal,
                                              g_free, g_free);
    }
    return merges.failed;
}

/* How the data of merge @p moves */
static MergeMode mode_of(CheckpointMergePlan *p)
{
    if (p->direction == CHECKPOINT_MERGE_DIRECTION_STREAM) {
        return MERGE_STREAM;
    }
    if (!p->online) {
        return MERGE_OFFLINE_COMMIT;
    }
    return checkpoint_store_is_frozen(p->top) ? MERGE_CHAIN_COMMIT :
           MERGE_ACTIVE_COMMIT;
}

static Merge *merge_new(CheckpointDiskPlan *dp, CheckpointMergePlan *p,
                        const char *format)
{
    Merge *mg = g_new0(Merge, 1);
    strList *l;

    mg->rec = g_new0(CheckpointManifestMerge, 1);
    mg->rec->device = g_strdup(dp->device);
    mg->rec->format = g_strdup(format);
    mg->rec->top = g_strdup(p->top);
    mg->rec->images = QAPI_CLONE(strList, p->images);
    mg->rec->direction = p->direction;
    mg->mode = mode_of(p);
    mg->target = g_strdup(p->target);
    mg->bytes_total = p->bytes;
    merges.busy = g_hash_table_new_full(g_str_hash, g_str_equal, g_free,
                                        NULL);
    g_hash_table_add(merges.busy, g_strdup(p->top));
    for (l = p->images; l; l = l->next) {
        g_hash_table_add(merges.busy, g_strdup(l->value));
    }
    return mg;
}

static const char *format_of(CheckpointManifest *m, const char *device)
{
    CheckpointManifestDiskList *d;

    for (d = m->active; d; d = d->next) {
        if (!strcmp(d->value->device, device)) {
            return d->value->format;
        }
    }
    return "";
}

/* Delete the images the plan says nothing is built on */
static void delete_unused(CheckpointDeletePlan *plan)
{
    CheckpointDiskPlanList *d;
    strList *l;

    for (d = plan->disks; d; d = d->next) {
        for (l = d->value->deleted; l; l = l->next) {
            if (checkpoint_unlink(l->value) < 0 && errno != ENOENT) {
                warn_report("Cannot delete '%s', which nothing needs any"
                            " more: %s", l->value, strerror(errno));
            }
        }
    }
}

static bool same_merge(CheckpointManifestMerge *a,
                       CheckpointManifestMerge *b)
{
    strList *x, *y;

    if (strcmp(a->device, b->device) || strcmp(a->top, b->top) ||
        a->direction != b->direction) {
        return false;
    }
    for (x = a->images, y = b->images; x && y; x = x->next, y = y->next) {
        if (strcmp(x->value, y->value)) {
            return false;
        }
    }
    return !x && !y;
}

/*
 * The layers QEMU's own copy of the same merge, interrupted by a stop
 * or a kill, copied already (@recorded: the manifest's record)
 */
static void resume_progress(Merge *mg, CheckpointManifestMerge *recorded)
{
    if (mg->mode == MERGE_OFFLINE_COMMIT && recorded &&
        recorded->has_copied_layers && same_merge(mg->rec, recorded)) {
        mg->rec->has_copied_layers = true;
        mg->rec->copied_layers = recorded->copied_layers;
    }
}

/* The first merge of a new plan, recorded; NULL when none can run */
static Merge *pick(void)
{
    g_autoptr(CheckpointManifest) m = checkpoint_store_manifest_copy();
    g_autoptr(CheckpointChains) chains = NULL;
    g_autoptr(CheckpointDeletePlan) plan = NULL;
    CheckpointDiskPlanList *d;
    Error *local_err = NULL;
    Merge *mg;

    chains = m ? checkpoint_chains_scan(m, NULL, &local_err) : NULL;
    if (!chains) {
        if (local_err) {
            warn_reportf_err(local_err, "Checkpoint merges wait: ");
        }
        return NULL;
    }
    plan = checkpoint_plan(m, chains, NULL, merges.failed);
    delete_unused(plan);
    for (d = plan->disks; d && !d->value->merges; d = d->next) {
        /* the first disk with a merge */
    }
    if (!d) {
        /* A recorded merge that is not to run any more */
        if (m->merge && !checkpoint_store_set_merge(NULL, &local_err)) {
            warn_report_err(local_err);
        }
        return NULL;
    }
    mg = merge_new(d->value, d->value->merges->value,
                   format_of(m, d->value->device));
    resume_progress(mg, m->merge);
    if (!checkpoint_store_set_merge(QAPI_CLONE(CheckpointManifestMerge,
                                               mg->rec), &local_err)) {
        warn_reportf_err(local_err, "Checkpoint merges wait: ");
        g_hash_table_destroy(g_steal_pointer(&merges.busy));
        merge_free(mg);
        return NULL;
    }
    return mg;
}

static void pick_bh(void *opaque)
{
    merges.cur = merges.exiting ? NULL : pick();
    /* The merged images lose their guard: the merge rewrites links */
    checkpoint_guard_frozen_images();
}

static void start_inner_bh(void *opaque)
{
    Merge *mg = opaque;

    if (!merge_start_inner(mg, merges.job->common.id)) {
        g_assert(mg->error);
    }
}

static void step_bh(void *opaque)
{
    bool *done = opaque;

    if (merges_wait_for_exit()) {
        return;
    }
    *done = merge_step_inner(merges.cur);
}

static void cancel_inner_bh(void *opaque)
{
    if (!merges_wait_for_exit()) {
        merge_cancel_inner(merges.cur);
    }
}

/* A full filesystem stopped the copy: the job pauses until resumed */
static void coroutine_fn pause_for_space(Job *job, Merge *mg)
{
    g_autofree char *why = g_strdup_printf("no space left on the"
                                           " filesystem of '%s'",
                                           mg->target);

    mg->paused = true;
    qapi_event_send_checkpoint_merge_paused(mg->rec->device,
                                            CHECKPOINT_MERGE_STATE_PAUSED,
                                            why);
    WITH_JOB_LOCK_GUARD() {
        job_user_pause_locked(job, NULL);
    }
    job_pause_point(job);
    mg->paused = false;
}

static void resume_inner_bh(void *opaque)
{
    merge_resume_inner(merges.cur);
}

/* Wait for the inner job, stepping it on, until the merge ended */
static void coroutine_fn run_online(Job *job, Merge *mg)
{
    int64_t reported = 0;
    bool done = false;

    checkpoint_main_call(start_inner_bh, mg);
    while (mg->inner && !done) {
        merge_inner_progress(mg);
        if (mg->bytes_done > reported) {
            job_progress_update(job, mg->bytes_done - reported);
            reported = mg->bytes_done;
        }
        job_progress_set_remaining(job, mg->bytes_total - mg->bytes_done);
        if ((job_is_cancelled(job) || mg->interrupted) && !mg->cancel_sent) {
            checkpoint_main_call(cancel_inner_bh, NULL);
        }
        checkpoint_main_call(step_bh, &done);
        if (done) {
            break;
        }
        if (merge_inner_out_of_space(mg)) {
            pause_for_space(job, mg);
            checkpoint_main_call(resume_inner_bh, NULL);
            continue;
        }
        job_sleep_ns(job, POLL_NS);
    }
}

static void offline_open_bh(void *opaque)
{
    merge_offline_open(opaque);
}

static void offline_close_bh(void *opaque)
{
    merge_offline_close(opaque);
}

static void reconnect_bh(void *opaque)
{
    Merge *mg = opaque;

    merge_reconnect_bottom_child(mg->rec);
}

static void offline_finish_bh(void *opaque)
{
    Merge *mg = opaque;
    Error *local_err = NULL;
    CheckpointManifestMerge *copied = QAPI_CLONE(CheckpointManifestMerge,
                                                 mg->rec);

    copied->copied = true;
    if (!checkpoint_store_set_merge(copied, &local_err) ||
        !merge_finish_commit(mg->rec, &local_err)) {
        mg->error = g_strdup(error_get_pretty(local_err));
        error_free(local_err);
    }
}

/* QEMU's own copy of images that nothing has open */
/* A layer of QEMU's own copy is copied and flushed: record it */
static void record_layer_bh(void *opaque)
{
    Merge *mg = opaque;
    Error *local_err = NULL;

    if (!checkpoint_store_set_merge(QAPI_CLONE(CheckpointManifestMerge,
                                               mg->rec), &local_err)) {
        /* Only the progress is lost: the layer is copied again */
        warn_reportf_err(local_err, "Merge progress not recorded: ");
    }
}

static void coroutine_fn run_offline(Job *job, Merge *mg)
{
    int layer = mg->rec->has_copied_layers ? mg->rec->copied_layers : 0;
    int ret = 0;

    checkpoint_main_call(offline_open_bh, mg);
    if (mg->error) {
        return;
    }
    job_progress_set_remaining(job, mg->bytes_total);
    while (layer < mg->src->len) {
        ret = merge_offline_copy_layer(mg, job, layer);
        if (ret == -ENOSPC) {
            pause_for_space(job, mg);
            continue;
        }
        if (ret < 0) {
            break;
        }
        layer++;
        if (layer < mg->src->len) {
            mg->rec->has_copied_layers = true;
            mg->rec->copied_layers = layer;
            checkpoint_main_call(record_layer_bh, mg);
            checkpoint_crash_point("merge-offline-layer");
        }
    }
    checkpoint_main_call(offline_close_bh, mg);
    if (ret < 0) {
        mg->error = g_strdup_printf("the copy into '%s' failed: %s",
                                    mg->target, strerror(-ret));
        checkpoint_main_call(reconnect_bh, mg);
        return;
    }
    checkpoint_crash_point("merge-offline-copied");
    checkpoint_main_call(offline_finish_bh, mg);
}

/* The merge has ended: forget it, and tell */
static void end_bh(void *opaque)
{
    Merge *mg = merges.cur;
    Error *local_err = NULL;

    merges.cur = NULL;
    merges.ended++;
    g_hash_table_destroy(g_steal_pointer(&merges.busy));
    /* An interrupted copy of QEMU's own keeps its progress (pick()) */
    if (!(mg->error && mg->interrupted && mg->rec->has_copied_layers) &&
        !checkpoint_store_set_merge(NULL, &local_err)) {
        warn_report_err(local_err);
    }
    if (mg->error && !mg->interrupted && !mg->cancel_sent) {
        g_hash_table_insert(failed_table(), g_strdup(mg->rec->top),
                            g_strdup(mg->error));
        qapi_event_send_checkpoint_merge_paused(mg->rec->device,
                                                CHECKPOINT_MERGE_STATE_FAILED,
                                                mg->error);
    } else if (!mg->error) {
        qapi_event_send_checkpoint_merge_completed(mg->rec->device,
                                                   mg->target);
    }
    merge_free(mg);
    checkpoint_guard_frozen_images();
}

static void finish_job_bh(void *opaque)
{
    merges.job = NULL;
}

static int coroutine_fn merge_job_run(Job *job, Error **errp)
{
    while (!job_is_cancelled(job)) {
        /*
         * Not while a create saves memory or freezes the guest: its
         * "creating" checkpoint's images must stay where they are; nor
         * while an export reads frozen images
         */
        if (merges.hold || checkpoint_op_applying() ||
            checkpoint_op_saving() || checkpoint_exporting()) {
            job_sleep_ns(job, POLL_NS);
            continue;
        }
        checkpoint_main_call(pick_bh, NULL);
        if (!merges.cur) {
            break;
        }
        if (merges.cur->mode == MERGE_OFFLINE_COMMIT) {
            run_offline(job, merges.cur);
        } else {
            run_online(job, merges.cur);
        }
        checkpoint_main_call(end_bh, NULL);
    }
    checkpoint_main_call(finish_job_bh, NULL);
    return 0;
}

static const JobDriver checkpoint_merge_job_driver = {
    .instance_size = sizeof(MergeJob),
    .job_type      = JOB_TYPE_CHECKPOINT_MERGE,
    .run           = merge_job_run,
};

/* Is there a merge to run? */
static bool have_work(void)
{
    g_autoptr(CheckpointManifest) m = checkpoint_store_manifest_copy();
    g_autoptr(CheckpointChains) chains = NULL;
    g_autoptr(CheckpointDeletePlan) plan = NULL;
    CheckpointDiskPlanList *d;

    chains = m ? checkpoint_chains_scan(m, NULL, NULL) : NULL;
    if (!chains) {
        return false;
    }
    plan = checkpoint_plan(m, chains, NULL, merges.failed);
    for (d = plan->disks; d; d = d->next) {
        if (d->value->merges || d->value->deleted) {
            return true;
        }
    }
    return false;
}

static Job *create_job(const char *job_id)
{
    Error *local_err = NULL;
    Job *job;
    int n;

    job = job_create(job_id ?: DEFAULT_JOB_ID, &checkpoint_merge_job_driver,
                     NULL, qemu_get_aio_context(), JOB_DEFAULT, NULL, NULL,
                     job_id ? &local_err : NULL);
    /* The default id may still be taken by the job that just ended */
    for (n = 1; !job && !job_id && n < 100; n++) {
        g_autofree char *id = g_strdup_printf("%s-%d", DEFAULT_JOB_ID, n);

        job = job_create(id, &checkpoint_merge_job_driver, NULL,
                         qemu_get_aio_context(), JOB_DEFAULT, NULL, NULL,
                         NULL);
    }
    if (!job && local_err) {
        warn_reportf_err(local_err, "Checkpoint merges wait: ");
    }
    return job;
}

void checkpoint_merge_schedule(const char *job_id, char **started_id)
{
    Job *job;

    if (merges.job) {
        WITH_JOB_LOCK_GUARD() {
            job_enter_cond_locked(&merges.job->common, NULL);
        }
        if (started_id) {
            *started_id = g_strdup(merges.job->common.id);
        }
        return;
    }
    if (!have_work()) {
        return;
    }
    job = create_job(job_id);
    if (!job) {
        return;
    }
    watch_shutdown();
    merges.job = container_of(job, MergeJob, common);
    if (started_id) {
        *started_id = g_strdup(job->id);
    }
    job_start(job);
}

void checkpoint_merge_interrupt(void)
{
    Merge *mg = merges.cur;

    merges.hold = true;
    if (!mg) {
        return;
    }
    mg->interrupted = true;
    if (mg->inner) {
        merge_cancel_inner(mg);
    }
    WITH_JOB_LOCK_GUARD() {
        if (job_user_paused_locked(&merges.job->common)) {
            job_user_resume_locked(&merges.job->common, NULL);
        }
    }
    AIO_WAIT_WHILE(NULL, merges.cur == mg);
}

void checkpoint_merge_release(void)
{
    merges.hold = false;
    checkpoint_merge_schedule(NULL, NULL);
}

void checkpoint_merge_resume_all(void)
{
    if (merges.failed) {
        g_hash_table_remove_all(merges.failed);
    }
    if (merges.job) {
        WITH_JOB_LOCK_GUARD() {
            if (job_user_paused_locked(&merges.job->common)) {
                job_user_resume_locked(&merges.job->common, NULL);
            }
        }
    }
}

void qmp_checkpoint_merge_resume(Error **errp)
{
    if (!checkpoint_store_manifest()) {
        error_setg(errp, "No checkpoint store is set (-checkpoints dir=DIR"
                   " or checkpoint-set-parameters)");
        return;
    }
    checkpoint_merge_resume_all();
    checkpoint_merge_schedule(NULL, NULL);
}

/* query-checkpoint-merges */

static CheckpointMergeInfo *running_info(Merge *mg)
{
    CheckpointMergeInfo *i = g_new0(CheckpointMergeInfo, 1);

    i->device = g_strdup(mg->rec->device);
    i->images = QAPI_CLONE(strList, mg->rec->images);
    i->top = g_strdup(mg->rec->top);
    i->has_direction = true;
    i->direction = mg->rec->direction;
    i->state = mg->paused ? CHECKPOINT_MERGE_STATE_PAUSED
                          : CHECKPOINT_MERGE_STATE_RUNNING;
    if (mg->paused) {
        i->reason = g_strdup_printf("no space left on the filesystem of"
                                    " '%s'", mg->target);
    }
    i->bytes_done = mg->bytes_done;
    i->bytes_total = mg->bytes_total;
    return i;
}

static CheckpointMergeInfo *planned_info(const char *device,
                                         CheckpointMergePlan *p)
{
    CheckpointMergeInfo *i = g_new0(CheckpointMergeInfo, 1);

    i->device = g_strdup(device);
    i->images = QAPI_CLONE(strList, p->images);
    i->top = g_strdup(p->top);
    i->has_direction = true;
    i->direction = p->direction;
    i->state = CHECKPOINT_MERGE_STATE_PENDING;
    i->reason = g_strdup(merges.cur ? "another merge runs first"
                                    : "about to start");
    i->bytes_total = p->bytes;
    return i;
}

static CheckpointMergeInfo *pending_info(const char *device,
                                         CheckpointPendingImage *p)
{
    CheckpointMergeInfo *i = g_new0(CheckpointMergeInfo, 1);
    bool failed = merges.failed && p->dependents && !p->dependents->next &&
                  g_hash_table_contains(merges.failed, p->dependents->value);

    i->device = g_strdup(device);
    QAPI_LIST_PREPEND(i->images, g_strdup(p->filename));
    if (p->dependents && !p->dependents->next) {
        i->top = g_strdup(p->dependents->value);
    }
    i->state = failed ? CHECKPOINT_MERGE_STATE_FAILED
                      : CHECKPOINT_MERGE_STATE_PENDING;
    i->reason = g_strdup(p->reason);
    return i;
}

CheckpointMergeInfoList *qmp_query_checkpoint_merges(Error **errp)
{
    g_autoptr(CheckpointManifest) m = checkpoint_store_manifest_copy();
    g_autoptr(CheckpointChains) chains = NULL;
    g_autoptr(CheckpointDeletePlan) plan = NULL;
    CheckpointMergeInfoList *out = NULL, **tail = &out;
    CheckpointDiskPlanList *d;
    CheckpointMergePlanList *ml;
    CheckpointPendingImageList *pl;
    Error *local_err = NULL;
    unsigned ended = merges.ended;

    if (!m) {
        return NULL;
    }
    if (merges.cur) {
        QAPI_LIST_APPEND(tail, running_info(merges.cur));
    }
    chains = checkpoint_chains_scan(m, NULL, &local_err);
    if (!chains && (merges.job || merges.ended != ended)) {
        /*
         * A merge removed or relinked an image while the scan looked
         * at it: the running merge is the answer
         */
        error_free(local_err);
        return out;
    }
    if (!chains) {
        error_propagate(errp, local_err);
        qapi_free_CheckpointMergeInfoList(out);
        return NULL;
    }
    plan = checkpoint_plan(m, chains, merges.busy, merges.failed);
    for (d = plan->disks; d; d = d->next) {
        for (ml = d->value->merges; ml; ml = ml->next) {
            QAPI_LIST_APPEND(tail, planned_info(d->value->device,
                                                ml->value));
        }
        for (pl = d->value->pending; pl; pl = pl->next) {
            QAPI_LIST_APPEND(tail, pending_info(d->value->device,
                                                pl->value));
        }
    }
    return out;
}

/* Store open: what a killed QEMU left of a merge */

void checkpoint_merge_recover(const char *dir, CheckpointManifest *m)
{
    CheckpointManifestMerge *rec = m->merge;
    g_autoptr(strList) relinked = NULL;
    Error *local_err = NULL;

    if (!rec) {
        return;
    }
    warn_report("Checkpoint store '%s': finishing the merge of '%s' that"
                " QEMU did not end", dir, rec->top);
    if (rec->copied && rec->direction == CHECKPOINT_MERGE_DIRECTION_COMMIT) {
        strList *l = rec->images;

        while (l->next) {
            l = l->next;
        }
        if (merge_relink_children(m, rec, &relinked, &local_err)) {
            checkpoint_manifest_replace_image(m, rec->top, l->value,
                                              relinked);
        } else {
            /* An image above is open: the merge runs again instead */
            warn_reportf_err(local_err, "The merge runs again: ");
        }
    }
    if (!rec->copied && rec->direction == CHECKPOINT_MERGE_DIRECTION_COMMIT) {
        merge_reconnect_bottom_child(rec);
    }
    merge_remove_merged(m, rec);
    if (!rec->copied && rec->has_copied_layers && rec->copied_layers) {
        /* QEMU's own copy goes on from the next layer (pick()) */
        return;
    }
    m->merge = NULL;
    qapi_free_CheckpointManifestMerge(rec);
}

/* Open @filename read-write alone, and close it: its log is replayed */
static void replay_log(const char *filename, const char *fmt)
{
    BlockDriverState *bs;

    if (!g_file_test(filename, G_FILE_TEST_EXISTS)) {
        return;
    }
    bs = checkpoint_open_alone(filename, fmt, true, NULL);
    if (bs) {
        bdrv_unref(bs);
    }
}

/*
 * The chain of vhdx image @filename, each image's log replayed if a
 * kill left one (a read-only open refuses such an image, and frozen
 * images and backing files are opened read-only): a merge's relink or
 * emptying writes images that no merge record names
 */
static void replay_chain_logs(const char *filename, GHashTable *seen)
{
    g_autofree char *name = g_strdup(filename);

    while (name && g_file_test(name, G_FILE_TEST_EXISTS) &&
           g_hash_table_add(seen, g_strdup(name))) {
        Error *local_err = NULL;
        BlockDriverState *bs = checkpoint_open_alone(name, "vhdx", false,
                                                     &local_err);
        char *next = NULL;

        if (!bs) {
            error_free(local_err);
            replay_log(name, "vhdx");
            bs = checkpoint_open_alone(name, "vhdx", false, NULL);
        }
        if (bs) {
            next = checkpoint_backing_filename(bs, NULL);
            bdrv_unref(bs);
        }
        g_free(name);
        name = next;
    }
}

static void replay_store_logs(CheckpointManifest *m)
{
    g_autoptr(GHashTable) seen = g_hash_table_new_full(g_str_hash,
                                                       g_str_equal,
                                                       g_free, NULL);
    CheckpointManifestEntryList *e;
    CheckpointManifestDiskList *d;

    for (e = m->checkpoints; e; e = e->next) {
        for (d = e->value->disks; d; d = d->next) {
            if (!strcmp(d->value->format, "vhdx")) {
                replay_chain_logs(d->value->filename, seen);
            }
        }
    }
    for (d = m->active; d; d = d->next) {
        if (!strcmp(d->value->format, "vhdx")) {
            replay_chain_logs(d->value->filename, seen);
        }
    }
}

/*
 * A commit copied before a kill: point the top's children at the
 * bottom now, while no disk is open.  Once a child is open in the VM
 * (a frozen image under the active one) it cannot be relinked, and the
 * merge would run its copy again as a chain commit, whose end must
 * rewrite that read-only image's link and fails.  The recovery then
 * finds them linked and ends the merge.
 */
static void relink_before_open(CheckpointManifest *m,
                               CheckpointManifestMerge *rec)
{
    strList *relinked = NULL;
    Error *local_err = NULL;

    if (!merge_relink_children(m, rec, &relinked, &local_err)) {
        warn_reportf_err(local_err, "The merge of '%s' runs again: ",
                         rec->top);
    }
    qapi_free_strList(relinked);
}

void checkpoint_settle_merge_early(void)
{
    QemuOpts *opts = qemu_opts_find(&qemu_checkpoints_opts, NULL);
    const char *dir = opts ? qemu_opt_get(opts, "dir") : NULL;
    g_autoptr(CheckpointManifest) m = NULL;
    CheckpointManifestMerge *rec;
    strList *l;

    if (!dir || !g_file_test(dir, G_FILE_TEST_IS_DIR)) {
        return;
    }
    m = checkpoint_manifest_load(dir, NULL);
    rec = m ? m->merge : NULL;
    if (!rec || strcmp(rec->format, "vhdx")) {
        if (m && (m->merge || m->operation)) {
            replay_store_logs(m);
        }
        return;
    }
    for (l = rec->images; l; l = l->next) {
        replay_log(l->value, rec->format);
    }
    replay_log(rec->top, rec->format);
    if (!rec->copied && rec->direction == CHECKPOINT_MERGE_DIRECTION_COMMIT) {
        merge_reconnect_bottom_child(rec);
    }
    replay_store_logs(m);
    if (rec->copied && rec->direction == CHECKPOINT_MERGE_DIRECTION_COMMIT) {
        relink_before_open(m, rec);
    }
}
