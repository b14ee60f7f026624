/*
 * Differencing VHDX: creating a child of an existing VHDX image
 *
 * Copyright (c) 2026 The Hyper-V checkpoints project authors
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 *
 * MS-VHDX "forking": the child copies the parent's IsVirtualDisk
 * metadata (virtual size, logical and physical sector size, Virtual Disk
 * ID) and gets a Parent Locator whose parent_linkage is the parent's
 * current DataWriteGuid.  The parent is only read, never written: any
 * write would change its DataWriteGuid and orphan the new child.
 */

#include "qemu/osdep.h"
#include "qapi/error.h"
#include "qemu/cutils.h"
#include "qobject/qdict.h"
#include "block/block-io.h"
#include "block/block_int.h"
#include "system/block-backend.h"
#include "vhdx-diff.h"

void vhdx_diff_create_free(VHDXDiffCreate *dc)
{
    if (dc) {
        g_free(dc->locator);
        g_free(dc);
    }
}

/*
 * The path of @target relative to the folder @from_dir, both absolute
 * and canonical: "/a/b" and "/a/c/x.vhdx" give "../c/x.vhdx".
 */
static char *vhdx_path_relative_to(const char *from_dir, const char *target)
{
    g_auto(GStrv) from = g_strsplit(from_dir, "/", -1);
    g_auto(GStrv) to = g_strsplit(target, "/", -1);
    guint nfrom = g_strv_length(from);
    guint nto = g_strv_length(to);
    g_autoptr(GString) rel = g_string_new(NULL);
    guint i = 0;
    guint j;

    /* Keep the file name out of the common prefix */
    while (i < nfrom && i + 1 < nto && !strcmp(from[i], to[i])) {
        i++;
    }
    for (j = i; j < nfrom; j++) {
        if (*from[j]) {
            g_string_append(rel, "../");
        }
    }
    for (j = i; j < nto; j++) {
        if (*to[j]) {
            g_string_append_printf(rel, "%s%s", to[j],
                                   j + 1 < nto ? "/" : "");
        }
    }
    return g_string_free(g_steal_pointer(&rel), false);
}

/*
 * Fill the path keys of @loc: relative_path from the child's folder and,
 * for local files, absolute_win32_path.  Hyper-V writes both (and
 * volume_path, which has no meaning here); bookworm's libvhdi finds a
 * parent only through absolute_win32_path.
 */
bool vhdx_diff_locator_paths(VHDXParentLocator *loc,
                             const char *child_filename,
                             const char *backing_file,
                             const char *parent_full, Error **errp)
{
    g_autofree char *rel = NULL;

    if (path_has_protocol(parent_full) || path_has_protocol(child_filename)) {
        if (path_is_absolute(backing_file) ||
            path_has_protocol(backing_file)) {
            error_setg(errp, "Cannot store the parent '%s' of '%s' in a "
                       "VHDX parent locator: give it relative to the "
                       "child's folder", backing_file, child_filename);
            return false;
        }
        rel = g_strdup(backing_file);
    } else {
        g_autofree char *child_dir = g_path_get_dirname(child_filename);
        g_autofree char *real_dir = realpath(child_dir, NULL);
        g_autofree char *real_parent = realpath(parent_full, NULL);

        if (!real_dir || !real_parent) {
            error_setg_errno(errp, errno, "Could not resolve the path of "
                             "'%s'", real_dir ? parent_full : child_dir);
            return false;
        }
        rel = vhdx_path_relative_to(real_dir, real_parent);
        loc->absolute_win32_path = vhdx_posix_to_win32_path(real_parent);
    }
    while (g_str_has_prefix(rel, "./")) {
        memmove(rel, rel + 2, strlen(rel + 2) + 1);
    }
    loc->relative_path = vhdx_posix_to_relative_path(rel);

    if (!vhdx_locator_value_ok(loc->relative_path) ||
        (loc->absolute_win32_path &&
         !vhdx_locator_value_ok(loc->absolute_win32_path))) {
        error_setg(errp, "The path of parent '%s' is too long or not valid "
                   "UTF-8 for a VHDX parent locator", parent_full);
        return false;
    }
    return true;
}

/* Read what the child copies from the parent @pbs, a vhdx node */
static int coroutine_fn GRAPH_RDLOCK
vhdx_diff_read_parent(BlockDriverState *pbs, VHDXDiffCreate *dc,
                      MSGUID *data_write_guid)
{
    BDRVVHDXState *ps = pbs->opaque;
    int ret;

    dc->virtual_size = ps->virtual_disk_size;
    dc->block_size = ps->block_size;
    dc->logical_sector_size = ps->logical_sector_size;
    dc->physical_sector_size = ps->physical_sector_size;
    *data_write_guid = ps->headers[ps->curr_header]->data_write_guid;

    ret = bdrv_co_pread(pbs->file, ps->metadata_rt.file_offset +
                        ps->metadata_entries.page83_data_entry.offset,
                        sizeof(dc->page83), &dc->page83, 0);
    if (ret < 0) {
        return ret;
    }
    leguid_to_cpus(&dc->page83);
    return 0;
}

int coroutine_fn GRAPH_UNLOCKED
vhdx_diff_co_create_prepare(BlockdevCreateOptionsVhdx *opts,
                            const char *child_filename,
                            VHDXDiffCreate **out, Error **errp)
{
    g_autoptr(VHDXDiffCreate) dc = g_new0(VHDXDiffCreate, 1);
    g_autoptr(VHDXParentLocator) loc = g_new0(VHDXParentLocator, 1);
    g_autofree char *full = NULL;
    BlockDriverState *pbs;
    MSGUID linkage;
    static const MSGUID zero_guid;
    QDict *popts;
    int ret;

    if (opts->has_backing_fmt && opts->backing_fmt != BLOCKDEV_DRIVER_VHDX) {
        error_setg(errp, "The parent of a vhdx image must be a vhdx image, "
                   "not %s", BlockdevDriver_str(opts->backing_fmt));
        return -EINVAL;
    }
    full = bdrv_get_full_backing_filename_from_filename(child_filename,
                                                        opts->backing_file,
                                                        errp);
    if (!full) {
        return -EINVAL;
    }

    popts = qdict_new();
    qdict_put_str(popts, "driver", "vhdx");
    qdict_put_bool(popts, BDRV_OPT_READ_ONLY, true);
    qdict_put_bool(popts, BDRV_OPT_FORCE_SHARE, true);
    pbs = bdrv_co_open(full, NULL, popts, BDRV_O_NO_BACKING, errp);
    if (!pbs) {
        error_prepend(errp, "Could not open the parent '%s' of '%s': ",
                      full, child_filename);
        return -EINVAL;
    }
    bdrv_graph_co_rdlock();
    ret = vhdx_diff_read_parent(pbs, dc, &linkage);
    bdrv_graph_co_rdunlock();
    bdrv_co_unref(pbs);
    if (ret < 0) {
        error_setg_errno(errp, -ret, "Could not read the parent '%s'", full);
        return ret;
    }

    if (opts->size != dc->virtual_size) {
        error_setg(errp, "Differencing image '%s' must have the size of its "
                   "parent '%s' (%" PRIu64 " bytes), not %" PRIu64 " bytes",
                   child_filename, full, dc->virtual_size, opts->size);
        return -EINVAL;
    }

    loc->parent_linkage = vhdx_guid_format(&linkage);
    loc->parent_linkage2 = vhdx_guid_format(&zero_guid);
    if (!vhdx_diff_locator_paths(loc, child_filename, opts->backing_file,
                                 full, errp)) {
        return -EINVAL;
    }
    dc->locator = vhdx_parent_locator_build(loc, &dc->locator_len);
    *out = g_steal_pointer(&dc);
    return 0;
}

/*
 * Write the BAT of a new differencing image: every payload block
 * NOT_PRESENT, and a zeroed sector bitmap block for every chunk, placed
 * from @data_offset on.  The spec only needs a chunk's bitmap once one
 * of its blocks is PARTIALLY_PRESENT, but bookworm's libvhdi reads the
 * bitmap even for NOT_PRESENT blocks, and takes garbage from file offset
 * 0 when the chunk has none; 1 MiB per 4 GiB chunk (sparse zeros) buys
 * interoperability.
 */
int coroutine_fn GRAPH_UNLOCKED
vhdx_diff_co_create_bat(BlockBackend *blk, BDRVVHDXState *s,
                        uint64_t bat_offset, uint32_t bat_length,
                        uint64_t data_offset, Error **errp)
{
    uint64_t chunks = DIV_ROUND_UP(s->virtual_disk_size,
                                   (uint64_t)s->block_size * s->chunk_ratio);
    g_autofree uint64_t *bat = NULL;
    uint64_t end = data_offset + chunks * VHDX_SB_BLOCK_SIZE;
    uint64_t k;
    int ret;

    assert(QEMU_IS_ALIGNED(data_offset, MiB));
    /* A disk of size 0 has no chunk, and so no sector bitmap */
    assert(chunks == 0 ||
           vhdx_sb_bat_index(s, chunks - 1) < bat_length / sizeof(*bat));

    bat = g_try_malloc0(bat_length);
    if (!bat && bat_length) {
        error_setg(errp, "Failed to allocate memory for the BAT");
        return -ENOMEM;
    }
    for (k = 0; k < chunks; k++) {
        bat[vhdx_sb_bat_index(s, k)] =
            cpu_to_le64((data_offset + k * VHDX_SB_BLOCK_SIZE) |
                        SB_BLOCK_PRESENT);
    }

    ret = blk_co_truncate(blk, end, false, PREALLOC_MODE_OFF,
                          BDRV_REQ_ZERO_WRITE, NULL);
    if (ret == -ENOTSUP) {
        /* The bitmaps must read as zeros: write them */
        ret = blk_co_truncate(blk, end, false, PREALLOC_MODE_OFF, 0, errp);
        if (ret == 0) {
            ret = blk_co_pwrite_zeroes(blk, data_offset, end - data_offset,
                                       0);
        }
    }
    if (ret < 0) {
        error_setg_errno(errp, -ret, "Failed to allocate the sector bitmaps");
        return ret;
    }
    if (!bat_length) {
        return 0;
    }
    ret = blk_co_pwrite(blk, bat_offset, bat_length, bat, 0);
    if (ret < 0) {
        error_setg_errno(errp, -ret, "Failed to write the BAT");
    }
    return ret;
}
