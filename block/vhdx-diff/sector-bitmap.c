/*
 * Differencing VHDX: reading through the BAT and the sector bitmaps
 *
 * Copyright (c) 2026 The Hyper-V checkpoints project authors
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 *
 * In a differencing image a payload block is NOT_PRESENT (all sectors
 * come from the parent), FULLY_PRESENT (all from this file; the bitmap
 * is not consulted), PARTIALLY_PRESENT (per sector: bitmap bit 1 = this
 * file, 0 = the parent) or ZERO/UNDEFINED/UNMAPPED (zeros, the parent is
 * hidden; 7-Zip, dissect and DiscUtils read these as zeros too, and that
 * never resurrects stale parent data).
 *
 * The sector bitmap of chunk k (2^23 sectors) is the 1 MiB block of BAT
 * entry k * (chunk_ratio + 1) + chunk_ratio; bit (s & 7) of byte s >> 3
 * belongs to chunk-relative sector s.
 */

#include "qemu/osdep.h"
#include "qemu/memalign.h"
#include "qemu/error-report.h"
#include "block/block-io.h"
#include "block/block_int.h"
#include "vhdx-diff.h"

/* Where a run of sectors inside one payload block comes from */
typedef enum VHDXRunSource {
    VHDX_RUN_FILE,      /* this file, at run->file_offset */
    VHDX_RUN_PARENT,    /* the parent (zeros without one) */
    VHDX_RUN_ZERO,      /* zeros, hiding the parent */
} VHDXRunSource;

typedef struct VHDXRun {
    VHDXRunSource source;
    uint64_t file_offset;
    uint32_t sectors;
} VHDXRun;

static bool vhdx_has_parent(BDRVVHDXState *s)
{
    return s->params.data_bits & VHDX_PARAMS_HAS_PARENT;
}

/*
 * The cached bitmap of the chunk holding @blk, read on first use.
 * Called with s->lock held.
 */
int coroutine_fn GRAPH_RDLOCK
vhdx_sb_get(BlockDriverState *bs, BDRVVHDXState *s, uint64_t blk,
            uint8_t **bitmap)
{
    uint64_t chunk = blk >> s->chunk_ratio_bits;
    uint64_t entry;
    uint64_t offset;
    uint8_t *buf;
    int ret;

    if (chunk >= s->diff->sb_count) {
        return -EIO;
    }
    if (s->diff->sb_cache[chunk]) {
        *bitmap = s->diff->sb_cache[chunk];
        return 0;
    }
    entry = s->bat[vhdx_sb_bat_index(s, chunk)];
    if ((entry & VHDX_BAT_STATE_BIT_MASK) != SB_BLOCK_PRESENT) {
        error_report("vhdx '%s': block %" PRIu64 " is partially present but "
                     "chunk %" PRIu64 " has no sector bitmap", bs->filename,
                     blk, chunk);
        return -EIO;
    }
    offset = entry & VHDX_BAT_FILE_OFF_MASK;
    buf = qemu_try_blockalign(bs->file->bs, VHDX_SB_BLOCK_SIZE);
    if (!buf) {
        return -ENOMEM;
    }
    ret = bdrv_co_pread(bs->file, offset, VHDX_SB_BLOCK_SIZE, buf, 0);
    if (ret < 0) {
        qemu_vfree(buf);
        return ret;
    }
    s->diff->sb_cache[chunk] = buf;
    *bitmap = buf;
    return 0;
}

/*
 * Length of the run of sectors with the same bitmap bit as sector
 * @first, looking at no more than @max sectors.
 */
static uint32_t vhdx_sb_run(const uint8_t *bitmap, uint64_t first,
                            uint32_t max, bool *present)
{
    bool bit = bitmap[first >> 3] & (1 << (first & 7));
    uint8_t same = bit ? 0xff : 0;
    uint32_t n = 0;

    *present = bit;
    while (n < max) {
        uint64_t s = first + n;

        /* Skip whole bytes of equal bits */
        if ((s & 7) == 0 && max - n >= 8 && bitmap[s >> 3] == same) {
            n += 8;
            continue;
        }
        if (!!(bitmap[s >> 3] & (1 << (s & 7))) != bit) {
            break;
        }
        n++;
    }
    return n;
}

/*
 * Describe the first run of @nb_sectors sectors from @sector_num that
 * has one source.  The run never crosses a payload block.
 * Called with s->lock held.
 */
static int coroutine_fn GRAPH_RDLOCK
vhdx_diff_find_run(BlockDriverState *bs, BDRVVHDXState *s,
                   int64_t sector_num, uint32_t nb_sectors, VHDXRun *run)
{
    uint64_t blk = sector_num >> s->sectors_per_block_bits;
    uint32_t in_blk = sector_num & (s->sectors_per_block - 1);
    uint64_t idx = blk + (blk >> s->chunk_ratio_bits);
    uint64_t entry;
    uint64_t block_off;
    uint64_t chunk_sector;
    uint8_t *bitmap;
    bool present;
    int ret;

    if (idx >= s->bat_entries) {
        return -EIO;
    }
    entry = s->bat[idx];
    block_off = entry & VHDX_BAT_FILE_OFF_MASK;
    run->sectors = MIN(nb_sectors, s->sectors_per_block - in_blk);
    run->file_offset = block_off +
                       ((uint64_t)in_blk << s->logical_sector_size_bits);

    switch (entry & VHDX_BAT_STATE_BIT_MASK) {
    case PAYLOAD_BLOCK_NOT_PRESENT:
        run->source = vhdx_has_parent(s) ? VHDX_RUN_PARENT : VHDX_RUN_ZERO;
        return 0;
    case PAYLOAD_BLOCK_UNDEFINED:
    case PAYLOAD_BLOCK_UNMAPPED:
    case PAYLOAD_BLOCK_UNMAPPED_v095:
    case PAYLOAD_BLOCK_ZERO:
        run->source = VHDX_RUN_ZERO;
        return 0;
    case PAYLOAD_BLOCK_FULLY_PRESENT:
        run->source = VHDX_RUN_FILE;
        return 0;
    case PAYLOAD_BLOCK_PARTIALLY_PRESENT:
        if (!vhdx_has_parent(s)) {
            return -EIO;
        }
        ret = vhdx_sb_get(bs, s, blk, &bitmap);
        if (ret < 0) {
            return ret;
        }
        /* The bitmap is indexed by the chunk-relative sector */
        chunk_sector = sector_num & (VHDX_MAX_SECTORS_PER_BLOCK - 1);
        run->sectors = vhdx_sb_run(bitmap, chunk_sector, run->sectors,
                                   &present);
        run->source = present ? VHDX_RUN_FILE : VHDX_RUN_PARENT;
        return 0;
    default:
        error_report("vhdx '%s': BAT entry %" PRIu64 " has the invalid "
                     "state %" PRIu64, bs->filename, idx,
                     entry & VHDX_BAT_STATE_BIT_MASK);
        return -EIO;
    }
}

/* Runs of one read looked up before its I/O starts */
#define VHDX_READ_RUNS 64

/*
 * Read @n runs of sectors from @sector_num into @qiov at @qiov_off.
 * Called with s->lock held; drops it for the I/O.
 *
 * Where several runs come from the parent with runs of this file in
 * between (sector bitmaps: a few sectors written here and there), the
 * parent is asked once for the whole span and this file's runs are read
 * over it: in a chain, every level would otherwise split the request
 * again, and a read at the top of a deep chain would become many small
 * reads at the bottom.  Not when this file's runs are most of the span
 * (the parent's copy of them would be read for nothing).
 */
static int coroutine_fn GRAPH_RDLOCK
vhdx_diff_read_runs(BlockDriverState *bs, BDRVVHDXState *s,
                    int64_t sector_num, VHDXRun *runs, int n,
                    QEMUIOVector *qiov, uint64_t qiov_off)
{
    const int bits = s->logical_sector_size_bits;
    uint64_t span_start = 0, span_end = 0, from_parent = 0, off;
    int parents = 0, i;
    bool span;
    QEMUIOVector part;
    int ret = 0;

    for (i = 0, off = 0; i < n; off += runs[i].sectors, i++) {
        if (runs[i].source == VHDX_RUN_PARENT && bs->backing) {
            span_start = parents++ ? span_start : off;
            span_end = off + runs[i].sectors;
            from_parent += runs[i].sectors;
        }
    }
    /* What is not the parent's inside the span is read twice */
    span = parents > 1 &&
           (span_end - span_start - from_parent) * 2 <= span_end - span_start;

    qemu_iovec_init(&part, qiov->niov);
    qemu_co_mutex_unlock(&s->lock);
    if (span) {
        qemu_iovec_concat(&part, qiov, qiov_off + (span_start << bits),
                          (span_end - span_start) << bits);
        ret = bdrv_co_preadv(bs->backing,
                             (sector_num + span_start) << bits,
                             (span_end - span_start) << bits, &part, 0);
    }
    for (i = 0, off = 0; i < n && ret >= 0; off += runs[i].sectors, i++) {
        uint64_t bytes = (uint64_t)runs[i].sectors << bits;

        if (span && runs[i].source == VHDX_RUN_PARENT) {
            continue;           /* read with the span */
        }
        qemu_iovec_reset(&part);
        qemu_iovec_concat(&part, qiov, qiov_off + (off << bits), bytes);
        if (runs[i].source == VHDX_RUN_FILE) {
            ret = bdrv_co_preadv(bs->file, runs[i].file_offset, bytes,
                                 &part, 0);
        } else if (runs[i].source == VHDX_RUN_PARENT && bs->backing) {
            ret = bdrv_co_preadv(bs->backing, (sector_num + off) << bits,
                                 bytes, &part, 0);
        } else {
            qemu_iovec_memset(&part, 0, 0, bytes);
        }
    }
    qemu_co_mutex_lock(&s->lock);
    qemu_iovec_destroy(&part);
    return ret;
}

int coroutine_fn GRAPH_RDLOCK
vhdx_diff_co_readv(BlockDriverState *bs, int64_t sector_num, int nb_sectors,
                   QEMUIOVector *qiov)
{
    BDRVVHDXState *s = bs->opaque;
    uint64_t bytes_done = 0;
    int ret = 0;

    qemu_co_mutex_lock(&s->lock);
    while (nb_sectors > 0 && ret >= 0) {
        VHDXRun runs[VHDX_READ_RUNS];
        int64_t next = sector_num;
        uint32_t sectors = 0;
        int n = 0;

        /*
         * The BAT may change while the lock is dropped for the I/O, not
         * the runs looked up before
         */
        while (n < VHDX_READ_RUNS && sectors < nb_sectors) {
            ret = vhdx_diff_find_run(bs, s, next, nb_sectors - sectors,
                                     &runs[n]);
            if (ret < 0) {
                break;
            }
            next += runs[n].sectors;
            sectors += runs[n].sectors;
            n++;
        }
        if (ret < 0) {
            break;
        }
        ret = vhdx_diff_read_runs(bs, s, sector_num, runs, n, qiov,
                                  bytes_done);
        nb_sectors -= sectors;
        sector_num += sectors;
        bytes_done += (uint64_t)sectors << s->logical_sector_size_bits;
    }
    qemu_co_mutex_unlock(&s->lock);
    return ret < 0 ? ret : 0;
}

/*
 * Block status of this layer only: data in this file, zeros that hide
 * the parent, or 0 ("ask the parent") for sectors the parent supplies.
 * Without it the block layer would take every sector as data of this
 * layer, and block-stream, commit and convert would skip the parent.
 */
int coroutine_fn GRAPH_RDLOCK
vhdx_co_block_status(BlockDriverState *bs, bool want_zero, int64_t offset,
                     int64_t bytes, int64_t *pnum, int64_t *map,
                     BlockDriverState **file)
{
    BDRVVHDXState *s = bs->opaque;
    int64_t sector_num = offset >> s->logical_sector_size_bits;
    uint32_t nb_sectors = MIN(bytes >> s->logical_sector_size_bits,
                              UINT32_MAX);
    VHDXRun run;
    int ret;

    qemu_co_mutex_lock(&s->lock);
    ret = vhdx_diff_find_run(bs, s, sector_num, MAX(nb_sectors, 1), &run);
    qemu_co_mutex_unlock(&s->lock);
    if (ret < 0) {
        return ret;
    }

    *pnum = (int64_t)run.sectors << s->logical_sector_size_bits;
    switch (run.source) {
    case VHDX_RUN_FILE:
        *map = run.file_offset;
        *file = bs->file->bs;
        return BDRV_BLOCK_DATA | BDRV_BLOCK_OFFSET_VALID;
    case VHDX_RUN_ZERO:
        return BDRV_BLOCK_ZERO;
    case VHDX_RUN_PARENT:
    default:
        return 0;
    }
}
