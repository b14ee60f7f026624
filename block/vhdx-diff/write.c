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
 * Metadata (BAT entries and bitmap bytes) changes in memory and is
 * marked dirty; meta-log.c writes it through the VHDX log at the next
 * flush (see there for the order that keeps a crash harmless).  Bits
 * are only logged after the data they describe was flushed (the commit
 * holds s->lock, and bits are set under it after the data write
 * returned).
 *
 * s->lock is dropped around the data write of a FULLY_PRESENT,
 * PARTIALLY_PRESENT or newly allocated block: the allocation (BAT entry
 * PARTIALLY_PRESENT, no bit set) is visible before the data is written,
 * so concurrent readers see the parent and concurrent writers write into
 * the same block.  Blocks that read as zeros (ZERO etc.) are converted
 * under the lock, their BAT entry set after the data was written.
 *
 * Zero writes of whole blocks (vhdx_diff_co_zero_blocks(), the block
 * layer splits requests at block boundaries) make the block
 * FULLY_PRESENT and zero it in the file, where the file layer needs no
 * buffer of zeros (a new block at the end of the file is zero already,
 * an existing one is zeroed by fallocate, or has its space punched out
 * with BDRV_REQ_MAY_UNMAP).  The ZERO block state would be cheaper
 * still, but bookworm's libvhdi reads ZERO blocks of a differencing
 * image from the parent; Hyper-V does not write it either.  The rest of
 * a zero write comes as a buffer of zeros.  A discard of whole blocks
 * zeroes and unmaps the blocks this layer holds and leaves the others
 * alone; a discard of part of a block is ignored.  None of these can
 * make a sector read the parent's data again.
 */

#include "qemu/osdep.h"
#include "qemu/bitmap.h"
#include "qemu/memalign.h"
#include "block/block-io.h"
#include "block/block_int.h"
#include "vhdx-diff.h"

/*
 * The file grows by VHDX_DIFF_GROW at a time rather than by one block:
 * a truncate per new block was a tenth of the time of an allocating
 * sequential write.  The space between d->file_end (the end of the last
 * block handed out) and d->file_size (the file's length) is never
 * written, so it reads as zeros; vhdx_diff_trim() cuts it off again at
 * every commit, so that a flushed or closed image ends with its last
 * block.  A crash in between leaves at most VHDX_DIFF_GROW unused at the
 * end of the file, which the next open counts as used.
 */
#define VHDX_DIFF_GROW  (16 * MiB)

/* Grow the file to @size bytes, zero-filled; @zeroed: known to be */
static int coroutine_fn GRAPH_RDLOCK
vhdx_diff_grow(BlockDriverState *bs, uint64_t size, bool *zeroed)
{
    int ret = bdrv_co_truncate(bs->file, size, false, PREALLOC_MODE_OFF,
                               BDRV_REQ_ZERO_WRITE, NULL);

    *zeroed = ret != -ENOTSUP;
    if (ret == -ENOTSUP) {
        ret = bdrv_co_truncate(bs->file, size, false, PREALLOC_MODE_OFF, 0,
                               NULL);
    }
    return ret;
}

/*
 * Hand out a 1 MiB aligned block of @size bytes at the end of the file.
 * With @zero it is guaranteed to read as zeros.
 */
static int coroutine_fn GRAPH_RDLOCK
vhdx_diff_alloc(BlockDriverState *bs, uint64_t size, bool zero,
                uint64_t *offset)
{
    VHDXDiffState *d = ((BDRVVHDXState *)bs->opaque)->diff;
    uint64_t off;
    int ret;

    if (!d->file_size) {
        int64_t len = bdrv_co_getlength(bs->file->bs);

        if (len < 0) {
            return len;
        }
        d->file_end = d->file_size = len;
        d->tail_zeroed = true;      /* an empty tail */
    }
    off = ROUND_UP(d->file_end, MiB);
    if (off > INT64_MAX - VHDX_DIFF_GROW - size) {
        return -EINVAL;
    }
    if (off + size > d->file_size) {
        uint64_t new_size = ROUND_UP(off + size, VHDX_DIFF_GROW);
        bool zeroed;

        ret = vhdx_diff_grow(bs, new_size, &zeroed);
        if (ret < 0) {
            return ret;
        }
        /* What lay between file_end and file_size keeps its guarantee */
        d->tail_zeroed = d->tail_zeroed && zeroed;
        d->file_size = new_size;
    }
    if (zero && !d->tail_zeroed) {
        ret = bdrv_co_pwrite_zeroes(bs->file, off, size, 0);
        if (ret < 0) {
            return ret;
        }
    }
    d->file_end = off + size;
    *offset = off;
    return 0;
}

/*
 * Cut the unused end the file got from vhdx_diff_alloc().  Only tidies
 * up: the image is consistent with or without it, so a failure is not
 * an error of the commit.
 */
void coroutine_fn GRAPH_RDLOCK
vhdx_diff_trim(BlockDriverState *bs, VHDXDiffState *d)
{
    if (d->file_size > d->file_end &&
        bdrv_co_truncate(bs->file, d->file_end, false, PREALLOC_MODE_OFF, 0,
                         NULL) == 0) {
        d->file_size = d->file_end;
        d->tail_zeroed = true;
    }
}

/* Set BAT entry @idx in memory; the log gets it at the next commit */
static void vhdx_diff_set_bat(BDRVVHDXState *s, uint64_t idx, uint64_t entry)
{
    s->bat[idx] = entry;
    vhdx_meta_log_dirty_bat(s->meta_log, idx);
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
        vhdx_diff_set_bat(s, idx, offset | SB_BLOCK_PRESENT);
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
 * one block) in memory, marking the bytes that change dirty.
 */
static int coroutine_fn GRAPH_RDLOCK
vhdx_diff_set_bits(BlockDriverState *bs, BDRVVHDXState *s,
                   int64_t sector_num, uint32_t nb_sectors)
{
    uint64_t blk = sector_num >> s->sectors_per_block_bits;
    uint64_t chunk = blk >> s->chunk_ratio_bits;
    uint64_t first = sector_num & (VHDX_MAX_SECTORS_PER_BLOCK - 1);
    uint64_t last = first + nb_sectors - 1;
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
    if (changed) {
        vhdx_meta_log_dirty_bitmap(s->meta_log, chunk, first >> 3,
                                   last >> 3);
    }
    return 0;
}

/* Write data with s->lock dropped */
static int coroutine_fn GRAPH_RDLOCK
vhdx_diff_write_unlocked(BlockDriverState *bs, BDRVVHDXState *s,
                         uint64_t offset, uint64_t bytes, QEMUIOVector *qiov)
{
    int ret;

    qemu_co_mutex_unlock(&s->lock);
    ret = bdrv_co_pwritev(bs->file, offset, bytes, qiov, 0);
    qemu_co_mutex_lock(&s->lock);
    return ret;
}

/*
 * Give BAT entry @idx a new FULLY_PRESENT block: zeros, with @qiov
 * (unless NULL) written at @in_blk.  The entry is set once the data is
 * there.  Called with s->lock held.
 */
static int coroutine_fn GRAPH_RDLOCK
vhdx_diff_new_full_block(BlockDriverState *bs, BDRVVHDXState *s,
                         uint64_t idx, uint64_t in_blk, uint64_t bytes,
                         QEMUIOVector *qiov)
{
    uint64_t offset;
    int ret;

    ret = vhdx_diff_alloc(bs, s->block_size, true, &offset);
    if (ret < 0) {
        return ret;
    }
    if (qiov) {
        ret = bdrv_co_pwritev(bs->file, offset + in_blk, bytes, qiov, 0);
        if (ret < 0) {
            return ret;
        }
    }
    vhdx_diff_set_bat(s, idx, offset | PAYLOAD_BLOCK_FULLY_PRESENT);
    return 0;
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
        return vhdx_diff_write_unlocked(bs, s, offset + in_blk, bytes, qiov);

    case PAYLOAD_BLOCK_PARTIALLY_PRESENT:
        ret = vhdx_diff_write_unlocked(bs, s, offset + in_blk, bytes, qiov);
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
        /* Allocated, no bit set: reads still see the parent */
        vhdx_diff_set_bat(s, idx, offset | PAYLOAD_BLOCK_PARTIALLY_PRESENT);
        ret = vhdx_diff_write_unlocked(bs, s, offset + in_blk, bytes, qiov);
        if (ret < 0) {
            return ret;
        }
        return vhdx_diff_set_bits(bs, s, sector_num, nb_sectors);

    case PAYLOAD_BLOCK_ZERO:
    case PAYLOAD_BLOCK_UNDEFINED:
    case PAYLOAD_BLOCK_UNMAPPED:
    case PAYLOAD_BLOCK_UNMAPPED_v095:
        /* Under the lock: the entry may only change once data is there */
        return vhdx_diff_new_full_block(bs, s, idx, in_blk, bytes, qiov);

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
    /* Held except around data writes (see vhdx_diff_write_block()) */
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
    if (ret >= 0) {
        ret = vhdx_meta_log_commit_if_full(bs, s);
    }

    qemu_co_mutex_unlock(&s->lock);
    qemu_iovec_destroy(&hd_qiov);
    return ret < 0 ? ret : 0;
}

/*
 * Zero the block of BAT entry @idx whole, or with @discard, drop what
 * this layer holds of it (a discard may leave any contents, but never
 * the parent's where this layer had data: those blocks are zeroed, with
 * BDRV_REQ_MAY_UNMAP the file gives the space back).  Called with
 * s->lock held.
 */
static int coroutine_fn GRAPH_RDLOCK
vhdx_diff_zero_block(BlockDriverState *bs, BDRVVHDXState *s, uint64_t idx,
                     BdrvRequestFlags flags, bool discard)
{
    uint64_t state = s->bat[idx] & VHDX_BAT_STATE_BIT_MASK;
    uint64_t offset = s->bat[idx] & VHDX_BAT_FILE_OFF_MASK;
    int ret;

    switch (state) {
    case PAYLOAD_BLOCK_FULLY_PRESENT:
    case PAYLOAD_BLOCK_PARTIALLY_PRESENT:
        ret = bdrv_co_pwrite_zeroes(bs->file, offset, s->block_size, flags);
        if (ret < 0) {
            return ret;
        }
        if (state == PAYLOAD_BLOCK_PARTIALLY_PRESENT) {
            vhdx_diff_set_bat(s, idx, offset | PAYLOAD_BLOCK_FULLY_PRESENT);
        }
        return 0;

    case PAYLOAD_BLOCK_NOT_PRESENT:
    case PAYLOAD_BLOCK_ZERO:
    case PAYLOAD_BLOCK_UNDEFINED:
    case PAYLOAD_BLOCK_UNMAPPED:
    case PAYLOAD_BLOCK_UNMAPPED_v095:
        if (discard) {
            /* Nothing of this layer to drop */
            return 0;
        }
        return vhdx_diff_new_full_block(bs, s, idx, 0, 0, NULL);

    default:
        return -EIO;
    }
}

int coroutine_fn GRAPH_RDLOCK
vhdx_diff_co_zero_blocks(BlockDriverState *bs, int64_t offset, int64_t bytes,
                         BdrvRequestFlags flags, bool discard)
{
    BDRVVHDXState *s = bs->opaque;
    uint64_t blk, end;
    int ret;

    if (!QEMU_IS_ALIGNED(offset | bytes, s->block_size)) {
        return -ENOTSUP;
    }
    qemu_co_mutex_lock(&s->lock);
    ret = vhdx_user_visible_write(bs, s);
    end = (offset + bytes) / s->block_size;
    for (blk = offset / s->block_size; ret >= 0 && blk < end; blk++) {
        uint64_t idx = blk + (blk >> s->chunk_ratio_bits);

        if (idx >= s->bat_entries) {
            ret = -EIO;
            break;
        }
        ret = vhdx_diff_zero_block(bs, s, idx, flags, discard);
    }
    if (ret >= 0) {
        ret = vhdx_meta_log_commit_if_full(bs, s);
    }
    qemu_co_mutex_unlock(&s->lock);
    return ret < 0 ? ret : 0;
}
