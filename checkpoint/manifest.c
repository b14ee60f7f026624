/*
 * Hyper-V-style checkpoints: the store's manifest
 *
 * Copyright (c) 2026 The Hyper-V checkpoints project
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 *
 * The manifest is JSON described by the QAPI type CheckpointManifest
 * (qapi/checkpoint.json) and the rules in FORMAT.md.  It is read and
 * written with QEMU's QObject visitors, so every field is type-checked
 * and unknown fields are refused.
 */

#include "qemu/osdep.h"
#include "qemu/uuid.h"
#include "block/thread-pool.h"
#include "qapi/error.h"
#include "qapi/qapi-visit-checkpoint.h"
#include "qapi/qobject-input-visitor.h"
#include "qapi/qobject-output-visitor.h"
#include "qobject/qjson.h"
#include "qobject/qobject.h"
#include "checkpoint.h"

CheckpointManifest *checkpoint_manifest_new(void)
{
    CheckpointManifest *m = g_new0(CheckpointManifest, 1);

    m->version = CHECKPOINT_MANIFEST_VERSION;
    return m;
}

bool checkpoint_name_valid(const char *name, Error **errp)
{
    glong len;

    if (!g_utf8_validate(name, -1, NULL)) {
        error_setg(errp, "A checkpoint name must be valid UTF-8");
        return false;
    }
    len = g_utf8_strlen(name, -1);
    if (len == 0) {
        error_setg(errp, "A checkpoint name must not be empty");
        return false;
    }
    if (len > CHECKPOINT_NAME_MAX) {
        error_setg(errp, "A checkpoint name can have at most %d characters,"
                   " this one has %ld", CHECKPOINT_NAME_MAX, len);
        return false;
    }
    return true;
}

/* A file of the store: relative, inside the store folder */
static bool store_path_valid(const char *what, const char *id,
                             const char *path, Error **errp)
{
    g_auto(GStrv) parts = NULL;
    int i;

    if (!*path || g_path_is_absolute(path)) {
        error_setg(errp, "checkpoint %s: %s '%s' must be a path relative"
                   " to the store folder", id, what, path);
        return false;
    }
    parts = g_strsplit(path, "/", -1);
    for (i = 0; parts[i]; i++) {
        if (!strcmp(parts[i], "..")) {
            error_setg(errp, "checkpoint %s: %s '%s' leaves the store"
                       " folder", id, what, path);
            return false;
        }
    }
    return true;
}

static bool disk_valid(const char *where, CheckpointManifestDisk *d,
                       Error **errp)
{
    if (!*d->device) {
        error_setg(errp, "%s: a disk has an empty device name", where);
        return false;
    }
    if (!*d->filename) {
        error_setg(errp, "%s: disk '%s' has an empty file name", where,
                   d->device);
        return false;
    }
    if (strcmp(d->format, "vhdx") && strcmp(d->format, "qcow2")) {
        error_setg(errp, "%s: disk '%s' has format '%s'; only vhdx and"
                   " qcow2 can be checkpointed", where, d->device,
                   d->format);
        return false;
    }
    return true;
}

static bool disks_valid(const char *where, CheckpointManifestDiskList *l,
                        Error **errp)
{
    g_autoptr(GHashTable) seen = g_hash_table_new(g_str_hash, g_str_equal);

    for (; l; l = l->next) {
        if (!disk_valid(where, l->value, errp)) {
            return false;
        }
        if (!g_hash_table_add(seen, l->value->device)) {
            error_setg(errp, "%s: disk '%s' is listed twice", where,
                       l->value->device);
            return false;
        }
    }
    return true;
}

bool checkpoint_leftover_name_valid(const char *path)
{
    g_autofree char *base = g_path_get_basename(path);
    g_auto(GStrv) parts = NULL;
    char *dot;
    size_t len;
    QemuUUID uuid;
    int i;

    if (!g_path_is_absolute(path)) {
        return false;
    }
    parts = g_strsplit(path, "/", -1);
    for (i = 0; parts[i]; i++) {
        if (!strcmp(parts[i], "..")) {
            return false;
        }
    }
    /* A state file or configuration copy, or the folder of a checkpoint */
    if (!strcmp(base, "state") || !strcmp(base, CHECKPOINT_CONFIG_NAME) ||
        qemu_uuid_parse(base, &uuid) == 0) {
        return true;
    }
    /* A differencing image "<disk>_<uuid>.<ext>" */
    dot = strrchr(base, '.');
    if (!dot) {
        return false;
    }
    *dot = '\0';
    len = strlen(base);
    return len > UUID_STR_LEN && base[len - UUID_STR_LEN] == '_' &&
           qemu_uuid_parse(base + len - UUID_STR_LEN + 1, &uuid) == 0;
}

/*
 * The files of a recorded operation are removed when the store is
 * opened: accept only names that checkpoints make, so that a forged
 * manifest cannot have QEMU delete other files.
 */
static bool files_valid(const char *what, strList *l, Error **errp)
{
    for (; l; l = l->next) {
        if (!checkpoint_leftover_name_valid(l->value)) {
            error_setg(errp, "the unfinished operation lists %s '%s', which"
                       " is not a file a checkpoint operation makes", what,
                       l->value);
            return false;
        }
    }
    return true;
}

static bool operation_valid(CheckpointManifestOperation *op, Error **errp)
{
    QemuUUID uuid;

    if (qemu_uuid_parse(op->checkpoint, &uuid) < 0) {
        error_setg(errp, "the unfinished operation names checkpoint '%s',"
                   " which is not a UUID", op->checkpoint);
        return false;
    }
    return files_valid("new file", op->new_files, errp) &&
           files_valid("replaced file", op->stale_files, errp);
}

/*
 * A recorded merge deletes the files it merged once nothing uses them:
 * the same names as an operation's, the images absolute
 */
static bool merge_valid(CheckpointManifestMerge *mg, Error **errp)
{
    int64_t layers = 0;
    strList *l;

    if (strcmp(mg->format, "vhdx") && strcmp(mg->format, "qcow2")) {
        error_setg(errp, "the merge in progress has format '%s'",
                   mg->format);
        return false;
    }
    if (!mg->images || !g_path_is_absolute(mg->top)) {
        error_setg(errp, "the merge in progress names no image, or a"
                   " relative one");
        return false;
    }
    for (l = mg->images; l; l = l->next) {
        layers++;
        if (!g_path_is_absolute(l->value)) {
            error_setg(errp, "the merge in progress names the relative"
                       " image '%s'", l->value);
            return false;
        }
    }
    /* One layer per image above the lowest, and @top */
    if (mg->has_copied_layers &&
        (mg->copied_layers < 0 || mg->copied_layers > layers)) {
        error_setg(errp, "the merge in progress has copied %" PRId64
                   " layers of %" PRId64, mg->copied_layers, layers);
        return false;
    }
    return true;
}

CheckpointManifestEntry *checkpoint_manifest_entry(CheckpointManifest *m,
                                                   const char *id)
{
    CheckpointManifestEntryList *l;

    for (l = m->checkpoints; id && l; l = l->next) {
        if (!strcmp(l->value->id, id)) {
            return l->value;
        }
    }
    return NULL;
}

bool checkpoint_manifest_validate(CheckpointManifest *m, Error **errp)
{
    g_autoptr(GHashTable) ids = g_hash_table_new(g_str_hash, g_str_equal);
    CheckpointManifestEntryList *l;
    QemuUUID uuid;

    if (m->version != CHECKPOINT_MANIFEST_VERSION) {
        error_setg(errp, "format version %" PRId64 " is not supported"
                   " (this QEMU reads version %d)", m->version,
                   CHECKPOINT_MANIFEST_VERSION);
        return false;
    }
    for (l = m->checkpoints; l; l = l->next) {
        CheckpointManifestEntry *e = l->value;
        g_autofree char *where = g_strdup_printf("checkpoint %s", e->id);
        Error *local_err = NULL;

        if (qemu_uuid_parse(e->id, &uuid) < 0) {
            error_setg(errp, "checkpoint id '%s' is not a UUID", e->id);
            return false;
        }
        if (g_hash_table_contains(ids, e->id)) {
            error_setg(errp, "checkpoint id %s is used twice", e->id);
            return false;
        }
        if (!checkpoint_name_valid(e->name, &local_err)) {
            error_propagate_prepend(errp, local_err, "checkpoint %s: ",
                                    e->id);
            return false;
        }
        /* Parents come first: this also rules out cycles */
        if (e->parent && !g_hash_table_contains(ids, e->parent)) {
            error_setg(errp, "checkpoint %s: parent %s is not listed before"
                       " it", e->id, e->parent);
            return false;
        }
        if (e->created < 0) {
            error_setg(errp, "checkpoint %s: negative creation time",
                       e->id);
            return false;
        }
        if (e->state_file &&
            !store_path_valid("state file", e->id, e->state_file, errp)) {
            return false;
        }
        if (e->config_file &&
            !store_path_valid("configuration file", e->id, e->config_file,
                              errp)) {
            return false;
        }
        if (e->type == CHECKPOINT_TYPE_STANDARD &&
            e->state == CHECKPOINT_STATE_READY && !e->state_file) {
            error_setg(errp, "checkpoint %s: a ready standard checkpoint"
                       " needs a state file", e->id);
            return false;
        }
        if (!disks_valid(where, e->disks, errp)) {
            return false;
        }
        g_hash_table_add(ids, e->id);
    }
    if (m->current && !g_hash_table_contains(ids, m->current)) {
        error_setg(errp, "the current checkpoint %s is not in the tree",
                   m->current);
        return false;
    }
    if (!disks_valid("active images", m->active, errp)) {
        return false;
    }
    if (m->operation && !operation_valid(m->operation, errp)) {
        return false;
    }
    if (m->merge && !merge_valid(m->merge, errp)) {
        return false;
    }
    return true;
}

static void resolve_relative(const char *dir, CheckpointManifestDiskList *l)
{
    for (; l; l = l->next) {
        if (!g_path_is_absolute(l->value->filename)) {
            char *path = g_canonicalize_filename(l->value->filename, dir);
            char *real = realpath(path, NULL);

            g_free(l->value->filename);
            l->value->filename = real ?: path;
            if (real) {
                g_free(path);
            }
        }
    }
}

/*
 * An export names its images relative to its folder, so that it can be
 * moved: they are made absolute here, and written back so
 */
static void resolve_relative_images(const char *dir, CheckpointManifest *m)
{
    CheckpointManifestEntryList *l;

    for (l = m->checkpoints; l; l = l->next) {
        resolve_relative(dir, l->value->disks);
    }
    resolve_relative(dir, m->active);
}

CheckpointManifest *checkpoint_manifest_load(const char *dir, Error **errp)
{
    g_autofree char *path = g_build_filename(dir, CHECKPOINT_MANIFEST_NAME,
                                             NULL);
    g_autofree char *text = NULL;
    g_autoptr(GError) gerr = NULL;
    CheckpointManifest *m = NULL;
    Error *local_err = NULL;
    QObject *obj;
    Visitor *v;

    if (!g_file_get_contents(path, &text, NULL, &gerr)) {
        if (g_error_matches(gerr, G_FILE_ERROR, G_FILE_ERROR_NOENT)) {
            return checkpoint_manifest_new();
        }
        error_setg(errp, "Cannot read checkpoint manifest: %s",
                   gerr->message);
        return NULL;
    }
    obj = qobject_from_json(text, &local_err);
    if (!obj) {
        if (!local_err) {
            error_setg(&local_err, "the file is empty");
        }
        goto fail;
    }
    v = qobject_input_visitor_new(obj);
    visit_type_CheckpointManifest(v, NULL, &m, &local_err);
    visit_free(v);
    qobject_unref(obj);
    if (!m) {
        goto fail;
    }
    if (!checkpoint_manifest_validate(m, &local_err)) {
        qapi_free_CheckpointManifest(m);
        goto fail;
    }
    resolve_relative_images(dir, m);
    return m;

fail:
    error_propagate_prepend(errp, local_err,
                            "Checkpoint manifest '%s' is not valid: ", path);
    return NULL;
}

static bool fsync_path(const char *path, int flags, Error **errp)
{
    int fd = qemu_open_old(path, flags);

    if (fd < 0) {
        error_setg_errno(errp, errno, "Cannot open '%s'", path);
        return false;
    }
    if (qemu_fdatasync(fd) < 0) {
        error_setg_errno(errp, errno, "Cannot flush '%s' to disk", path);
        close(fd);
        return false;
    }
    close(fd);
    return true;
}

bool checkpoint_sync_new_file(const char *path, Error **errp)
{
    g_autofree char *dir = g_path_get_dirname(path);

    return fsync_path(path, O_RDONLY, errp) &&
           fsync_path(dir, O_RDONLY | O_DIRECTORY, errp);
}

static int close_worker(void *opaque)
{
    close(GPOINTER_TO_INT(opaque));
    return 0;
}

int checkpoint_unlink(const char *path)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK | O_NOFOLLOW);
    struct stat st;
    int ret;

    if (fd >= 0 && (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode))) {
        close(fd);
        fd = -1;
    }
    ret = unlink(path);
    if (fd >= 0) {
        int saved_errno = errno;

        thread_pool_submit_aio(close_worker, GINT_TO_POINTER(fd), NULL, NULL);
        errno = saved_errno;
    }
    return ret;
}

/*
 * Write @len bytes of @buf as the whole content of @path and make them
 * durable.  O_TRUNC: a longer file that a killed QEMU left there must
 * not keep its tail.
 */
static bool write_durably(const char *path, const char *buf, size_t len,
                          Error **errp)
{
    int fd = qemu_create(path, O_WRONLY | O_TRUNC, 0600, errp);
    ssize_t n;

    if (fd < 0) {
        return false;
    }
    while (len) {
        n = write(fd, buf, len);
        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n <= 0) {
            error_setg_errno(errp, n < 0 ? errno : ENOSPC,
                             "Cannot write '%s'", path);
            close(fd);
            return false;
        }
        buf += n;
        len -= n;
    }
    if (qemu_fdatasync(fd) < 0) {
        error_setg_errno(errp, errno, "Cannot flush '%s' to disk", path);
        close(fd);
        return false;
    }
    if (close(fd) < 0) {
        error_setg_errno(errp, errno, "Cannot write '%s'", path);
        return false;
    }
    return true;
}

bool checkpoint_write_new_file(const char *path, const char *text,
                               size_t len, Error **errp)
{
    g_autofree char *dir = g_path_get_dirname(path);

    return write_durably(path, text, len, errp) &&
           fsync_path(dir, O_RDONLY | O_DIRECTORY, errp);
}

bool checkpoint_replace_file(const char *path, const char *text, size_t len,
                             Error **errp)
{
    g_autofree char *tmp = g_strconcat(path, ".tmp", NULL);
    g_autofree char *dir = g_path_get_dirname(path);

    /* Write a new file, make it durable, then rename it over the old */
    if (!write_durably(tmp, text, len, errp)) {
        unlink(tmp);
        return false;
    }
    if (rename(tmp, path) < 0) {
        error_setg_errno(errp, errno, "Cannot replace '%s'", path);
        unlink(tmp);
        return false;
    }
    return fsync_path(dir, O_RDONLY | O_DIRECTORY, errp);
}

GString *checkpoint_json_text(QObject *obj)
{
    GString *json = qobject_to_json_pretty(obj, true);

    qobject_unref(obj);
    g_string_append_c(json, '\n');
    return json;
}

bool checkpoint_manifest_save(const char *dir, CheckpointManifest *m,
                              Error **errp)
{
    g_autofree char *path = g_build_filename(dir, CHECKPOINT_MANIFEST_NAME,
                                             NULL);
    QObject *obj = NULL;
    GString *json;
    Visitor *v;
    bool ok;

    v = qobject_output_visitor_new(&obj);
    visit_type_CheckpointManifest(v, NULL, &m, &error_abort);
    visit_complete(v, &obj);
    visit_free(v);
    json = checkpoint_json_text(obj);

    ok = checkpoint_replace_file(path, json->str, json->len, errp);
    g_string_free(json, true);
    if (!ok) {
        error_prepend(errp, "Cannot write the checkpoint manifest: ");
    }
    return ok;
}
