/*
 * Copy-on-write RAM snapshot: what the eager and the lazy load share
 *
 * Copyright (c) 2026 The Hyper-V checkpoints project
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */

#ifndef HVCP_COW_SNAPSHOT_LOAD_H
#define HVCP_COW_SNAPSHOT_LOAD_H

#include "format.h"

/* An open, fully checked state file */
typedef struct CowSnapFile {
    int fd;
    uint64_t size;
    CowSnapFileHeader hdr;      /* as on disk (little-endian) */
    CowSnapFileBlock *table;    /* as on disk (little-endian) */
    uint8_t *maps;              /* as on disk (little-endian words) */
    uint8_t *devstate;
    GArray *vm_blocks;          /* CowSnapBlockRef, matched by index */
} CowSnapFile;

bool cowsnap_open_file(CowSnapFile *sf, const char *path, Error **errp);
void cowsnap_file_close(CowSnapFile *sf);

/* The page map of block @i, and whether page @page is in the file */
const uint8_t *cowsnap_block_map(CowSnapFile *sf, unsigned i);
bool cowsnap_page_present(const uint8_t *map, uint64_t page);

/* Eager: the RAM of block @i from the file, now; -errno on failure */
int cowsnap_load_block(CowSnapFile *sf, unsigned i);

int cowsnap_load_devstate(CowSnapFile *sf, Error **errp);

/* lazy.c */

/*
 * Can the RAM of @sf come in on demand?  userfaultfd missing-page
 * faults, and 4 KiB host pages in every writable block
 */
bool cowsnap_lazy_possible(CowSnapFile *sf);

/*
 * Empty the VM's writable RAM, have its pages come from @sf when first
 * touched, and start the loader thread that brings in the rest; it owns
 * @sf (a heap object) from here on.  ROM blocks are loaded at once.
 */
int cowsnap_lazy_start(CowSnapFile *sf);

#endif
