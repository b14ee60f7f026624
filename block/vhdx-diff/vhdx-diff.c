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

/* Metadata items and the region a look at a parent needs */
static const MSGUID vhdx_peek_metadata_region = {
    .data1 = 0x8b7ca206, .data2 = 0x4790, .data3 = 0x4b9a,
    .data4 = { 0xb8, 0xfe, 0x57, 0x5f, 0x05, 0x0f, 0x88, 0x6e }
};
static const MSGUID vhdx_peek_file_params = {
    .data1 = 0xcaa16737, .data2 = 0xfa36, .data3 = 0x4d43,
    .data4 = { 0xb3, 0xb6, 0x33, 0xf0, 0xaa, 0x44, 0xe7, 0x6b }
};
static const MSGUID vhdx_peek_virtual_size = {
    .data1 = 0x2fa54224, .data2 = 0xcd1b, .data3 = 0x4876,
    .data4 = { 0xb2, 0x11, 0x5d, 0xbe, 0xd8, 0x3b, 0xf4, 0xb8 }
};
static const MSGUID vhdx_peek_logical_sector = {
    .data1 = 0x8141bf1d, .data2 = 0xa96f, .data3 = 0x4709,
    .data4 = { 0xba, 0x47, 0xf2, 0x33, 0xa8, 0xfa, 0xab, 0x5f }
};

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

static bool vhdx_peek_read(int fd, uint64_t offset, void *buf, size_t len)
{
    return pread(fd, buf, len, offset) == (ssize_t)len;
}

/*
 * The current header of the VHDX file open as @fd: of the two headers
 * with a valid checksum, signature and version, the one with the higher
 * sequence number.  Plain preads, for files that are not open as a
 * BlockDriverState.  Returns false when neither header is valid.
 */
bool vhdx_diff_read_current_header(int fd, VHDXHeader *current)
{
    static const uint64_t offsets[] = { VHDX_HEADER1_OFFSET,
                                        VHDX_HEADER2_OFFSET };
    g_autofree uint8_t *buf = g_malloc(VHDX_HEADER_SIZE);
    bool found = false;
    int i;

    for (i = 0; i < ARRAY_SIZE(offsets); i++) {
        VHDXHeader h;

        if (!vhdx_peek_read(fd, offsets[i], buf, VHDX_HEADER_SIZE) ||
            !vhdx_checksum_is_valid(buf, VHDX_HEADER_SIZE, 4)) {
            continue;
        }
        memcpy(&h, buf, sizeof(h));
        vhdx_header_le_import(&h);
        if (h.signature != VHDX_HEADER_SIGNATURE || h.version != 1) {
            continue;
        }
        if (!found || h.sequence_number > current->sequence_number) {
            *current = h;
            found = true;
        }
    }
    return found;
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
    g_autofree uint8_t *buf = g_malloc(VHDX_METADATA_TABLE_MAX_SIZE);
    g_autofree uint8_t *rt = g_malloc(VHDX_HEADER_BLOCK_SIZE);
    VHDXHeader header;
    uint64_t sig, md_off = 0, md_len = 0;
    uint32_t count, i, fp_data_bits = 0;
    uint32_t loc_off = 0, loc_len = 0;
    bool have_fp = false, have_vs = false;
    bool have_lss = false;
    int fd;
    int ret = -EINVAL;

    memset(p, 0, sizeof(*p));
    fd = qemu_open(path, O_RDONLY, errp);
    if (fd < 0) {
        return -errno;
    }
    if (!vhdx_peek_read(fd, 0, &sig, sizeof(sig)) ||
        le64_to_cpu(sig) != VHDX_FILE_SIGNATURE) {
        error_setg(errp, "'%s' is not a VHDX image", path);
        goto out;
    }
    if (!vhdx_diff_read_current_header(fd, &header)) {
        error_setg(errp, "'%s' has no valid VHDX header", path);
        goto out;
    }
    p->data_write_guid = header.data_write_guid;

    /*
     * Region table: the metadata region.  Its checksum covers 64 KiB and
     * was most of the cost of a peek; the image's own open verifies it
     * before anything uses the table, so it is only verified here when
     * the table leads to no metadata, to name the right culprit.
     */
    if (!vhdx_peek_read(fd, VHDX_REGION_TABLE_OFFSET, rt,
                        VHDX_HEADER_BLOCK_SIZE) ||
        ldl_le_p(rt) != VHDX_REGION_SIGNATURE) {
        error_setg(errp, "'%s' has no valid VHDX region table", path);
        goto out;
    }
    count = MIN(ldl_le_p(rt + 8), (VHDX_HEADER_BLOCK_SIZE - 16) / 32);
    for (i = 0; i < count; i++) {
        const uint8_t *e = rt + 16 + i * 32;
        MSGUID id;

        memcpy(&id, e, sizeof(id));
        leguid_to_cpus(&id);
        if (guid_eq(id, vhdx_peek_metadata_region)) {
            md_off = ldq_le_p(e + 16);
            md_len = ldl_le_p(e + 24);
        }
    }
    if (md_len < VHDX_METADATA_TABLE_MAX_SIZE ||
        md_off > INT64_MAX - md_len ||
        !vhdx_peek_read(fd, md_off, buf, VHDX_METADATA_TABLE_MAX_SIZE) ||
        ldq_le_p(buf) != VHDX_METADATA_SIGNATURE) {
        error_setg(errp, "'%s' has no valid VHDX %s", path,
                   vhdx_checksum_is_valid(rt, VHDX_HEADER_BLOCK_SIZE, 4) ?
                   "metadata region" : "region table");
        goto out;
    }

    count = MIN(lduw_le_p(buf + 10),
                (VHDX_METADATA_TABLE_MAX_SIZE - 32) / 32);
    for (i = 0; i < count; i++) {
        const uint8_t *e = buf + 32 + i * 32;
        uint32_t off = ldl_le_p(e + 16), len = ldl_le_p(e + 20);
        uint8_t item[8] = { 0 };
        MSGUID id;

        memcpy(&id, e, sizeof(id));
        leguid_to_cpus(&id);
        if (off < VHDX_METADATA_TABLE_MAX_SIZE || off > md_len ||
            len > md_len - off) {
            continue;
        }
        if (guid_eq(id, vhdx_parent_locator_item)) {
            loc_off = off;
            loc_len = len;
            continue;
        }
        if (len < 4 || !vhdx_peek_read(fd, md_off + off, item,
                                       MIN(len, sizeof(item)))) {
            continue;
        }
        if (guid_eq(id, vhdx_peek_file_params) && len >= 8) {
            fp_data_bits = ldl_le_p(item + 4);
            have_fp = true;
        } else if (guid_eq(id, vhdx_peek_virtual_size) && len >= 8) {
            p->virtual_size = ldq_le_p(item);
            have_vs = true;
        } else if (guid_eq(id, vhdx_peek_logical_sector)) {
            p->logical_sector_size = ldl_le_p(item);
            have_lss = true;
        }
    }
    if (!have_fp || !have_vs || !have_lss) {
        error_setg(errp, "'%s' lacks VHDX metadata items", path);
        goto out;
    }
    if (fp_data_bits & VHDX_PARAMS_HAS_PARENT) {
        g_autofree uint8_t *item = NULL;
        Error *local_err = NULL;

        if (loc_len == 0 || loc_len > 1 * MiB) {
            error_setg(errp, "'%s' has no valid parent locator", path);
            goto out;
        }
        item = g_malloc(loc_len);
        if (!vhdx_peek_read(fd, md_off + loc_off, item, loc_len)) {
            error_setg(errp, "'%s': could not read the parent locator", path);
            goto out;
        }
        p->locator = vhdx_parent_locator_parse(item, loc_len, &local_err);
        if (!p->locator) {
            error_propagate_prepend(errp, local_err, "'%s': ", path);
            goto out;
        }
    }
    ret = 0;
out:
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
    s->diff->bat_pieces = DIV_ROUND_UP((uint64_t)s->bat_entries *
                                       sizeof(uint64_t), VHDX_DIFF_PIECE);
    s->diff->bat_dirty = bitmap_new(s->diff->bat_pieces);
    s->diff->sb_pieces = s->diff->sb_count * VHDX_DIFF_SB_PIECES;
    s->diff->sb_dirty = bitmap_new(s->diff->sb_pieces);

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
    g_free(s->diff->bat_dirty);
    g_free(s->diff->sb_dirty);
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
