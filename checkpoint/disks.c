/*
 * Hyper-V-style checkpoints: the disks of an operation
 *
 * Copyright (c) 2026 The Hyper-V checkpoints project
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 *
 * Create and apply do the same per-disk work on different parents: plan
 * each writable disk's new differencing child, make and open the
 * children while the VM runs, move the disks onto them in the pause,
 * and remove them when the operation fails.  Create makes the child of
 * the image the disk uses now and stacks it with blockdev-snapshot;
 * apply makes it on the checkpoint's frozen image and replaces the
 * disk's image with it.
 */

#include "qemu/osdep.h"
#include "qemu/error-report.h"
#include "qapi/error.h"
#include "qapi/qapi-commands-block-core.h"
#include "qapi/qapi-commands-transaction.h"
#include "qobject/qdict.h"
#include "block/block_int-common.h"
#include "block/block_int-io.h"
#include "block/block-global-state.h"
#include "system/block-backend.h"
#include "checkpoint.h"

/* Backing chains longer than this are refused (and loops with them) */
#define CHAIN_MAX 1024

static void checkpoint_disk_free(gpointer p)
{
    CheckpointDisk *d = p;

    g_clear_pointer(&d->child_bs, bdrv_unref);
    g_clear_pointer(&d->old_bs, bdrv_unref);
    g_free(d->device);
    g_free(d->format);
    g_free(d->parent);
    g_free(d->child);
    g_free(d->old_filename);
    g_free(d->old_node);
    g_free(d->old_file_node);
    if (d->hidden) {
        g_ptr_array_unref(d->hidden);
    }
    g_free(d);
}

static const char *child_ext(const char *format)
{
    return strcmp(format, "vhdx") ? "qcow2" : "avhdx";
}

/*
 * Add disk @blk whose child is made on @parent (format @format): name
 * the child after @id (unique among @taken) and its node after @id and
 * its index
 */
static CheckpointDisk *add_disk(GPtrArray *disks, GHashTable *taken,
                                BlockBackend *blk, const char *parent,
                                const char *format, const char *id,
                                Error **errp)
{
    CheckpointDisk *d = g_new0(CheckpointDisk, 1);

    g_ptr_array_add(disks, d);
    d->blk = blk;
    d->device = checkpoint_disk_name(blk);
    d->format = g_strdup(format);
    d->parent = g_strdup(parent);
    d->child = checkpoint_plan_child_name(taken, parent, id,
                                          child_ext(format));
    if (access(d->child, F_OK) == 0) {
        error_setg(errp, "Cannot create '%s' for disk '%s': the file"
                   " exists", d->child, d->device);
        return NULL;
    }
    return d;
}

static GPtrArray *new_disk_array(void)
{
    return g_ptr_array_new_with_free_func(checkpoint_disk_free);
}

static GHashTable *new_name_set(void)
{
    return g_hash_table_new_full(g_str_hash, g_str_equal, g_free, NULL);
}

/* The disk @blk of a create: its image now, to become frozen */
static bool plan_create_disk(GPtrArray *disks, GHashTable *taken,
                             BlockBackend *blk, const char *id, Error **errp)
{
    BlockDriverState *bs = blk_bs(blk);
    const char *fmt = bs->drv->format_name;
    g_autofree char *dev = checkpoint_disk_name(blk);
    g_autofree char *image = NULL;
    CheckpointDisk *d;

    if (strcmp(fmt, "vhdx") && strcmp(fmt, "qcow2")) {
        error_setg(errp, "Disk '%s' is a %s image ('%s'); checkpoints"
                   " need vhdx or qcow2 disks", dev, fmt, bs->filename);
        return false;
    }
    /* Absolute, so that the store does not depend on the cwd */
    image = realpath(checkpoint_image_filename(bs), NULL);
    if (!image) {
        error_setg_errno(errp, errno, "Cannot find the file of disk"
                         " '%s' ('%s')", dev, checkpoint_image_filename(bs));
        return false;
    }
    d = add_disk(disks, taken, blk, image, fmt, id, errp);
    if (!d) {
        return false;
    }
    d->bs = bs;
    bdrv_graph_rdlock_main_loop();
    d->size = bdrv_getlength(bs);
    bdrv_graph_rdunlock_main_loop();
    if (d->size < 0) {
        error_setg_errno(errp, -d->size, "Cannot get the size of disk"
                         " '%s'", d->device);
        return false;
    }
    return true;
}

GPtrArray *checkpoint_disks_plan_create(const char *id, Error **errp)
{
    g_autoptr(GPtrArray) disks = new_disk_array();
    g_autoptr(GHashTable) taken = new_name_set();
    BlockBackend *blk;

    for (blk = checkpoint_next_disk(NULL); blk;
         blk = checkpoint_next_disk(blk)) {
        if (!plan_create_disk(disks, taken, blk, id, errp)) {
            return NULL;
        }
    }
    return g_steal_pointer(&disks);
}

static CheckpointManifestDisk *recorded_image(CheckpointManifestEntry *e,
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
 * Is the frozen image @f what checkpoint @e froze?  A block-commit into
 * it, or a qemu-img commit while QEMU was down, would give the guest
 * @e's memory over other disk content.
 */
static bool frozen_image_unchanged(CheckpointManifestEntry *e,
                                   const char *device,
                                   CheckpointManifestDisk *f, Error **errp)
{
    g_autofree char *now = NULL;

    if (!f->identity) {
        return true;    /* recorded before identities existed */
    }
    now = checkpoint_image_identity(f->filename, f->format, errp);
    if (!now) {
        error_prepend(errp, "Cannot apply checkpoint '%s': ", e->name);
        return false;
    }
    if (strcmp(now, f->identity)) {
        error_setg(errp, "Cannot apply checkpoint '%s': the image of disk"
                   " '%s' ('%s') changed since the checkpoint was taken"
                   " (it was '%s', it is '%s'); checkpoint-check can"
                   " accept the new content", e->name, device,
                   f->filename, f->identity, now);
        return false;
    }
    return true;
}

/* The disk @blk of an apply of @e: @e's frozen image of it */
static bool plan_apply_disk(GPtrArray *disks, GHashTable *taken,
                            BlockBackend *blk, CheckpointManifestEntry *e,
                            const char *child_id, Error **errp)
{
    const char *fmt = blk_bs(blk)->drv->format_name;
    g_autofree char *dev = checkpoint_disk_name(blk);
    CheckpointManifestDisk *f = recorded_image(e, dev);

    if (!f) {
        error_setg(errp, "Checkpoint '%s' has no image of disk '%s'"
                   " (the disk was added after it)", e->name, dev);
        return false;
    }
    if (strcmp(f->format, fmt)) {
        error_setg(errp, "Checkpoint '%s' has a %s image of disk '%s'"
                   " ('%s'), but the disk is a %s image now", e->name,
                   f->format, dev, f->filename, fmt);
        return false;
    }
    if (access(f->filename, R_OK) < 0) {
        error_setg_errno(errp, errno, "Cannot apply checkpoint '%s':"
                         " the image of disk '%s' ('%s') cannot be"
                         " read", e->name, dev, f->filename);
        return false;
    }
    if (!frozen_image_unchanged(e, dev, f, errp)) {
        return false;
    }
    return add_disk(disks, taken, blk, f->filename, f->format, child_id,
                    errp) != NULL;
}

/* Does every disk of @e belong to the VM? */
static bool all_recorded_disks_planned(CheckpointManifestEntry *e,
                                       GPtrArray *disks, Error **errp)
{
    CheckpointManifestDiskList *l;

    for (l = e->disks; l; l = l->next) {
        bool found = false;

        for (int i = 0; i < disks->len; i++) {
            CheckpointDisk *d = g_ptr_array_index(disks, i);

            found |= !strcmp(d->device, l->value->device);
        }
        if (!found) {
            error_setg(errp, "Checkpoint '%s' has disk '%s' ('%s'), which"
                       " this VM does not have (or not writable)", e->name,
                       l->value->device, l->value->filename);
            return false;
        }
    }
    return true;
}

GPtrArray *checkpoint_disks_plan_apply(CheckpointManifestEntry *e,
                                       const char *child_id, Error **errp)
{
    g_autoptr(GPtrArray) disks = new_disk_array();
    g_autoptr(GHashTable) taken = new_name_set();
    BlockBackend *blk;

    for (blk = checkpoint_next_disk(NULL); blk;
         blk = checkpoint_next_disk(blk)) {
        if (!plan_apply_disk(disks, taken, blk, e, child_id, errp)) {
            return NULL;
        }
    }
    if (!all_recorded_disks_planned(e, disks, errp)) {
        return NULL;
    }
    return g_steal_pointer(&disks);
}

/*
 * A node for image @filename, read-only, with its backing chain; nodes
 * already open (the frozen images of the running chain) are shared, so
 * that no file is opened twice.  Returns a new reference.
 */
static BlockDriverState *open_chain(const char *filename, const char *fmt,
                                    int depth, int flags, Error **errp)
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
    if (depth > CHAIN_MAX) {
        error_setg(errp, "The backing chain of '%s' is longer than %d"
                   " images (or loops)", filename, CHAIN_MAX);
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
        backing = checkpoint_backing_filename(bs, errp);
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
        parent = open_chain(backing, backing_fmt, depth + 1, 0, errp);
        if (!parent) {
            qobject_unref(opts);
            return NULL;
        }
        qdict_put_str(opts, "backing", bdrv_get_node_name(parent));
    } else {
        qdict_put_null(opts, "backing");
    }
    bs = bdrv_open(filename, NULL, opts, flags, errp);
    if (parent) {
        bdrv_unref(parent);
    }
    return bs;
}

BlockDriverState *checkpoint_open_chain(const char *filename,
                                        const char *fmt, bool writable,
                                        Error **errp)
{
    if (writable && checkpoint_find_image(filename)) {
        error_setg(errp, "'%s' is open already", filename);
        return NULL;
    }
    return open_chain(filename, fmt, 0, writable ? BDRV_O_RDWR : 0, errp);
}

/*
 * The child of a create, with no backing yet (blockdev-snapshot puts
 * it on the disk's node).  A vhdx child records its parent's
 * DataWriteGuid, which the parent's first write since it was opened
 * changes: the driver settles what the child records first.
 */
static bool make_snapshot_child(CheckpointDisk *d, Error **errp)
{
    if (bdrv_settle_for_child(d->bs, errp) < 0) {
        return false;
    }
    d->child_bs = checkpoint_make_child(d->child, d->parent, d->format,
                                        d->size, NULL,
                                        d->bs, &d->made, errp);
    return d->child_bs != NULL;
}

/* The child of an apply, on the frozen image and its chain */
static bool make_child_on_parent(CheckpointDisk *d, Error **errp)
{
    BlockDriverState *frozen;
    int64_t size;

    frozen = open_chain(d->parent, d->format, 0, 0, errp);
    if (!frozen) {
        return false;
    }
    bdrv_graph_rdlock_main_loop();
    size = bdrv_getlength(frozen);
    bdrv_graph_rdunlock_main_loop();
    if (size < 0) {
        error_setg_errno(errp, -size, "Cannot get the size of '%s'",
                         d->parent);
        bdrv_unref(frozen);
        return false;
    }
    d->size = size;
    d->child_bs = checkpoint_make_child(d->child, d->parent, d->format,
                                        size, frozen,
                                        blk_bs(d->blk), &d->made, errp);
    bdrv_unref(frozen);
    return d->child_bs != NULL;
}

bool checkpoint_disks_make_children(GPtrArray *disks, bool on_parent,
                                    Error **errp)
{
    int i;

    for (i = 0; i < disks->len; i++) {
        CheckpointDisk *d = g_ptr_array_index(disks, i);
        bool ok = on_parent ? make_child_on_parent(d, errp)
                            : make_snapshot_child(d, errp);

        if (!ok) {
            checkpoint_disks_remove_children(disks);
            return false;
        }
    }
    return true;
}

void checkpoint_disks_remove_children(GPtrArray *disks)
{
    int i;

    for (i = 0; i < disks->len; i++) {
        CheckpointDisk *d = g_ptr_array_index(disks, i);

        g_clear_pointer(&d->child_bs, bdrv_unref);
        if (d->made) {
            unlink(d->child);
            d->made = false;
        }
    }
}

void checkpoint_disks_forget_children(GPtrArray *disks)
{
    int i;

    for (i = 0; i < disks->len; i++) {
        CheckpointDisk *d = g_ptr_array_index(disks, i);

        g_clear_pointer(&d->child_bs, bdrv_unref);
        d->made = false;
    }
}

bool checkpoint_disks_snapshot(GPtrArray *disks, Error **errp)
{
    TransactionActionList *actions = NULL, **tail = &actions;
    Error *local_err = NULL;
    int i;

    for (i = 0; i < disks->len; i++) {
        CheckpointDisk *d = g_ptr_array_index(disks, i);
        TransactionAction *act = g_new0(TransactionAction, 1);
        BlockdevSnapshot *s = g_new0(BlockdevSnapshot, 1);

        s->node = g_strdup(bdrv_get_node_name(d->bs));
        s->overlay = g_strdup(bdrv_get_node_name(d->child_bs));
        act->type = TRANSACTION_ACTION_KIND_BLOCKDEV_SNAPSHOT;
        act->u.blockdev_snapshot.data = s;
        QAPI_LIST_APPEND(tail, act);
    }
    if (!actions) {
        return true;
    }
    qmp_transaction(actions, NULL, &local_err);
    qapi_free_TransactionActionList(actions);
    if (local_err) {
        error_propagate(errp, local_err);
        return false;
    }
    return true;
}

/*
 * The images between the active image @bs and the first frozen image
 * under it: the frozen images of checkpoints that QEMU dropped because
 * it died while creating them (FORMAT.md, "Recovery").  Only the
 * active image builds on them, so they go with it.
 */
static GPtrArray *hidden_images(BlockDriverState *bs)
{
    GPtrArray *hidden = g_ptr_array_new_with_free_func(g_free);

    GRAPH_RDLOCK_GUARD_MAINLOOP();
    for (bs = bdrv_filter_or_cow_bs(bs); bs;
         bs = bdrv_filter_or_cow_bs(bs)) {
        char *name;

        if (!bs->drv || !bs->drv->is_format) {
            continue;
        }
        name = realpath(checkpoint_image_filename(bs), NULL);
        if (!name || checkpoint_store_is_frozen(name)) {
            g_free(name);
            break;
        }
        g_ptr_array_add(hidden, name);
    }
    return hidden;
}

/* Remember the image @d replaces, to delete it after the commit */
static void note_old_image(CheckpointDisk *d)
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

bool checkpoint_disks_replace(GPtrArray *disks, Error **errp)
{
    int i;

    for (i = 0; i < disks->len; i++) {
        CheckpointDisk *d = g_ptr_array_index(disks, i);

        note_old_image(d);
        if (blk_replace_bs(d->blk, d->child_bs, errp) < 0) {
            error_prepend(errp, "Cannot move disk '%s' to '%s': ",
                          d->device, d->child);
            checkpoint_disks_switch_back(disks);
            return false;
        }
        d->switched = true;
    }
    return true;
}

void checkpoint_disks_switch_back(GPtrArray *disks)
{
    int i;

    for (i = 0; i < disks->len; i++) {
        CheckpointDisk *d = g_ptr_array_index(disks, i);

        if (d->switched) {
            /* The old image took these permissions a moment ago */
            blk_replace_bs(d->blk, d->old_bs, &error_abort);
            d->switched = false;
        }
    }
}

void checkpoint_disks_close_old(GPtrArray *disks)
{
    int i;

    for (i = 0; i < disks->len; i++) {
        CheckpointDisk *d = g_ptr_array_index(disks, i);

        g_clear_pointer(&d->old_bs, bdrv_unref);
        /* Nodes added with -blockdev stay open until deleted */
        if (d->old_node && d->old_node[0] && bdrv_find_node(d->old_node)) {
            qmp_blockdev_del(d->old_node, NULL);
        }
        if (d->old_file_node && d->old_file_node[0] &&
            bdrv_find_node(d->old_file_node)) {
            qmp_blockdev_del(d->old_file_node, NULL);
        }
    }
}

strList *checkpoint_disks_children(GPtrArray *disks)
{
    strList *files = NULL;
    int i;

    for (i = 0; i < disks->len; i++) {
        CheckpointDisk *d = g_ptr_array_index(disks, i);

        QAPI_LIST_PREPEND(files, g_strdup(d->child));
    }
    return files;
}

CheckpointManifestDiskList *checkpoint_disks_images(GPtrArray *disks,
                                                    bool children)
{
    CheckpointManifestDiskList *l = NULL;
    int i;

    for (i = disks->len - 1; i >= 0; i--) {
        CheckpointDisk *d = g_ptr_array_index(disks, i);
        CheckpointManifestDisk *m = g_new0(CheckpointManifestDisk, 1);

        m->device = g_strdup(d->device);
        m->filename = g_strdup(children ? d->child : d->parent);
        m->format = g_strdup(d->format);
        QAPI_LIST_PREPEND(l, m);
    }
    return l;
}
