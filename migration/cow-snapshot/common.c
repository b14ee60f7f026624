/*
 * Copy-on-write RAM snapshot: helpers shared by save and load
 *
 * Copyright (c) 2026 The Hyper-V checkpoints project
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */

#include "qemu/osdep.h"
#include "qemu/crc32c.h"
#include "qemu/rcu.h"
#include "exec/ramblock.h"
#include "exec/ramlist.h"
#include "hw/boards.h"
#include "internal.h"

GArray *cowsnap_vm_blocks(void)
{
    GArray *refs = g_array_new(false, true, sizeof(CowSnapBlockRef));
    RAMBlock *rb;

    RCU_READ_LOCK_GUARD();
    RAMBLOCK_FOREACH(rb) {
        CowSnapBlockRef r = {
            .rb = rb,
            .idstr = rb->idstr,
            .host = rb->host,
            .used_length = rb->used_length,
            .host_page_size = rb->page_size,
            .writable = !rb->mr->readonly && !rb->mr->rom_device,
        };

        /* The same blocks migration would send */
        if (!qemu_ram_is_migratable(rb)) {
            continue;
        }
        g_array_append_val(refs, r);
    }
    return refs;
}

const char *cowsnap_machine_type(void)
{
    return MACHINE_GET_CLASS(current_machine)->name;
}

uint32_t cowsnap_metadata_crc(const CowSnapFileHeader *hdr,
                              const void *table, const void *maps,
                              const void *devstate)
{
    CowSnapFileHeader h = *hdr;
    uint32_t crc = 0xffffffff;

    h.metadata_crc = 0;
    crc = crc32c(crc, (const uint8_t *)&h, sizeof(h));
    crc = crc32c(crc, table, le64_to_cpu(h.table_size));
    crc = crc32c(crc, maps, le64_to_cpu(h.maps_size));
    crc = crc32c(crc, devstate, le64_to_cpu(h.devstate_size));
    return crc ^ 0xffffffff;
}

int cowsnap_pwrite_all(int fd, const void *buf, size_t len, uint64_t off)
{
    while (len) {
        ssize_t n = pwrite(fd, buf, len, off);

        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n <= 0) {
            if (n == 0) {
                errno = ENOSPC;
            }
            return -1;
        }
        buf = (const uint8_t *)buf + n;
        len -= n;
        off += n;
    }
    return 0;
}

int cowsnap_pread_all(int fd, void *buf, size_t len, uint64_t off)
{
    while (len) {
        ssize_t n = pread(fd, buf, len, off);

        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n <= 0) {
            if (n == 0) {
                errno = ENODATA;
            }
            return -1;
        }
        buf = (uint8_t *)buf + n;
        len -= n;
        off += n;
    }
    return 0;
}
