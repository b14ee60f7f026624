/*
 * Hyper-V-style checkpoints: export (Export-VMCheckpoint)
 *
 * Copyright (c) 2026 The Hyper-V checkpoints project
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 *
 * An export writes a standalone VM as of a checkpoint into an empty
 * folder: per disk one image with the checkpoint's content (the chain
 * read at the frozen image, no parent), the state file and the
 * configuration, and a store of its own whose manifest names its
 * images relative to the folder, with an empty differencing child of
 * each image as the active one and the checkpoint as "Now"'s parent.
 * The export's config.json asks the starter to apply the checkpoint, so
 * that the new VM goes on from the checkpoint's instant (a production
 * checkpoint: boots from its disks).
 *
 * It only reads frozen images and the checkpoint's files, while the VM
 * runs: merges wait and deletes are refused meanwhile, so that nothing
 * it reads changes.  What it wrote is listed as it is made, and removed
 * again if it fails or is cancelled.
 */

#include "qemu/osdep.h"
#include "qemu/cutils.h"
#include "qemu/units.h"
#include "qemu/error-report.h"
#include "qemu/uuid.h"
#include "qapi/error.h"
#include "qapi/clone-visitor.h"
#include "qapi/qapi-commands-checkpoint.h"
#include "qapi/qapi-events-checkpoint.h"
#include "qapi/qapi-visit-checkpoint.h"
#include "qobject/qdict.h"
#include "block/block-global-state.h"
#include "block/block-io.h"
#include "block/thread-pool.h"
#include "system/block-backend.h"
#include "checkpoint.h"

#define EXPORT_CHUNK (1 * MiB)
#define ZERO_GRAIN (64 * KiB)
#define MERGE_POLL_NS (100 * SCALE_MS)

typedef struct ExportDisk {
    char *device;
    char *src;              /* the checkpoint's frozen image */
    char *src_format;
    char *format;           /* of the export */
    char *image;            /* the flattened image, in the folder */
    char *child;            /* its empty child, the export's active */
    int64_t size;
    BlockBackend *from;
    BlockBackend *to;
} ExportDisk;

typedef struct ExportJob {
    Job common;
    char *dir;
    /* The folders the export created: @made_dir up to @made_top */
    char *made_dir;
    char *made_top;
    CheckpointManifestEntry *entry;     /* a copy of the checkpoint's */
    char *state_src;                    /* NULL: production */
    char *config_src;
    GPtrArray *disks;                   /* ExportDisk */
    /* Files and folders written, removed in reverse order on failure */
    GPtrArray *written;
    Error *err;                         /* of a step in the main loop */
} ExportJob;

static int exports_running;

bool checkpoint_exporting(void)
{
    return exports_running > 0;
}

static void export_disk_free(gpointer p)
{
    ExportDisk *d = p;

    g_free(d->device);
    g_free(d->src);
    g_free(d->src_format);
    g_free(d->format);
    g_free(d->image);
    g_free(d->child);
    if (d->from) {
        blk_unref(d->from);
    }
    if (d->to) {
        blk_unref(d->to);
    }
    g_free(d);
}

/* The planning, before the job starts */

/* The topmost of the folders of @path that do not exist yet */
static char *topmost_missing(const char *path)
{
    g_autofree char *top = NULL;
    char *cur = g_strdup(path);

    while (!g_file_test(cur, G_FILE_TEST_EXISTS)) {
        char *up = g_path_get_dirname(cur);

        g_free(top);
        top = cur;
        cur = up;
    }
    g_free(cur);
    return g_steal_pointer(&top);
}

/* Remove the folders the export created, the deepest first */
static void remove_made_dirs(ExportJob *s)
{
    g_autofree char *cur = g_strdup(s->made_dir);

    while (cur && rmdir(cur) == 0 && strcmp(cur, s->made_top)) {
        char *up = g_path_get_dirname(cur);

        g_free(cur);
        cur = up;
    }
}

/* Create the missing folders of @abs, remembering which */
static bool make_dirs(ExportJob *s, const char *abs, Error **errp)
{
    s->made_top = topmost_missing(abs);
    if (!s->made_top) {
        return true;
    }
    s->made_dir = g_strdup(abs);
    if (g_mkdir_with_parents(abs, 0700) < 0) {
        error_setg_errno(errp, errno, "Cannot create export folder '%s'",
                         abs);
        remove_made_dirs(s);
        return false;
    }
    return true;
}

/* An existing folder must be empty; a missing one is created */
static bool prepare_dir(ExportJob *s, const char *dir, Error **errp)
{
    g_autofree char *abs = NULL;
    g_autoptr(GError) gerr = NULL;
    GDir *d;
    bool empty;

    if (!*dir) {
        error_setg(errp, "The export folder name is empty");
        return false;
    }
    abs = g_canonicalize_filename(dir, NULL);
    if (!make_dirs(s, abs, errp)) {
        return false;
    }
    d = g_dir_open(dir, 0, &gerr);
    if (!d) {
        error_setg(errp, "Cannot use export folder '%s': %s", dir,
                   gerr->message);
        return false;
    }
    empty = !g_dir_read_name(d);
    g_dir_close(d);
    if (!empty) {
        error_setg(errp, "Export folder '%s' is not empty: an export goes"
                   " into an empty or new folder", dir);
        return false;
    }
    s->dir = realpath(dir, NULL);
    if (!s->dir) {
        error_setg_errno(errp, errno, "Cannot use export folder '%s'", dir);
        return false;
    }
    return true;
}

/* A file name from device name @device: what a folder can hold */
static char *file_base(const char *device)
{
    char *base = g_strdup(device);
    char *p;

    for (p = base; *p; p++) {
        if (!g_ascii_isalnum(*p) && *p != '-' && *p != '.') {
            *p = '_';
        }
    }
    return base;
}

static void plan_disk(ExportJob *s, CheckpointManifestDisk *md,
                      const char *format, const char *child_id,
                      GHashTable *taken)
{
    ExportDisk *d = g_new0(ExportDisk, 1);
    g_autofree char *base = file_base(md->device);
    g_autofree char *name = g_strdup_printf("%s.%s", base, format);
    int n = 1;

    while (g_hash_table_contains(taken, name) || name[0] == '.') {
        g_free(name);
        name = g_strdup_printf("%s-%d.%s", base, n++, format);
    }
    g_hash_table_add(taken, g_strdup(name));
    d->device = g_strdup(md->device);
    d->src = g_strdup(md->filename);
    d->src_format = g_strdup(md->format);
    d->format = g_strdup(format);
    d->image = g_build_filename(s->dir, name, NULL);
    d->child = checkpoint_child_name(d->image, child_id,
                                     strcmp(format, "vhdx") ? "qcow2"
                                                            : "avhdx");
    g_ptr_array_add(s->disks, d);
}

static void plan_disks(ExportJob *s, bool has_format,
                       CheckpointExportFormat format)
{
    g_autoptr(GHashTable) taken = g_hash_table_new_full(g_str_hash,
                                                        g_str_equal,
                                                        g_free, NULL);
    CheckpointManifestDiskList *l;
    QemuUUID uuid;
    g_autofree char *child_id = NULL;

    qemu_uuid_generate(&uuid);
    child_id = qemu_uuid_unparse_strdup(&uuid);
    for (l = s->entry->disks; l; l = l->next) {
        plan_disk(s, l->value, has_format ? CheckpointExportFormat_str(format)
                                          : l->value->format,
                  child_id, taken);
    }
}

/* The checkpoint's configuration copy, else the VM's */
static char *config_source(CheckpointManifestEntry *e)
{
    const char *dir = checkpoint_store_dir();
    char *path;

    if (e->config_file) {
        path = g_build_filename(dir, e->config_file, NULL);
        if (g_file_test(path, G_FILE_TEST_EXISTS)) {
            return path;
        }
        g_free(path);
    }
    return g_build_filename(dir, CHECKPOINT_CONFIG_NAME, NULL);
}

/* The job: open, copy, then write the store */

static void note_written(ExportJob *s, const char *path)
{
    g_ptr_array_add(s->written, g_strdup(path));
}

static BlockBackend *open_source(ExportDisk *d, Error **errp)
{
    BlockDriverState *bs = checkpoint_open_chain(d->src, d->src_format,
                                                 false, errp);
    BlockBackend *blk;

    if (!bs) {
        return NULL;
    }
    blk = blk_new(qemu_get_aio_context(), BLK_PERM_CONSISTENT_READ,
                  BLK_PERM_ALL);
    if (blk_insert_bs(blk, bs, errp) < 0) {
        blk_unref(blk);
        blk = NULL;
    }
    bdrv_unref(bs);
    return blk;
}

/* Open the frozen image and make its standalone copy, empty */
static bool open_disk(ExportJob *s, ExportDisk *d, Error **errp)
{
    Error *local_err = NULL;
    QDict *opts;

    d->from = open_source(d, errp);
    if (!d->from) {
        return false;
    }
    d->size = blk_getlength(d->from);
    if (d->size < 0) {
        error_setg_errno(errp, -d->size, "Cannot get the size of '%s'",
                         d->src);
        return false;
    }
    /* Listed first: a create that fails half-way leaves a file too */
    note_written(s, d->image);
    bdrv_img_create(d->image, d->format, NULL, NULL, NULL, d->size, 0, true,
                    &local_err);
    if (local_err) {
        error_propagate(errp, local_err);
        return false;
    }
    opts = qdict_new();
    qdict_put_str(opts, "driver", d->format);
    d->to = blk_new_open(d->image, NULL, opts, BDRV_O_RDWR, errp);
    return d->to != NULL;
}

static void open_bh(void *opaque)
{
    ExportJob *s = opaque;
    int i;

    for (i = 0; i < s->disks->len && !s->err; i++) {
        ExportDisk *d = g_ptr_array_index(s->disks, i);

        if (open_disk(s, d, &s->err)) {
            job_progress_increase_remaining(&s->common, d->size);
        }
    }
}

static void close_bh(void *opaque)
{
    ExportJob *s = opaque;
    int i;

    for (i = 0; i < s->disks->len; i++) {
        ExportDisk *d = g_ptr_array_index(s->disks, i);

        g_clear_pointer(&d->from, blk_unref);
        g_clear_pointer(&d->to, blk_unref);
    }
}

/*
 * Write the parts of @buf ([@off, @off + @bytes) of the disk) that are
 * not zeros: a vhdx block is allocated whole (32 MiB by default) and
 * reads zeros where it was never written, which the copy keeps sparse
 */
static int coroutine_fn write_nonzero(ExportDisk *d, int64_t off,
                                      int64_t bytes, uint8_t *buf)
{
    int64_t start = -1, pos, len;

    /* One more round at @bytes (len 0) writes the last run */
    for (pos = 0; pos <= bytes; pos += MAX(len, 1)) {
        bool data;

        len = MIN(ZERO_GRAIN, bytes - pos);
        data = len > 0 && !buffer_is_zero(buf + pos, len);

        if (data && start < 0) {
            start = pos;
        } else if (!data && start >= 0) {
            int ret = blk_co_pwrite(d->to, off + start, pos - start,
                                    buf + start, 0);

            if (ret < 0) {
                return ret;
            }
            start = -1;
        }
    }
    return 0;
}

/*
 * Copy what the chain of @d holds into its standalone image: ranges
 * that read as zeros are left out (a new image reads zeros there)
 */
static int coroutine_fn copy_disk(ExportJob *s, ExportDisk *d)
{
    g_autofree uint8_t *buf = blk_blockalign(d->from, EXPORT_CHUNK);
    int64_t off, pnum;
    int ret = 0;

    for (off = 0; off < d->size; off += pnum) {
        if (job_is_cancelled(&s->common)) {
            return -ECANCELED;
        }
        ret = blk_co_block_status_above(d->from, NULL, off,
                                        MIN(d->size - off, EXPORT_CHUNK),
                                        &pnum, NULL, NULL);
        if (ret < 0) {
            return ret;
        }
        if ((ret & BDRV_BLOCK_ALLOCATED) && !(ret & BDRV_BLOCK_ZERO)) {
            ret = blk_co_pread(d->from, off, pnum, buf, 0);
            if (ret >= 0) {
                ret = write_nonzero(d, off, pnum, buf);
            }
            if (ret < 0) {
                return ret;
            }
        }
        job_progress_update(&s->common, pnum);
        job_pause_point(&s->common);
    }
    return blk_co_flush(d->to);
}

typedef struct FileCopy {
    const char *src;
    const char *dst;
    int err;
} FileCopy;

/* Copy the data extents of one file into a new one (thread pool) */
static int copy_file_extents(int in, int out, off_t size, char *buf)
{
    off_t data = 0, hole;
    ssize_t n;

    while (data < size) {
        data = lseek(in, data, SEEK_DATA);
        if (data < 0) {
            return errno == ENXIO ? 0 : -errno;
        }
        hole = lseek(in, data, SEEK_HOLE);
        if (hole < 0) {
            return -errno;
        }
        for (; data < hole; data += n) {
            n = pread(in, buf, MIN(hole - data, EXPORT_CHUNK), data);
            if (n <= 0) {
                return n < 0 ? -errno : -EIO;
            }
            if (pwrite(out, buf, n, data) != n) {
                return errno ? -errno : -ENOSPC;
            }
        }
    }
    return 0;
}

static int copy_file_work(void *opaque)
{
    FileCopy *c = opaque;
    g_autofree char *buf = g_malloc(EXPORT_CHUNK);
    struct stat st;
    int in, out, ret;

    in = open(c->src, O_RDONLY | O_CLOEXEC);
    if (in < 0) {
        return -errno;
    }
    out = open(c->dst, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (out < 0) {
        ret = -errno;
        close(in);
        return ret;
    }
    ret = fstat(in, &st) < 0 ? -errno : 0;
    if (!ret) {
        errno = 0;
        ret = copy_file_extents(in, out, st.st_size, buf);
    }
    if (!ret && (ftruncate(out, st.st_size) < 0 || qemu_fdatasync(out) < 0)) {
        ret = -errno;
    }
    close(in);
    if (close(out) < 0 && !ret) {
        ret = -errno;
    }
    return ret;
}

/* The checkpoint's folder in the export: state file and configuration */
static int coroutine_fn copy_state(ExportJob *s, Error **errp)
{
    g_autofree char *folder = g_build_filename(s->dir, s->entry->id, NULL);
    g_autofree char *dst = NULL;
    FileCopy c;
    int ret;

    if (g_mkdir_with_parents(folder, 0700) < 0) {
        ret = -errno;
        error_setg_errno(errp, -ret, "Cannot create '%s'", folder);
        return ret;
    }
    note_written(s, folder);
    if (!s->state_src) {
        return 0;
    }
    dst = g_build_filename(folder, "state", NULL);
    note_written(s, dst);
    c = (FileCopy) { .src = s->state_src, .dst = dst };
    ret = thread_pool_submit_co(copy_file_work, &c);
    if (ret < 0) {
        error_setg_errno(errp, -ret, "Cannot copy the state file '%s' to"
                         " '%s'", s->state_src, dst);
    }
    return ret;
}

/* The empty child of each image, named relative to it (movable) */
static bool make_children(ExportJob *s, Error **errp)
{
    Error *local_err = NULL;
    int i;

    for (i = 0; i < s->disks->len; i++) {
        ExportDisk *d = g_ptr_array_index(s->disks, i);
        g_autofree char *parent = g_path_get_basename(d->image);

        note_written(s, d->child);
        bdrv_img_create(d->child, d->format, parent, d->format, NULL,
                        d->size, BDRV_O_NO_BACKING, true, &local_err);
        if (local_err) {
            error_propagate(errp, local_err);
            return false;
        }
    }
    return true;
}

/*
 * The configuration: the checkpoint's, with the checkpoint to apply
 * when the export is started; in the store folder and in the
 * checkpoint's
 */
static bool write_config(ExportJob *s, Error **errp)
{
    g_autoptr(CheckpointConfig) c = checkpoint_config_load(s->config_src,
                                                           errp);
    g_autofree char *top = g_build_filename(s->dir, CHECKPOINT_CONFIG_NAME,
                                            NULL);
    g_autofree char *own = g_build_filename(s->dir, s->entry->id,
                                            CHECKPOINT_CONFIG_NAME, NULL);

    if (!c) {
        error_prepend(errp, "The checkpoint has no configuration to export:"
                      " ");
        return false;
    }
    g_free(c->resume_checkpoint);
    c->resume_checkpoint = g_strdup(s->entry->id);
    note_written(s, own);
    if (!checkpoint_config_save(own, c, false, errp)) {
        return false;
    }
    note_written(s, top);
    return checkpoint_config_save(top, c, false, errp);
}

/* A disk record of the export: its file named relative to the folder */
static CheckpointManifestDisk *export_record(ExportDisk *d, const char *path)
{
    CheckpointManifestDisk *md = g_new0(CheckpointManifestDisk, 1);

    md->device = g_strdup(d->device);
    md->format = g_strdup(d->format);
    md->filename = g_path_get_basename(path);
    return md;
}

/*
 * The export's manifest: the checkpoint as a root, "Now" under it on
 * the empty children.  A vhdx image's identity (its DataWriteGuid)
 * travels with it; a qcow2 one's (file time and size) would not survive
 * a copy of the folder, so it is left out.
 */
static bool write_manifest(ExportJob *s, Error **errp)
{
    g_autoptr(CheckpointManifest) m = g_new0(CheckpointManifest, 1);
    CheckpointManifestEntry *e = QAPI_CLONE(CheckpointManifestEntry,
                                            s->entry);
    CheckpointManifestDiskList **dtail, **atail = &m->active;
    g_autofree char *manifest = g_build_filename(s->dir,
                                                 CHECKPOINT_MANIFEST_NAME,
                                                 NULL);
    int i;

    g_clear_pointer(&e->parent, g_free);
    qapi_free_CheckpointManifestDiskList(e->disks);
    e->disks = NULL;
    dtail = &e->disks;
    g_free(e->state_file);
    e->state_file = s->state_src ? g_build_filename(e->id, "state", NULL)
                                 : NULL;
    g_free(e->config_file);
    e->config_file = g_build_filename(e->id, CHECKPOINT_CONFIG_NAME, NULL);
    for (i = 0; i < s->disks->len; i++) {
        ExportDisk *d = g_ptr_array_index(s->disks, i);
        CheckpointManifestDisk *md = export_record(d, d->image);

        if (!strcmp(d->format, "vhdx")) {
            md->identity = checkpoint_image_identity(d->image, "vhdx", errp);
            if (!md->identity) {
                qapi_free_CheckpointManifestDisk(md);
                qapi_free_CheckpointManifestEntry(e);
                return false;
            }
        }
        QAPI_LIST_APPEND(dtail, md);
        QAPI_LIST_APPEND(atail, export_record(d, d->child));
    }
    m->version = CHECKPOINT_MANIFEST_VERSION;
    m->current = g_strdup(e->id);
    QAPI_LIST_PREPEND(m->checkpoints, e);
    note_written(s, manifest);
    return checkpoint_manifest_save(s->dir, m, errp);
}

static void finish_bh(void *opaque)
{
    ExportJob *s = opaque;

    if (make_children(s, &s->err) && write_config(s, &s->err)) {
        write_manifest(s, &s->err);
    }
}

/* Remove what the export wrote, newest first */
static void remove_written(ExportJob *s)
{
    int i;

    for (i = s->written->len - 1; i >= 0; i--) {
        const char *path = g_ptr_array_index(s->written, i);

        if (unlink(path) < 0 && errno == EISDIR) {
            rmdir(path);
        }
    }
    remove_made_dirs(s);
}

static int coroutine_fn export_copy(ExportJob *s, Error **errp)
{
    int i, ret = 0;

    checkpoint_main_call(open_bh, s);
    if (s->err) {
        error_propagate(errp, g_steal_pointer(&s->err));
        return -EIO;
    }
    for (i = 0; i < s->disks->len && ret >= 0; i++) {
        ExportDisk *d = g_ptr_array_index(s->disks, i);

        ret = copy_disk(s, d);
        if (ret < 0 && ret != -ECANCELED) {
            error_setg_errno(errp, -ret, "Cannot export '%s' to '%s'",
                             d->src, d->image);
        }
    }
    checkpoint_main_call(close_bh, s);
    return ret;
}

static int coroutine_fn export_run(Job *job, Error **errp)
{
    ExportJob *s = container_of(job, ExportJob, common);
    int ret;

    /* A merge that runs already rewrites links: let it end first */
    while (checkpoint_merge_running() && !job_is_cancelled(job)) {
        job_sleep_ns(job, MERGE_POLL_NS);
    }
    ret = job_is_cancelled(job) ? -ECANCELED : export_copy(s, errp);
    if (ret >= 0) {
        ret = copy_state(s, errp);
    }
    if (ret >= 0 && !job_is_cancelled(job)) {
        checkpoint_main_call(finish_bh, s);
        if (s->err) {
            error_propagate(errp, g_steal_pointer(&s->err));
            ret = -EIO;
        }
    }
    if (ret >= 0 && job_is_cancelled(job)) {
        ret = -ECANCELED;
    }
    return ret;
}

static void export_commit(Job *job)
{
    ExportJob *s = container_of(job, ExportJob, common);

    qapi_event_send_checkpoint_exported(s->entry->id, s->dir);
}

static void export_abort(Job *job)
{
    ExportJob *s = container_of(job, ExportJob, common);
    g_autofree char *why = NULL;

    remove_written(s);
    WITH_JOB_LOCK_GUARD() {
        why = g_strdup(job->err ? error_get_pretty(job->err)
                                : "the export was cancelled");
    }
    qapi_event_send_checkpoint_export_failed(s->entry->id, s->dir, why);
}

static void export_clean(Job *job)
{
    exports_running--;
}

static void free_dirs(ExportJob *s)
{
    g_free(s->dir);
    g_free(s->made_dir);
    g_free(s->made_top);
}

static void export_free(Job *job)
{
    ExportJob *s = container_of(job, ExportJob, common);

    free_dirs(s);
    qapi_free_CheckpointManifestEntry(s->entry);
    g_free(s->state_src);
    g_free(s->config_src);
    g_ptr_array_unref(s->disks);
    g_ptr_array_unref(s->written);
    error_free(s->err);
}

static const JobDriver export_job_driver = {
    .instance_size = sizeof(ExportJob),
    .job_type      = JOB_TYPE_CHECKPOINT_EXPORT,
    .run           = export_run,
    .commit        = export_commit,
    .abort         = export_abort,
    .clean         = export_clean,
    .free          = export_free,
};

/* The checks before anything is made */
static CheckpointManifestEntry *exportable(const char *checkpoint,
                                           Error **errp)
{
    CheckpointManifestEntry *e = checkpoint_store_find(checkpoint, errp);

    if (e && e->state != CHECKPOINT_STATE_READY) {
        error_setg(errp, "Checkpoint '%s' is still being created; it can be"
                   " exported once it is ready", e->name);
        return NULL;
    }
    if (e && e->type == CHECKPOINT_TYPE_STANDARD && !e->state_file) {
        error_setg(errp, "Checkpoint '%s' has no state file", e->name);
        return NULL;
    }
    return e;
}

CheckpointExportResult *qmp_checkpoint_export(const char *checkpoint,
                                              const char *dir,
                                              bool has_format,
                                              CheckpointExportFormat format,
                                              const char *job_id,
                                              Error **errp)
{
    CheckpointManifestEntry *e = exportable(checkpoint, errp);
    g_autofree char *default_id = NULL;
    CheckpointExportResult *r;
    ExportJob tmp = { 0 }, *s;

    if (!e || !prepare_dir(&tmp, dir, errp)) {
        remove_made_dirs(&tmp);
        free_dirs(&tmp);
        return NULL;
    }
    default_id = g_strdup_printf("checkpoint-export-%s", e->id);
    s = job_create(job_id ?: default_id, &export_job_driver, NULL,
                   qemu_get_aio_context(), JOB_DEFAULT, NULL, NULL, errp);
    if (!s) {
        remove_made_dirs(&tmp);
        free_dirs(&tmp);
        return NULL;
    }
    s->dir = tmp.dir;
    s->made_dir = tmp.made_dir;
    s->made_top = tmp.made_top;
    s->entry = QAPI_CLONE(CheckpointManifestEntry, e);
    s->state_src = e->state_file ?
        g_build_filename(checkpoint_store_dir(), e->state_file, NULL) : NULL;
    s->config_src = config_source(e);
    s->disks = g_ptr_array_new_with_free_func(export_disk_free);
    s->written = g_ptr_array_new_with_free_func(g_free);
    plan_disks(s, has_format, format);
    exports_running++;
    job_start(&s->common);
    r = g_new0(CheckpointExportResult, 1);
    r->job_id = g_strdup(s->common.id);
    return r;
}
