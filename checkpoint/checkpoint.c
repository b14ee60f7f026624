/*
 * Hyper-V-style checkpoints: settings, query and rename
 *
 * Copyright (c) 2026 The Hyper-V checkpoints project
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */

#include "qemu/osdep.h"
#include "qemu/cutils.h"
#include "qemu/error-report.h"
#include "qemu/uuid.h"
#include "qapi/error.h"
#include "qapi/qapi-commands-checkpoint.h"
#include "qapi/util.h"
#include "qobject/qdict.h"
#include "block/block.h"
#include "block/block_int-common.h"
#include "block/block-global-state.h"
#include "block/graph-lock.h"
#include "block/blockjob.h"
#include "block/block_int-io.h"
#include "system/block-backend.h"
#include "hw/qdev-core.h"
#include "migration/misc.h"
#include "../migration/cow-snapshot/cow-snapshot.h"
#include "checkpoint.h"

QemuOptsList qemu_checkpoints_opts = {
    .name = "checkpoints",
    .merge_lists = true,
    .head = QTAILQ_HEAD_INITIALIZER(qemu_checkpoints_opts.head),
    .desc = {
        {
            .name = "dir",
            .type = QEMU_OPT_STRING,
            .help = "folder of the VM's checkpoint store",
        }, {
            .name = "type",
            .type = QEMU_OPT_STRING,
            .help = "standard, production, production-only or disabled",
        },
        { /* end of list */ }
    },
};

/* The VM's checkpoint settings and its loaded store */
static struct {
    char *dir;                  /* absolute; NULL while no store is set */
    CheckpointDefaultType type;
    CheckpointManifest *manifest;   /* NULL while no store is set */
} ckpt = {
    .type = CHECKPOINT_DEFAULT_TYPE_PRODUCTION,
};

const char *checkpoint_store_dir(void)
{
    return ckpt.dir;
}

CheckpointDefaultType checkpoint_default_type(void)
{
    return ckpt.type;
}

const char *checkpoint_image_filename(BlockDriverState *bs)
{
    BlockDriverState *file = NULL;

    GRAPH_RDLOCK_GUARD_MAINLOOP();
    /* A filter (blkdebug, preallocate) may stand above the file */
    if (bs->file && bs->file->bs) {
        file = bdrv_skip_filters(bs->file->bs);
    }
    if (!file) {
        file = bs;
    }
    /* A blockdev-reopen leaves it empty until something refreshes it */
    if (!file->filename[0]) {
        bdrv_refresh_filename(file);
    }
    return file->filename;
}

BlockBackend *checkpoint_next_disk(BlockBackend *blk)
{
    /* All backends: -device makes its own for a -blockdev node */
    while ((blk = blk_all_next(blk))) {
        if (blk_get_attached_dev(blk) && blk_bs(blk) &&
            blk_is_writable(blk)) {
            return blk;
        }
    }
    return NULL;
}

/* The first block job that uses @bs or an image under it, or NULL */
static BlockJob *job_on_chain(BlockDriverState *bs)
{
    BlockJob *job;

    GLOBAL_STATE_CODE();
    GRAPH_RDLOCK_GUARD_MAINLOOP();
    JOB_LOCK_GUARD();
    for (; bs; bs = bdrv_filter_or_cow_bs(bs)) {
        for (job = block_job_next_locked(NULL); job;
             job = block_job_next_locked(job)) {
            if (block_job_has_bdrv(job, bs)) {
                return job;
            }
        }
    }
    return NULL;
}

/*
 * A block job on a disk's chain (a commit, a stream, a mirror) would
 * change images under the checkpoint's feet: the frozen images it
 * takes, or the ones an apply replaces.
 */
static bool no_block_job_on_disks(const char *what, Error **errp)
{
    BlockBackend *blk;

    for (blk = checkpoint_next_disk(NULL); blk;
         blk = checkpoint_next_disk(blk)) {
        BlockJob *job = job_on_chain(blk_bs(blk));

        if (job) {
            g_autofree char *dev = checkpoint_disk_name(blk);

            error_setg(errp, "Cannot %s while block job '%s' uses disk"
                       " '%s'", what, job->job.id, dev);
            return false;
        }
    }
    return true;
}

bool checkpoint_vm_idle(const char *what, Error **errp)
{
    if (migration_is_running()) {
        error_setg(errp, "Cannot %s while a migration runs", what);
        return false;
    }
    if (cow_snapshot_is_active()) {
        error_setg(errp, "Cannot %s while a memory snapshot is being saved",
                   what);
        return false;
    }
    return no_block_job_on_disks(what, errp);
}

char *checkpoint_disk_name(BlockBackend *blk)
{
    if (*blk_name(blk)) {
        return g_strdup(blk_name(blk));
    }
    return blk_get_attached_dev_id(blk);
}

bool checkpoint_same_file(const char *a, const char *b)
{
    g_autofree char *ra = realpath(a, NULL);
    g_autofree char *rb = realpath(b, NULL);

    if (ra && rb) {
        return !strcmp(ra, rb);
    }
    return !strcmp(a, b);
}

/* Does every writable disk of the VM use the image the manifest says? */
static bool check_disks(const char *dir, CheckpointManifest *m,
                        Error **errp)
{
    g_autoptr(GHashTable) active = g_hash_table_new(g_str_hash,
                                                    g_str_equal);
    CheckpointManifestDiskList *l;
    BlockBackend *blk;

    if (!m->checkpoints && !m->active) {
        return true;
    }
    for (l = m->active; l; l = l->next) {
        g_hash_table_insert(active, l->value->device, l->value);
    }
    for (blk = checkpoint_next_disk(NULL); blk;
         blk = checkpoint_next_disk(blk)) {
        g_autofree char *dev = checkpoint_disk_name(blk);
        CheckpointManifestDisk *d;
        BlockDriverState *bs = blk_bs(blk);


        d = g_hash_table_lookup(active, dev);
        if (!d) {
            error_setg(errp, "Checkpoint store '%s' does not know disk '%s'"
                       " ('%s'): its checkpoints would not include it",
                       dir, dev, checkpoint_image_filename(bs));
            return false;
        }
        if (!checkpoint_same_file(d->filename, checkpoint_image_filename(bs))) {
            error_setg(errp, "Checkpoint store '%s' expects disk '%s' to"
                       " use '%s', but it uses '%s'", dir, dev,
                       d->filename, checkpoint_image_filename(bs));
            return false;
        }
        g_hash_table_remove(active, dev);
    }
    if (g_hash_table_size(active)) {
        GHashTableIter iter;
        CheckpointManifestDisk *d;

        g_hash_table_iter_init(&iter, active);
        g_hash_table_iter_next(&iter, NULL, (gpointer *)&d);
        error_setg(errp, "Checkpoint store '%s' has disk '%s' ('%s'),"
                   " which this VM does not have (or not writable)",
                   dir, d->device, d->filename);
        return false;
    }
    return true;
}

/* Is @path referenced by "Now" or a checkpoint as one of its images? */
static bool image_referenced(CheckpointManifest *m, const char *path)
{
    CheckpointManifestEntryList *l;
    CheckpointManifestDiskList *d;

    for (d = m->active; d; d = d->next) {
        if (!strcmp(d->value->filename, path)) {
            return true;
        }
    }
    for (l = m->checkpoints; l; l = l->next) {
        for (d = l->value->disks; d; d = d->next) {
            if (!strcmp(d->value->filename, path)) {
                return true;
            }
        }
    }
    return false;
}

/*
 * Is @path "<folder>/<disk>_<uuid>.<ext>", the name that
 * checkpoint_child_name() gives a child of an image the manifest
 * references in the same folder?
 */
static bool child_of_referenced(CheckpointManifest *m, const char *path)
{
    g_autofree char *base = g_path_get_basename(path);
    CheckpointManifestEntryList *l;
    CheckpointManifestDiskList *d;
    const char *ext = strrchr(base, '.');
    g_autofree char *id = NULL;

    /* UUID_STR_LEN counts the NUL: here it is the "_" and the UUID */
    if (!ext || (strcmp(ext, ".avhdx") && strcmp(ext, ".qcow2")) ||
        ext - base <= UUID_STR_LEN || ext[-UUID_STR_LEN] != '_') {
        return false;
    }
    id = g_strndup(ext - UUID_STR_LEN + 1, UUID_STR_LEN - 1);
    for (d = m->active; d; d = d->next) {
        g_autofree char *name = checkpoint_child_name(d->value->filename, id,
                                                      ext + 1);
        if (!strcmp(name, path)) {
            return true;
        }
    }
    for (l = m->checkpoints; l; l = l->next) {
        for (d = l->value->disks; d; d = d->next) {
            g_autofree char *name =
                checkpoint_child_name(d->value->filename, id, ext + 1);
            if (!strcmp(name, path)) {
                return true;
            }
        }
    }
    return false;
}

/* Does no symbolic link stand anywhere in @path? */
static bool path_has_no_link(const char *path)
{
    g_autofree char *dir = g_path_get_dirname(path);
    g_autofree char *real_dir = realpath(dir, NULL);
    struct stat st;

    if (!real_dir || strcmp(real_dir, dir)) {
        return false;
    }
    return lstat(path, &st) < 0 || !S_ISLNK(st.st_mode);
}

/*
 * May the recovery of @op remove @path?  Only what the operation itself
 * made: the checkpoint's folder in the store and its state file, or a
 * differencing image named as a child of an image the manifest
 * references, in that image's folder; never an image the manifest
 * references, never through a symbolic link.
 */
static bool leftover_is_own(const char *dir, CheckpointManifest *m,
                            CheckpointManifestOperation *op,
                            const char *path)
{
    g_autofree char *folder = g_build_filename(dir, op->checkpoint, NULL);
    g_autofree char *state = g_build_filename(folder, "state", NULL);

    if (!path_has_no_link(path)) {
        return false;
    }
    if (!strcmp(path, folder) || !strcmp(path, state)) {
        return true;
    }
    return !image_referenced(m, path) && child_of_referenced(m, path);
}

/* Remove a file or an empty folder that a crashed operation left */
static void remove_leftover(const char *path)
{
    if (unlink(path) == 0 || errno == ENOENT) {
        return;
    }
    if (errno == EISDIR && (rmdir(path) == 0 || errno == ENOENT)) {
        return;
    }
    warn_report("Checkpoint store: cannot remove '%s': %s", path,
                strerror(errno));
}

static void remove_own_leftover(const char *dir, CheckpointManifest *m,
                                CheckpointManifestOperation *op,
                                const char *path, bool folders)
{
    struct stat st;

    if (lstat(path, &st) < 0 || S_ISDIR(st.st_mode) != folders) {
        return;     /* gone already, or not for this pass */
    }
    if (!leftover_is_own(dir, m, op, path)) {
        warn_report("Checkpoint store '%s': not removing '%s', which the"
                    " unfinished %s did not make", dir, path,
                    CheckpointOperation_str(op->op));
        return;
    }
    remove_leftover(path);
}

/* Remove checkpoint @e from @m: children and "Now" go to its parent */
static void manifest_drop(CheckpointManifest *m, CheckpointManifestEntry *e)
{
    CheckpointManifestEntryList **p = &m->checkpoints, *l;

    for (l = m->checkpoints; l; l = l->next) {
        if (!g_strcmp0(l->value->parent, e->id)) {
            g_free(l->value->parent);
            l->value->parent = g_strdup(e->parent);
        }
    }
    if (!g_strcmp0(m->current, e->id)) {
        g_free(m->current);
        m->current = g_strdup(e->parent);
    }
    while ((*p)->value != e) {
        p = &(*p)->next;
    }
    l = *p;
    *p = l->next;
    l->next = NULL;
    qapi_free_CheckpointManifestEntryList(l);
}

/*
 * Finish what a QEMU that died left in @m (FORMAT.md, "Recovery"): the
 * files of an unfinished operation are removed (the new ones of an
 * operation that did not reach its commit, the replaced ones of one
 * that did), and checkpoints whose memory save never ended are dropped.
 */
static void recover(const char *dir, CheckpointManifest *m)
{
    CheckpointManifestEntryList *l, *next;
    strList *f;

    if (m->operation) {
        CheckpointManifestOperation *op = m->operation;

        warn_report("Checkpoint store '%s': finishing the %s of checkpoint"
                    " %s that QEMU did not end", dir,
                    CheckpointOperation_str(op->op), op->checkpoint);
        /* Files first, then folders, which must be empty by then */
        for (int pass = 0; pass < 2; pass++) {
            for (f = op->new_files; f; f = f->next) {
                remove_own_leftover(dir, m, op, f->value, pass == 1);
            }
            for (f = op->stale_files; f; f = f->next) {
                remove_own_leftover(dir, m, op, f->value, pass == 1);
            }
        }
        qapi_free_CheckpointManifestOperation(op);
        m->operation = NULL;
    }
    for (l = m->checkpoints; l; l = next) {
        CheckpointManifestEntry *e = l->value;

        next = l->next;
        if (e->state != CHECKPOINT_STATE_CREATING) {
            continue;
        }
        warn_report("Checkpoint store '%s': dropping checkpoint '%s' (%s):"
                    " QEMU stopped before its memory was saved", dir,
                    e->name, e->id);
        if (e->state_file) {
            g_autofree char *state = g_build_filename(dir, e->state_file,
                                                      NULL);
            g_autofree char *folder = g_path_get_dirname(state);

            if (path_has_no_link(state)) {
                remove_leftover(state);
            }
            if (strcmp(folder, dir) && path_has_no_link(folder)) {
                remove_leftover(folder);
            }
        }
        manifest_drop(m, e);
    }
}

/* Open (or create) the store in @dir; replaces the current one */
static bool set_store(const char *dir, Error **errp)
{
    g_autofree char *abs = NULL;
    CheckpointManifest *m;
    Error *local_err = NULL;

    if (!*dir) {
        error_setg(errp, "The checkpoint folder name is empty");
        return false;
    }
    if (g_mkdir_with_parents(dir, 0700) < 0) {
        error_setg_errno(errp, errno, "Cannot create checkpoint folder '%s'",
                         dir);
        return false;
    }
    abs = realpath(dir, NULL);
    if (!abs) {
        error_setg_errno(errp, errno, "Cannot use checkpoint folder '%s'",
                         dir);
        return false;
    }
    if (ckpt.dir && !strcmp(abs, ckpt.dir)) {
        return true;
    }
    if (ckpt.manifest && ckpt.manifest->checkpoints) {
        error_setg(errp, "The VM has checkpoints in '%s'; the checkpoint"
                   " folder can change only while there are none",
                   ckpt.dir);
        return false;
    }
    m = checkpoint_manifest_load(abs, errp);
    if (!m) {
        return false;
    }
    if (phase_check(PHASE_MACHINE_READY) &&
        !check_disks(abs, m, &local_err)) {
        error_propagate(errp, local_err);
        qapi_free_CheckpointManifest(m);
        return false;
    }
    recover(abs, m);
    /* Mark the folder as a store, and check that it is writable */
    if (!checkpoint_manifest_save(abs, m, errp)) {
        qapi_free_CheckpointManifest(m);
        return false;
    }
    qapi_free_CheckpointManifest(ckpt.manifest);
    ckpt.manifest = m;
    g_free(ckpt.dir);
    ckpt.dir = g_steal_pointer(&abs);
    if (phase_check(PHASE_MACHINE_READY)) {
        checkpoint_guard_frozen_images();
    }
    return true;
}

bool checkpoint_init_from_cmdline(Error **errp)
{
    QemuOpts *opts = qemu_opts_find(&qemu_checkpoints_opts, NULL);
    const char *dir, *type;

    if (!opts) {
        return true;
    }
    type = qemu_opt_get(opts, "type");
    if (type) {
        int t = qapi_enum_parse(&CheckpointDefaultType_lookup, type, -1,
                                NULL);
        if (t < 0) {
            error_setg(errp, "-checkpoints type: '%s' is not one of"
                       " standard, production, production-only, disabled",
                       type);
            return false;
        }
        ckpt.type = t;
    }
    /* Without dir, checkpoint-set-parameters can name the store later */
    dir = qemu_opt_get(opts, "dir");
    return !dir || set_store(dir, errp);
}

void qmp_checkpoint_set_parameters(const char *dir, bool has_type,
                                   CheckpointDefaultType type, Error **errp)
{
    if (dir && !set_store(dir, errp)) {
        return;
    }
    if (has_type) {
        ckpt.type = type;
    }
}

CheckpointParameters *qmp_query_checkpoint_parameters(Error **errp)
{
    CheckpointParameters *p = g_new0(CheckpointParameters, 1);

    p->dir = g_strdup(ckpt.dir);
    p->type = ckpt.type;
    return p;
}

BlockDriverState *checkpoint_find_image(const char *filename)
{
    BlockDriverState *bs = NULL;

    while ((bs = bdrv_next_all_states(bs))) {
        if (bs->drv && bs->drv->is_format &&
            checkpoint_same_file(checkpoint_image_filename(bs), filename)) {
            return bs;
        }
    }
    return NULL;
}

static CheckpointDiskInfo *disk_info(CheckpointManifestDisk *d)
{
    CheckpointDiskInfo *info = g_new0(CheckpointDiskInfo, 1);
    BlockDriverState *bs;
    struct stat st;

    info->device = g_strdup(d->device);
    info->filename = g_strdup(d->filename);
    info->format = g_strdup(d->format);
    if (stat(d->filename, &st) == 0) {
        info->has_disk_size = true;
        info->disk_size = (int64_t)st.st_blocks * 512;
    }
    bs = checkpoint_find_image(d->filename);
    if (bs) {
        int64_t len;

        GRAPH_RDLOCK_GUARD_MAINLOOP();
        len = bdrv_getlength(bs);
        if (len >= 0) {
            info->has_virtual_size = true;
            info->virtual_size = len;
        }
    }
    return info;
}

CheckpointInfoList *qmp_query_checkpoints(Error **errp)
{
    CheckpointInfoList *head = NULL, **tail = &head;
    CheckpointManifestEntryList *l;

    if (!ckpt.manifest) {
        return NULL;
    }
    for (l = ckpt.manifest->checkpoints; l; l = l->next) {
        CheckpointManifestEntry *e = l->value;
        CheckpointInfo *info = g_new0(CheckpointInfo, 1);
        CheckpointDiskInfoList **dtail = &info->disks;
        CheckpointManifestDiskList *d;

        info->id = g_strdup(e->id);
        info->name = g_strdup(e->name);
        info->type = e->type;
        info->state = e->state;
        info->parent = g_strdup(e->parent);
        info->created = e->created;
        info->current = !g_strcmp0(ckpt.manifest->current, e->id);
        for (d = e->disks; d; d = d->next) {
            QAPI_LIST_APPEND(dtail, disk_info(d->value));
        }
        if (e->state_file) {
            g_autofree char *path = g_build_filename(ckpt.dir,
                                                     e->state_file, NULL);
            struct stat st;

            if (stat(path, &st) == 0) {
                info->has_state_file_size = true;
                info->state_file_size = (int64_t)st.st_blocks * 512;
            }
        }
        QAPI_LIST_APPEND(tail, info);
    }
    return head;
}

CheckpointManifestEntry *checkpoint_store_find(const char *key,
                                               Error **errp)
{
    CheckpointManifestEntry *found = NULL;
    CheckpointManifestEntryList *l;

    if (!ckpt.manifest) {
        error_setg(errp, "No checkpoint store is set (-checkpoints dir=DIR"
                   " or checkpoint-set-parameters)");
        return NULL;
    }
    for (l = ckpt.manifest->checkpoints; l; l = l->next) {
        if (!strcmp(l->value->id, key)) {
            return l->value;
        }
    }
    for (l = ckpt.manifest->checkpoints; l; l = l->next) {
        if (!strcmp(l->value->name, key)) {
            if (found) {
                error_setg(errp, "Several checkpoints are named '%s';"
                           " give the id of the one you mean", key);
                return NULL;
            }
            found = l->value;
        }
    }
    if (!found) {
        error_setg(errp, "There is no checkpoint with id or name '%s'", key);
    }
    return found;
}

void qmp_checkpoint_rename(const char *checkpoint, const char *name,
                           Error **errp)
{
    CheckpointManifestEntry *e;
    char *old;

    if (!checkpoint_name_valid(name, errp)) {
        return;
    }
    e = checkpoint_store_find(checkpoint, errp);
    if (!e) {
        return;
    }
    old = e->name;
    e->name = g_strdup(name);
    if (!checkpoint_manifest_save(ckpt.dir, ckpt.manifest, errp)) {
        g_free(e->name);
        e->name = old;
        return;
    }
    g_free(old);
}

static CheckpointManifestEntry *entry_by_id(const char *id)
{
    CheckpointManifestEntryList *l;

    for (l = ckpt.manifest->checkpoints; l; l = l->next) {
        if (!strcmp(l->value->id, id)) {
            return l->value;
        }
    }
    return NULL;
}

/* Record operation @op on checkpoint @id making @new_files (taken over) */
static void set_operation(CheckpointOperation op, const char *id,
                          strList *new_files)
{
    CheckpointManifestOperation *o = g_new0(CheckpointManifestOperation, 1);

    o->op = op;
    o->checkpoint = g_strdup(id);
    o->new_files = new_files;
    qapi_free_CheckpointManifestOperation(ckpt.manifest->operation);
    ckpt.manifest->operation = o;
}

bool checkpoint_store_add(CheckpointManifestEntry *e,
                          CheckpointManifestDiskList *active,
                          strList *new_files, Error **errp)
{
    CheckpointManifestEntryList **tail = &ckpt.manifest->checkpoints;

    while (*tail) {
        tail = &(*tail)->next;
    }
    e->parent = g_strdup(ckpt.manifest->current);
    QAPI_LIST_APPEND(tail, e);
    g_free(ckpt.manifest->current);
    ckpt.manifest->current = g_strdup(e->id);
    qapi_free_CheckpointManifestDiskList(ckpt.manifest->active);
    ckpt.manifest->active = active;
    qapi_free_CheckpointManifestOperation(ckpt.manifest->operation);
    ckpt.manifest->operation = NULL;
    if (new_files) {
        set_operation(CHECKPOINT_OPERATION_CREATE, e->id, new_files);
    }
    return checkpoint_manifest_save(ckpt.dir, ckpt.manifest, errp);
}

/* Forget the recorded operation if it is about checkpoint @id */
static void end_operation_of(const char *id)
{
    CheckpointManifestOperation *op = ckpt.manifest->operation;

    if (op && !strcmp(op->checkpoint, id)) {
        qapi_free_CheckpointManifestOperation(op);
        ckpt.manifest->operation = NULL;
    }
}

/*
 * Record what identifies the content of @e's frozen images: the
 * checkpoint is ready, nothing writes to them any more
 */
static bool record_identities(CheckpointManifestEntry *e, Error **errp)
{
    CheckpointManifestDiskList *l;

    for (l = e->disks; l; l = l->next) {
        CheckpointManifestDisk *d = l->value;

        if (d->identity) {
            continue;
        }
        d->identity = checkpoint_image_identity(d->filename, d->format,
                                                errp);
        if (!d->identity) {
            error_prepend(errp, "Checkpoint %s: ", e->id);
            return false;
        }
    }
    return true;
}

bool checkpoint_store_set_state(const char *id, CheckpointState state,
                                Error **errp)
{
    CheckpointManifestEntry *e = entry_by_id(id);

    if (!e) {
        error_setg(errp, "Checkpoint %s is no longer in the tree", id);
        return false;
    }
    if (state == CHECKPOINT_STATE_READY && !record_identities(e, errp)) {
        return false;
    }
    e->state = state;
    end_operation_of(id);
    return checkpoint_manifest_save(ckpt.dir, ckpt.manifest, errp);
}

bool checkpoint_store_drop(const char *id, Error **errp)
{
    CheckpointManifestEntry *e = entry_by_id(id);

    if (e) {
        manifest_drop(ckpt.manifest, e);
    }
    end_operation_of(id);
    return checkpoint_manifest_save(ckpt.dir, ckpt.manifest, errp);
}

bool checkpoint_store_begin_create(const char *id,
                                   CheckpointManifestDiskList *active,
                                   strList *new_files, Error **errp)
{
    CheckpointManifestDiskList *old_active = ckpt.manifest->active;

    ckpt.manifest->active = active;
    set_operation(CHECKPOINT_OPERATION_CREATE, id, new_files);
    if (!checkpoint_store_save(errp)) {
        qapi_free_CheckpointManifestDiskList(active);
        ckpt.manifest->active = old_active;
        qapi_free_CheckpointManifestOperation(ckpt.manifest->operation);
        ckpt.manifest->operation = NULL;
        return false;
    }
    qapi_free_CheckpointManifestDiskList(old_active);
    return true;
}

void checkpoint_store_abort_create(CheckpointManifestDiskList *old_active)
{
    qapi_free_CheckpointManifestDiskList(ckpt.manifest->active);
    ckpt.manifest->active = old_active;
    checkpoint_store_end_operation();
}

bool checkpoint_store_unadd(const char *id,
                            CheckpointManifestDiskList *old_active,
                            strList *new_files, Error **errp)
{
    CheckpointManifestEntry *e = entry_by_id(id);

    if (e) {
        manifest_drop(ckpt.manifest, e);
    }
    qapi_free_CheckpointManifestDiskList(ckpt.manifest->active);
    ckpt.manifest->active = old_active;
    set_operation(CHECKPOINT_OPERATION_CREATE, id, new_files);
    return checkpoint_store_save(errp);
}

bool checkpoint_store_is_frozen(const char *filename)
{
    CheckpointManifestEntryList *l;
    CheckpointManifestDiskList *d;

    for (l = ckpt.manifest ? ckpt.manifest->checkpoints : NULL; l;
         l = l->next) {
        for (d = l->value->disks; d; d = d->next) {
            if (checkpoint_same_file(d->value->filename, filename)) {
                return true;
            }
        }
    }
    return false;
}

bool checkpoint_store_commit_apply(const char *id,
                                   CheckpointManifestDiskList *active,
                                   strList *stale, Error **errp)
{
    CheckpointManifest *m = ckpt.manifest;
    CheckpointManifestOperation *op = m->operation;
    CheckpointManifestDiskList *old_active = m->active;
    char *old_current = m->current;
    strList *old_new_files = op->new_files;

    m->active = active;
    m->current = g_strdup(id);
    op->new_files = NULL;
    op->stale_files = stale;
    op->has_stale_files = stale != NULL;
    if (!checkpoint_store_save(errp)) {
        m->active = old_active;
        g_free(m->current);
        m->current = old_current;
        op->new_files = old_new_files;
        op->stale_files = NULL;
        op->has_stale_files = false;
        qapi_free_CheckpointManifestDiskList(active);
        qapi_free_strList(stale);
        return false;
    }
    qapi_free_CheckpointManifestDiskList(old_active);
    g_free(old_current);
    qapi_free_strList(old_new_files);
    return true;
}

CheckpointManifest *checkpoint_store_manifest(void)
{
    return ckpt.manifest;
}

bool checkpoint_store_save(Error **errp)
{
    return checkpoint_manifest_save(ckpt.dir, ckpt.manifest, errp);
}

bool checkpoint_store_begin_operation(CheckpointOperation op,
                                      const char *id, strList *new_files,
                                      Error **errp)
{
    set_operation(op, id, new_files);
    if (!checkpoint_store_save(errp)) {
        qapi_free_CheckpointManifestOperation(ckpt.manifest->operation);
        ckpt.manifest->operation = NULL;
        return false;
    }
    return true;
}

void checkpoint_store_end_operation(void)
{
    Error *local_err = NULL;

    qapi_free_CheckpointManifestOperation(ckpt.manifest->operation);
    ckpt.manifest->operation = NULL;
    if (!checkpoint_store_save(&local_err)) {
        error_report_err(local_err);
    }
}

char *checkpoint_child_name(const char *parent, const char *id,
                            const char *ext)
{
    g_autofree char *dir = g_path_get_dirname(parent);
    g_autofree char *base = g_path_get_basename(parent);
    char *dot = strrchr(base, '.');
    g_autofree char *name = NULL;
    size_t len;
    QemuUUID uuid;

    if (dot && dot != base) {
        *dot = '\0';
    }
    /* A child of a child is named after the disk: drop "_<old id>" */
    len = strlen(base);
    if (len > UUID_STR_LEN && base[len - UUID_STR_LEN] == '_' &&
        qemu_uuid_parse(base + len - UUID_STR_LEN + 1, &uuid) == 0) {
        base[len - UUID_STR_LEN] = '\0';
    }
    name = g_strdup_printf("%s_%s.%s", base, id, ext);
    return g_build_filename(dir, name, NULL);
}

char *checkpoint_plan_child_name(GHashTable *taken, const char *parent,
                                 const char *id, const char *ext)
{
    char *name = checkpoint_child_name(parent, id, ext);

    while (g_hash_table_contains(taken, name)) {
        g_autofree char *own = NULL;
        QemuUUID uuid;

        qemu_uuid_generate(&uuid);
        own = qemu_uuid_unparse_strdup(&uuid);
        g_free(name);
        name = checkpoint_child_name(parent, own, ext);
    }
    g_hash_table_add(taken, g_strdup(name));
    return name;
}

BlockDriverState *checkpoint_make_child(const char *child,
                                        const char *parent, const char *fmt,
                                        int64_t size, const char *node_name,
                                        BlockDriverState *backing,
                                        BlockDriverState *like, bool *made,
                                        Error **errp)
{
    Error *local_err = NULL;
    BlockDriverState *bs;
    QDict *opts;
    int flags;

    /* The child names its parent by file name (a node's may be json:) */
    bdrv_img_create(child, fmt, parent, fmt, NULL, size, BDRV_O_NO_BACKING,
                    true, &local_err);
    if (local_err) {
        error_propagate(errp, local_err);
        return NULL;
    }
    *made = true;
    /* Opened like the image it goes on top of or replaces (cache, AIO) */
    flags = like->open_flags & ~(BDRV_O_SNAPSHOT | BDRV_O_COPY_ON_READ |
                                 BDRV_O_NO_BACKING | BDRV_O_PROTOCOL);
    opts = qdict_new();
    qdict_put_str(opts, "driver", fmt);
    qdict_put_str(opts, "node-name", node_name);
    if (backing) {
        qdict_put_str(opts, "backing", bdrv_get_node_name(backing));
    } else {
        qdict_put_null(opts, "backing");
    }
    bs = bdrv_open(child, NULL, opts, flags | BDRV_O_RDWR, errp);
    /* On disk before the manifest names it (the open may write too) */
    if (bs && !checkpoint_sync_new_file(child, errp)) {
        bdrv_unref(bs);
        return NULL;
    }
    return bs;
}

/* The step the last operation left for later, and its data */
static struct {
    CheckpointSettleFn *fn;
    void *opaque;
} pending_step;

void checkpoint_defer(CheckpointSettleFn *fn, void *opaque)
{
    checkpoint_settle();
    pending_step.fn = fn;
    pending_step.opaque = opaque;
}

void checkpoint_settle(void)
{
    CheckpointSettleFn *fn = pending_step.fn;

    if (fn) {
        pending_step.fn = NULL;
        fn(g_steal_pointer(&pending_step.opaque));
    }
}

void checkpoint_crash_point(const char *point)
{
    const char *want = getenv("QEMU_CHECKPOINT_CRASH_AT");

    if (want && !strcmp(want, point)) {
        error_report("checkpoint: killed at '%s' (QEMU_CHECKPOINT_CRASH_AT)",
                     point);
        raise(SIGKILL);
    }
}

/* checkpoint-check (check.c) */

bool checkpoint_store_drop_list(strList *ids, Error **errp)
{
    strList *l;

    for (l = ids; l; l = l->next) {
        CheckpointManifestEntry *e = entry_by_id(l->value);

        if (e) {
            manifest_drop(ckpt.manifest, e);
        }
        end_operation_of(l->value);
    }
    return checkpoint_store_save(errp);
}
