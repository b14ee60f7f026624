/*
 * Hyper-V-style checkpoints: how a merge copies, and how it ends
 *
 * Copyright (c) 2026 The Hyper-V checkpoints project
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 *
 * Images the VM has open are merged by QEMU's own block jobs, run as
 * internal jobs: an active commit (pivot at the end, with the vCPUs
 * stopped until the manifest names the new active image), a stream
 * into the active image, an intermediate commit (its end relinks the
 * image above).  Images of other branches, which nothing has open,
 * are copied here layer by layer, bottom-up, into the bottom image.
 * Then the children of the merged top are pointed at the bottom and
 * the manifest's records follow (merge_finish_commit()).
 */

#include "qemu/osdep.h"
#include "qemu/cutils.h"
#include "qemu/error-report.h"
#include "qemu/units.h"
#include "qapi/error.h"
#include "qapi/clone-visitor.h"
#include "qapi/qapi-commands-block-core.h"
#include "qapi/qapi-visit-checkpoint.h"
#include "block/block_int-global-state.h"
#include "block/block_int-io.h"
#include "block/blockjob.h"
#include "block/blockjob_int.h"
#include "system/block-backend.h"
#include "system/runstate.h"
#include "merge.h"

/*
 * Not JOB_INTERNAL: QEMU completes, finalizes and dismisses only jobs
 * with an id (and query-jobs shows the copy under that id)
 */
#define INNER_FLAGS (JOB_MANUAL_FINALIZE | JOB_MANUAL_DISMISS)

/*
 * What a merge copies at a time, as commit and stream do (512 KiB): the
 * mirror behind an active commit defaults to 1 MiB writes, 16 in flight.
 * A 1 MiB buffered write makes Linux allocate 1 MiB page-cache folios,
 * which on a guest whose host takes back free memory (virtio-balloon
 * free page reporting) come from reported blocks the host has to fault
 * in again: the copy of a 1 GiB delta took 2.3 s with 1 MiB writes and
 * 1.0 s with 512 KiB ones (scripts/bench-checkpoint --impls merge).
 */
#define COPY_CHUNK (512 * KiB)

static const char *bottom_of(CheckpointManifestMerge *rec)
{
    strList *l = rec->images;

    while (l->next) {
        l = l->next;
    }
    return l->value;
}

/* The node of the disk @device's guest device, or NULL */
static BlockDriverState *disk_top(const char *device)
{
    BlockBackend *blk = NULL;

    while ((blk = checkpoint_next_disk(blk))) {
        g_autofree char *name = checkpoint_disk_name(blk);

        if (!strcmp(name, device)) {
            return blk_bs(blk);
        }
    }
    return NULL;
}

static void inner_ready(Notifier *n, void *data)
{
    merge_wake(container_of(n, Merge, on_ready));
}

static void inner_pending(Notifier *n, void *data)
{
    merge_wake(container_of(n, Merge, on_pending));
}

static void inner_done(Notifier *n, void *data)
{
    merge_wake(container_of(n, Merge, on_done));
}

static void inner_cancelled(Notifier *n, void *data)
{
    merge_wake(container_of(n, Merge, on_cancelled));
}

/*
 * The inner job, looked up by its id (called with the job lock held):
 * NULL once something else dismissed it (job-dismiss, or QEMU's exit
 * cancelling every job).  No reference is held: a job in QEMU's list
 * only because of one would be cancelled again and again at the exit.
 */
static Job *inner_locked(Merge *mg)
{
    Job *job = mg->inner ? job_get_locked(mg->inner_id) : NULL;

    return job == mg->inner ? job : NULL;
}

/* The block job just created, with our notifiers */
static void adopt_inner(Merge *mg)
{
    JOB_LOCK_GUARD();
    mg->inner = job_get_locked(mg->inner_id);
    assert(mg->inner);
    mg->on_ready.notify = inner_ready;
    mg->on_pending.notify = inner_pending;
    mg->on_done.notify = inner_done;
    mg->on_cancelled.notify = inner_cancelled;
    notifier_list_add(&mg->inner->on_ready, &mg->on_ready);
    notifier_list_add(&mg->inner->on_pending, &mg->on_pending);
    notifier_list_add(&mg->inner->on_finalize_completed, &mg->on_done);
    notifier_list_add(&mg->inner->on_finalize_cancelled, &mg->on_cancelled);
}

/*
 * Bytes per second of the copy: unlimited, unless the tests slow it
 * down (QEMU_CHECKPOINT_MERGE_SPEED) to act while it runs
 */
static int64_t copy_speed(void)
{
    const char *s = getenv("QEMU_CHECKPOINT_MERGE_SPEED");
    uint64_t speed;

    if (!s || qemu_strtou64(s, NULL, 10, &speed) < 0 || speed > INT64_MAX) {
        return 0;
    }
    return speed;
}

/* Remember the names of @bs and of its file node */
static void add_leaving(Merge *mg, BlockDriverState *bs)
{
    if (!bs) {
        return;
    }
    g_ptr_array_add(mg->leaving, g_strdup(bdrv_get_node_name(bs)));
    if (bs->file) {
        g_ptr_array_add(mg->leaving,
                        g_strdup(bdrv_get_node_name(bs->file->bs)));
    }
}

/*
 * The nodes of the images the job takes out of the VM's graph: the top
 * of an active commit, the top and the run but its bottom of a commit,
 * the run of a stream
 */
static void note_leaving(Merge *mg)
{
    strList *l;

    mg->leaving = g_ptr_array_new_with_free_func(g_free);
    if (mg->mode != MERGE_STREAM) {
        add_leaving(mg, checkpoint_find_vm_image(mg->rec->top));
    }
    for (l = mg->rec->images; l; l = l->next) {
        if (l->next || mg->mode == MERGE_STREAM) {
            add_leaving(mg, checkpoint_find_vm_image(l->value));
        }
    }
}

/*
 * Nodes added with -blockdev stay open, detached, after the job took
 * them out of the graph (their backing link would block the next
 * create): delete them, as blockdev-del would
 */
static void drop_leaving(Merge *mg)
{
    int i;

    for (i = 0; mg->leaving && i < mg->leaving->len; i++) {
        const char *name = g_ptr_array_index(mg->leaving, i);

        if (name[0] && bdrv_find_node(name)) {
            qmp_blockdev_del(name, NULL);
        }
    }
}

/* The image of @rec built on its bottom */
static const char *bottom_child_of(CheckpointManifestMerge *rec)
{
    strList *l;

    for (l = rec->images; l->next; l = l->next) {
        if (!l->next->next) {
            return l->value;
        }
    }
    return rec->top;
}

/*
 * MS-VHDX footnote 12: an image built on the bottom must learn the
 * bottom's next DataWriteGuid before the copy changes it, so that a
 * stop at any moment leaves it linked.  The vhdx driver tells the
 * writable images built on a node it writes; make that one writable
 * (frozen images are read-only) for the time of the job.
 */
static bool make_bottom_child_writable(Merge *mg, Error **errp)
{
    BlockDriverState *bs = checkpoint_find_vm_image(bottom_child_of(mg->rec));

    if (!bs || !bdrv_is_read_only(bs) || strcmp(mg->rec->format, "vhdx")) {
        return true;
    }
    if (bdrv_reopen_set_read_only(bs, false, errp) < 0) {
        return false;
    }
    mg->made_writable = g_strdup(bdrv_get_node_name(bs));
    return true;
}

/* After the job: read-only again, if the job left the node in place */
static void restore_read_only(Merge *mg)
{
    BlockDriverState *bs = mg->made_writable ?
                           bdrv_find_node(mg->made_writable) : NULL;
    Error *local_err = NULL;

    if (bs && bdrv_reopen_set_read_only(bs, true, &local_err) < 0) {
        warn_report_err(local_err);
    }
    g_clear_pointer(&mg->made_writable, g_free);
}

void merge_reconnect_bottom_child(CheckpointManifestMerge *rec)
{
    const char *child = bottom_child_of(rec);
    const char *bottom = bottom_of(rec);
    BlockDriverState *bs;
    int ret;

    if (strcmp(rec->format, "vhdx") || checkpoint_find_vm_image(child) ||
        !g_file_test(child, G_FILE_TEST_EXISTS)) {
        return;
    }
    bs = checkpoint_open_alone(child, rec->format, true, NULL);
    if (!bs) {
        return;
    }
    ret = bdrv_change_backing_file(bs, bottom, rec->format, false);
    bdrv_unref(bs);
    if (ret < 0) {
        warn_report("Cannot link '%s' to '%s' again: %s", child, bottom,
                    strerror(-ret));
    }
}

static bool start_job(Merge *mg, BlockDriverState *top, Error **errp)
{
    CheckpointManifestMerge *rec = mg->rec;
    int64_t speed = copy_speed();
    BlockDriverState *bottom = checkpoint_find_vm_image(bottom_of(rec));
    Error *local_err = NULL;

    if (!bottom) {
        error_setg(errp, "'%s' is not open", bottom_of(rec));
        return false;
    }
    if (mg->mode != MERGE_STREAM && !make_bottom_child_writable(mg, errp)) {
        return false;
    }
    switch (mg->mode) {
    case MERGE_ACTIVE_COMMIT:
        commit_active_start(mg->inner_id, top, bottom, INNER_FLAGS, speed,
                            COPY_CHUNK, BLOCKDEV_ON_ERROR_ENOSPC, NULL,
                            NULL, NULL, false, &local_err);
        break;
    case MERGE_STREAM:
        stream_start(mg->inner_id, top, bdrv_cow_bs(bottom), NULL, false, NULL,
                     INNER_FLAGS, speed, BLOCKDEV_ON_ERROR_ENOSPC, NULL,
                     &local_err);
        break;
    case MERGE_CHAIN_COMMIT:
        commit_start(mg->inner_id, disk_top(rec->device), bottom, top,
                     INNER_FLAGS, speed, BLOCKDEV_ON_ERROR_ENOSPC,
                     bottom_of(rec),
                     false, NULL, &local_err);
        break;
    default:
        g_assert_not_reached();
    }
    if (local_err) {
        restore_read_only(mg);
        error_propagate(errp, local_err);
        return false;
    }
    return true;
}

bool merge_start_inner(Merge *mg, const char *merge_job_id)
{
    BlockDriverState *top = checkpoint_find_vm_image(mg->rec->top);
    Error *local_err = NULL;

    if (!top) {
        mg->error = g_strdup_printf("'%s' is not open", mg->rec->top);
        return false;
    }
    g_free(mg->inner_id);
    mg->inner_id = g_strdup_printf("%s-copy", merge_job_id);
    note_leaving(mg);
    if (!start_job(mg, top, &local_err)) {
        mg->error = g_strdup(error_get_pretty(local_err));
        error_free(local_err);
        return false;
    }
    adopt_inner(mg);
    return true;
}

void merge_inner_progress(Merge *mg)
{
    uint64_t done, total;
    Job *job;

    JOB_LOCK_GUARD();
    job = inner_locked(mg);
    if (job) {
        progress_get_snapshot(&job->progress, &done, &total);
        mg->bytes_done = done;
        mg->bytes_total = MAX(total, mg->bytes_total);
    }
}

bool merge_inner_out_of_space(Merge *mg)
{
    Job *job;

    JOB_LOCK_GUARD();
    job = inner_locked(mg);
    return job && job->user_paused &&
           container_of(job, BlockJob, job)->iostatus ==
           BLOCK_DEVICE_IO_STATUS_NOSPACE;
}

void merge_resume_inner(Merge *mg)
{
    Job *job;

    JOB_LOCK_GUARD();
    job = inner_locked(mg);
    if (job && job->user_paused) {
        block_job_iostatus_reset_locked(container_of(job, BlockJob, job));
        job_user_resume_locked(job, NULL);
    }
}

void merge_cancel_inner(Merge *mg)
{
    Job *job;

    JOB_LOCK_GUARD();
    job = inner_locked(mg);
    if (job && !job_is_completed_locked(job)) {
        mg->cancel_sent = true;
        job_cancel_locked(job, true);
    }
}

/*
 * READY (active commit): stop the vCPUs so that the guest writes
 * nothing to the image it leaves before the manifest names the one it
 * moves to, and let the job converge and pivot
 */
static void step_ready(Merge *mg)
{
    if (runstate_is_running()) {
        vm_stop(RUN_STATE_PAUSED);
        mg->vm_stopped = true;
    }
    WITH_JOB_LOCK_GUARD() {
        Job *job = inner_locked(mg);

        if (job) {
            job_complete_locked(job, NULL);
        }
    }
    mg->completing = true;
}

static void resume_vm(Merge *mg)
{
    if (mg->vm_stopped) {
        mg->vm_stopped = false;
        vm_start();
    }
}

/*
 * Record that the copy is complete (the bottom synced first); after an
 * active commit's pivot, in the same manifest write, that the bottom is
 * the disk's active image
 */
static bool record_copied(Merge *mg, Error **errp)
{
    CheckpointManifestMerge *rec = mg->rec;
    BlockDriverState *bottom = checkpoint_find_vm_image(bottom_of(rec));
    CheckpointManifestMerge *copy;
    int ret;

    if (bottom && mg->mode != MERGE_STREAM) {
        ret = bdrv_flush(bottom);
        if (ret < 0) {
            error_setg_errno(errp, -ret, "Cannot flush '%s'",
                             bottom_of(rec));
            return false;
        }
    }
    copy = QAPI_CLONE(CheckpointManifestMerge, rec);
    copy->copied = true;
    if (mg->mode == MERGE_ACTIVE_COMMIT) {
        return checkpoint_store_pivot(rec->top, bottom_of(rec), copy, errp);
    }
    return checkpoint_store_set_merge(copy, errp);
}

/* PENDING: the copy is done; the job's end changes the graph */
static void step_pending(Merge *mg)
{
    Error *local_err = NULL;

    if (mg->mode == MERGE_CHAIN_COMMIT && !record_copied(mg, &local_err)) {
        mg->error = g_strdup(error_get_pretty(local_err));
        error_free(local_err);
        merge_cancel_inner(mg);
        return;
    }
    checkpoint_crash_point("merge-before-finalize");
    WITH_JOB_LOCK_GUARD() {
        Job *job = inner_locked(mg);

        if (job) {
            job_finalize_locked(job, NULL);
        }
    }
    mg->finalized = true;
}

/* The job succeeded: what its mode leaves to do */
static bool after_job(Merge *mg, Error **errp)
{
    CheckpointManifestMerge *rec = mg->rec;

    switch (mg->mode) {
    case MERGE_ACTIVE_COMMIT:
        /* Pivoted: the disk writes to the bottom, which "Now" names */
        if (!record_copied(mg, errp)) {
            return false;
        }
        checkpoint_crash_point("merge-after-pivot");
        resume_vm(mg);
        return merge_finish_commit(rec, errp);
    case MERGE_STREAM:
        /* The top reads nothing from the run any more */
        if (!record_copied(mg, errp)) {
            return false;
        }
        checkpoint_crash_point("merge-before-remove");
        merge_remove_merged(checkpoint_store_manifest(), rec);
        return true;
    case MERGE_CHAIN_COMMIT:
        return merge_finish_commit(rec, errp);
    default:
        g_assert_not_reached();
    }
}

/* CONCLUDED: the job's result, and the end of the merge */
static void step_concluded(Merge *mg)
{
    Error *local_err = NULL;
    int ret = -ECANCELED;

    WITH_JOB_LOCK_GUARD() {
        Job *job = inner_locked(mg);

        /* Dismissed by another: the job and our notifiers are gone */
        if (job) {
            ret = job->ret;
            if (ret < 0 && !mg->error && job->err) {
                mg->error = g_strdup(error_get_pretty(job->err));
            }
            notifier_remove(&mg->on_ready);
            notifier_remove(&mg->on_pending);
            notifier_remove(&mg->on_done);
            notifier_remove(&mg->on_cancelled);
            job_dismiss_locked(&job, NULL);
        }
        mg->inner = NULL;
    }
    restore_read_only(mg);
    if (ret == 0) {
        drop_leaving(mg);
    }
    if (ret == 0 && !after_job(mg, &local_err)) {
        ret = -EIO;
        mg->error = g_strdup(error_get_pretty(local_err));
        error_free(local_err);
    }
    if (ret < 0 && !mg->error) {
        mg->error = g_strdup_printf("the copy stopped: %s", strerror(-ret));
    }
    resume_vm(mg);
}

/* The inner job's status; CONCLUDED once something else dismissed it */
static JobStatus inner_status(Merge *mg)
{
    Job *job;

    JOB_LOCK_GUARD();
    job = inner_locked(mg);
    return job ? job->status : JOB_STATUS_CONCLUDED;
}

bool merge_step_inner(Merge *mg)
{
    JobStatus status = inner_status(mg);

    if (status == JOB_STATUS_READY && !mg->completing) {
        step_ready(mg);
    } else if (status == JOB_STATUS_PENDING && !mg->finalized) {
        step_pending(mg);
    }
    status = inner_status(mg);
    if (status == JOB_STATUS_CONCLUDED) {
        step_concluded(mg);
        return true;
    }
    return false;
}

/* The offline copy */

static BlockBackend *open_backend(const char *filename, const char *fmt,
                                  bool writable, Error **errp)
{
    uint64_t perm = BLK_PERM_CONSISTENT_READ |
                    (writable ? BLK_PERM_WRITE | BLK_PERM_RESIZE : 0);
    /* The bottom with its chain: qcow2 copies partial clusters from it */
    BlockDriverState *bs = writable ?
        checkpoint_open_chain(filename, fmt, true, errp) :
        checkpoint_open_alone(filename, fmt, false, errp);
    BlockBackend *blk;

    if (!bs) {
        return NULL;
    }
    blk = blk_new(qemu_get_aio_context(), perm, BLK_PERM_ALL);
    if (blk_insert_bs(blk, bs, errp) < 0) {
        blk_unref(blk);
        blk = NULL;
    }
    bdrv_unref(bs);
    return blk;
}

bool merge_offline_open(Merge *mg)
{
    CheckpointManifestMerge *rec = mg->rec;
    Error *local_err = NULL;
    strList *l;

    mg->src = g_ptr_array_new_with_free_func((GDestroyNotify)blk_unref);
    mg->dst = open_backend(bottom_of(rec), rec->format, true, &local_err);
    /* Bottom-up: the top's data is written last, over what is below */
    for (l = rec->images; mg->dst && l->next; l = l->next) {
        BlockBackend *b = open_backend(l->value, rec->format, false,
                                       &local_err);
        if (!b) {
            break;
        }
        g_ptr_array_insert(mg->src, 0, b);
    }
    if (!local_err) {
        BlockBackend *b = open_backend(rec->top, rec->format, false,
                                       &local_err);
        if (b) {
            g_ptr_array_add(mg->src, b);
        }
    }
    if (local_err) {
        mg->error = g_strdup(error_get_pretty(local_err));
        error_free(local_err);
        merge_offline_close(mg);
        return false;
    }
    return true;
}

void merge_offline_close(Merge *mg)
{
    if (mg->src) {
        g_ptr_array_unref(mg->src);
        mg->src = NULL;
    }
    if (mg->dst) {
        blk_unref(mg->dst);
        mg->dst = NULL;
    }
}

/* Copy [@off, @off + @bytes) of @src, data or zeros, into the bottom */
static int coroutine_fn copy_range(Merge *mg, BlockBackend *src, int ret,
                                   int64_t off, int64_t bytes, void *buf)
{
    if (ret & BDRV_BLOCK_ZERO) {
        /* Zeros hide what the bottom holds: write them, no unmap */
        return blk_co_pwrite_zeroes(mg->dst, off, bytes, 0);
    }
    ret = blk_co_pread(src, off, bytes, buf, 0);
    if (ret < 0) {
        return ret;
    }
    return blk_co_pwrite(mg->dst, off, bytes, buf, 0);
}

/*
 * Copy what layer @layer holds itself into the bottom; a full
 * filesystem returns -ENOSPC with the layer's copy to be run again
 */
int coroutine_fn merge_offline_copy_layer(Merge *mg, Job *job, int layer)
{
    BlockBackend *src = g_ptr_array_index(mg->src, layer);
    int64_t size = blk_co_getlength(src), off, pnum;
    g_autofree void *buf = blk_blockalign(src, COPY_CHUNK);
    int ret = size < 0 ? size : 0;

    for (off = 0; ret >= 0 && off < size; off += pnum) {
        if (job_is_cancelled(job) || mg->interrupted) {
            return -ECANCELED;
        }
        ret = blk_co_block_status_above(src, NULL, off,
                                        MIN(size - off, COPY_CHUNK), &pnum,
                                        NULL, NULL);
        if (ret >= 0 && (ret & BDRV_BLOCK_ALLOCATED)) {
            ret = copy_range(mg, src, ret, off, pnum, buf);
            mg->bytes_done += pnum;
            job_progress_update(job, pnum);
        }
    }
    if (ret >= 0) {
        ret = blk_co_flush(mg->dst);
    }
    return ret < 0 ? ret : 0;
}

/* The end of a commit */

/*
 * Is @child, open in the VM, built on @parent already?  (The start
 * relinks the children of a copied commit before the disks open:
 * checkpoint_settle_merge_early())
 */
static bool linked_already(CheckpointImage *child, const char *parent)
{
    BlockDriverState *bs = checkpoint_find_vm_image(child->filename);
    g_autofree char *backing = bs ? checkpoint_backing_filename(bs, NULL)
                                  : NULL;

    return backing && checkpoint_same_file(backing, parent);
}

/* Point @child (not open, or open and linked already) at @parent */
static bool relink_child(CheckpointImage *child, const char *parent,
                         Error **errp)
{
    BlockDriverState *bs;
    int ret;

    if (child->open_in_vm) {
        if (linked_already(child, parent)) {
            return true;
        }
        error_setg(errp, "'%s' is open: it cannot be pointed at '%s'",
                   child->filename, parent);
        return false;
    }
    bs = checkpoint_open_alone(child->filename, child->format, true, errp);
    if (!bs) {
        return false;
    }
    ret = bdrv_change_backing_file(bs, parent, child->format, false);
    bdrv_unref(bs);
    if (ret < 0) {
        error_setg_errno(errp, -ret, "Cannot make '%s' the parent of '%s'",
                         parent, child->filename);
        return false;
    }
    return true;
}

/* The images built on @img, by name */
static strList *dependents_of(CheckpointImage *img)
{
    strList *out = NULL;
    int i;

    for (i = 0; img && i < img->dependents->len; i++) {
        CheckpointImage *d = g_ptr_array_index(img->dependents, i);

        QAPI_LIST_PREPEND(out, g_strdup(d->filename));
    }
    return out;
}

bool merge_relink_children(CheckpointManifest *m,
                            CheckpointManifestMerge *rec, strList **relinked,
                            Error **errp)
{
    g_autoptr(CheckpointChains) chains = checkpoint_chains_scan(m, NULL,
                                                                errp);
    CheckpointImage *top, *bottom;
    int i;

    if (!chains) {
        return false;
    }
    top = checkpoint_chains_find(chains, rec->top);
    for (i = 0; top && i < top->dependents->len; i++) {
        if (!relink_child(g_ptr_array_index(top->dependents, i),
                          bottom_of(rec), errp)) {
            return false;
        }
    }
    bottom = checkpoint_chains_find(chains, bottom_of(rec));
    *relinked = dependents_of(bottom);
    for (i = 0; top && i < top->dependents->len; i++) {
        CheckpointImage *c = g_ptr_array_index(top->dependents, i);

        QAPI_LIST_PREPEND(*relinked, g_strdup(c->filename));
    }
    return true;
}

bool merge_finish_commit(CheckpointManifestMerge *rec, Error **errp)
{
    CheckpointManifest *m = checkpoint_store_manifest();
    g_autoptr(strList) relinked = NULL;

    if (!merge_relink_children(m, rec, &relinked, errp)) {
        return false;
    }
    checkpoint_crash_point("merge-after-relink");
    if (!checkpoint_store_replace_image(rec->top, bottom_of(rec), relinked,
                                        errp)) {
        return false;
    }
    checkpoint_crash_point("merge-before-remove");
    merge_remove_merged(checkpoint_store_manifest(), rec);
    return true;
}

static bool named_by(CheckpointManifest *m, const char *path)
{
    CheckpointManifestEntryList *l;
    CheckpointManifestDiskList *d;

    for (d = m->active; d; d = d->next) {
        if (checkpoint_same_path(d->value->filename, path)) {
            return true;
        }
    }
    for (l = m->checkpoints; l; l = l->next) {
        for (d = l->value->disks; d; d = d->next) {
            if (checkpoint_same_path(d->value->filename, path)) {
                return true;
            }
        }
    }
    return false;
}

/* May @path, an image of a recorded merge, be deleted now? */
static bool merged_away(CheckpointManifest *m, CheckpointChains *chains,
                        const char *path)
{
    return checkpoint_leftover_name_valid(path) && !named_by(m, path) &&
           !checkpoint_chains_find(chains, path);
}

void merge_remove_merged(CheckpointManifest *m, CheckpointManifestMerge *rec)
{
    g_autoptr(CheckpointChains) chains = NULL;
    Error *local_err = NULL;
    strList *l;

    chains = checkpoint_chains_scan(m, NULL, &local_err);
    if (!chains) {
        warn_reportf_err(local_err, "Merged images are kept: ");
        return;
    }
    if (merged_away(m, chains, rec->top) && checkpoint_unlink(rec->top) < 0 &&
        errno != ENOENT) {
        warn_report("Cannot delete merged image '%s': %s", rec->top,
                    strerror(errno));
    }
    for (l = rec->images; l; l = l->next) {
        if (merged_away(m, chains, l->value) &&
            checkpoint_unlink(l->value) < 0 &&
            errno != ENOENT) {
            warn_report("Cannot delete merged image '%s': %s", l->value,
                        strerror(errno));
        }
    }
}
