/*
 * Copy-on-write RAM snapshot: helpers shared by save and load
 *
 * Copyright (c) 2026 The Hyper-V checkpoints project
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */

#ifndef HVCP_COW_SNAPSHOT_INTERNAL_H
#define HVCP_COW_SNAPSHOT_INTERNAL_H

#include "format.h"

typedef struct RAMBlock RAMBlock;

/* One RAM block of the running VM, as the state file sees it */
typedef struct CowSnapBlockRef {
    RAMBlock *rb;
    const char *idstr;
    uint8_t *host;
    uint64_t used_length;
    uint64_t host_page_size;
    bool writable;          /* false for ROM and ROM devices */
} CowSnapBlockRef;

/*
 * The RAM blocks a snapshot saves: every migratable block, in RAM list
 * order.  The caller holds the BQL.  Returns a GArray of CowSnapBlockRef.
 */
GArray *cowsnap_vm_blocks(void);

/* The machine type name recorded in and checked against state files */
const char *cowsnap_machine_type(void);

/* Bytes of the page map of a block of @used_length bytes */
static inline uint64_t cowsnap_map_size(uint64_t used_length)
{
    uint64_t pages = DIV_ROUND_UP(used_length, COWSNAP_PAGE_SIZE);

    return DIV_ROUND_UP(pages, 64) * 8;
}

/*
 * crc32c of the metadata: the header with metadata_crc zeroed, the
 * block table, the page maps and the device state, in that order.
 */
uint32_t cowsnap_metadata_crc(const CowSnapFileHeader *hdr,
                              const void *table, const void *maps,
                              const void *devstate);

/* pwrite/pread of the whole buffer, retrying short transfers */
int cowsnap_pwrite_all(int fd, const void *buf, size_t len, uint64_t off);
int cowsnap_pread_all(int fd, void *buf, size_t len, uint64_t off);

#endif
