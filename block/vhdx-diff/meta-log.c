/*
 * VHDX: metadata changes logged at the next flush
 *
 * Copyright (c) 2026 The Hyper-V checkpoints project authors
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 *
 * Upstream vhdx writes a new block's BAT entry through the log at once:
 * one log entry and its flushes per allocated block.  Here metadata
 * (BAT entries of base and differencing images, sector bitmap bytes of
 * differencing images) changes in memory and is marked dirty per 4 KiB
 * piece (VHDX_DIFF_PIECE); it reaches the file through the VHDX log when
 * the image is flushed (guest flush, close, reopen) or when more than
 * VHDX_DIFF_DIRTY_MAX pieces are dirty: a flush of the data, then the
 * BAT pieces, then the bitmap pieces, at most VHDX_DIFF_COMMIT_PIECES
 * per log entry.  This is qcow2's contract (qcow2-cache.c): a write is
 * durable once a flush returned; a crash at any time leaves a
 * consistent image that holds every flushed write.  A crash after some
 * BAT pieces leaves PARTIALLY_PRESENT blocks without bits, which read as
 * the parent.
 *
 * A differencing image gets its log state when it is opened; a base
 * image when it first allocates a block.
 */

#include "qemu/osdep.h"
#include "qemu/bitmap.h"
#include "block/block-io.h"
#include "block/block_int.h"
#include "vhdx-diff.h"

VHDXMetaLog *vhdx_meta_log_new(BDRVVHDXState *s, uint64_t sb_count)
{
    VHDXMetaLog *m = g_new0(VHDXMetaLog, 1);

    m->bat_pieces = DIV_ROUND_UP((uint64_t)s->bat_entries * sizeof(uint64_t),
                                 VHDX_DIFF_PIECE);
    m->bat_dirty = bitmap_new(m->bat_pieces);
    m->sb_pieces = sb_count * VHDX_DIFF_SB_PIECES;
    m->sb_dirty = bitmap_new(m->sb_pieces);
    return m;
}

void vhdx_meta_log_free(VHDXMetaLog *m)
{
    if (m) {
        g_free(m->bat_dirty);
        g_free(m->sb_dirty);
        g_free(m);
    }
}

void vhdx_meta_log_dirty_bat(VHDXMetaLog *m, uint64_t idx)
{
    uint64_t piece = idx * sizeof(uint64_t) / VHDX_DIFF_PIECE;

    if (!test_and_set_bit(piece, m->bat_dirty)) {
        m->dirty++;
    }
}

void vhdx_meta_log_dirty_bitmap(VHDXMetaLog *m, uint64_t chunk,
                                uint64_t first, uint64_t last)
{
    uint64_t base = chunk * VHDX_DIFF_SB_PIECES;
    uint64_t p;

    for (p = first / VHDX_DIFF_PIECE; p <= last / VHDX_DIFF_PIECE; p++) {
        if (!test_and_set_bit(base + p, m->sb_dirty)) {
            m->dirty++;
        }
    }
}

/* Log the dirty pieces of the BAT, little-endian as in the file */
static int coroutine_fn GRAPH_RDLOCK
vhdx_meta_log_bat(BlockDriverState *bs, BDRVVHDXState *s, VHDXMetaLog *m)
{
    const uint64_t per_piece = VHDX_DIFF_PIECE / sizeof(uint64_t);
    g_autofree uint64_t *le = g_new(uint64_t,
                                    per_piece * VHDX_DIFF_COMMIT_PIECES);
    uint64_t start, end, i;
    int ret;

    for (start = find_first_bit(m->bat_dirty, m->bat_pieces);
         start < m->bat_pieces;
         start = find_next_bit(m->bat_dirty, m->bat_pieces, end)) {
        uint64_t first, count;

        end = find_next_zero_bit(m->bat_dirty, m->bat_pieces, start);
        end = MIN(end, start + VHDX_DIFF_COMMIT_PIECES);
        first = start * per_piece;
        count = MIN(end * per_piece, s->bat_length / sizeof(uint64_t)) -
                first;
        for (i = 0; i < count; i++) {
            /* entries past bat_entries were never converted from LE */
            le[i] = first + i < s->bat_entries ?
                    cpu_to_le64(s->bat[first + i]) : s->bat[first + i];
        }
        ret = vhdx_log_write_and_flush(bs, s, le, count * sizeof(uint64_t),
                                       s->bat_offset +
                                       first * sizeof(uint64_t));
        if (ret < 0) {
            return ret;
        }
        bitmap_clear(m->bat_dirty, start, end - start);
        m->dirty -= end - start;
    }
    return 0;
}

/* Log the dirty pieces of the sector bitmaps (differencing images) */
static int coroutine_fn GRAPH_RDLOCK
vhdx_meta_log_bitmaps(BlockDriverState *bs, BDRVVHDXState *s, VHDXMetaLog *m)
{
    uint64_t start, end;
    int ret;

    for (start = find_first_bit(m->sb_dirty, m->sb_pieces);
         start < m->sb_pieces;
         start = find_next_bit(m->sb_dirty, m->sb_pieces, end)) {
        uint64_t chunk = start / VHDX_DIFF_SB_PIECES;
        uint64_t in_sb = (start % VHDX_DIFF_SB_PIECES) * VHDX_DIFF_PIECE;
        uint64_t sb_off;

        end = find_next_zero_bit(m->sb_dirty, m->sb_pieces, start);
        end = MIN(end, MIN(start + VHDX_DIFF_COMMIT_PIECES,
                           (chunk + 1) * VHDX_DIFF_SB_PIECES));
        sb_off = s->bat[vhdx_sb_bat_index(s, chunk)] & VHDX_BAT_FILE_OFF_MASK;
        if (!s->diff || !s->diff->sb_cache[chunk] || !sb_off) {
            return -EIO;
        }
        ret = vhdx_log_write_and_flush(bs, s,
                                       s->diff->sb_cache[chunk] + in_sb,
                                       (end - start) * VHDX_DIFF_PIECE,
                                       sb_off + in_sb);
        if (ret < 0) {
            return ret;
        }
        bitmap_clear(m->sb_dirty, start, end - start);
        m->dirty -= end - start;
    }
    return 0;
}

int coroutine_fn GRAPH_RDLOCK
vhdx_meta_log_co_commit(BlockDriverState *bs, BDRVVHDXState *s)
{
    VHDXMetaLog *m = s->meta_log;
    int ret;

    if (!m || !m->dirty) {
        return 0;
    }
    /* The data the new entries point to must be on disk before them */
    ret = bdrv_co_flush(bs->file->bs);
    if (ret < 0) {
        return ret;
    }
    ret = vhdx_meta_log_bat(bs, s, m);
    if (ret < 0) {
        return ret;
    }
    ret = vhdx_meta_log_bitmaps(bs, s, m);
    if (ret < 0) {
        return ret;
    }
    if (s->diff) {
        vhdx_diff_trim(bs, s->diff);
    }
    return 0;
}

int coroutine_fn GRAPH_RDLOCK
vhdx_meta_log_commit_if_full(BlockDriverState *bs, BDRVVHDXState *s)
{
    if (s->meta_log->dirty > VHDX_DIFF_DIRTY_MAX) {
        return vhdx_meta_log_co_commit(bs, s);
    }
    return 0;
}

int coroutine_fn GRAPH_RDLOCK
vhdx_meta_log_bat_set(BlockDriverState *bs, BDRVVHDXState *s, uint64_t idx)
{
    if (!s->meta_log) {
        s->meta_log = vhdx_meta_log_new(s, 0);
    }
    vhdx_meta_log_dirty_bat(s->meta_log, idx);
    return vhdx_meta_log_commit_if_full(bs, s);
}

int coroutine_fn GRAPH_RDLOCK vhdx_meta_log_co_flush(BlockDriverState *bs)
{
    BDRVVHDXState *s = bs->opaque;
    int ret;

    if (!s->meta_log) {
        return 0;
    }
    qemu_co_mutex_lock(&s->lock);
    ret = vhdx_meta_log_co_commit(bs, s);
    qemu_co_mutex_unlock(&s->lock);
    return ret;
}
