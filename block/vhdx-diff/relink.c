/*
 * Differencing VHDX: pointing a child at another parent
 *
 * Copyright (c) 2026 The Hyper-V checkpoints project authors
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 *
 * block-commit, block-stream, qemu-img rebase and change-backing-file
 * end with .bdrv_co_change_backing_file: the child's Parent Locator is
 * rewritten with the new parent's paths and current DataWriteGuid.  The
 * metadata table and the item are rewritten in one log entry, so a crash
 * leaves either the old or the new locator.  The child's own
 * DataWriteGuid is kept: its contents do not change, and its children
 * must stay linked to it.
 */

#include "qemu/osdep.h"
#include "qapi/error.h"
#include "qemu/error-report.h"
#include "qemu/memalign.h"
#include "block/block-io.h"
#include "block/block_int.h"
#include "vhdx-diff.h"

/*
 * The current DataWriteGuid of the local VHDX file @path, from the valid
 * header with the higher sequence number.  Used when the new parent is
 * not open: opening it here could deadlock on the graph lock.
 */
static int vhdx_read_data_write_guid(const char *path, MSGUID *guid,
                                     Error **errp)
{
    VHDXHeader header;
    bool found;
    int fd;

    fd = qemu_open(path, O_RDONLY, errp);
    if (fd < 0) {
        return -errno;
    }
    found = vhdx_diff_read_current_header(fd, &header);
    qemu_close(fd);
    if (!found) {
        error_setg(errp, "'%s' has no valid VHDX header", path);
        return -EINVAL;
    }
    *guid = header.data_write_guid;
    return 0;
}

/* The DataWriteGuid of the parent @full, checking what can be checked */
static int GRAPH_RDLOCK
vhdx_new_parent_guid(BlockDriverState *bs, const char *full, MSGUID *guid,
                     Error **errp)
{
    BDRVVHDXState *s = bs->opaque;
    BlockDriverState *pbs = bs->backing ? bs->backing->bs : NULL;

    if (pbs && pbs->drv && !strcmp(pbs->drv->format_name, "vhdx") &&
        !strcmp(pbs->filename, full)) {
        /* The attached parent (commit, stream): its state is current */
        BDRVVHDXState *ps = pbs->opaque;

        if (ps->virtual_disk_size != s->virtual_disk_size ||
            ps->logical_sector_size != s->logical_sector_size) {
            error_setg(errp, "Parent '%s' does not have the size and sector "
                       "size of differencing image '%s'", full,
                       bs->filename);
            return -EINVAL;
        }
        *guid = ps->headers[ps->curr_header]->data_write_guid;
        return 0;
    }
    if (path_has_protocol(full)) {
        error_setg(errp, "Cannot read the identity of parent '%s'", full);
        return -ENOTSUP;
    }
    /* Size and sector size are checked when the chain is next opened */
    return vhdx_read_data_write_guid(full, guid, errp);
}

/*
 * The log code takes every log write for a user-visible change and gives
 * the image a new DataWriteGuid before the first one.  Rewriting the
 * locator or emptying a committed layer does not change what the chain
 * reads, and a new DataWriteGuid would orphan this image's children:
 * hold the flag while logging these updates (s->lock held).
 */
static bool vhdx_hold_data_write_guid(BDRVVHDXState *s)
{
    bool first = s->first_visible_write;

    s->first_visible_write = false;
    return first;
}

/*
 * Replace the Parent Locator item by @item: in place when it fits,
 * otherwise after the last metadata item.  The table and the item are
 * logged together.
 */
static int coroutine_fn GRAPH_RDLOCK
vhdx_write_locator(BlockDriverState *bs, BDRVVHDXState *s,
                   const uint8_t *item, uint32_t len)
{
    VHDXMetadataTableEntry *le = &s->metadata_entries.parent_locator_entry;
    g_autofree uint8_t *table = g_malloc(VHDX_METADATA_TABLE_MAX_SIZE);
    g_autofree uint8_t *buf = NULL;
    VHDXMetadataTableHeader hdr;
    VHDXMetadataTableEntry entry;
    uint64_t items_end;
    uint64_t off;
    int slot;
    int ret;

    ret = bdrv_co_pread(bs->file, s->metadata_rt.file_offset,
                        VHDX_METADATA_TABLE_MAX_SIZE, table, 0);
    if (ret < 0) {
        return ret;
    }
    vhdx_metadata_table_header(table, &hdr);
    if (hdr.entry_count > VHDX_METADATA_MAX_ENTRIES) {
        return -EINVAL;
    }
    slot = vhdx_metadata_table_find(table, hdr.entry_count,
                                    &vhdx_parent_locator_item, 0, &entry);
    if (slot < 0) {
        return -EINVAL;
    }
    items_end = vhdx_metadata_items_end(table, hdr.entry_count);

    off = len <= le->length ? le->offset : ROUND_UP(items_end, 8);
    if (off + len > s->metadata_rt.length) {
        return -ENOSPC;
    }
    buf = g_malloc0(off + len);
    memcpy(buf, table, MIN(off + len, VHDX_METADATA_TABLE_MAX_SIZE));
    if (off > VHDX_METADATA_TABLE_MAX_SIZE) {
        ret = bdrv_co_pread(bs->file,
                            s->metadata_rt.file_offset +
                            VHDX_METADATA_TABLE_MAX_SIZE,
                            off - VHDX_METADATA_TABLE_MAX_SIZE,
                            buf + VHDX_METADATA_TABLE_MAX_SIZE, 0);
        if (ret < 0) {
            return ret;
        }
    }
    memcpy(buf + off, item, len);
    entry.offset = off;
    entry.length = len;
    vhdx_metadata_table_set_entry(buf, slot, &entry);

    ret = vhdx_log_write_and_flush(bs, s, buf, off + len,
                                   s->metadata_rt.file_offset);
    if (ret < 0) {
        return ret;
    }
    le->offset = off;
    le->length = len;
    return 0;
}

/*
 * Log the BAT entries [@first, @first + @count) from s->bat, in pieces
 * that fit the log.  Each piece is atomic; make_empty only needs that
 * every entry is either old or new.
 */
static int coroutine_fn GRAPH_RDLOCK
vhdx_log_bat_range(BlockDriverState *bs, BDRVVHDXState *s, uint64_t first,
                   uint64_t count)
{
    const uint64_t piece = 256 * KiB / sizeof(uint64_t);
    g_autofree uint64_t *le = g_new(uint64_t, piece);
    uint64_t i, j;
    int ret;

    for (i = first; i < first + count; i += piece) {
        uint64_t n = MIN(piece, first + count - i);

        for (j = 0; j < n; j++) {
            le[j] = cpu_to_le64(s->bat[i + j]);
        }
        ret = vhdx_log_write_and_flush(bs, s, le, n * sizeof(uint64_t),
                                       s->bat_offset + i * sizeof(uint64_t));
        if (ret < 0) {
            return ret;
        }
    }
    return 0;
}

/*
 * Phase 1, one block: the sectors of the PARTIALLY_PRESENT block @b
 * (BAT entry @idx) whose bit is clear get zeros in the file.
 */
static int coroutine_fn GRAPH_RDLOCK
vhdx_diff_co_zero_clear_sectors(BlockDriverState *bs, BDRVVHDXState *s,
                                uint64_t b, uint64_t idx)
{
    uint32_t lss_bits = s->logical_sector_size_bits;
    uint64_t off = s->bat[idx] & VHDX_BAT_FILE_OFF_MASK;
    uint64_t sector = b << s->sectors_per_block_bits;
    uint64_t end = MIN(sector + s->sectors_per_block,
                       (uint64_t)s->virtual_disk_size >> lss_bits);
    uint8_t *bitmap;
    int ret;

    ret = vhdx_sb_get(bs, s, b, &bitmap);
    if (ret < 0) {
        return ret;
    }
    while (sector < end) {
        uint64_t cs = sector & (VHDX_MAX_SECTORS_PER_BLOCK - 1);
        uint64_t n = 1;
        bool set = bitmap[cs >> 3] & (1 << (cs & 7));

        while (sector + n < end) {
            uint64_t c2 = cs + n;

            if (!!(bitmap[c2 >> 3] & (1 << (c2 & 7))) != set) {
                break;
            }
            n++;
        }
        if (!set) {
            ret = bdrv_co_pwrite_zeroes(
                bs->file,
                off + ((sector & (s->sectors_per_block - 1)) << lss_bits),
                n << lss_bits, 0);
            if (ret < 0) {
                return ret;
            }
        }
        sector += n;
    }
    return 0;
}

/*
 * Phase 1, one chunk @k: its PARTIALLY_PRESENT blocks become
 * FULLY_PRESENT, its sector bitmap entry NOT_PRESENT; the zeros are
 * flushed, then the chunk's BAT entries logged as one entry.
 */
static int coroutine_fn GRAPH_RDLOCK
vhdx_diff_co_fill_chunk(BlockDriverState *bs, BDRVVHDXState *s, uint64_t k,
                        uint64_t blocks)
{
    uint64_t first = k * (s->chunk_ratio + 1);
    bool changed = false;
    uint64_t b;
    int ret;

    for (b = k * s->chunk_ratio;
         b < MIN(blocks, (k + 1) * s->chunk_ratio); b++) {
        uint64_t idx = b + (b >> s->chunk_ratio_bits);

        if ((s->bat[idx] & VHDX_BAT_STATE_BIT_MASK) !=
            PAYLOAD_BLOCK_PARTIALLY_PRESENT) {
            continue;
        }
        ret = vhdx_diff_co_zero_clear_sectors(bs, s, b, idx);
        if (ret < 0) {
            return ret;
        }
        s->bat[idx] = (s->bat[idx] & VHDX_BAT_FILE_OFF_MASK) |
                      PAYLOAD_BLOCK_FULLY_PRESENT;
        changed = true;
    }
    if ((s->bat[first + s->chunk_ratio] & VHDX_BAT_STATE_BIT_MASK) !=
        SB_BLOCK_NOT_PRESENT) {
        s->bat[first + s->chunk_ratio] = SB_BLOCK_NOT_PRESENT;
        changed = true;
    }
    if (!changed) {
        return 0;
    }
    ret = bdrv_co_flush(bs->file->bs);
    if (ret < 0) {
        return ret;
    }
    return vhdx_log_bat_range(bs, s, first, s->chunk_ratio + 1);
}

/*
 * Phase 2: the metadata table without the Parent Locator entry and the
 * File Parameters item without HasParent, in one log entry.
 */
static int coroutine_fn GRAPH_RDLOCK
vhdx_diff_co_drop_parent_metadata(BlockDriverState *bs, BDRVVHDXState *s)
{
    VHDXMetadataTableEntry *fp = &s->metadata_entries.file_parameters_entry;
    g_autofree uint8_t *md = NULL;
    VHDXMetadataTableHeader hdr;
    VHDXMetadataTableEntry entry;
    VHDXFileParameters params;
    uint64_t md_len;
    int slot;
    int ret;

    if (fp->offset < VHDX_METADATA_TABLE_MAX_SIZE ||
        fp->length < sizeof(VHDXFileParameters) ||
        fp->offset > s->metadata_rt.length - fp->length) {
        return -EINVAL;
    }
    md_len = (uint64_t)fp->offset + fp->length;
    md = g_malloc(md_len);
    ret = bdrv_co_pread(bs->file, s->metadata_rt.file_offset, md_len, md, 0);
    if (ret < 0) {
        return ret;
    }
    vhdx_metadata_table_header(md, &hdr);
    if (hdr.entry_count == 0 ||
        hdr.entry_count > VHDX_METADATA_MAX_ENTRIES) {
        return -EINVAL;
    }
    slot = vhdx_metadata_table_find(md, hdr.entry_count,
                                    &vhdx_parent_locator_item, 0, &entry);
    if (slot >= 0) {
        vhdx_metadata_table_drop(md, slot);
    }
    memcpy(&params, md + fp->offset, sizeof(params));
    params.data_bits = cpu_to_le32(le32_to_cpu(params.data_bits) &
                                   ~VHDX_PARAMS_HAS_PARENT);
    memcpy(md + fp->offset, &params, sizeof(params));
    return vhdx_log_write_and_flush(bs, s, md, md_len,
                                    s->metadata_rt.file_offset);
}

/*
 * Make the differencing image @bs a base image, for block-stream without
 * a base and `qemu-img rebase -b ""`.  Called with s->lock held.
 *
 * 1. Chunk by chunk: every PARTIALLY_PRESENT block gets zeros in the
 *    sectors whose bit is clear (they read as the absent parent's
 *    zeros, or the parent's data that an unsafe rebase drops) and
 *    becomes FULLY_PRESENT; the chunk's sector bitmap
 *    entry becomes SB_BLOCK_NOT_PRESENT.  The zeros are flushed before
 *    the chunk's BAT entries (payload blocks and bitmap are contiguous in
 *    the BAT) are logged as one entry, so each chunk is old or new.
 * 2. One log entry over the metadata table and the File Parameters
 *    item: HasParent cleared, the Parent Locator entry dropped from the
 *    table.  Until then the image is a valid differencing image whose
 *    chunks need no bitmap; afterwards a valid base image.
 */
static int coroutine_fn GRAPH_RDLOCK
vhdx_diff_co_remove_parent(BlockDriverState *bs, BDRVVHDXState *s)
{
    uint64_t blocks = DIV_ROUND_UP(s->virtual_disk_size, s->block_size);
    uint64_t k;
    int ret;

    for (k = 0; k < s->diff->sb_count; k++) {
        ret = vhdx_diff_co_fill_chunk(bs, s, k, blocks);
        if (ret < 0) {
            return ret;
        }
    }
    ret = vhdx_diff_co_drop_parent_metadata(bs, s);
    if (ret < 0) {
        return ret;
    }

    s->params.data_bits &= ~VHDX_PARAMS_HAS_PARENT;
    memset(&s->metadata_entries.parent_locator_entry, 0,
           sizeof(s->metadata_entries.parent_locator_entry));
    /* vhdx_calc_bat_entries() for an image without a parent */
    s->bat_entries = blocks + ((blocks - 1) >> s->chunk_ratio_bits);
    vhdx_diff_close(s);
    return 0;
}

/*
 * Write @loc as the Parent Locator of @bs, after its dirty metadata, and
 * make it the one in memory.  The DataWriteGuid of @bs is kept.
 */
static int coroutine_fn GRAPH_RDLOCK
vhdx_diff_co_replace_locator(BlockDriverState *bs,
                             const VHDXParentLocator *loc)
{
    BDRVVHDXState *s = bs->opaque;
    g_autofree uint8_t *item = NULL;
    VHDXParentLocator *parsed;
    size_t len;
    bool first;
    int ret;

    item = vhdx_parent_locator_build(loc, &len);
    parsed = vhdx_parent_locator_parse(item, len, &error_abort);

    qemu_co_mutex_lock(&s->lock);
    first = vhdx_hold_data_write_guid(s);
    ret = vhdx_meta_log_co_commit(bs, s);
    if (ret >= 0) {
        ret = vhdx_write_locator(bs, s, item, len);
    }
    s->first_visible_write = first;
    qemu_co_mutex_unlock(&s->lock);
    if (ret < 0) {
        vhdx_parent_locator_free(parsed);
        return ret;
    }
    vhdx_parent_locator_free(s->diff->locator);
    s->diff->locator = parsed;
    return 0;
}

int coroutine_fn GRAPH_RDLOCK
vhdx_co_change_backing_file(BlockDriverState *bs, const char *backing_file,
                            const char *backing_fmt)
{
    BDRVVHDXState *s = bs->opaque;
    g_autoptr(VHDXParentLocator) loc = g_new0(VHDXParentLocator, 1);
    /*
     * The image file's own name: bs->filename is a json: description
     * when the chain was opened with explicit nodes (a commit job's
     * overlay), and paths are relative to the file's folder
     */
    const char *own = bs->file ? bs->file->bs->filename : bs->filename;
    g_autofree char *full = NULL;
    static const MSGUID zero_guid;
    Error *local_err = NULL;
    MSGUID guid;
    bool first;
    int ret;

    if (!vhdx_diff_is_child(s)) {
        /* Turning a base image into a child is not supported */
        return -ENOTSUP;
    }
    if (!backing_file || !*backing_file) {
        qemu_co_mutex_lock(&s->lock);
        first = vhdx_hold_data_write_guid(s);
        ret = vhdx_meta_log_co_commit(bs, s);
        if (ret >= 0) {
            ret = vhdx_diff_co_remove_parent(bs, s);
        }
        s->first_visible_write = first;
        qemu_co_mutex_unlock(&s->lock);
        if (ret < 0) {
            error_report("Could not make '%s' an image without a parent: %s",
                         bs->filename, strerror(-ret));
        }
        return ret;
    }
    if (backing_fmt && *backing_fmt && strcmp(backing_fmt, "vhdx")) {
        error_report("The parent of vhdx image '%s' must be vhdx, not %s",
                     bs->filename, backing_fmt);
        return -EINVAL;
    }
    full = bdrv_get_full_backing_filename_from_filename(own, backing_file,
                                                        &local_err);
    if (!full) {
        goto fail;
    }
    ret = vhdx_new_parent_guid(bs, full, &guid, &local_err);
    if (ret < 0) {
        goto fail;
    }
    loc->parent_linkage = vhdx_guid_format(&guid);
    loc->parent_linkage2 = vhdx_guid_format(&zero_guid);
    if (!vhdx_diff_locator_paths(loc, own, backing_file, full, &local_err)) {
        goto fail;
    }
    ret = vhdx_diff_co_replace_locator(bs, loc);
    if (ret < 0) {
        error_report("Could not rewrite the parent locator of '%s': %s",
                     bs->filename, strerror(-ret));
        return ret;
    }
    g_free(s->diff->parent_path);
    s->diff->parent_path = g_strdup(full);
    return 0;

fail:
    error_report_err(local_err);
    return -EINVAL;
}

/*
 * MS-VHDX footnote 12: "There are two fields so that parent-child links
 * can be safely maintained while merging child data into the parent.
 * [...] the implementation has to first store the new GUID in the parent
 * identifier, and then update the parent's write GUID."
 *
 * Child @bs, whose parent currently has DataWriteGuid @cur, learns that
 * the parent is about to take @next: its locator gets parent_linkage =
 * @cur and parent_linkage2 = @next, in one log entry, before the parent's
 * headers change.  A crash at any point of the merge then leaves the
 * child linked; the relink at the end of the merge (make_empty,
 * change_backing_file) moves the identity to parent_linkage and zeroes
 * parent_linkage2 again.  A child linked to another identity is left
 * alone.
 */
static int coroutine_fn GRAPH_RDLOCK
vhdx_diff_co_add_linkage(BlockDriverState *bs, const MSGUID *cur,
                         const MSGUID *next)
{
    BDRVVHDXState *s = bs->opaque;
    VHDXParentLocator *loc = s->diff ? s->diff->locator : NULL;
    VHDXParentLocator upd;
    g_autofree char *cur_str = NULL;
    g_autofree char *next_str = NULL;
    int ret;

    if (!vhdx_diff_is_child(s) || !loc ||
        (!guid_eq(loc->linkage, *cur) &&
         !(loc->has_linkage2 && guid_eq(loc->linkage2, *cur)))) {
        return 0;
    }
    cur_str = vhdx_guid_format(cur);
    next_str = vhdx_guid_format(next);
    upd = *loc;
    upd.parent_linkage = cur_str;
    upd.parent_linkage2 = next_str;
    ret = vhdx_diff_co_replace_locator(bs, &upd);
    if (ret < 0) {
        error_report("Could not give '%s' its parent's next identity: %s",
                     bs->filename, strerror(-ret));
    }
    return ret;
}

int coroutine_mixed_fn GRAPH_RDLOCK
vhdx_diff_announce_data_write_guid(BlockDriverState *bs, const MSGUID *next)
{
    BDRVVHDXState *s = bs->opaque;
    MSGUID cur = s->headers[s->curr_header]->data_write_guid;
    BdrvChild *c;
    int ret;

    if (!qemu_in_coroutine()) {
        /*
         * The log replay of the open and the settling before a checkpoint
         * (vhdx_diff_settle_data_write_guid) run outside coroutines; no
         * child is open on top of the image then.
         */
        return 0;
    }
    QLIST_FOREACH(c, &bs->parents, next_parent) {
        BlockDriverState *child;

        if (c->klass != &child_of_bds || !(c->role & BDRV_CHILD_COW)) {
            continue;
        }
        child = c->opaque;
        /* A read-only child cannot be told: see vhdx-diff/README.md */
        if (child->drv != bs->drv || bdrv_is_read_only(child)) {
            continue;
        }
        ret = vhdx_diff_co_add_linkage(child, &cur, next);
        if (ret < 0) {
            return ret;
        }
    }
    return 0;
}

/*
 * Drop all data of this layer (after a commit into the parent): payload
 * blocks become NOT_PRESENT and the bitmaps are cleared (libvhdi reads
 * bitmaps even of NOT_PRESENT blocks).  The commit wrote the parent, so
 * the parent has a new DataWriteGuid: relink to it, or the emptied
 * child would be refused at its next open.
 */
int coroutine_fn GRAPH_RDLOCK vhdx_co_make_empty(BlockDriverState *bs)
{
    BDRVVHDXState *s = bs->opaque;
    BlockDriverState *pbs = bs->backing ? bs->backing->bs : NULL;
    uint64_t i, k;
    bool first;
    int ret;

    if (!vhdx_diff_is_child(s)) {
        return -ENOTSUP;
    }
    if (pbs && pbs->drv && !strcmp(pbs->drv->format_name, "vhdx")) {
        ret = vhdx_co_change_backing_file(bs, bs->backing_file, "vhdx");
        if (ret < 0) {
            return ret;
        }
    }

    /*
     * The DataWriteGuid is kept: what the chain reads does not change, so
     * children of this image must stay linked to it.
     */
    qemu_co_mutex_lock(&s->lock);
    first = vhdx_hold_data_write_guid(s);
    ret = vhdx_meta_log_co_commit(bs, s);
    for (i = 0; ret >= 0 && i < s->bat_entries; i++) {
        if (!vhdx_bat_index_is_sb(s, i)) {
            s->bat[i] = PAYLOAD_BLOCK_NOT_PRESENT;
        }
    }
    if (ret >= 0) {
        ret = vhdx_log_bat_range(bs, s, 0, s->bat_entries);
    }
    for (k = 0; ret >= 0 && k < s->diff->sb_count; k++) {
        uint64_t e = s->bat[vhdx_sb_bat_index(s, k)];

        qemu_vfree(s->diff->sb_cache[k]);
        s->diff->sb_cache[k] = NULL;
        if ((e & VHDX_BAT_STATE_BIT_MASK) == SB_BLOCK_PRESENT) {
            ret = bdrv_co_pwrite_zeroes(bs->file, e & VHDX_BAT_FILE_OFF_MASK,
                                        VHDX_SB_BLOCK_SIZE, 0);
        }
    }
    if (ret >= 0) {
        ret = bdrv_co_flush(bs->file->bs);
    }
    s->first_visible_write = first;
    qemu_co_mutex_unlock(&s->lock);
    return ret;
}
