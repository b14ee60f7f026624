/*
 * Copy-on-write RAM snapshot: what the saver (save.c) and the write
 * protection (wp.c) share
 *
 * Copyright (c) 2026 The Hyper-V checkpoints project
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */

#ifndef HVCP_COW_SNAPSHOT_SAVE_H
#define HVCP_COW_SNAPSHOT_SAVE_H

#include "qemu/event_notifier.h"
#include "qemu/queue.h"
#include "qemu/thread.h"
#include "cow-snapshot.h"
#include "internal.h"

/* Bytes the saver claims, copies and writes at a time */
#define COWSNAP_CHUNK           (1024 * 1024)
/* Window around a faulting page saved with it */
#define COWSNAP_FAULT_WINDOW    (64 * 1024)
/* Fault buffers waiting to be written; more faults are written inline */
#define COWSNAP_FAULT_SLOTS     256

typedef struct CowSnapBlock {
    CowSnapBlockRef ref;
    uint64_t pages;             /* COWSNAP_PAGE_SIZE pages */
    uint64_t hpages;            /* host pages: the unit of protection */
    unsigned long *claimed;     /* per host page: saved or being saved */
    unsigned long *touched;     /* per host page: written since prepare */
    unsigned long *map;         /* per page: non-zero page in the file */
    uint64_t map_offset;
    uint64_t data_offset;
    uint8_t *rom_copy;          /* non-writable blocks: copy made at begin */
    bool registered;            /* registered with the userfaultfd */
    bool mr_ref;                /* holds a reference to its MemoryRegion */
} CowSnapBlock;

typedef struct CowSnapSlot {
    QSIMPLEQ_ENTRY(CowSnapSlot) next;
    unsigned block;
    uint64_t first_page;
    uint64_t npages;
    uint8_t *data;
} CowSnapSlot;

typedef struct CowSnapJob {
    char *path;
    int fd;
    int uffd;
    bool paused_save;
    CowSnapshotDoneFn *done;
    void *done_opaque;

    CowSnapBlock *blocks;
    unsigned nr_blocks;
    size_t slot_size;

    CowSnapFileHeader hdr;      /* little-endian, as on disk */
    CowSnapFileBlock *table;    /* little-endian, as on disk */
    uint8_t *devstate;
    size_t devstate_size;

    QemuMutex lock;             /* claimed bitmaps, slots, inflight, err */
    QemuCond cond;
    QSIMPLEQ_HEAD(, CowSnapSlot) queue;
    QSIMPLEQ_HEAD(, CowSnapSlot) free_slots;
    CowSnapSlot *slots;
    uint8_t *fault_buf;         /* fault thread's own buffer */
    unsigned inflight;          /* claimed by the fault thread, unwritten */
    Error *err;

    QemuThread saver;
    QemuThread faulter;
    bool faulter_started;
    EventNotifier stop_faulter;
    bool aborting;              /* atomic: release faults without saving */
    bool cancel;                /* atomic */
    bool tracking;              /* atomic: prepared, not begun */
    bool discard_disabled;
    uint64_t rearmed_pages;

    uint64_t total_bytes;
    uint64_t done_bytes;        /* atomic */
    uint64_t written_bytes;     /* atomic */
    uint64_t faulted_pages;     /* atomic */
    int64_t start_ns;
    int64_t end_ns;
    uint64_t pause_us;
    CowSnapshotStatus status;
    bool active;
} CowSnapJob;

/* save.c: the saver */

/* Record the first error of @job and make the threads stop saving */
void cowsnap_set_error(CowSnapJob *job, int err, const char *what);
/* Write the non-zero pages of @buf, the pages from @first_page on */
int cowsnap_write_pages(CowSnapJob *job, CowSnapBlock *b,
                        uint64_t first_page, const uint8_t *buf,
                        uint64_t npages);

/* wp.c: write protection and the fault thread */

/* What a user needs for write tracking (part of the errors) */
extern const char cowsnap_wp_hint[];
/* The userfaultfd features the host has; @unpopulated: WP_UNPOPULATED */
uint64_t cowsnap_uffd_features(bool *unpopulated);
/* A userfaultfd for write protection, or -1 with @errp set */
int cowsnap_open_uffd(Error **errp);
/* Register @b with @uffd and write-protect it */
bool cowsnap_protect_block(int uffd, CowSnapBlock *b, bool populate,
                           Error **errp);
/* Leave tracking mode: protect again what was written since prepare */
bool cowsnap_rearm(CowSnapJob *job, Error **errp);
/* The fault thread: saves a faulting page before the write goes on */
void *cowsnap_fault_thread(void *opaque);
/* Stop the fault thread, unprotect and unregister, close the uffd */
void cowsnap_stop_tracking(CowSnapJob *job);

#endif
