/*
 * Differencing VHDX: writing
 *
 * Copyright (c) 2026 The Hyper-V checkpoints project authors
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 *
 * A write never copies the parent's data.  Per payload block:
 *
 *   FULLY_PRESENT      written in place.
 *   PARTIALLY_PRESENT  written in place, then the sectors' bitmap bits set.
 *   NOT_PRESENT        a block is appended at the end of the file and
 *                      marked PARTIALLY_PRESENT, and the written sectors'
 *                      bits are set: the others still come from the
 *                      parent.  This is what Hyper-V does.
 *   ZERO, UNDEFINED,   these read as zeros and hide the parent: the new
 *   UNMAPPED           block is zero-filled and FULLY_PRESENT, so that no
 *                      sector can fall back to the parent.
 *
 * Metadata (BAT entries and bitmap bytes) goes through the VHDX log.
 * Order for a new block: data, flush, BAT entry (log), bitmap (log).  A
 * crash after the BAT entry leaves a PARTIALLY_PRESENT block without any
 * bit set, which reads as the parent, i.e. as before the write; bits are
 * never set on a block that is not allocated yet.
 *
 * Zero writes come here as zero buffers (the driver has no
 * bdrv_co_pwrite_zeroes) and discards are ignored (no bdrv_co_pdiscard):
 * neither can make a sector read the parent's data again.
 */

#include "qemu/osdep.h"
#include "qemu/memalign.h"
#include "block/block-io.h"
#include "block/block_int.h"
#include "vhdx-diff.h"

/*
 * Append a 1 MiB aligned block of @size bytes at the end of the file.
 * With @zero it is guaranteed to read as zeros.
 */
static int coroutine_fn GRAPH_RDLOCK
vhdx_diff_alloc(BlockDriverState *bs, uint64_t size, bool zero,
                uint64_t *offset)
{
    int64_t len = bdrv_co_getlength(bs->file->bs);
    uint64_t off;
    int ret;

    if (len < 0) {
        return len;
    }
    off = ROUND_UP(len, MiB);
    if (off > INT64_MAX - size) {
        return -EINVAL;
    }
    if (zero) {
        ret = bdrv_co_truncate(bs->file, off + size, false, PREALLOC_MODE_OFF,
                               BDRV_REQ_ZERO_WRITE, NULL);
        if (ret != -ENOTSUP) {
            *offset = off;
            return ret;
        }
    }
    ret = bdrv_co_truncate(bs->file, off + size, false, PREALLOC_MODE_OFF, 0,
                           NULL);
    if (ret == 0 && zero) {
        ret = bdrv_co_pwrite_zeroes(bs->file, off, size, 0);
    }
    *offset = off;
    return ret;
}

/* Set BAT entry @idx in memory and on disk, through the log */
static int coroutine_fn GRAPH_RDLOCK
vhdx_diff_set_bat(BlockDriverState *bs, BDRVVHDXState *s, uint64_t idx,
                  uint64_t entry)
{
    uint64_t le = cpu_to_le64(entry);
    uint64_t old = s->bat[idx];
    int ret;

    s->bat[idx] = entry;
    ret = vhdx_log_write_and_flush(bs, s, &le, sizeof(le),
                                   s->bat_offset + idx * sizeof(le));
    if (ret < 0) {
        s->bat[idx] = old;
    }
    return ret;
}

/* Make sure the chunk of block @blk has a sector bitmap block */
static int coroutine_fn GRAPH_RDLOCK
vhdx_diff_ensure_sb(BlockDriverState *bs, BDRVVHDXState *s, uint64_t blk)
{
    uint64_t chunk = blk >> s->chunk_ratio_bits;
    uint64_t idx = vhdx_sb_bat_index(s, chunk);
    uint64_t offset;
    uint8_t *buf;
    int ret;

    if ((s->bat[idx] & VHDX_BAT_STATE_BIT_MASK) == SB_BLOCK_PRESENT) {
        return 0;
    }
    if (chunk >= s->diff->sb_count || idx >= s->bat_entries) {
        return -EIO;
    }
    buf = qemu_try_blockalign0(bs->file->bs, VHDX_SB_BLOCK_SIZE);
    if (!buf) {
        return -ENOMEM;
    }
    /* A stale bit would show garbage instead of the parent: zero it */
    ret = vhdx_diff_alloc(bs, VHDX_SB_BLOCK_SIZE, true, &offset);
    if (ret == 0) {
        ret = vhdx_diff_set_bat(bs, s, idx, offset | SB_BLOCK_PRESENT);
    }
    if (ret < 0) {
        qemu_vfree(buf);
        return ret;
    }
    qemu_vfree(s->diff->sb_cache[chunk]);
    s->diff->sb_cache[chunk] = buf;
    return 0;
}

/*
 * Set the bitmap bits of @nb_sectors sectors from @sector_num (inside
 * one block), logging the bitmap bytes that change.
 */
static int coroutine_fn GRAPH_RDLOCK
vhdx_diff_set_bits(BlockDriverState *bs, BDRVVHDXState *s,
                   int64_t sector_num, uint32_t nb_sectors)
{
    uint64_t blk = sector_num >> s->sectors_per_block_bits;
    uint64_t chunk = blk >> s->chunk_ratio_bits;
    uint64_t first = sector_num & (VHDX_MAX_SECTORS_PER_BLOCK - 1);
    uint64_t last = first + nb_sectors - 1;
    uint64_t sb_offset;
    uint8_t *bitmap;
    bool changed = false;
    uint64_t c;
    int ret;

    ret = vhdx_sb_get(bs, s, blk, &bitmap);
    if (ret < 0) {
        return ret;
    }
    for (c = first; c <= last; c++) {
        if (!(bitmap[c >> 3] & (1 << (c & 7)))) {
            bitmap[c >> 3] |= 1 << (c & 7);
            changed = true;
        }
    }
    if (!changed) {
        return 0;
    }
    sb_offset = s->bat[vhdx_sb_bat_index(s, chunk)] & VHDX_BAT_FILE_OFF_MASK;
    ret = vhdx_log_write_and_flush(bs, s, bitmap + (first >> 3),
                                   (last >> 3) - (first >> 3) + 1,
                                   sb_offset + (first >> 3));
    if (ret < 0) {
        /* Forget the cache: the next access rereads the disk */
        qemu_vfree(s->diff->sb_cache[chunk]);
        s->diff->sb_cache[chunk] = NULL;
    }
    return ret;
}

/*
 * Write @qiov (@nb_sectors from @sector_num, inside one block) into a
 * block whose BAT entry is @idx.
 */
static int coroutine_fn GRAPH_RDLOCK
vhdx_diff_write_block(BlockDriverState *bs, BDRVVHDXState *s, uint64_t idx,
                      int64_t sector_num, uint32_t nb_sectors,
                      QEMUIOVector *qiov)
{
    uint64_t blk = sector_num >> s->sectors_per_block_bits;
    uint64_t in_blk = (uint64_t)(sector_num & (s->sectors_per_block - 1))
                      << s->logical_sector_size_bits;
    uint64_t bytes = (uint64_t)nb_sectors << s->logical_sector_size_bits;
    uint64_t state = s->bat[idx] & VHDX_BAT_STATE_BIT_MASK;
    uint64_t offset = s->bat[idx] & VHDX_BAT_FILE_OFF_MASK;
    int ret;

    switch (state) {
    case PAYLOAD_BLOCK_FULLY_PRESENT:
        return bdrv_co_pwritev(bs->file, offset + in_blk, bytes, qiov, 0);

    case PAYLOAD_BLOCK_PARTIALLY_PRESENT:
        ret = bdrv_co_pwritev(bs->file, offset + in_blk, bytes, qiov, 0);
        if (ret < 0) {
            return ret;
        }
        return vhdx_diff_set_bits(bs, s, sector_num, nb_sectors);

    case PAYLOAD_BLOCK_NOT_PRESENT:
        ret = vhdx_diff_ensure_sb(bs, s, blk);
        if (ret < 0) {
            return ret;
        }
        ret = vhdx_diff_alloc(bs, s->block_size, false, &offset);
        if (ret < 0) {
            return ret;
        }
        ret = bdrv_co_pwritev(bs->file, offset + in_blk, bytes, qiov, 0);
        if (ret < 0) {
            return ret;
        }
        ret = vhdx_diff_set_bat(bs, s, idx,
                                offset | PAYLOAD_BLOCK_PARTIALLY_PRESENT);
        if (ret < 0) {
            return ret;
        }
        return vhdx_diff_set_bits(bs, s, sector_num, nb_sectors);

    case PAYLOAD_BLOCK_ZERO:
    case PAYLOAD_BLOCK_UNDEFINED:
    case PAYLOAD_BLOCK_UNMAPPED:
    case PAYLOAD_BLOCK_UNMAPPED_v095:
        ret = vhdx_diff_alloc(bs, s->block_size, true, &offset);
        if (ret < 0) {
            return ret;
        }
        ret = bdrv_co_pwritev(bs->file, offset + in_blk, bytes, qiov, 0);
        if (ret < 0) {
            return ret;
        }
        return vhdx_diff_set_bat(bs, s, idx,
                                 offset | PAYLOAD_BLOCK_FULLY_PRESENT);

    default:
        return -EIO;
    }
}

int coroutine_fn GRAPH_RDLOCK
vhdx_diff_co_writev(BlockDriverState *bs, int64_t sector_num, int nb_sectors,
                    QEMUIOVector *qiov, int flags)
{
    BDRVVHDXState *s = bs->opaque;
    QEMUIOVector hd_qiov;
    uint64_t bytes_done = 0;
    int ret;

    qemu_iovec_init(&hd_qiov, qiov->niov);
    /*
     * The lock is held for the whole request: allocation appends at the
     * end of the file and bitmap bytes are shared between blocks.
     */
    qemu_co_mutex_lock(&s->lock);

    ret = vhdx_user_visible_write(bs, s);

    while (ret >= 0 && nb_sectors > 0) {
        uint64_t blk = sector_num >> s->sectors_per_block_bits;
        uint64_t idx = blk + (blk >> s->chunk_ratio_bits);
        uint32_t in_blk = sector_num & (s->sectors_per_block - 1);
        uint32_t n = MIN(nb_sectors, s->sectors_per_block - in_blk);
        uint64_t bytes = (uint64_t)n << s->logical_sector_size_bits;

        if (idx >= s->bat_entries) {
            ret = -EIO;
            break;
        }
        qemu_iovec_reset(&hd_qiov);
        qemu_iovec_concat(&hd_qiov, qiov, bytes_done, bytes);
        ret = vhdx_diff_write_block(bs, s, idx, sector_num, n, &hd_qiov);

        nb_sectors -= n;
        sector_num += n;
        bytes_done += bytes;
    }

    qemu_co_mutex_unlock(&s->lock);
    qemu_iovec_destroy(&hd_qiov);
    return ret < 0 ? ret : 0;
}
