/*
 * Hyper-V-style checkpoints: the store
 *
 * Copyright (c) 2026 The Hyper-V checkpoints project
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 *
 * The only code that changes the manifest: opening a store (and the
 * recovery of what a killed QEMU left), and one named operation for
 * each step of create, apply, rename and checkpoint-check.  Each writes
 * the manifest before it returns, in the order that FORMAT.md's
 * crash-safety rules give (checkpoint.h says, for each, what is left in
 * memory when the write fails).  The manifest's format itself (load,
 * validate, save) is manifest.c.
 */

#include "qemu/osdep.h"
#include "qemu/error-report.h"
#include "qemu/uuid.h"
#include "qapi/clone-visitor.h"
#include "qapi/error.h"
#include "qapi/qapi-types-checkpoint.h"
#include "qapi/qapi-visit-checkpoint.h"
#include "block/block-global-state.h"
#include "hw/qdev-core.h"
#include "system/block-backend.h"
#include "checkpoint.h"

/* The VM's loaded store */
static struct {
    char *dir;                      /* absolute; NULL while none is set */
    CheckpointManifest *manifest;   /* NULL while no store is set */
} store;

char *checkpoint_canonical_path(const char *filename)
{
    g_autofree char *dir = NULL, *base = NULL, *rdir = NULL;
    char *real = realpath(filename, NULL);

    if (real) {
        return real;
    }
    dir = g_path_get_dirname(filename);
    base = g_path_get_basename(filename);
    rdir = realpath(dir, NULL);
    if (!rdir) {
        return g_strdup(filename);
    }
    return g_build_filename(rdir, base, NULL);
}

bool checkpoint_same_path(const char *a, const char *b)
{
    g_autofree char *ca = checkpoint_canonical_path(a);
    g_autofree char *cb = checkpoint_canonical_path(b);

    return !strcmp(ca, cb);
}

const char *checkpoint_store_dir(void)
{
    return store.dir;
}

/* Write the manifest of the store */
static bool checkpoint_store_save(Error **errp)
{
    return checkpoint_manifest_save(store.dir, store.manifest, errp);
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
            error_append_hint(errp, "The disk moved to a differencing image"
                              " when a checkpoint was taken or applied;"
                              " 'qemu-checkpoint start --store %s' starts"
                              " the VM on the images the store lists.\n",
                              dir);
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

/* Is @path the folder "<dir>/<uuid>" of a checkpoint not in @m? */
static bool folder_of_deleted(const char *dir, CheckpointManifest *m,
                              const char *path)
{
    g_autofree char *parent = g_path_get_dirname(path);
    g_autofree char *name = g_path_get_basename(path);
    CheckpointManifestEntryList *l;
    QemuUUID uuid;

    if (strcmp(parent, dir) || qemu_uuid_parse(name, &uuid) < 0) {
        return false;
    }
    for (l = m->checkpoints; l; l = l->next) {
        if (!strcmp(l->value->id, name)) {
            return false;
        }
    }
    return true;
}

/*
 * May the recovery of a delete remove @path?  The folder of a deleted
 * checkpoint and its state file, or a differencing image that no
 * record and no chain of the store uses.
 */
static bool deleted_leftover(const char *dir, CheckpointManifest *m,
                             const char *path)
{
    g_autofree char *folder = g_path_get_dirname(path);
    g_autofree char *base = g_path_get_basename(path);
    g_autoptr(CheckpointChains) chains = NULL;
    Error *local_err = NULL;

    if (folder_of_deleted(dir, m, path) ||
        ((!strcmp(base, "state") || !strcmp(base, CHECKPOINT_CONFIG_NAME)) &&
         folder_of_deleted(dir, m, folder))) {
        return true;
    }
    if (!checkpoint_leftover_name_valid(path) || image_referenced(m, path)) {
        return false;
    }
    chains = checkpoint_chains_scan(m, NULL, &local_err);
    if (!chains) {
        warn_report_err(local_err);
        return false;
    }
    return !checkpoint_chains_find(chains, path);
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
    g_autofree char *config = g_build_filename(folder, CHECKPOINT_CONFIG_NAME,
                                               NULL);

    if (!path_has_no_link(path)) {
        return false;
    }
    if (!strcmp(path, folder) || !strcmp(path, state) ||
        !strcmp(path, config)) {
        return true;
    }
    if (op->op == CHECKPOINT_OPERATION_DELETE) {
        return deleted_leftover(dir, m, path);
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

void checkpoint_manifest_drop(CheckpointManifest *m, const char *id)
{
    CheckpointManifestEntryList **p = &m->checkpoints, *l;
    g_autofree char *parent = NULL;

    while (*p && strcmp((*p)->value->id, id)) {
        p = &(*p)->next;
    }
    if (!*p) {
        return;
    }
    parent = g_strdup((*p)->value->parent);
    for (l = m->checkpoints; l; l = l->next) {
        if (!g_strcmp0(l->value->parent, id)) {
            g_free(l->value->parent);
            l->value->parent = g_strdup(parent);
        }
    }
    if (!g_strcmp0(m->current, id)) {
        g_free(m->current);
        m->current = g_strdup(parent);
    }
    l = *p;
    *p = l->next;
    l->next = NULL;
    qapi_free_CheckpointManifestEntryList(l);
}

static void manifest_drop(CheckpointManifest *m, CheckpointManifestEntry *e)
{
    checkpoint_manifest_drop(m, e->id);
}

/* The state file and configuration copy of @e, then their folder */
static void remove_files_of(const char *dir, CheckpointManifestEntry *e)
{
    const char *own[] = { e->state_file, e->config_file };
    g_autofree char *folder = NULL;
    int i;

    for (i = 0; i < ARRAY_SIZE(own); i++) {
        g_autofree char *path = own[i] ? g_build_filename(dir, own[i], NULL)
                                       : NULL;

        if (path && path_has_no_link(path)) {
            remove_leftover(path);
        }
        if (path && !folder) {
            folder = g_path_get_dirname(path);
        }
    }
    if (folder && strcmp(folder, dir) && path_has_no_link(folder)) {
        remove_leftover(folder);
    }
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

    checkpoint_merge_recover(dir, m);
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
        remove_files_of(dir, e);
        manifest_drop(m, e);
    }
}

static void schedule_merges_bh(void *opaque)
{
    checkpoint_merge_schedule(NULL, NULL);
}

/*
 * The configuration the VM runs with, once its devices exist; not from
 * a QEMU that manages a stopped VM's store, whose command line is not
 * the VM's
 */
static bool write_config(const char *dir, Error **errp)
{
    if (!phase_check(PHASE_MACHINE_READY) || checkpoint_offline()) {
        return true;
    }
    return checkpoint_config_write_store(dir, errp);
}

/* Open (or create) the store in @dir; replaces the current one */
bool checkpoint_store_open(const char *dir, Error **errp)
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
    if (store.dir && !strcmp(abs, store.dir)) {
        return true;
    }
    if (store.manifest && store.manifest->checkpoints) {
        error_setg(errp, "The VM has checkpoints in '%s'; the checkpoint"
                   " folder can change only while there are none",
                   store.dir);
        return false;
    }
    m = checkpoint_manifest_load(abs, errp);
    if (!m) {
        return false;
    }
    if (phase_check(PHASE_MACHINE_READY) && !checkpoint_offline() &&
        !check_disks(abs, m, &local_err)) {
        error_propagate(errp, local_err);
        qapi_free_CheckpointManifest(m);
        return false;
    }
    recover(abs, m);
    /* Mark the folder as a store, and check that it is writable */
    if (!checkpoint_manifest_save(abs, m, errp) ||
        !write_config(abs, errp)) {
        qapi_free_CheckpointManifest(m);
        return false;
    }
    qapi_free_CheckpointManifest(store.manifest);
    store.manifest = m;
    g_free(store.dir);
    store.dir = g_steal_pointer(&abs);
    if (phase_check(PHASE_MACHINE_READY)) {
        checkpoint_guard_frozen_images();
    }
    /*
     * The merges of deleted checkpoints that a stopped QEMU left: from
     * the main loop, once the VM is set up
     */
    aio_bh_schedule_oneshot(qemu_get_aio_context(), schedule_merges_bh,
                            NULL);
    return true;
}

CheckpointManifestEntry *checkpoint_store_find(const char *key,
                                               Error **errp)
{
    CheckpointManifestEntry *found = NULL;
    CheckpointManifestEntryList *l;

    if (!store.manifest) {
        error_setg(errp, "No checkpoint store is set (-checkpoints dir=DIR"
                   " or checkpoint-set-parameters)");
        return NULL;
    }
    for (l = store.manifest->checkpoints; l; l = l->next) {
        if (!strcmp(l->value->id, key)) {
            return l->value;
        }
    }
    for (l = store.manifest->checkpoints; l; l = l->next) {
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

/* Record operation @op on checkpoint @id making @new_files (taken over) */
static void set_operation(CheckpointOperation op, const char *id,
                          strList *new_files)
{
    CheckpointManifestOperation *o = g_new0(CheckpointManifestOperation, 1);

    o->op = op;
    o->checkpoint = g_strdup(id);
    o->new_files = new_files;
    qapi_free_CheckpointManifestOperation(store.manifest->operation);
    store.manifest->operation = o;
}

bool checkpoint_store_add(CheckpointManifestEntry *e,
                          CheckpointManifestDiskList *active,
                          strList *new_files, Error **errp)
{
    CheckpointManifestEntryList **tail = &store.manifest->checkpoints;

    while (*tail) {
        tail = &(*tail)->next;
    }
    e->parent = g_strdup(store.manifest->current);
    QAPI_LIST_APPEND(tail, e);
    g_free(store.manifest->current);
    store.manifest->current = g_strdup(e->id);
    qapi_free_CheckpointManifestDiskList(store.manifest->active);
    store.manifest->active = active;
    qapi_free_CheckpointManifestOperation(store.manifest->operation);
    store.manifest->operation = NULL;
    if (new_files) {
        set_operation(CHECKPOINT_OPERATION_CREATE, e->id, new_files);
    }
    return checkpoint_manifest_save(store.dir, store.manifest, errp);
}

/* Forget the recorded operation if it is about checkpoint @id */
static void end_operation_of(const char *id)
{
    CheckpointManifestOperation *op = store.manifest->operation;

    if (op && !strcmp(op->checkpoint, id)) {
        qapi_free_CheckpointManifestOperation(op);
        store.manifest->operation = NULL;
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
    CheckpointManifestEntry *e = checkpoint_manifest_entry(store.manifest, id);

    if (!e) {
        error_setg(errp, "Checkpoint %s is no longer in the tree", id);
        return false;
    }
    if (state == CHECKPOINT_STATE_READY && !record_identities(e, errp)) {
        return false;
    }
    e->state = state;
    end_operation_of(id);
    return checkpoint_manifest_save(store.dir, store.manifest, errp);
}

bool checkpoint_store_drop(const char *id, Error **errp)
{
    CheckpointManifestEntry *e = checkpoint_manifest_entry(store.manifest, id);

    if (e) {
        manifest_drop(store.manifest, e);
    }
    end_operation_of(id);
    return checkpoint_manifest_save(store.dir, store.manifest, errp);
}

bool checkpoint_store_begin_create(const char *id,
                                   CheckpointManifestDiskList *active,
                                   strList *new_files, Error **errp)
{
    CheckpointManifestDiskList *old_active = store.manifest->active;

    store.manifest->active = active;
    set_operation(CHECKPOINT_OPERATION_CREATE, id, new_files);
    if (!checkpoint_store_save(errp)) {
        qapi_free_CheckpointManifestDiskList(active);
        store.manifest->active = old_active;
        qapi_free_CheckpointManifestOperation(store.manifest->operation);
        store.manifest->operation = NULL;
        return false;
    }
    qapi_free_CheckpointManifestDiskList(old_active);
    return true;
}

void checkpoint_store_abort_create(CheckpointManifestDiskList *old_active)
{
    qapi_free_CheckpointManifestDiskList(store.manifest->active);
    store.manifest->active = old_active;
    checkpoint_store_end_operation();
}

bool checkpoint_store_unadd(const char *id,
                            CheckpointManifestDiskList *old_active,
                            strList *new_files, Error **errp)
{
    CheckpointManifestEntry *e = checkpoint_manifest_entry(store.manifest, id);

    if (e) {
        manifest_drop(store.manifest, e);
    }
    qapi_free_CheckpointManifestDiskList(store.manifest->active);
    store.manifest->active = old_active;
    set_operation(CHECKPOINT_OPERATION_CREATE, id, new_files);
    return checkpoint_store_save(errp);
}

bool checkpoint_store_is_frozen(const char *filename)
{
    CheckpointManifestEntryList *l;
    CheckpointManifestDiskList *d;

    for (l = store.manifest ? store.manifest->checkpoints : NULL; l;
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
    CheckpointManifest *m = store.manifest;
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
    return store.manifest;
}

CheckpointManifest *checkpoint_store_manifest_copy(void)
{
    return store.manifest ? QAPI_CLONE(CheckpointManifest, store.manifest)
                          : NULL;
}


bool checkpoint_store_begin_operation(CheckpointOperation op,
                                      const char *id, strList *new_files,
                                      Error **errp)
{
    set_operation(op, id, new_files);
    if (!checkpoint_store_save(errp)) {
        qapi_free_CheckpointManifestOperation(store.manifest->operation);
        store.manifest->operation = NULL;
        return false;
    }
    return true;
}

void checkpoint_store_end_operation(void)
{
    Error *local_err = NULL;

    qapi_free_CheckpointManifestOperation(store.manifest->operation);
    store.manifest->operation = NULL;
    if (!checkpoint_store_save(&local_err)) {
        error_report_err(local_err);
    }
}

bool checkpoint_store_drop_list(strList *ids, Error **errp)
{
    strList *l;

    for (l = ids; l; l = l->next) {
        CheckpointManifestEntry *e =
            checkpoint_manifest_entry(store.manifest, l->value);

        if (e) {
            manifest_drop(store.manifest, e);
        }
        end_operation_of(l->value);
    }
    return checkpoint_store_save(errp);
}

bool checkpoint_store_rename(const char *id, const char *name, Error **errp)
{
    CheckpointManifestEntry *e = checkpoint_manifest_entry(store.manifest, id);
    char *old;

    if (!e) {
        error_setg(errp, "Checkpoint %s is no longer in the tree", id);
        return false;
    }
    old = e->name;
    e->name = g_strdup(name);
    if (!checkpoint_store_save(errp)) {
        g_free(e->name);
        e->name = old;
        return false;
    }
    g_free(old);
    return true;
}

/* Every image record of the store: the checkpoints' and "Now"'s */
static GPtrArray *all_records(void)
{
    GPtrArray *out = g_ptr_array_new();
    CheckpointManifestEntryList *l;
    CheckpointManifestDiskList *dl;

    for (l = store.manifest->checkpoints; l; l = l->next) {
        for (dl = l->value->disks; dl; dl = dl->next) {
            g_ptr_array_add(out, dl->value);
        }
    }
    for (dl = store.manifest->active; dl; dl = dl->next) {
        g_ptr_array_add(out, dl->value);
    }
    return out;
}

bool checkpoint_store_relink(const char *child, const char *before,
                             const char *old_parent, const char *new_parent,
                             Error **errp)
{
    g_autoptr(GPtrArray) recs = all_records();
    guint i;

    for (i = 0; i < recs->len; i++) {
        CheckpointManifestDisk *d = g_ptr_array_index(recs, i);

        if (before && d->identity && !strcmp(d->identity, before) &&
            checkpoint_same_path(d->filename, child)) {
            g_free(d->identity);
            d->identity = checkpoint_image_identity(d->filename, d->format,
                                                    NULL);
        }
        if (checkpoint_same_path(d->filename, old_parent)) {
            g_free(d->filename);
            d->filename = g_strdup(new_parent);
        }
    }
    return checkpoint_store_save(errp);
}

bool checkpoint_store_reconnect(const char *filename, Error **errp)
{
    g_autoptr(GPtrArray) recs = all_records();
    guint i;

    for (i = 0; i < recs->len; i++) {
        CheckpointManifestDisk *d = g_ptr_array_index(recs, i);

        if (d->identity && checkpoint_same_path(d->filename, filename)) {
            char *now = checkpoint_image_identity(d->filename, d->format,
                                                  errp);
            if (!now) {
                return false;
            }
            g_free(d->identity);
            d->identity = now;
        }
    }
    return checkpoint_store_save(errp);
}

/* Replace the store's manifest by @m if it can be saved */
static bool save_instead(CheckpointManifest *m, Error **errp)
{
    if (!checkpoint_manifest_save(store.dir, m, errp)) {
        qapi_free_CheckpointManifest(m);
        return false;
    }
    qapi_free_CheckpointManifest(store.manifest);
    store.manifest = m;
    return true;
}

bool checkpoint_store_delete(strList *ids, strList *stale, Error **errp)
{
    CheckpointManifest *m = QAPI_CLONE(CheckpointManifest, store.manifest);
    CheckpointManifestOperation *o = g_new0(CheckpointManifestOperation, 1);
    strList *l;

    for (l = ids; l; l = l->next) {
        checkpoint_manifest_drop(m, l->value);
    }
    o->op = CHECKPOINT_OPERATION_DELETE;
    o->checkpoint = g_strdup(ids->value);
    o->stale_files = stale;
    o->has_stale_files = stale != NULL;
    qapi_free_CheckpointManifestOperation(m->operation);
    m->operation = o;
    return save_instead(m, errp);
}

bool checkpoint_store_set_merge(CheckpointManifestMerge *merge,
                                Error **errp)
{
    CheckpointManifest *m = QAPI_CLONE(CheckpointManifest, store.manifest);

    qapi_free_CheckpointManifestMerge(m->merge);
    m->merge = merge;
    return save_instead(m, errp);
}

bool checkpoint_store_pivot(const char *old, const char *image,
                            CheckpointManifestMerge *merge, Error **errp)
{
    CheckpointManifest *m = QAPI_CLONE(CheckpointManifest, store.manifest);

    checkpoint_manifest_replace_image(m, old, image, NULL);
    qapi_free_CheckpointManifestMerge(m->merge);
    m->merge = merge;
    return save_instead(m, errp);
}

static bool in_str_list(strList *l, const char *s)
{
    for (; l; l = l->next) {
        if (checkpoint_same_path(l->value, s)) {
            return true;
        }
    }
    return false;
}

void checkpoint_manifest_replace_image(CheckpointManifest *m,
                                       const char *old, const char *image,
                                       strList *relinked)
{
    CheckpointManifestEntryList *l;
    CheckpointManifestDiskList *dl;
    g_autoptr(GPtrArray) recs = g_ptr_array_new();
    guint i;

    for (l = m->checkpoints; l; l = l->next) {
        for (dl = l->value->disks; dl; dl = dl->next) {
            g_ptr_array_add(recs, dl->value);
        }
    }
    for (dl = m->active; dl; dl = dl->next) {
        g_ptr_array_add(recs, dl->value);
    }
    for (i = 0; i < recs->len; i++) {
        CheckpointManifestDisk *d = g_ptr_array_index(recs, i);
        bool moved = checkpoint_same_path(d->filename, old);

        if (moved) {
            g_free(d->filename);
            d->filename = g_strdup(image);
        }
        if (d->identity && (moved || in_str_list(relinked, d->filename))) {
            g_free(d->identity);
            d->identity = checkpoint_image_identity(d->filename, d->format,
                                                    NULL);
        }
    }
}

bool checkpoint_store_replace_image(const char *old, const char *image,
                                    strList *relinked, Error **errp)
{
    checkpoint_manifest_replace_image(store.manifest, old, image, relinked);
    return checkpoint_store_save(errp);
}
