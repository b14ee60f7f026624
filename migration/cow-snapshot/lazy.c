/*
 * Copy-on-write RAM snapshot: load RAM on demand
 *
 * Copyright (c) 2026 The Hyper-V checkpoints project
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 *
 * A lazy load empties the VM's writable RAM and registers it for
 * userfaultfd missing-page faults, so that the VM can run again as soon
 * as the devices are loaded.  One thread, the loader, serves every
 * fault from the state file (its data region holds each page at a fixed
 * offset, or nothing for a zero page) and, between faults, brings in
 * the remaining pages in order.  Any thread that touches a missing page
 * (a vCPU, a device model, an iothread's DMA, the monitor) sleeps in the
 * kernel until the loader has placed it, so nobody reads zeros.  When
 * every page is in, the loader unregisters RAM and closes the file.
 */

#include "qemu/osdep.h"
#include <poll.h>
#include <sys/ioctl.h>
#include <linux/userfaultfd.h>
#include "qemu/bswap.h"
#include "qemu/error-report.h"
#include "qemu/memalign.h"
#include "qemu/thread.h"
#include "qemu/userfaultfd.h"
#include "exec/cpu-common.h"
#include "exec/memory.h"
#include "migration/misc.h"
#include "cow-snapshot.h"
#include "internal.h"
#include "load.h"

#define LAZY_BATCH_PAGES 64     /* pages per background step */
#define LAZY_MSGS 16

typedef struct CowSnapLazy {
    CowSnapFile *sf;
    int uffd;
    QemuThread thread;
    uint8_t *buf;               /* LAZY_BATCH_PAGES pages */
    unsigned blk;               /* background cursor: block, page */
    uint64_t page;
    uint64_t speed;             /* bytes/s of the background, 0: full */
    int error;                  /* first error, -errno */
} CowSnapLazy;

static CowSnapLazy *lazy;       /* the running load, main loop's view */
static bool lazy_running;       /* atomic: the loader has not ended */

static CowSnapBlockRef *block_ref(CowSnapFile *sf, unsigned i)
{
    return &g_array_index(sf->vm_blocks, CowSnapBlockRef, i);
}

bool cowsnap_lazy_possible(CowSnapFile *sf)
{
    uint64_t features;

    if (uffd_query_features(&features) < 0 ||
        ram_block_discard_is_disabled()) {
        return false;
    }
    for (unsigned i = 0; i < sf->vm_blocks->len; i++) {
        CowSnapBlockRef *r = block_ref(sf, i);

        /*
         * Huge pages cannot be placed 4 KiB at a time; shared RAM may be
         * read by another process (vhost-user), which would see the
         * holes; a file mapping has no missing pages to fault on
         */
        if (r->writable && (r->host_page_size != COWSNAP_PAGE_SIZE ||
                            qemu_ram_is_shared(r->rb) ||
                            qemu_ram_get_fd(r->rb) >= 0)) {
            return false;
        }
    }
    return true;
}

/* One UFFDIO_COPY or UFFDIO_ZEROPAGE of @len bytes at @dst; -errno */
static int place_range(CowSnapLazy *lz, uint8_t *dst, uint64_t len,
                       bool present)
{
    int ret, tries = 0;

    do {
        if (present) {
            struct uffdio_copy c = {
                .dst = (uintptr_t)dst, .src = (uintptr_t)lz->buf, .len = len,
            };

            ret = ioctl(lz->uffd, UFFDIO_COPY, &c);
        } else {
            struct uffdio_zeropage z = {
                .range = { .start = (uintptr_t)dst, .len = len },
            };

            ret = ioctl(lz->uffd, UFFDIO_ZEROPAGE, &z);
        }
        /* EAGAIN: the kernel placed part of it, or the mm was changing */
    } while (ret < 0 && errno == EAGAIN && ++tries < 1000);
    return ret < 0 ? -errno : 0;
}

/*
 * Place pages [@first, @first + @n) of block @i: from the file when
 * @present, zeros otherwise.  A page placed already (a fault and the
 * background met) is not an error.
 */
static int place_pages(CowSnapLazy *lz, unsigned i, uint64_t first,
                       uint64_t n, bool present)
{
    CowSnapBlockRef *r = block_ref(lz->sf, i);
    uint64_t off = first * COWSNAP_PAGE_SIZE, len = n * COWSNAP_PAGE_SIZE;
    uint64_t data = le64_to_cpu(lz->sf->table[i].data_offset);
    int ret;

    if (present &&
        cowsnap_pread_all(lz->sf->fd, lz->buf, len, data + off) < 0) {
        return -errno;
    }
    ret = place_range(lz, r->host + off, len, present);
    if (ret == -EEXIST && n == 1) {
        /* Placed already: wake whoever waits for it */
        return uffd_wakeup(lz->uffd, r->host + off, len) < 0 ? -errno : 0;
    }
    if (ret == -EEXIST || ret == -EAGAIN) {
        /* Some were in: place the rest one by one */
        for (uint64_t p = 0; p < n && n > 1; p++) {
            ret = place_pages(lz, i, first + p, 1, present);
            if (ret < 0) {
                return ret;
            }
        }
        return n > 1 ? 0 : ret;
    }
    return ret;
}

/* The block and page of host address @addr, false when not ours */
static bool find_page(CowSnapLazy *lz, uint64_t addr, unsigned *blk,
                      uint64_t *page)
{
    for (unsigned i = 0; i < lz->sf->vm_blocks->len; i++) {
        CowSnapBlockRef *r = block_ref(lz->sf, i);
        uint64_t start = (uintptr_t)r->host;

        if (r->writable && addr >= start && addr < start + r->used_length) {
            *blk = i;
            *page = (addr - start) / COWSNAP_PAGE_SIZE;
            return true;
        }
    }
    return false;
}

/* Serve the faults waiting, sleeping up to @timeout_ms for one */
static int serve_faults(CowSnapLazy *lz, int timeout_ms)
{
    struct pollfd pfd = { .fd = lz->uffd, .events = POLLIN };
    struct uffd_msg msgs[LAZY_MSGS];
    int n, ret = 0;

    if (poll(&pfd, 1, timeout_ms) <= 0) {
        return 0;
    }
    n = uffd_read_events(lz->uffd, msgs, LAZY_MSGS);
    for (int k = 0; k < n && ret == 0; k++) {
        uint64_t addr = msgs[k].arg.pagefault.address, page;
        unsigned blk;

        if (msgs[k].event != UFFD_EVENT_PAGEFAULT ||
            !find_page(lz, addr, &blk, &page)) {
            continue;
        }
        ret = place_pages(lz, blk, page, 1,
                          cowsnap_page_present(cowsnap_block_map(lz->sf,
                                                                 blk),
                                               page));
    }
    return n < 0 ? -EIO : ret;
}

/*
 * The next run of the background, pages of one kind (in the file or
 * zero) in one block; false when every page is in
 */
static bool background_step(CowSnapLazy *lz, uint64_t *bytes)
{
    CowSnapBlockRef *r;
    const uint8_t *map;
    uint64_t pages, first;
    bool present;

    while (lz->blk < lz->sf->vm_blocks->len &&
           (!block_ref(lz->sf, lz->blk)->writable ||
            lz->page * COWSNAP_PAGE_SIZE >=
            block_ref(lz->sf, lz->blk)->used_length)) {
        lz->blk++;
        lz->page = 0;
    }
    if (lz->blk >= lz->sf->vm_blocks->len) {
        return false;
    }
    r = block_ref(lz->sf, lz->blk);
    map = cowsnap_block_map(lz->sf, lz->blk);
    pages = r->used_length / COWSNAP_PAGE_SIZE;
    first = lz->page;
    present = cowsnap_page_present(map, first);
    while (lz->page < pages && lz->page - first < LAZY_BATCH_PAGES &&
           cowsnap_page_present(map, lz->page) == present) {
        lz->page++;
    }
    lz->error = place_pages(lz, lz->blk, first, lz->page - first, present);
    *bytes = present ? (lz->page - first) * COWSNAP_PAGE_SIZE : 0;
    return lz->error == 0;
}

/* Milliseconds the background owes the speed limit after @bytes */
static int throttle_ms(CowSnapLazy *lz, uint64_t bytes)
{
    uint64_t speed = qatomic_read(&lz->speed);

    return speed ? bytes * 1000 / speed : 0;
}

/*
 * Serve the guest's faults until the background step of @bytes is due
 * under the speed limit.  The deadline is absolute: a fault served early
 * does not shorten the wait, so the limit holds while the guest faults.
 */
static int serve_faults_until_due(CowSnapLazy *lz, uint64_t bytes)
{
    int64_t due = g_get_monotonic_time() / 1000 + throttle_ms(lz, bytes);
    int64_t left;
    int ret;

    do {
        left = due - g_get_monotonic_time() / 1000;
        ret = serve_faults(lz, MAX(MIN(left, 100), 0));
    } while (left > 0 && ret == 0 && qatomic_read(&lz->speed));
    return ret;
}

static void unregister_all(CowSnapLazy *lz)
{
    for (unsigned i = 0; i < lz->sf->vm_blocks->len; i++) {
        CowSnapBlockRef *r = block_ref(lz->sf, i);

        if (r->writable) {
            uffd_unregister_memory(lz->uffd, r->host, r->used_length);
        }
    }
}

static void *loader_thread(void *opaque)
{
    CowSnapLazy *lz = opaque;
    uint64_t bytes = 0;

    rcu_register_thread();
    while (background_step(lz, &bytes)) {
        lz->error = serve_faults_until_due(lz, bytes);
        if (lz->error) {
            break;
        }
    }
    if (lz->error) {
        /* A page the guest needs cannot be read: nothing can go on */
        error_report("Loading RAM from the snapshot failed: %s",
                     strerror(-lz->error));
        abort();
    }
    unregister_all(lz);
    uffd_close_fd(lz->uffd);
    cowsnap_file_close(lz->sf);
    qatomic_set(&lazy_running, false);
    rcu_unregister_thread();
    return NULL;
}

/* Empty the writable blocks and have their pages fault to the loader */
static int arm_blocks(CowSnapLazy *lz)
{
    for (unsigned i = 0; i < lz->sf->vm_blocks->len; i++) {
        CowSnapBlockRef *r = block_ref(lz->sf, i);
        int ret;

        if (!r->writable) {
            ret = cowsnap_load_block(lz->sf, i);
        } else if (ram_block_discard_range(r->rb, 0, r->used_length) < 0) {
            ret = -EIO;
        } else {
            ret = uffd_register_memory(lz->uffd, r->host, r->used_length,
                                       UFFDIO_REGISTER_MODE_MISSING, NULL);
        }
        if (ret < 0) {
            unregister_all(lz);
            return ret;
        }
    }
    return 0;
}

/*
 * A migration (of any mode, background snapshots included) reads all of
 * RAM and may register it with a userfaultfd of its own: the load ends
 * first.  The notifier runs in the main loop before the migration
 * thread starts.
 */
static int lazy_migration_setup(NotifierWithReturn *n, MigrationEvent *e,
                                Error **errp)
{
    if (e->type == MIG_EVENT_PRECOPY_SETUP) {
        cow_snapshot_wait_loaded();
    }
    return 0;
}

static void lazy_watch_migrations(void)
{
    static NotifierWithReturn notifiers[MIG_MODE__MAX];
    static bool watching;

    if (!watching) {
        for (int mode = 0; mode < MIG_MODE__MAX; mode++) {
            migration_add_notifier_mode(&notifiers[mode],
                                        lazy_migration_setup, mode);
        }
        watching = true;
    }
}

int cowsnap_lazy_start(CowSnapFile *sf)
{
    CowSnapLazy *lz = g_new0(CowSnapLazy, 1);
    const char *speed = getenv("QEMU_COW_SNAPSHOT_LOAD_SPEED");
    int ret;

    lz->sf = sf;
    lz->uffd = uffd_create_fd(0, true);
    if (lz->uffd < 0) {
        g_free(lz);
        return -ENOSYS;
    }
    ret = arm_blocks(lz);
    if (ret < 0) {
        uffd_close_fd(lz->uffd);
        g_free(lz);
        return ret;
    }
    lz->buf = qemu_memalign(COWSNAP_PAGE_SIZE,
                            LAZY_BATCH_PAGES * COWSNAP_PAGE_SIZE);
    lz->speed = speed ? g_ascii_strtoull(speed, NULL, 10) : 0;
    lazy_watch_migrations();
    lazy = lz;
    qatomic_set(&lazy_running, true);
    qemu_thread_create(&lz->thread, "cowsnap-load", loader_thread, lz,
                       QEMU_THREAD_JOINABLE);
    return 0;
}

bool cow_snapshot_loading(void)
{
    return qatomic_read(&lazy_running);
}

void cow_snapshot_wait_loaded(void)
{
    if (!lazy) {
        return;
    }
    /* Whoever waits needs all of RAM: no more speed limit */
    qatomic_set(&lazy->speed, 0);
    qemu_thread_join(&lazy->thread);
    qemu_vfree(lazy->buf);
    g_free(lazy->sf);
    g_free(lazy);
    lazy = NULL;
}
