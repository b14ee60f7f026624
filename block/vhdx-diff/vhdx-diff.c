/*
 * Differencing VHDX: opening a child, finding and checking its parent
 *
 * Copyright (c) 2026 The Hyper-V checkpoints project authors
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 *
 * QEMU's block layer opens backing files itself, after the driver's
 * .bdrv_open: this code only has to name the parent in bs->backing_file.
 * The identity checks MS-VHDX requires (the parent's DataWriteGuid equals
 * parent_linkage or parent_linkage2, same logical sector size) and the
 * virtual size check are done here by a short, read-only look at the
 * parent, so that a broken chain is refused at open time with a message
 * naming both files rather than at the first read.
 */

#include "qemu/osdep.h"
#include "qapi/error.h"
#include "qemu/cutils.h"
#include "qemu/memalign.h"
#include "qobject/qdict.h"
#include "block/block-io.h"
#include "block/block_int.h"
#include "vhdx-diff.h"

/* The metadata item size limit of MS-VHDX 2.6.1.2 */
#define VHDX_METADATA_ITEM_MAX  (1 * MiB)

static int GRAPH_RDLOCK
vhdx_diff_read_locator(BlockDriverState *bs, BDRVVHDXState *s,
                       VHDXParentLocator **locp, Error **errp)
{
    VHDXMetadataTableEntry *e = &s->metadata_entries.parent_locator_entry;
    g_autofree uint8_t *buf = NULL;
    Error *local_err = NULL;
    int ret;

    if (e->length == 0 || e->length > VHDX_METADATA_ITEM_MAX ||
        e->offset < VHDX_METADATA_TABLE_MAX_SIZE ||
        e->offset > s->metadata_rt.length ||
        e->length > s->metadata_rt.length - e->offset) {
        error_setg(errp, "'%s': parent locator item (offset %" PRIu32
                   ", length %" PRIu32 ") is outside the metadata region",
                   bs->filename, e->offset, e->length);
        return -EINVAL;
    }
    buf = g_malloc(e->length);
    ret = bdrv_pread(bs->file, s->metadata_rt.file_offset + e->offset,
                     e->length, buf, 0);
    if (ret < 0) {
        error_setg_errno(errp, -ret, "'%s': could not read the parent "
                         "locator", bs->filename);
        return ret;
    }
    *locp = vhdx_parent_locator_parse(buf, e->length, &local_err);
    if (!*locp) {
        error_propagate_prepend(errp, local_err, "'%s': ", bs->filename);
        return -EINVAL;
    }
    return 0;
}

/* Did the user name a backing node or file for this image explicitly? */
static bool vhdx_diff_backing_overridden(QDict *options)
{
    const QDictEntry *e;

    for (e = qdict_first(options); e; e = qdict_next(options, e)) {
        if (!strcmp(e->key, "backing") ||
            strstart(e->key, "backing.", NULL)) {
            return true;
        }
    }
    return false;
}

/*
 * Choose the parent file name to store in bs->backing_file: relative
 * names are resolved by the block layer against the child's folder.
 * The order is that of MS-VHDX 2.6.2.6.3: relative_path, then
 * volume_path and absolute_win32_path.  Volume GUID paths and drive
 * letters mean nothing here, so absolute_win32_path is taken as a host
 * path when it names an existing file (drive letter dropped), and
 * finally the file name of either, in the child's folder, which is where
 * Hyper-V keeps a checkpoint's parent and where libvhdi looks for it.
 *
 * Where the child's folder cannot be listed (not a local file), or when
 * @must_exist is false and none exists, the first candidate is taken.
 * Returns NULL with @errp set when no candidate exists.
 */
static char * GRAPH_RDLOCK
vhdx_diff_find_parent(BlockDriverState *bs, VHDXParentLocator *loc,
                      bool must_exist, Error **errp)
{
    g_autoptr(GPtrArray) cands = g_ptr_array_new_with_free_func(g_free);
    g_autofree char *dir = NULL;
    g_autoptr(GString) tried = g_string_new(NULL);
    bool local;
    guint i;

    if (loc->relative_path) {
        char *rel = vhdx_relative_path_to_posix(loc->relative_path, NULL);
        if (rel) {
            g_ptr_array_add(cands, rel);
        }
    }
    if (loc->absolute_win32_path) {
        char *abs = vhdx_win32_path_to_posix(loc->absolute_win32_path);
        if (abs) {
            g_ptr_array_add(cands, abs);
        }
    }
    if (loc->volume_path && vhdx_win32_basename(loc->volume_path)) {
        g_ptr_array_add(cands,
                        g_strdup(vhdx_win32_basename(loc->volume_path)));
    }
    if (loc->absolute_win32_path &&
        vhdx_win32_basename(loc->absolute_win32_path)) {
        g_ptr_array_add(cands, g_strdup(
                        vhdx_win32_basename(loc->absolute_win32_path)));
    }
    if (cands->len == 0) {
        error_setg(errp, "'%s': the parent locator holds no usable parent "
                   "path", bs->filename);
        return NULL;
    }

    local = !path_has_protocol(bs->filename) && bs->file &&
            !strcmp(bs->file->bs->drv->format_name, "file");
    if (!local) {
        return g_strdup(g_ptr_array_index(cands, 0));
    }
    dir = bdrv_dirname(bs, NULL);
    for (i = 0; i < cands->len; i++) {
        const char *c = g_ptr_array_index(cands, i);
        g_autofree char *full = NULL;
        g_autofree char *quoted = NULL;

        full = c[0] == '/' || !dir ? g_strdup(c) : g_strconcat(dir, c, NULL);
        if (g_file_test(full, G_FILE_TEST_EXISTS)) {
            return g_strdup(c);
        }
        quoted = g_strdup_printf("'%s'", full);
        if (!strstr(tried->str, quoted)) {
            g_string_append_printf(tried, "%s%s", tried->len ? ", " : "",
                                   quoted);
        }
    }
    if (!must_exist) {
        return g_strdup(g_ptr_array_index(cands, 0));
    }
    error_setg(errp, "Could not find the parent of differencing image '%s' "
               "(tried %s)", bs->filename, tried->str);
    error_append_hint(errp, "Its parent locator says relative_path '%s', "
                      "absolute_win32_path '%s', volume_path '%s'; use "
                      "'qemu-img rebase -u -b PARENT' or the backing option "
                      "to name the parent.\n",
                      loc->relative_path ?: "", loc->absolute_win32_path ?: "",
                      loc->volume_path ?: "");
    return NULL;
}

/* Open @filename as vhdx, read-only, without its backing chain */
static BlockDriverState * GRAPH_RDLOCK
vhdx_diff_open_alone(const char *filename, Error **errp)
{
    QDict *opts = qdict_new();
    BlockDriverState *pbs;

    qdict_put_str(opts, "driver", "vhdx");
    qdict_put_bool(opts, BDRV_OPT_READ_ONLY, true);
    qdict_put_bool(opts, BDRV_OPT_FORCE_SHARE, true);
    bdrv_graph_rdunlock_main_loop();
    pbs = bdrv_open(filename, NULL, opts, BDRV_O_NO_BACKING, errp);
    bdrv_graph_rdlock_main_loop();
    return pbs;
}

static void GRAPH_RDLOCK vhdx_diff_close_alone(BlockDriverState *pbs)
{
    bdrv_graph_rdunlock_main_loop();
    bdrv_unref(pbs);
    bdrv_graph_rdlock_main_loop();
}

/*
 * Refuse a loop of parents (A -> B -> A, or longer), which would make
 * the block layer open the chain without end.  Walks the locators up
 * from @pbs, the parent of @bs, opening each image alone; stops at an
 * image without a parent, at one that is not a local vhdx file (its own
 * open reports what is wrong with it) or after VHDX_DIFF_MAX_DEPTH
 * levels.  Files are compared by their canonical path.
 */
#define VHDX_DIFF_MAX_DEPTH 1024

static int GRAPH_RDLOCK
vhdx_diff_check_loop(BlockDriverState *bs, BlockDriverState *pbs,
                     Error **errp)
{
    g_autoptr(GHashTable) seen = g_hash_table_new_full(g_str_hash,
                                                       g_str_equal,
                                                       g_free, NULL);
    g_autoptr(GString) trail = g_string_new(NULL);
    BlockDriverState *cur = pbs;
    char *real;
    int depth;
    int ret = 0;

    real = realpath(bs->filename, NULL);
    if (!real) {
        return 0;
    }
    g_string_append_printf(trail, "'%s'", bs->filename);
    g_hash_table_add(seen, real);

    for (depth = 0; cur && depth < VHDX_DIFF_MAX_DEPTH; depth++) {
        g_autofree char *next = NULL;
        BlockDriverState *nbs = NULL;

        real = realpath(cur->filename, NULL);
        if (!real) {
            break;
        }
        g_string_append_printf(trail, " -> '%s'", cur->filename);
        if (g_hash_table_contains(seen, real)) {
            g_free(real);
            error_setg(errp, "The parents of differencing image '%s' form a "
                       "loop: %s", bs->filename, trail->str);
            ret = -ELOOP;
            break;
        }
        g_hash_table_add(seen, real);
        if (cur->backing_file[0] && !path_has_protocol(cur->backing_file)) {
            next = bdrv_get_full_backing_filename(cur, NULL);
        }
        if (next && g_file_test(next, G_FILE_TEST_EXISTS)) {
            nbs = vhdx_diff_open_alone(next, NULL);
        }
        if (cur != pbs) {
            vhdx_diff_close_alone(cur);
        }
        cur = nbs;
    }
    if (cur && cur != pbs) {
        vhdx_diff_close_alone(cur);
    }
    return ret;
}

/*
 * Open the parent read-only without its own backing chain and check it
 * is the image this child was made from, and that the chain above it
 * does not come back to this child.
 */
static int GRAPH_RDLOCK
vhdx_diff_check_parent(BlockDriverState *bs, BDRVVHDXState *s,
                       const char *parent, Error **errp)
{
    VHDXParentLocator *loc = s->diff->locator;
    BlockDriverState *pbs;
    BDRVVHDXState *ps;
    VHDXHeader *ph;
    Error *local_err = NULL;
    int ret = -EINVAL;

    if (!strcmp(parent, bs->filename)) {
        error_setg(errp, "Differencing image '%s' names itself as its parent",
                   bs->filename);
        return -ELOOP;
    }
    pbs = vhdx_diff_open_alone(parent, &local_err);
    if (!pbs) {
        error_propagate_prepend(errp, local_err,
                                "Could not open the parent '%s' of "
                                "differencing image '%s' as vhdx: ",
                                parent, bs->filename);
        return -EINVAL;
    }
    ps = pbs->opaque;
    ph = ps->headers[ps->curr_header];

    if (!guid_eq(ph->data_write_guid, loc->linkage) &&
        !(loc->has_linkage2 && guid_eq(ph->data_write_guid, loc->linkage2))) {
        g_autofree char *have = vhdx_guid_format(&ph->data_write_guid);

        error_setg(errp, "Parent '%s' of differencing image '%s' has "
                   "DataWriteGuid %s, but the child expects %s%s%s: the "
                   "parent was modified after the child was created",
                   parent, bs->filename, have, loc->parent_linkage,
                   loc->has_linkage2 ? " or " : "",
                   loc->has_linkage2 ? loc->parent_linkage2 : "");
    } else if (ps->logical_sector_size != s->logical_sector_size) {
        error_setg(errp, "Parent '%s' has logical sector size %" PRIu32
                   ", differencing image '%s' has %" PRIu32, parent,
                   ps->logical_sector_size, bs->filename,
                   s->logical_sector_size);
    } else if (ps->virtual_disk_size != s->virtual_disk_size) {
        error_setg(errp, "Parent '%s' has virtual size %" PRIu64
                   ", differencing image '%s' has %" PRIu64, parent,
                   ps->virtual_disk_size, bs->filename, s->virtual_disk_size);
    } else {
        ret = vhdx_diff_check_loop(bs, pbs, errp);
    }

    vhdx_diff_close_alone(pbs);
    return ret;
}

/*
 * For `qemu-img check` (BDRV_O_CHECK) a broken chain does not fail the
 * open: the problem is kept for the check report and the image is
 * opened without a parent (absent sectors read as zeros).
 */
static int vhdx_diff_chain_broken(BlockDriverState *bs, BDRVVHDXState *s,
                                  int flags, int ret, Error *err,
                                  Error **errp)
{
    if (!(flags & BDRV_O_CHECK)) {
        error_propagate(errp, err);
        return ret;
    }
    s->diff->chain_error = g_strdup(error_get_pretty(err));
    error_free(err);
    bs->backing_file[0] = '\0';
    bs->auto_backing_file[0] = '\0';
    bs->backing_format[0] = '\0';
    return 0;
}

int GRAPH_RDLOCK
vhdx_diff_open(BlockDriverState *bs, BDRVVHDXState *s, QDict *options,
               int flags, Error **errp)
{
    g_autofree char *parent = NULL;
    g_autofree char *full = NULL;
    bool no_parent_check;
    Error *local_err = NULL;
    int ret;

    s->diff = g_new0(VHDXDiffState, 1);
    s->diff->sb_count = DIV_ROUND_UP(s->virtual_disk_size,
                                     (uint64_t)s->block_size *
                                     s->chunk_ratio);
    s->diff->sb_cache = g_new0(uint8_t *, s->diff->sb_count);

    ret = vhdx_diff_read_locator(bs, s, &s->diff->locator, &local_err);
    if (ret < 0) {
        return vhdx_diff_chain_broken(bs, s, flags, ret, local_err, errp);
    }

    /*
     * qemu-img info and opens without a chain need no parent.  The flags
     * the driver gets have BDRV_O_NO_BACKING masked out, bs->open_flags
     * has it.
     */
    no_parent_check = (bs->open_flags & BDRV_O_NO_BACKING) ||
                      vhdx_diff_backing_overridden(options);
    parent = vhdx_diff_find_parent(bs, s->diff->locator, !no_parent_check,
                                   &local_err);
    if (!parent) {
        return vhdx_diff_chain_broken(bs, s, flags, -ENOENT, local_err, errp);
    }

    pstrcpy(bs->backing_file, sizeof(bs->backing_file), parent);
    pstrcpy(bs->auto_backing_file, sizeof(bs->auto_backing_file), parent);
    pstrcpy(bs->backing_format, sizeof(bs->backing_format), "vhdx");

    if (no_parent_check) {
        return 0;
    }
    full = bdrv_get_full_backing_filename(bs, errp);
    if (!full) {
        return -EINVAL;
    }
    s->diff->parent_path = g_strdup(full);
    ret = vhdx_diff_check_parent(bs, s, full, &local_err);
    if (ret < 0) {
        return vhdx_diff_chain_broken(bs, s, flags, ret, local_err, errp);
    }
    return 0;
}

void vhdx_diff_close(BDRVVHDXState *s)
{
    uint64_t i;

    if (!s->diff) {
        return;
    }
    for (i = 0; i < s->diff->sb_count; i++) {
        qemu_vfree(s->diff->sb_cache[i]);
    }
    g_free(s->diff->sb_cache);
    vhdx_parent_locator_free(s->diff->locator);
    g_free(s->diff->parent_path);
    g_free(s->diff->chain_error);
    g_free(s->diff);
    s->diff = NULL;
}
