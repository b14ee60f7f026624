/*
 * Differencing VHDX: the VHDX structures read outside block/vhdx.c
 *
 * Copyright (c) 2026 The Hyper-V checkpoints project authors
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 *
 * block/vhdx.c parses the image it opens into BDRVVHDXState.  This
 * folder also reads files that are not open (the parents a chain check
 * looks at, with plain preads) and rewrites the metadata table of an
 * open image.  Both go through block/vhdx.h's structures and its
 * *_le_import/_le_export helpers, and look items up in the metadata
 * table with vhdx_metadata_table_find() only, by the GUIDs that
 * block/vhdx.c defines.
 */

#include "qemu/osdep.h"
#include "block/block_int.h"
#include "vhdx-diff.h"

bool vhdx_diff_pread(int fd, uint64_t offset, void *buf, size_t len)
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

        if (!vhdx_diff_pread(fd, offsets[i], buf, VHDX_HEADER_SIZE) ||
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

int vhdx_region_table_find(const uint8_t *rt, const MSGUID *id,
                           VHDXRegionTableEntry *entry)
{
    VHDXRegionTableHeader hdr;
    uint32_t count, i;
    bool found = false;

    memcpy(&hdr, rt, sizeof(hdr));
    vhdx_region_header_le_import(&hdr);
    if (hdr.signature != VHDX_REGION_SIGNATURE) {
        return -EINVAL;
    }
    count = MIN(hdr.entry_count,
                (VHDX_HEADER_BLOCK_SIZE - sizeof(hdr)) / sizeof(*entry));
    for (i = 0; i < count; i++) {
        VHDXRegionTableEntry e;

        memcpy(&e, rt + sizeof(hdr) + i * sizeof(e), sizeof(e));
        vhdx_region_entry_le_import(&e);
        if (guid_eq(e.guid, *id)) {
            *entry = e;
            found = true;
        }
    }
    return found ? 0 : -ENOENT;
}

void vhdx_metadata_table_header(const uint8_t *table,
                                VHDXMetadataTableHeader *hdr)
{
    memcpy(hdr, table, sizeof(*hdr));
    vhdx_metadata_header_le_import(hdr);
}

void vhdx_metadata_table_entry(const uint8_t *table, uint32_t i,
                               VHDXMetadataTableEntry *e)
{
    memcpy(e, table + VHDX_METADATA_ENTRY_SIZE * (i + 1), sizeof(*e));
    vhdx_metadata_entry_le_import(e);
}

void vhdx_metadata_table_set_entry(uint8_t *table, uint32_t i,
                                   const VHDXMetadataTableEntry *e)
{
    VHDXMetadataTableEntry le = *e;

    vhdx_metadata_entry_le_export(&le);
    memcpy(table + VHDX_METADATA_ENTRY_SIZE * (i + 1), &le, sizeof(le));
}

int vhdx_metadata_table_find(const uint8_t *table, uint32_t before,
                             const MSGUID *id, uint64_t region_len,
                             VHDXMetadataTableEntry *entry)
{
    VHDXMetadataTableEntry e;
    uint32_t i;

    for (i = before; i-- > 0;) {
        vhdx_metadata_table_entry(table, i, &e);
        if (!guid_eq(e.item_id, *id)) {
            continue;
        }
        if (region_len && (e.offset < VHDX_METADATA_TABLE_MAX_SIZE ||
                           e.offset > region_len ||
                           e.length > region_len - e.offset)) {
            continue;
        }
        *entry = e;
        return i;
    }
    return -1;
}

uint64_t vhdx_metadata_items_end(const uint8_t *table, uint32_t count)
{
    uint64_t end = VHDX_METADATA_TABLE_MAX_SIZE;
    VHDXMetadataTableEntry e;
    uint32_t i;

    for (i = 0; i < count; i++) {
        vhdx_metadata_table_entry(table, i, &e);
        end = MAX(end, (uint64_t)e.offset + e.length);
    }
    return end;
}

void vhdx_metadata_table_drop(uint8_t *table, uint32_t slot)
{
    VHDXMetadataTableHeader hdr;
    VHDXMetadataTableEntry last;

    vhdx_metadata_table_header(table, &hdr);
    assert(slot < hdr.entry_count);
    vhdx_metadata_table_entry(table, hdr.entry_count - 1, &last);
    vhdx_metadata_table_set_entry(table, slot, &last);
    memset(table + VHDX_METADATA_ENTRY_SIZE * hdr.entry_count, 0,
           VHDX_METADATA_ENTRY_SIZE);
    hdr.entry_count--;
    vhdx_metadata_header_le_export(&hdr);
    memcpy(table, &hdr, sizeof(hdr));
}
