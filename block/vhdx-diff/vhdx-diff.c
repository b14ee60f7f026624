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
#include "qemu/bitmap.h"
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
 * The parent file names a locator suggests, in the order of MS-VHDX
 * 2.6.2.6.3 (see vhdx_diff_find_parent()); relative names are relative
 * to the child's folder.
 */
static void vhdx_diff_add_candidates(GPtrArray *cands, VHDXParentLocator *loc)
{
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

    vhdx_diff_add_candidates(cands, loc);
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

/* What the chain checks need to know of a parent */
typedef struct VHDXPeek {
    MSGUID data_write_guid;
    uint64_t virtual_size;
    uint32_t logical_sector_size;
    VHDXParentLocator *locator;     /* NULL: no parent */
} VHDXPeek;

static void vhdx_peek_clear(VHDXPeek *p)
{
    vhdx_parent_locator_free(p->locator);
    p->locator = NULL;
}

/* A metadata region being peeked at: its place and its table */
typedef struct VHDXPeekMetadata {
    uint64_t offset;
    uint64_t length;
    uint8_t *table;             /* VHDX_METADATA_TABLE_MAX_SIZE bytes */
    uint32_t count;             /* entries of @table */
} VHDXPeekMetadata;

/* Peek, phase 1: the file signature and the current header */
static int vhdx_peek_header(int fd, const char *path, VHDXPeek *p,
                            Error **errp)
{
    VHDXFileIdentifier ident;
    VHDXHeader header;

    if (!vhdx_diff_pread(fd, 0, &ident.signature, sizeof(ident.signature)) ||
        le64_to_cpu(ident.signature) != VHDX_FILE_SIGNATURE) {
        error_setg(errp, "'%s' is not a VHDX image", path);
        return -EINVAL;
    }
    if (!vhdx_diff_read_current_header(fd, &header)) {
        error_setg(errp, "'%s' has no valid VHDX header", path);
        return -EINVAL;
    }
    p->data_write_guid = header.data_write_guid;
    return 0;
}

/* The metadata table of @md, if its region can hold one and it is valid */
static bool vhdx_peek_read_table(int fd, VHDXPeekMetadata *md)
{
    VHDXMetadataTableHeader hdr;

    if (md->length < VHDX_METADATA_TABLE_MAX_SIZE ||
        md->offset > INT64_MAX - md->length ||
        !vhdx_diff_pread(fd, md->offset, md->table,
                         VHDX_METADATA_TABLE_MAX_SIZE)) {
        return false;
    }
    vhdx_metadata_table_header(md->table, &hdr);
    if (hdr.signature != VHDX_METADATA_SIGNATURE) {
        return false;
    }
    md->count = MIN(hdr.entry_count, VHDX_METADATA_MAX_ENTRIES);
    return true;
}

/*
 * Peek, phase 2: the metadata region the region table names, and its
 * table.  The region table's checksum covers 64 KiB and was most of the
 * cost of a peek; the image's own open verifies it before anything uses
 * the table, so it is only verified here when the table leads to no
 * metadata, to name the right culprit.
 */
static int vhdx_peek_metadata(int fd, const char *path, VHDXPeekMetadata *md,
                              Error **errp)
{
    g_autofree uint8_t *rt = g_malloc(VHDX_HEADER_BLOCK_SIZE);
    VHDXRegionTableEntry region = { 0 };

    if (!vhdx_diff_pread(fd, VHDX_REGION_TABLE_OFFSET, rt,
                         VHDX_HEADER_BLOCK_SIZE) ||
        vhdx_region_table_find(rt, &vhdx_metadata_region_guid,
                               &region) == -EINVAL) {
        error_setg(errp, "'%s' has no valid VHDX region table", path);
        return -EINVAL;
    }
    md->offset = region.file_offset;
    md->length = region.length;
    if (!vhdx_peek_read_table(fd, md)) {
        error_setg(errp, "'%s' has no valid VHDX %s", path,
                   vhdx_checksum_is_valid(rt, VHDX_HEADER_BLOCK_SIZE, 4) ?
                   "metadata region" : "region table");
        return -EINVAL;
    }
    return 0;
}

/*
 * The first 8 bytes (fewer if the item is shorter) of the last item
 * @id of @md that lies inside the region, is at least @min_len bytes
 * long and can be read.
 */
static bool vhdx_peek_item(int fd, const VHDXPeekMetadata *md,
                           const MSGUID *id, uint32_t min_len,
                           uint8_t item[8])
{
    VHDXMetadataTableEntry e;
    int i = md->count;

    while ((i = vhdx_metadata_table_find(md->table, i, id, md->length,
                                         &e)) >= 0) {
        memset(item, 0, 8);
        if (e.length >= min_len &&
            vhdx_diff_pread(fd, md->offset + e.offset, item,
                            MIN(e.length, 8))) {
            return true;
        }
    }
    return false;
}

/* Peek, phase 3: the items the chain checks use; HasParent in *@has_parent */
static int vhdx_peek_items(int fd, const char *path,
                           const VHDXPeekMetadata *md, VHDXPeek *p,
                           bool *has_parent, Error **errp)
{
    uint8_t fp_item[8], vs_item[8], lss_item[8];
    VHDXFileParameters fp;
    VHDXVirtualDiskSize vs;
    VHDXVirtualDiskLogicalSectorSize lss;

    if (!vhdx_peek_item(fd, md, &vhdx_file_params_guid, sizeof(fp),
                        fp_item) ||
        !vhdx_peek_item(fd, md, &vhdx_virtual_size_guid, sizeof(vs),
                        vs_item) ||
        !vhdx_peek_item(fd, md, &vhdx_logical_sector_guid, sizeof(lss),
                        lss_item)) {
        error_setg(errp, "'%s' lacks VHDX metadata items", path);
        return -EINVAL;
    }
    memcpy(&fp, fp_item, sizeof(fp));
    memcpy(&vs, vs_item, sizeof(vs));
    memcpy(&lss, lss_item, sizeof(lss));
    *has_parent = le32_to_cpu(fp.data_bits) & VHDX_PARAMS_HAS_PARENT;
    p->virtual_size = le64_to_cpu(vs.virtual_disk_size);
    p->logical_sector_size = le32_to_cpu(lss.logical_sector_size);
    return 0;
}

/* Peek, phase 4: the Parent Locator of an image with HasParent */
static int vhdx_peek_locator(int fd, const char *path,
                             const VHDXPeekMetadata *md, VHDXPeek *p,
                             Error **errp)
{
    VHDXMetadataTableEntry e = { 0 };
    g_autofree uint8_t *item = NULL;
    Error *local_err = NULL;

    vhdx_metadata_table_find(md->table, md->count, &vhdx_parent_locator_item,
                             md->length, &e);
    if (e.length == 0 || e.length > VHDX_METADATA_ITEM_MAX) {
        error_setg(errp, "'%s' has no valid parent locator", path);
        return -EINVAL;
    }
    item = g_malloc(e.length);
    if (!vhdx_diff_pread(fd, md->offset + e.offset, item, e.length)) {
        error_setg(errp, "'%s': could not read the parent locator", path);
        return -EINVAL;
    }
    p->locator = vhdx_parent_locator_parse(item, e.length, &local_err);
    if (!p->locator) {
        error_propagate_prepend(errp, local_err, "'%s': ", path);
        return -EINVAL;
    }
    return 0;
}

/*
 * Read the current header, the metadata items the chain checks use and
 * the Parent Locator of the local VHDX file @path with plain preads:
 * much cheaper than opening it (no BAT, no log), which matters because
 * every level of a chain looks at all the levels above it.  A pending
 * log is not replayed: only a locator rewrite interrupted by a crash
 * could be missed, and the parent's own open replays it.
 */
static int vhdx_diff_peek(const char *path, VHDXPeek *p, Error **errp)
{
    g_autofree uint8_t *table = g_malloc(VHDX_METADATA_TABLE_MAX_SIZE);
    VHDXPeekMetadata md = { .table = table };
    bool has_parent;
    int fd;
    int ret;

    memset(p, 0, sizeof(*p));
    fd = qemu_open(path, O_RDONLY, errp);
    if (fd < 0) {
        return -errno;
    }
    ret = vhdx_peek_header(fd, path, p, errp);
    if (ret == 0) {
        ret = vhdx_peek_metadata(fd, path, &md, errp);
    }
    if (ret == 0) {
        ret = vhdx_peek_items(fd, path, &md, p, &has_parent, errp);
    }
    if (ret == 0 && has_parent) {
        ret = vhdx_peek_locator(fd, path, &md, p, errp);
    }
    qemu_close(fd);
    return ret;
}

/*
 * The parent of @child (a local file) as its locator gives it: the
 * first candidate that exists, or NULL.
 */
static char *vhdx_diff_peek_parent_path(const char *child,
                                        VHDXParentLocator *loc)
{
    g_autoptr(GPtrArray) cands = g_ptr_array_new_with_free_func(g_free);
    g_autofree char *dir = g_path_get_dirname(child);
    guint i;

    vhdx_diff_add_candidates(cands, loc);
    for (i = 0; i < cands->len; i++) {
        const char *c = g_ptr_array_index(cands, i);
        char *full = c[0] == '/' ? g_strdup(c) :
                     g_build_filename(dir, c, NULL);

        if (g_file_test(full, G_FILE_TEST_EXISTS)) {
            return full;
        }
        g_free(full);
    }
    return NULL;
}

/*
 * Refuse a loop of parents (A -> B -> A, or longer), which would make
 * the block layer open the chain without end.  Walks the locators up
 * from @peek, the parent @parent of @bs; stops at an image without a
 * parent, at one that cannot be read (its own open reports what is
 * wrong with it) or after VHDX_DIFF_MAX_DEPTH levels.  Files are
 * compared by their canonical path.
 */
#define VHDX_DIFF_MAX_DEPTH 1024

static int vhdx_diff_check_loop(BlockDriverState *bs, const char *parent,
                                VHDXPeek *peek, Error **errp)
{
    g_autoptr(GHashTable) seen = g_hash_table_new_full(g_str_hash,
                                                       g_str_equal,
                                                       g_free, NULL);
    g_autoptr(GString) trail = g_string_new(NULL);
    g_autofree char *cur = g_strdup(parent);
    VHDXPeek p = { .locator = peek->locator };
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
        char *next = NULL;

        real = realpath(cur, NULL);
        if (!real) {
            break;
        }
        g_string_append_printf(trail, " -> '%s'", cur);
        if (g_hash_table_contains(seen, real)) {
            g_free(real);
            error_setg(errp, "The parents of differencing image '%s' form a "
                       "loop: %s", bs->filename, trail->str);
            ret = -ELOOP;
            break;
        }
        g_hash_table_add(seen, real);
        if (depth > 0) {
            /* (the first level is @peek, read by the caller) */
            if (vhdx_diff_peek(cur, &p, NULL) < 0) {
                break;
            }
        }
        if (p.locator) {
            next = vhdx_diff_peek_parent_path(cur, p.locator);
        }
        if (depth > 0) {
            vhdx_peek_clear(&p);
        }
        g_free(cur);
        cur = next;
    }
    return ret;
}

/*
 * Opened as the parent of a differencing image whose loop check walked
 * the whole chain above it, this image included?  Then there is no need
 * to walk again: a chain of depth n is walked once, not n times.
 */
static bool vhdx_diff_child_walked(BlockDriverState *bs)
{
    BlockDriverState *child = bs->inherits_from;
    BDRVVHDXState *cs;

    if (!child || child->drv != bs->drv || !child->opaque) {
        return false;
    }
    cs = child->opaque;
    return cs->diff && cs->diff->chain_ok;
}

/*
 * Check the parent is the image this child was made from, and that the
 * chain above it does not come back to this child.
 */
static int GRAPH_RDLOCK
vhdx_diff_check_parent(BlockDriverState *bs, BDRVVHDXState *s,
                       const char *parent, Error **errp)
{
    VHDXParentLocator *loc = s->diff->locator;
    VHDXPeek ph;
    Error *local_err = NULL;
    int ret = -EINVAL;

    if (!strcmp(parent, bs->filename)) {
        error_setg(errp, "Differencing image '%s' names itself as its parent",
                   bs->filename);
        return -ELOOP;
    }
    if (path_has_protocol(parent)) {
        /* Not a local file: the block layer's open checks what it can */
        return 0;
    }
    if (vhdx_diff_peek(parent, &ph, &local_err) < 0) {
        error_propagate_prepend(errp, local_err,
                                "Could not open the parent '%s' of "
                                "differencing image '%s' as vhdx: ",
                                parent, bs->filename);
        return -EINVAL;
    }

    if (!guid_eq(ph.data_write_guid, loc->linkage) &&
        !(loc->has_linkage2 && guid_eq(ph.data_write_guid, loc->linkage2))) {
        g_autofree char *have = vhdx_guid_format(&ph.data_write_guid);

        error_setg(errp, "Parent '%s' of differencing image '%s' has "
                   "DataWriteGuid %s, but the child expects %s%s%s: the "
                   "parent was modified after the child was created",
                   parent, bs->filename, have, loc->parent_linkage,
                   loc->has_linkage2 ? " or " : "",
                   loc->has_linkage2 ? loc->parent_linkage2 : "");
    } else if (ph.logical_sector_size != s->logical_sector_size) {
        error_setg(errp, "Parent '%s' has logical sector size %" PRIu32
                   ", differencing image '%s' has %" PRIu32, parent,
                   ph.logical_sector_size, bs->filename,
                   s->logical_sector_size);
    } else if (ph.virtual_size != s->virtual_disk_size) {
        error_setg(errp, "Parent '%s' has virtual size %" PRIu64
                   ", differencing image '%s' has %" PRIu64, parent,
                   ph.virtual_size, bs->filename, s->virtual_disk_size);
    } else if (vhdx_diff_child_walked(bs)) {
        ret = 0;
        s->diff->chain_ok = true;
    } else {
        ret = vhdx_diff_check_loop(bs, parent, &ph, errp);
        s->diff->chain_ok = ret == 0;
    }
    vhdx_peek_clear(&ph);
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
    s->meta_log = vhdx_meta_log_new(s, s->diff->sb_count);

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

    vhdx_meta_log_free(s->meta_log);
    s->meta_log = NULL;
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

int vhdx_diff_settle_data_write_guid(BlockDriverState *bs, Error **errp)
{
    BDRVVHDXState *s = bs->opaque;
    int ret;

    GLOBAL_STATE_CODE();
    assert(!strcmp(bs->drv->format_name, "vhdx"));
    if (bdrv_is_read_only(bs)) {
        /* Nothing writes to it: its DataWriteGuid stays as it is */
        return 0;
    }
    /* A guest write in flight may be giving it a new one right now */
    bdrv_drained_begin(bs);
    bdrv_graph_rdlock_main_loop();
    ret = vhdx_user_visible_write(bs, s);
    bdrv_graph_rdunlock_main_loop();
    bdrv_drained_end(bs);
    if (ret < 0) {
        error_setg_errno(errp, -ret, "Cannot update the headers of '%s'",
                         bs->filename);
    }
    return ret;
}

ImageInfoSpecific * GRAPH_RDLOCK
vhdx_diff_get_specific_info(BlockDriverState *bs, Error **errp)
{
    BDRVVHDXState *s = bs->opaque;
    ImageInfoSpecific *spec = g_new0(ImageInfoSpecific, 1);
    ImageInfoSpecificVhdx *info = g_new0(ImageInfoSpecificVhdx, 1);
    VHDXParentLocator *loc = s->diff ? s->diff->locator : NULL;

    spec->type = IMAGE_INFO_SPECIFIC_KIND_VHDX;
    spec->u.vhdx.data = info;
    info->data_write_guid =
        vhdx_guid_format(&s->headers[s->curr_header]->data_write_guid);
    if (vhdx_diff_is_child(s) && loc) {
        info->parent_linkage = vhdx_guid_format(&loc->linkage);
        if (loc->has_linkage2) {
            info->parent_linkage2 = vhdx_guid_format(&loc->linkage2);
        }
    }
    return spec;
}
