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
#include "qemu/error-report.h"
#include "qemu/main-loop.h"
#include "qemu/uuid.h"
#include "qapi/error.h"
#include "qapi/qapi-commands-block-core.h"
#include "qapi/qapi-commands-checkpoint.h"
#include "qapi/qapi-events-checkpoint.h"
#include "qobject/qdict.h"
#include "block/aio-wait.h"
#include "block/block_int-common.h"
#include "block/block_int-io.h"
#include "block/block-global-state.h"
#include "system/block-backend.h"
#include "system/runstate.h"
#include "system/system.h"
#include "../migration/cow-snapshot/cow-snapshot.h"
#include "checkpoint.h"

/* Backing chains longer than this are refused (and loops with them) */
#define APPLY_MAX_CHAIN 1024

/* One disk of the VM during an apply */
typedef struct DiskApply {
    BlockBackend *blk;
    char *device;
    CheckpointManifestDisk *frozen;     /* the checkpoint's, borrowed */
    char *child;                        /* the new active image */
    char *old_filename;                 /* the active image before */
    GPtrArray *hidden;                  /* images under it only it uses */
    char *old_node;                     /* its node, and its file's */
    char *old_file_node;
    BlockDriverState *old_bs;           /* referenced while switched */
    BlockDriverState *new_bs;           /* referenced from open on */
    bool made;                          /* child file created */
    bool switched;                      /* blk uses new_bs */
} DiskApply;

static bool applying;

bool checkpoint_apply_busy(void)
{
    return applying;
}

static void disk_apply_free(gpointer p)
{
    DiskApply *d = p;

    if (d->new_bs) {
        bdrv_unref(d->new_bs);
    }
    if (d->old_bs) {
        bdrv_unref(d->old_bs);
    }
    g_free(d->device);
    g_free(d->child);
    g_free(d->old_filename);
    if (d->hidden) {
        g_ptr_array_unref(d->hidden);
    }
    g_free(d->old_node);
    g_free(d->old_file_node);
    g_free(d);
}

static CheckpointManifestDisk *frozen_image(CheckpointManifestEntry *e,
                                            const char *device)
{
    CheckpointManifestDiskList *l;

    for (l = e->disks; l; l = l->next) {
        if (!strcmp(l->value->device, device)) {
            return l->value;
        }
    }
    return NULL;
}

/*
 * Is the frozen image of @d what checkpoint @e froze?  A block-commit
 * into it, or a qemu-img commit while QEMU was down, would give the
 * guest @e's memory over other disk content.
 */
static bool frozen_image_unchanged(CheckpointManifestEntry *e, DiskApply *d,
                                   Error **errp)
{
    g_autofree char *now = NULL;

    if (!d->frozen->identity) {
        return true;    /* recorded before identities existed */
    }
    now = checkpoint_image_identity(d->frozen->filename, d->frozen->format,
                                    errp);
    if (!now) {
        error_prepend(errp, "Cannot apply checkpoint '%s': ", e->name);
        return false;
    }
    if (strcmp(now, d->frozen->identity)) {
        error_setg(errp, "Cannot apply checkpoint '%s': the image of disk"
                   " '%s' ('%s') changed since the checkpoint was taken"
                   " (it was '%s', it is '%s'); checkpoint-check can"
                   " accept the new content", e->name, d->device,
                   d->frozen->filename, d->frozen->identity, now);
        return false;
    }
    return true;
}

/*
 * Match the VM's writable disks with the checkpoint's frozen images and
 * name the new children (after @child_id); changes nothing
 */
static GPtrArray *plan_disks(CheckpointManifestEntry *e,
                             const char *child_id, Error **errp)
{
    g_autoptr(GPtrArray) disks = g_ptr_array_new_with_free_func(
        disk_apply_free);
    g_autoptr(GHashTable) taken = g_hash_table_new_full(g_str_hash,
                                                        g_str_equal,
                                                        g_free, NULL);
    BlockBackend *blk;

    for (blk = checkpoint_next_disk(NULL); blk;
         blk = checkpoint_next_disk(blk)) {
        BlockDriverState *bs = blk_bs(blk);
        DiskApply *d;

        d = g_new0(DiskApply, 1);
        g_ptr_array_add(disks, d);
        d->blk = blk;
        d->device = checkpoint_disk_name(blk);
        d->frozen = frozen_image(e, d->device);
        if (!d->frozen) {
            error_setg(errp, "Checkpoint '%s' has no image of disk '%s'"
                       " (the disk was added after it)", e->name,
                       d->device);
            return NULL;
        }
        if (strcmp(d->frozen->format, bs->drv->format_name)) {
            error_setg(errp, "Checkpoint '%s' has a %s image of disk '%s'"
                       " ('%s'), but the disk is a %s image now", e->name,
                       d->frozen->format, d->device, d->frozen->filename,
                       bs->drv->format_name);
            return NULL;
        }
        if (access(d->frozen->filename, R_OK) < 0) {
            error_setg_errno(errp, errno, "Cannot apply checkpoint '%s':"
                             " the image of disk '%s' ('%s') cannot be"
                             " read", e->name, d->device,
                             d->frozen->filename);
            return NULL;
        }
        if (!frozen_image_unchanged(e, d, errp)) {
            return NULL;
        }
        d->child = checkpoint_plan_child_name(taken, d->frozen->filename,
                                              child_id,
                                              strcmp(d->frozen->format,
                                                     "vhdx") ?
                                              "qcow2" : "avhdx");
        if (access(d->child, F_OK) == 0) {
            error_setg(errp, "Cannot create '%s' for disk '%s': the file"
                       " exists", d->child, d->device);
            return NULL;
        }
    }
    for (CheckpointManifestDiskList *l = e->disks; l; l = l->next) {
        bool found = false;

        for (int i = 0; i < disks->len; i++) {
            DiskApply *d = g_ptr_array_index(disks, i);

            found |= !strcmp(d->device, l->value->device);
        }
        if (!found) {
            error_setg(errp, "Checkpoint '%s' has disk '%s' ('%s'), which"
                       " this VM does not have (or not writable)", e->name,
                       l->value->device, l->value->filename);
            return NULL;
        }
    }
    return g_steal_pointer(&disks);
}

/*
 * A node for image @filename, read-only, with its backing chain; nodes
 * already open (the frozen images of the running chain) are shared, so
 * that no file is opened twice.  Returns a new reference.
 */
static BlockDriverState *open_chain(const char *filename, const char *fmt,
                                    int depth, Error **errp)
{
    BlockDriverState *bs = checkpoint_find_image(filename);
    BlockDriverState *parent = NULL;
    g_autofree char *backing = NULL;
    g_autofree char *backing_fmt = NULL;
    bool has_backing;
    QDict *opts;

    if (bs) {
        bdrv_ref(bs);
        return bs;
    }
    if (depth > APPLY_MAX_CHAIN) {
        error_setg(errp, "The backing chain of '%s' is longer than %d"
                   " images (or loops)", filename, APPLY_MAX_CHAIN);
        return NULL;
    }

    /* Learn the parent's name without opening it */
    opts = qdict_new();
    qdict_put_str(opts, "driver", fmt);
    bs = bdrv_open(filename, NULL, opts, BDRV_O_NO_BACKING, errp);
    if (!bs) {
        return NULL;
    }
    has_backing = bs->backing_file[0];
    if (has_backing) {
        bdrv_graph_rdlock_main_loop();
        backing = bdrv_get_full_backing_filename(bs, errp);
        bdrv_graph_rdunlock_main_loop();
        backing_fmt = g_strdup(bs->backing_format[0] ? bs->backing_format
                                                     : fmt);
    }
    bdrv_unref(bs);
    if (has_backing && !backing) {
        return NULL;
    }

    opts = qdict_new();
    qdict_put_str(opts, "driver", fmt);
    if (backing) {
        parent = open_chain(backing, backing_fmt, depth + 1, errp);
        if (!parent) {
            qobject_unref(opts);
            return NULL;
        }
        qdict_put_str(opts, "backing", bdrv_get_node_name(parent));
    } else {
        qdict_put_null(opts, "backing");
    }
    bs = bdrv_open(filename, NULL, opts, 0, errp);
    if (parent) {
        bdrv_unref(parent);
    }
    return bs;
}

/* Create and open the new children; the VM's disks do not change */
static bool make_children(GPtrArray *disks, const char *child_id,
                          Error **errp)
{
    int i;

    for (i = 0; i < disks->len; i++) {
        DiskApply *d = g_ptr_array_index(disks, i);
        BlockDriverState *cur = blk_bs(d->blk);
        BlockDriverState *frozen;
        g_autofree char *node = NULL;
        int64_t size;

        frozen = open_chain(d->frozen->filename, d->frozen->format, 0, errp);
        if (!frozen) {
            return false;
        }
        bdrv_graph_rdlock_main_loop();
        size = bdrv_getlength(frozen);
        bdrv_graph_rdunlock_main_loop();
        if (size < 0) {
            error_setg_errno(errp, -size, "Cannot get the size of '%s'",
                             d->frozen->filename);
            bdrv_unref(frozen);
            return false;
        }
        node = g_strdup_printf("ckpt-%.8s-%d", child_id, i);
        d->new_bs = checkpoint_make_child(d->child, d->frozen->filename,
                                          d->frozen->format, size, node,
                                          frozen, cur, &d->made, errp);
        bdrv_unref(frozen);
        if (!d->new_bs) {
            return false;
        }
    }
    return true;
}

/* Put every switched disk back on its old image */
static void switch_back(GPtrArray *disks)
{
    int i;

    for (i = 0; i < disks->len; i++) {
        DiskApply *d = g_ptr_array_index(disks, i);

        if (d->switched) {
            /* The old image took these permissions a moment ago */
            blk_replace_bs(d->blk, d->old_bs, &error_abort);
            d->switched = false;
        }
    }
}

static bool is_frozen(CheckpointManifest *m, const char *filename);

/*
 * The images between the active image @bs and the first frozen image
 * under it: the frozen images of checkpoints that QEMU dropped because
 * it died while creating them (FORMAT.md, "Recovery").  Only the
 * active image builds on them, so they go with it.
 */
static GPtrArray *hidden_images(BlockDriverState *bs)
{
    CheckpointManifest *m = checkpoint_store_manifest();
    GPtrArray *hidden = g_ptr_array_new_with_free_func(g_free);

    GRAPH_RDLOCK_GUARD_MAINLOOP();
    for (bs = bdrv_filter_or_cow_bs(bs); bs;
         bs = bdrv_filter_or_cow_bs(bs)) {
        char *name;

        if (!bs->drv || !bs->drv->is_format) {
            continue;
        }
        name = realpath(checkpoint_image_filename(bs), NULL);
        if (!name || is_frozen(m, name)) {
            g_free(name);
            break;
        }
        g_ptr_array_add(hidden, name);
    }
    return hidden;
}

/* Remember the image @d replaces, to delete it after the commit */
static void note_old_image(DiskApply *d)
{
    BlockDriverState *bs = blk_bs(d->blk);

    d->old_bs = bs;
    bdrv_ref(bs);
    d->old_filename = realpath(checkpoint_image_filename(bs), NULL);
    if (!d->old_filename) {
        d->old_filename = g_strdup(checkpoint_image_filename(bs));
    }
    d->hidden = hidden_images(bs);
    d->old_node = g_strdup(bdrv_get_node_name(bs));
    if (bs->file && bs->file->bs) {
        d->old_file_node = g_strdup(bdrv_get_node_name(bs->file->bs));
    }
}

static bool switch_disks(GPtrArray *disks, Error **errp)
{
    int i;

    for (i = 0; i < disks->len; i++) {
        DiskApply *d = g_ptr_array_index(disks, i);

        note_old_image(d);
        if (blk_replace_bs(d->blk, d->new_bs, errp) < 0) {
            error_prepend(errp, "Cannot move disk '%s' to '%s': ",
                          d->device, d->child);
            switch_back(disks);
            return false;
        }
        d->switched = true;
    }
    return true;
}

/* Remove the children made so far (nothing uses them) */
static void remove_children(GPtrArray *disks)
{
    int i;

    for (i = 0; i < disks->len; i++) {
        DiskApply *d = g_ptr_array_index(disks, i);

        g_clear_pointer(&d->new_bs, bdrv_unref);
        if (d->made) {
            unlink(d->child);
            d->made = false;
        }
    }
}

/* Is @filename the frozen image of a checkpoint? */
static bool is_frozen(CheckpointManifest *m, const char *filename)
{
    CheckpointManifestEntryList *l;
    CheckpointManifestDiskList *d;

    for (l = m->checkpoints; l; l = l->next) {
        for (d = l->value->disks; d; d = d->next) {
            if (checkpoint_same_file(d->value->filename, filename)) {
                return true;
            }
        }
    }
    return false;
}

/* The hidden images under @d's old image go with it */
static void note_hidden_stale(CheckpointManifestOperation *op, DiskApply *d)
{
    int i;

    for (i = 0; i < d->hidden->len; i++) {
        const char *name = g_ptr_array_index(d->hidden, i);

        if (checkpoint_leftover_name_valid(name)) {
            QAPI_LIST_PREPEND(op->stale_files, g_strdup(name));
        }
    }
}

/*
 * The commit point: "Now" under @e, the children active, the replaced
 * images recorded as stale.  On failure the manifest in memory is as
 * it was.
 */
static bool commit_manifest(CheckpointManifestEntry *e, GPtrArray *disks,
                            Error **errp)
{
    CheckpointManifest *m = checkpoint_store_manifest();
    CheckpointManifestOperation *op = m->operation;
    CheckpointManifestDiskList *old_active = m->active, *active = NULL;
    char *old_current = m->current;
    strList *old_new_files = op->new_files;
    int i;

    for (i = disks->len - 1; i >= 0; i--) {
        DiskApply *d = g_ptr_array_index(disks, i);
        CheckpointManifestDisk *a = g_new0(CheckpointManifestDisk, 1);

        a->device = g_strdup(d->device);
        a->filename = g_strdup(d->child);
        a->format = g_strdup(d->frozen->format);
        QAPI_LIST_PREPEND(active, a);
        /* Only images the checkpoints made, and none a checkpoint holds */
        if (checkpoint_leftover_name_valid(d->old_filename) &&
            !is_frozen(m, d->old_filename)) {
            QAPI_LIST_PREPEND(op->stale_files, g_strdup(d->old_filename));
            op->has_stale_files = true;
            note_hidden_stale(op, d);
        } else {
            warn_report("Checkpoint apply keeps '%s' (disk '%s'): it is not"
                        " an image a checkpoint made", d->old_filename,
                        d->device);
        }
    }
    m->active = active;
    m->current = g_strdup(e->id);
    op->new_files = NULL;
    if (!checkpoint_store_save(errp)) {
        qapi_free_CheckpointManifestDiskList(active);
        m->active = old_active;
        g_free(m->current);
        m->current = old_current;
        qapi_free_strList(op->stale_files);
        op->stale_files = NULL;
        op->has_stale_files = false;
        op->new_files = old_new_files;
        return false;
    }
    qapi_free_CheckpointManifestDiskList(old_active);
    g_free(old_current);
    qapi_free_strList(old_new_files);
    return true;
}

/*
 * After the commit: drop the old images' nodes and delete their files,
 * then forget the operation
 */
static void remove_stale(GPtrArray *disks);

/* The disks of the last apply while their old images wait for removal */
static GPtrArray *stale_pending;

void checkpoint_apply_finish(void)
{
    if (stale_pending) {
        remove_stale(stale_pending);
        g_clear_pointer(&stale_pending, g_ptr_array_unref);
    }
}

/* After the command has returned: nothing waits for this */
static void remove_stale_bh(void *opaque)
{
    checkpoint_apply_finish();
}

static void remove_stale(GPtrArray *disks)
{
    CheckpointManifest *m = checkpoint_store_manifest();
    strList *f;
    int i;

    for (i = 0; i < disks->len; i++) {
        DiskApply *d = g_ptr_array_index(disks, i);

        g_clear_pointer(&d->old_bs, bdrv_unref);
        /* Nodes added with -blockdev stay open until deleted */
        if (d->old_node[0] && bdrv_find_node(d->old_node)) {
            qmp_blockdev_del(d->old_node, NULL);
        }
        if (d->old_file_node && d->old_file_node[0] &&
            bdrv_find_node(d->old_file_node)) {
            qmp_blockdev_del(d->old_file_node, NULL);
        }
    }
    for (f = m->operation->stale_files; f; f = f->next) {
        if (unlink(f->value) < 0 && errno != ENOENT) {
            warn_report("Cannot delete '%s', an image the VM no longer"
                        " uses: %s", f->value, strerror(errno));
        }
    }
    checkpoint_store_end_operation();
    /* The old chain's frozen images are closed now: guard the others */
    checkpoint_guard_frozen_images();
}

/* Record the children about to be made, for a crash to remove them */
static bool record_children(CheckpointManifestEntry *e, GPtrArray *disks,
                            Error **errp)
{
    strList *files = NULL;
    int i;

    for (i = 0; i < disks->len; i++) {
        DiskApply *d = g_ptr_array_index(disks, i);

        QAPI_LIST_PREPEND(files, g_strdup(d->child));
    }
    return checkpoint_store_begin_operation(CHECKPOINT_OPERATION_APPLY,
                                            e->id, files, errp);
}

static bool apply_allowed(CheckpointManifestEntry *e, Error **errp)
{
    if (e->state != CHECKPOINT_STATE_READY) {
        error_setg(errp, "Checkpoint '%s' is still being created; it can be"
                   " applied once it is ready", e->name);
        return false;
    }
    if (applying) {
        error_setg(errp, "A checkpoint is being applied already");
        return false;
    }
    if (checkpoint_create_busy()) {
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

/*
 * Take a standard checkpoint of the current state, with the VM stopped,
 * and wait until its memory is saved.  Returns its id.
 */
static char *checkpoint_current_state(Error **errp)
{
    CheckpointManifestEntry *e;
    char *id;

    id = checkpoint_create_start(NULL, NULL, errp);
    if (!id) {
        error_prepend(errp, "Cannot checkpoint the current state first: ");
        return NULL;
    }
    /* The save ends in a bottom half of the main context */
    AIO_WAIT_WHILE(NULL, checkpoint_create_busy());
    e = checkpoint_store_find(id, NULL);
    if (!e || e->state != CHECKPOINT_STATE_READY) {
        error_setg(errp, "Cannot checkpoint the current state first: %s",
                   checkpoint_create_last_error() ?: "its memory save failed");
        g_free(id);
        return NULL;
    }
    return id;
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
    if (!switch_disks(disks, errp)) {
        return APPLY_FAILED;
    }
    checkpoint_crash_point("apply-after-switch");
    if (!commit_manifest(e, disks, errp)) {
        switch_back(disks);
        return APPLY_FAILED;
    }
    checkpoint_crash_point("apply-after-commit");
    checkpoint_guard_frozen_images();

    if (state) {
        if (!cow_snapshot_load(state, errp)) {
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
                             const char *child_id, Error **errp)
{
    if (!record_children(e, disks, errp)) {
        return false;
    }
    if (!make_children(disks, child_id, errp)) {
        remove_children(disks);
        checkpoint_store_end_operation();
        return false;
    }
    checkpoint_crash_point("apply-after-children");
    return true;
}

CheckpointApplyResult *qmp_checkpoint_apply(const char *checkpoint,
                                            bool has_checkpoint_first,
                                            bool checkpoint_first,
                                            bool has_resume, bool resume,
                                            Error **errp)
{
    g_autoptr(GPtrArray) disks = NULL;
    g_autofree char *state = NULL, *child_id = NULL, *first_id = NULL;
    g_autofree char *target = NULL;
    CheckpointManifestEntry *e;
    CheckpointApplyResult *ret;
    ApplyOutcome outcome;
    QemuUUID uuid;
    bool was_running = runstate_is_running();

    checkpoint_apply_finish();
    e = checkpoint_store_find(checkpoint, errp);
    if (!e || !apply_allowed(e, errp)) {
        return NULL;
    }
    target = g_strdup(e->id);
    if (e->type == CHECKPOINT_TYPE_STANDARD) {
        state = g_build_filename(checkpoint_store_dir(), e->state_file,
                                 NULL);
        if (!cow_snapshot_validate(state, errp)) {
            error_prepend(errp, "Cannot apply checkpoint '%s': ", e->name);
            return NULL;
        }
    }
    qemu_uuid_generate(&uuid);
    child_id = qemu_uuid_unparse_strdup(&uuid);
    disks = plan_disks(e, child_id, errp);
    if (!disks) {
        return NULL;
    }
    if (!has_resume) {
        resume = was_running && e->type == CHECKPOINT_TYPE_STANDARD;
    }

    applying = true;
    if (has_checkpoint_first && checkpoint_first) {
        /* Nothing may change between that state and the apply */
        if (was_running) {
            vm_stop(RUN_STATE_PAUSED);
        }
        first_id = checkpoint_current_state(errp);
        e = first_id ? checkpoint_store_find(target, errp) : NULL;
        if (!e || !prepare_children(e, disks, child_id, errp)) {
            goto fail;
        }
    } else {
        /* Made while the VM runs: the pause is only the switch and load */
        if (!prepare_children(e, disks, child_id, errp)) {
            goto fail;
        }
        if (was_running) {
            vm_stop(RUN_STATE_PAUSED);
        }
    }
    outcome = apply_stopped(e, disks, state, errp);
    if (outcome == APPLY_FAILED) {
        applying = false;
        remove_children(disks);
        checkpoint_store_end_operation();
        /* Nothing changed: the VM goes on as before */
        if (was_running) {
            vm_start();
        }
        return NULL;
    }
    if (outcome == APPLY_DONE) {
        qapi_event_send_checkpoint_applied(target);
        if (resume) {
            vm_start();
        }
    }
    /* Once the command has returned (or when the next one starts) */
    applying = false;
    stale_pending = g_steal_pointer(&disks);
    aio_bh_schedule_oneshot(qemu_get_aio_context(), remove_stale_bh, NULL);
    if (outcome == APPLY_LOAD_FAILED) {
        return NULL;
    }
    ret = g_new0(CheckpointApplyResult, 1);
    ret->created = g_steal_pointer(&first_id);
    return ret;

fail:
    applying = false;
    if (was_running && !runstate_is_running()) {
        vm_start();
    }
    return NULL;
}
