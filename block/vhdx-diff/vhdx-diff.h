/*
 * Differencing VHDX (Hyper-V .avhdx) support for QEMU's vhdx driver
 *
 * Copyright (c) 2026 The Hyper-V checkpoints project authors
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 *
 * A differencing VHDX is an ordinary VHDX whose File Parameters have the
 * HasParent bit and which carries a Parent Locator metadata item.  This
 * code parses the locator, finds and checks the parent, and serves the
 * reads and block status queries of such an image; block/vhdx.c calls
 * it where the image has a parent.  See README.md in this folder.
 */

#ifndef BLOCK_VHDX_DIFF_H
#define BLOCK_VHDX_DIFF_H

#include "block/block_int.h"
#include "block/vhdx.h"

/* Parent locator type of a VHDX parent, b04aefb7-d19e-4a81-b789-25b8e9445913 */
extern const MSGUID vhdx_parent_locator_type_vhdx;
/*
 * Metadata item id of the Parent Locator,
 * a8d35f2d-b30b-454d-abf7-d3d84834ab0c
 */
extern const MSGUID vhdx_parent_locator_item;

/* Sector bitmap blocks are 1 MiB: one bit for each of 2^23 sectors */
#define VHDX_SB_BLOCK_SIZE  (1 * MiB)

/* The keys of a VHDX parent locator, decoded to UTF-8 */
typedef struct VHDXParentLocator {
    char *parent_linkage;
    char *parent_linkage2;
    char *relative_path;
    char *volume_path;
    char *absolute_win32_path;
    MSGUID linkage;             /* parent_linkage as a GUID (host order) */
    MSGUID linkage2;            /* parent_linkage2, if has_linkage2 */
    bool has_linkage2;          /* parent_linkage2 present and not zero */
} VHDXParentLocator;

/* Per-image state of a differencing image, BDRVVHDXState.diff */
typedef struct VHDXDiffState {
    VHDXParentLocator *locator;
    /* The parent file the locator led to, as a path for messages */
    char *parent_path;
    /*
     * Opened for qemu-img check with a broken chain (no locator, parent
     * missing or not the right one): the problem, for the report.  The
     * image is then open without a parent.
     */
    char *chain_error;
    /* The parent checked and the chain above walked without a loop */
    bool chain_ok;
    /*
     * Sector bitmap cache: one 1 MiB buffer per chunk, read on first
     * use.  NULL while not loaded.
     */
    uint8_t **sb_cache;
    uint64_t sb_count;
    /*
     * Allocation (write.c): the end of the last block handed out, the
     * file's length (0: not known yet) and whether the space between
     * them is known to read as zeros.
     */
    uint64_t file_end;
    uint64_t file_size;
    bool tail_zeroed;
} VHDXDiffState;

/*
 * Metadata changed in memory, not yet logged (meta-log.c), of a base or
 * a differencing image, BDRVVHDXState.meta_log: one bit per
 * VHDX_DIFF_PIECE bytes of the BAT and of every chunk's bitmap block;
 * @dirty counts the bits set.
 */
typedef struct VHDXMetaLog {
    unsigned long *bat_dirty;
    uint64_t bat_pieces;
    unsigned long *sb_dirty;
    uint64_t sb_pieces;
    uint64_t dirty;
} VHDXMetaLog;

/* Granularity of dirty metadata, and limits of a commit (meta-log.c) */
#define VHDX_DIFF_PIECE          4096
#define VHDX_DIFF_SB_PIECES      (VHDX_SB_BLOCK_SIZE / VHDX_DIFF_PIECE)
#define VHDX_DIFF_DIRTY_MAX      64     /* pieces dirty before a commit */
#define VHDX_DIFF_COMMIT_PIECES  64     /* pieces in one log entry */

/* parent-locator.c */
VHDXParentLocator *vhdx_parent_locator_parse(const uint8_t *buf, size_t len,
                                             Error **errp);
void vhdx_parent_locator_free(VHDXParentLocator *loc);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(VHDXParentLocator, vhdx_parent_locator_free)
bool vhdx_guid_parse(const char *str, MSGUID *guid);
char *vhdx_guid_format(const MSGUID *guid);
char *vhdx_relative_path_to_posix(const char *rel, Error **errp);
char *vhdx_win32_path_to_posix(const char *win32);
const char *vhdx_win32_basename(const char *win32);
uint8_t *vhdx_parent_locator_build(const VHDXParentLocator *loc,
                                   size_t *len);
bool vhdx_locator_value_ok(const char *str);
char *vhdx_posix_to_relative_path(const char *rel);
char *vhdx_posix_to_win32_path(const char *abs);

/* create.c: what a new differencing image takes from its parent */
typedef struct VHDXDiffCreate {
    uint64_t virtual_size;
    uint32_t block_size;
    uint32_t logical_sector_size;
    uint32_t physical_sector_size;
    MSGUID page83;              /* Virtual Disk ID, host order */
    uint8_t *locator;           /* the serialised Parent Locator item */
    size_t locator_len;
} VHDXDiffCreate;

int coroutine_fn GRAPH_UNLOCKED
vhdx_diff_co_create_prepare(BlockdevCreateOptionsVhdx *opts,
                            const char *child_filename,
                            VHDXDiffCreate **out, Error **errp);
void vhdx_diff_create_free(VHDXDiffCreate *dc);
bool vhdx_diff_locator_paths(VHDXParentLocator *loc,
                             const char *child_filename,
                             const char *backing_file,
                             const char *parent_full, Error **errp);
int coroutine_fn GRAPH_UNLOCKED
vhdx_diff_co_create_bat(BlockBackend *blk, BDRVVHDXState *s,
                        uint64_t bat_offset, uint32_t bat_length,
                        uint64_t data_offset, Error **errp);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(VHDXDiffCreate, vhdx_diff_create_free)

/*
 * metadata.c: the VHDX structures this folder reads itself, through
 * block/vhdx.h's structs, *_le_import helpers and metadata GUIDs
 */

/* pread of exactly @len bytes; false on a short read or an error */
bool vhdx_diff_pread(int fd, uint64_t offset, void *buf, size_t len);
bool vhdx_diff_read_current_header(int fd, VHDXHeader *current);
/*
 * The last entry naming @id of the region table @rt (its 64 KiB, as in
 * the file), in host order.  -EINVAL when the table's signature is
 * wrong, -ENOENT when no entry names @id.
 */
int vhdx_region_table_find(const uint8_t *rt, const MSGUID *id,
                           VHDXRegionTableEntry *entry);
/*
 * The metadata table @table (VHDX_METADATA_TABLE_MAX_SIZE bytes, as in
 * the file): its header, and its entry @i, in host order.
 */
void vhdx_metadata_table_header(const uint8_t *table,
                                VHDXMetadataTableHeader *hdr);
void vhdx_metadata_table_entry(const uint8_t *table, uint32_t i,
                               VHDXMetadataTableEntry *e);
void vhdx_metadata_table_set_entry(uint8_t *table, uint32_t i,
                                   const VHDXMetadataTableEntry *e);
/*
 * The metadata table lookup: the last of the entries [0, @before) of
 * @table that names @id and, unless @region_len is 0, whose item lies
 * inside a metadata region of @region_len bytes, after the table.
 * Returns its index with *@entry in host order, or -1.  Pass the entry
 * count as @before, or a previous answer to look further back.
 */
int vhdx_metadata_table_find(const uint8_t *table, uint32_t before,
                             const MSGUID *id, uint64_t region_len,
                             VHDXMetadataTableEntry *entry);
/* Where the last of the @count items of @table ends (at least the table) */
uint64_t vhdx_metadata_items_end(const uint8_t *table, uint32_t count);
/* Drop entry @slot of @table: the last entry takes its place */
void vhdx_metadata_table_drop(uint8_t *table, uint32_t slot);

/* vhdx-diff.c */
int GRAPH_RDLOCK
vhdx_diff_open(BlockDriverState *bs, BDRVVHDXState *s, QDict *options,
               int flags, Error **errp);
/* Free what this code keeps of @s: its differencing and log state */
void vhdx_diff_close(BDRVVHDXState *s);

/*
 * Give the vhdx image @bs (open read-write) the DataWriteGuid it keeps
 * until it is closed, as its first user-visible write would.  A child
 * created from the file afterwards stays linked to @bs even if the
 * guest writes to @bs before the child is put on top of it (checkpoints
 * make the child while the VM runs).  Main loop.
 */
int vhdx_diff_settle_data_write_guid(BlockDriverState *bs, Error **errp);

/*
 * BlockDriver.bdrv_get_specific_info: the DataWriteGuid, and for a
 * differencing image the parent linkage, as "{xxxxxxxx-...}" strings
 */
ImageInfoSpecific * GRAPH_RDLOCK
vhdx_diff_get_specific_info(BlockDriverState *bs, Error **errp);

/* check.c */
int coroutine_fn GRAPH_RDLOCK
vhdx_diff_co_check(BlockDriverState *bs, BdrvCheckResult *result,
                   BdrvCheckMode fix);

/* sector-bitmap.c */
static inline uint64_t vhdx_sb_bat_index(BDRVVHDXState *s, uint64_t chunk)
{
    return chunk * (s->chunk_ratio + 1) + s->chunk_ratio;
}

static inline bool vhdx_bat_index_is_sb(BDRVVHDXState *s, uint64_t idx)
{
    return idx % (s->chunk_ratio + 1) == s->chunk_ratio;
}

int coroutine_fn GRAPH_RDLOCK
vhdx_sb_get(BlockDriverState *bs, BDRVVHDXState *s, uint64_t blk,
            uint8_t **bitmap);
int coroutine_fn GRAPH_RDLOCK
vhdx_diff_co_readv(BlockDriverState *bs, int64_t sector_num, int nb_sectors,
                   QEMUIOVector *qiov);
int coroutine_fn GRAPH_RDLOCK
vhdx_co_block_status(BlockDriverState *bs, bool want_zero, int64_t offset,
                     int64_t bytes, int64_t *pnum, int64_t *map,
                     BlockDriverState **file);

/* write.c */
int coroutine_fn GRAPH_RDLOCK
vhdx_diff_co_writev(BlockDriverState *bs, int64_t sector_num, int nb_sectors,
                    QEMUIOVector *qiov, int flags);
/*
 * Zero whole blocks [@offset, @offset + @bytes) without writing zeros
 * where the file can do without (@flags: BDRV_REQ_MAY_UNMAP or 0), or
 * with @discard drop the blocks this layer holds there; -ENOTSUP for
 * anything but whole blocks (the block layer then writes a buffer of
 * zeros, or ignores the discard).
 */
int coroutine_fn GRAPH_RDLOCK
vhdx_diff_co_zero_blocks(BlockDriverState *bs, int64_t offset, int64_t bytes,
                         BdrvRequestFlags flags, bool discard);

/*
 * Cut the file's unused end that allocation left (called by the commit;
 * failing only leaves the file longer)
 */
void coroutine_fn GRAPH_RDLOCK
vhdx_diff_trim(BlockDriverState *bs, VHDXDiffState *d);

/* Is @s a differencing image? */
static inline bool vhdx_diff_is_child(BDRVVHDXState *s)
{
    return s->diff != NULL;
}

/* meta-log.c */
/* For an image with @sb_count sector bitmap blocks (0: a base image) */
VHDXMetaLog *vhdx_meta_log_new(BDRVVHDXState *s, uint64_t sb_count);
void vhdx_meta_log_free(VHDXMetaLog *m);
/* Mark the 4 KiB piece of the BAT holding entry @idx dirty */
void vhdx_meta_log_dirty_bat(VHDXMetaLog *m, uint64_t idx);
/* Mark bytes [@first, @last] of the bitmap block of @chunk dirty */
void vhdx_meta_log_dirty_bitmap(VHDXMetaLog *m, uint64_t chunk,
                                uint64_t first, uint64_t last);
/* Write the dirty metadata through the log; s->lock held */
int coroutine_fn GRAPH_RDLOCK
vhdx_meta_log_co_commit(BlockDriverState *bs, BDRVVHDXState *s);
/* The same once more than VHDX_DIFF_DIRTY_MAX pieces are dirty */
int coroutine_fn GRAPH_RDLOCK
vhdx_meta_log_commit_if_full(BlockDriverState *bs, BDRVVHDXState *s);
/* .bdrv_co_flush_to_os of vhdx: commit under s->lock */
int coroutine_fn GRAPH_RDLOCK vhdx_meta_log_co_flush(BlockDriverState *bs);
/*
 * A base image's write has set BAT entry @idx in memory: have the log
 * write it at the next commit (flush, close, or too much dirty
 * metadata).  Called with s->lock held.
 */
int coroutine_fn GRAPH_RDLOCK
vhdx_meta_log_bat_set(BlockDriverState *bs, BDRVVHDXState *s, uint64_t idx);

/* relink.c */
/*
 * @bs is about to take DataWriteGuid @next (its first user-visible write
 * of the session): write @next into parent_linkage2 of the writable
 * differencing images open on top of it first (MS-VHDX footnote 12).
 * Called with @bs's s->lock held.
 */
int coroutine_mixed_fn GRAPH_RDLOCK
vhdx_diff_announce_data_write_guid(BlockDriverState *bs, const MSGUID *next);
int coroutine_fn GRAPH_RDLOCK
vhdx_co_change_backing_file(BlockDriverState *bs, const char *backing_file,
                            const char *backing_fmt);
int coroutine_fn GRAPH_RDLOCK vhdx_co_make_empty(BlockDriverState *bs);
/*
 * .bdrv_make_empty is not a coroutine_fn, the log needs a coroutine:
 * generated by scripts/block-coroutine-wrapper.py (co-wrappers.c).
 */
int co_wrapper_mixed_bdrv_rdlock vhdx_make_empty(BlockDriverState *bs);

#endif
