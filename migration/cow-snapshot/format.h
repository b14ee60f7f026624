/*
 * Copy-on-write RAM snapshot: state file layout (see FORMAT.md)
 *
 * Copyright (c) 2026 The Hyper-V checkpoints project
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */

#ifndef HVCP_COW_SNAPSHOT_FORMAT_H
#define HVCP_COW_SNAPSHOT_FORMAT_H

#define COWSNAP_MAGIC           "QEMUCOWS"
#define COWSNAP_VERSION         1

/* Flags in the header */
#define COWSNAP_FLAG_COMPLETE       (1ULL << 0)
#define COWSNAP_FLAG_PAUSED_SAVE    (1ULL << 1)
#define COWSNAP_KNOWN_FLAGS         (COWSNAP_FLAG_COMPLETE | \
                                     COWSNAP_FLAG_PAUSED_SAVE)

/* The unit of the page maps and of the data regions */
#define COWSNAP_PAGE_SIZE       4096
#define COWSNAP_HEADER_REGION   4096
/* Data regions start at multiples of this (as with mapped-ram) */
#define COWSNAP_DATA_ALIGN      (1024 * 1024)
#define COWSNAP_MAX_BLOCKS      4096
#define COWSNAP_IDSTR_LEN       256
#define COWSNAP_MACHINE_LEN     64
/* Refuse device state regions larger than this (sanity bound) */
#define COWSNAP_MAX_DEVSTATE    (1ULL << 30)

/* All integers are little-endian. */
typedef struct QEMU_PACKED CowSnapFileHeader {
    char magic[8];
    uint32_t version;
    uint32_t header_size;
    uint64_t flags;
    uint32_t page_size;
    uint32_t nr_blocks;
    uint64_t table_offset;
    uint64_t table_size;
    uint64_t maps_offset;
    uint64_t maps_size;
    uint64_t devstate_offset;
    uint64_t devstate_size;
    uint64_t file_size;
    uint64_t ram_bytes;
    uint64_t data_bytes;
    uint64_t created_ns;
    char machine_type[COWSNAP_MACHINE_LEN];
    uint32_t metadata_crc;
    uint32_t reserved;
} CowSnapFileHeader;

typedef struct QEMU_PACKED CowSnapFileBlock {
    char idstr[COWSNAP_IDSTR_LEN];
    uint64_t used_length;
    uint64_t page_map_offset;
    uint64_t page_map_size;
    uint64_t data_offset;
    uint64_t host_page_size;
    uint64_t reserved[3];
} CowSnapFileBlock;

QEMU_BUILD_BUG_ON(sizeof(CowSnapFileHeader) != 184);
QEMU_BUILD_BUG_ON(sizeof(CowSnapFileBlock) != 320);

#endif
