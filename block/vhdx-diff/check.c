/*
 * Differencing VHDX: qemu-img check
 *
 * Copyright (c) 2026 The Hyper-V checkpoints project authors
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 *
 * What block/vhdx.c's check does not see in a differencing image: the
 * chain (a parent that is missing, not the one the child was made from,
 * or part of a loop; for qemu-img check the image is opened without its
 * parent then, see vhdx_diff_open()), the sector bitmaps (a partially
 * present block needs a readable bitmap block in its chunk), payload
 * states that have no meaning, and blocks that overlap each other.
 * Problems count as corruptions, as qcow2's do: qemu-img check exits
 * with 2.  Nothing is repaired here.
 */

#include "qemu/osdep.h"
#include "qemu/cutils.h"
#include "qemu/memalign.h"
#include "block/block-io.h"
#include "block/block_int.h"
#include "vhdx-diff.h"

/* Report at most this many problems of one kind, then count silently */
#define VHDX_CHECK_REPORT_MAX 16

typedef struct VHDXExtent {
    uint64_t offset;
    uint64_t length;
    uint64_t index;             /* BAT entry */
} VHDXExtent;

static int vhdx_extent_cmp(const void *a, const void *b)
{
    const VHDXExtent *x = a, *y = b;

    return x->offset < y->offset ? -1 : x->offset > y->offset;
}

static void vhdx_check_chain(BlockDriverState *bs, BdrvCheckResult *result)
{
    BDRVVHDXState *s = bs->opaque;
    BlockDriverState *p;

    if (s->diff->chain_error) {
        fprintf(stderr, "ERROR chain: %s\n", s->diff->chain_error);
        result->corruptions++;
    }
    /* Further up, parents opened for the check keep their own problem */
    for (p = bs->backing ? bs->backing->bs : NULL; p;
         p = p->backing ? p->backing->bs : NULL) {
        BDRVVHDXState *ps;

        if (p->drv != bs->drv) {
            break;
        }
        ps = p->opaque;
        if (ps->diff && ps->diff->chain_error) {
            fprintf(stderr, "ERROR chain (in parent '%s'): %s\n", p->filename,
                    ps->diff->chain_error);
            result->corruptions++;
        }
    }
}

/* Payload blocks that overlap each other or a sector bitmap block */
static void vhdx_check_overlaps(BlockDriverState *bs, BdrvCheckResult *result)
{
    BDRVVHDXState *s = bs->opaque;
    g_autofree VHDXExtent *ext = g_new(VHDXExtent, s->bat_entries);
    uint64_t n = 0, i, reported = 0;

    for (i = 0; i < s->bat_entries; i++) {
        uint64_t state = s->bat[i] & VHDX_BAT_STATE_BIT_MASK;
        uint64_t offset = s->bat[i] & VHDX_BAT_FILE_OFF_MASK;

        if (vhdx_bat_index_is_sb(s, i) ? state == SB_BLOCK_PRESENT :
            (state == PAYLOAD_BLOCK_FULLY_PRESENT ||
             state == PAYLOAD_BLOCK_PARTIALLY_PRESENT)) {
            ext[n].offset = offset;
            ext[n].length = vhdx_bat_index_is_sb(s, i) ? VHDX_SB_BLOCK_SIZE :
                            s->block_size;
            ext[n].index = i;
            n++;
        }
    }
    qsort(ext, n, sizeof(*ext), vhdx_extent_cmp);
    for (i = 1; i < n; i++) {
        if (ext[i - 1].offset + ext[i - 1].length <= ext[i].offset) {
            continue;
        }
        if (reported++ < VHDX_CHECK_REPORT_MAX) {
            fprintf(stderr, "ERROR BAT entries %" PRIu64 " and %" PRIu64
                    " overlap at file offset %" PRIu64 "\n", ext[i - 1].index,
                    ext[i].index, ext[i].offset);
        }
        result->corruptions++;
    }
}

/* What vhdx_check_bitmaps() counts over all chunks */
typedef struct VHDXCheckBitmaps {
    BdrvCheckResult *result;
    int64_t file_size;
    uint8_t *bitmap;            /* a chunk's sector bitmap */
    uint64_t reported;          /* block problems reported */
    uint64_t stray;             /* absent blocks with bitmap bits set */
} VHDXCheckBitmaps;

/*
 * The sector bitmap entry of chunk @k: report a bad one, read a good
 * one into c->bitmap.  Returns whether the chunk has a bitmap to look at.
 */
static bool coroutine_fn GRAPH_RDLOCK
vhdx_check_chunk_bitmap(BlockDriverState *bs, VHDXCheckBitmaps *c, uint64_t k)
{
    BDRVVHDXState *s = bs->opaque;
    uint64_t sbi = vhdx_sb_bat_index(s, k);
    uint64_t sb_state = s->bat[sbi] & VHDX_BAT_STATE_BIT_MASK;
    uint64_t sb_off = s->bat[sbi] & VHDX_BAT_FILE_OFF_MASK;
    const char *why = NULL;
    int ret;

    if (sb_state == SB_BLOCK_PRESENT) {
        if (sb_off < 1 * MiB) {
            why = "points into the file header";
        } else if (sb_off + VHDX_SB_BLOCK_SIZE > c->file_size) {
            why = "lies beyond the end of the file";
        }
    } else if (sb_state != SB_BLOCK_NOT_PRESENT) {
        why = "has an invalid state";
    }
    if (why) {
        fprintf(stderr, "ERROR sector bitmap of chunk %" PRIu64
                " (BAT entry %" PRIu64 ", state %" PRIu64 ", offset %"
                PRIu64 ", file size %" PRId64 ") %s\n", k, sbi,
                sb_state, sb_off, c->file_size, why);
        c->result->corruptions++;
        return false;
    }
    if (sb_state != SB_BLOCK_PRESENT) {
        return false;
    }
    ret = bdrv_co_pread(bs->file, sb_off, VHDX_SB_BLOCK_SIZE, c->bitmap, 0);
    if (ret < 0) {
        fprintf(stderr, "ERROR could not read the sector bitmap of "
                "chunk %" PRIu64 ": %s\n", k, strerror(-ret));
        c->result->check_errors++;
        return false;
    }
    return true;
}

/*
 * The payload blocks of chunk @k against its bitmap (@readable: read
 * into c->bitmap): partially present ones need it, invalid states.
 */
static void vhdx_check_chunk_blocks(BDRVVHDXState *s, VHDXCheckBitmaps *c,
                                    uint64_t k, bool readable)
{
    uint64_t sbi = vhdx_sb_bat_index(s, k);
    uint64_t bytes = s->sectors_per_block / 8;
    uint64_t j;

    for (j = 0; j < s->chunk_ratio; j++) {
        uint64_t i = sbi - s->chunk_ratio + j;
        uint64_t state = s->bat[i] & VHDX_BAT_STATE_BIT_MASK;

        switch (state) {
        case PAYLOAD_BLOCK_PARTIALLY_PRESENT:
            if (!readable) {
                if (c->reported++ < VHDX_CHECK_REPORT_MAX) {
                    fprintf(stderr, "ERROR block %" PRIu64 " (BAT entry %"
                            PRIu64 ") is partially present but its chunk "
                            "%" PRIu64 " has no readable sector bitmap\n",
                            i - k, i, k);
                }
                c->result->corruptions++;
            }
            break;
        case PAYLOAD_BLOCK_NOT_PRESENT:
            if (readable && !buffer_is_zero(c->bitmap + j * bytes, bytes)) {
                c->stray++;
            }
            break;
        case PAYLOAD_BLOCK_UNDEFINED:
        case PAYLOAD_BLOCK_ZERO:
        case PAYLOAD_BLOCK_UNMAPPED:
        case PAYLOAD_BLOCK_UNMAPPED_v095:
        case PAYLOAD_BLOCK_FULLY_PRESENT:
            break;
        default:
            if (c->reported++ < VHDX_CHECK_REPORT_MAX) {
                fprintf(stderr, "ERROR block %" PRIu64 " (BAT entry %"
                        PRIu64 ") has the invalid state %" PRIu64 "\n",
                        i - k, i, state);
            }
            c->result->corruptions++;
        }
    }
}

/*
 * The sector bitmap of every chunk: present and inside the file when a
 * block of the chunk is partially present.  Bits of blocks that are not
 * present are meaningless to MS-VHDX (QEMU ignores them) but some
 * readers honour them: a warning, not a corruption.
 */
static int coroutine_fn GRAPH_RDLOCK
vhdx_check_bitmaps(BlockDriverState *bs, BdrvCheckResult *result,
                   int64_t file_size)
{
    BDRVVHDXState *s = bs->opaque;
    VHDXCheckBitmaps c = { .result = result, .file_size = file_size };
    uint64_t k;

    c.bitmap = qemu_try_blockalign(bs->file->bs, VHDX_SB_BLOCK_SIZE);
    if (!c.bitmap) {
        return -ENOMEM;
    }
    for (k = 0; k < s->diff->sb_count; k++) {
        bool readable = vhdx_check_chunk_bitmap(bs, &c, k);

        vhdx_check_chunk_blocks(s, &c, k, readable);
    }
    if (c.stray) {
        fprintf(stderr, "Warning: %" PRIu64 " blocks that are not present "
                "have sector bitmap bits set (ignored)\n", c.stray);
    }
    qemu_vfree(c.bitmap);
    return 0;
}

int coroutine_fn GRAPH_RDLOCK
vhdx_diff_co_check(BlockDriverState *bs, BdrvCheckResult *result,
                   BdrvCheckMode fix)
{
    int64_t file_size = bdrv_co_getlength(bs->file->bs);

    vhdx_check_chain(bs, result);
    if (file_size < 0) {
        result->check_errors++;
        return file_size;
    }
    vhdx_check_overlaps(bs, result);
    return vhdx_check_bitmaps(bs, result, file_size);
}
