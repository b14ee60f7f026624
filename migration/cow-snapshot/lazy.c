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
#include <sys/mman.h>
#include <linux/userfaultfd.h>
#include "qemu/bswap.h"
#include "qemu/error-report.h"
#include "qemu/memalign.h"
#include "qemu/thread.h"
#include "qemu/units.h"
#include "qemu/userfaultfd.h"
#include "exec/cpu-common.h"
#include "exec/memory.h"
#include "migration/misc.h"
#include "system/system.h"
#include "hw/boards.h"
#include "qemu/madvise.h"
#include "cow-snapshot.h"
#include "internal.h"
#include "load.h"

#define LAZY_BATCH_PAGES 64     /* pages per background step */
#define LAZY_FAULT_PAGES 16     /* pages per fault: 64 KiB, as Linux does */
QEMU_BUILD_BUG_ON(LAZY_FAULT_PAGES > LAZY_BATCH_PAGES);   /* lz->buf */
#define LAZY_MSGS 16
#define LAZY_FREE_CHUNK (16 * MiB)  /* old RAM freed per background step */

#ifndef MREMAP_DONTUNMAP
#define MREMAP_DONTUNMAP 4          /* Linux 5.7 */
#endif

/* The pages a block had before the load, moved away to be freed */
typedef struct CowSnapStale {
    uint8_t *addr;
    uint64_t len;
} CowSnapStale;

typedef struct CowSnapLazy {
    CowSnapFile *sf;
    int uffd;
    QemuThread thread;
    uint8_t *buf;               /* LAZY_BATCH_PAGES pages */
    unsigned blk;               /* background cursor: block, page */
    uint64_t page;
    uint64_t speed;             /* bytes/s of the background, 0: full */
    int error;                  /* first error, -errno */
    GArray *stale;              /* CowSnapStale, freed by the loader */
} CowSnapLazy;

static CowSnapLazy *lazy;       /* the running load, main loop's view */
static bool ram_unmerged;       /* KSM turned off for RAM (main loop) */
static bool lazy_running;       /* atomic: the loader has not ended */

static CowSnapBlockRef *block_ref(CowSnapFile *sf, unsigned i)
{
    return &g_array_index(sf->vm_blocks, CowSnapBlockRef, i);
}

/*
 * Private anonymous RAM: no other process maps it (vhost-user would see
 * the holes of a lazy load) and it has no file whose pages would never
 * be missing; KSM may merge it
 */
static bool ram_is_private_anonymous(RAMBlock *rb)
{
    return !qemu_ram_is_shared(rb) && qemu_ram_get_fd(rb) < 0;
}

bool cowsnap_lazy_possible(CowSnapFile *sf)
{
    uint64_t features;

    /* Locked RAM (-overcommit mem-lock) cannot be emptied */
    if (uffd_query_features(&features) < 0 ||
        ram_block_discard_is_disabled() || should_mlock(mlock_state)) {
        return false;
    }
    for (unsigned i = 0; i < sf->vm_blocks->len; i++) {
        CowSnapBlockRef *r = block_ref(sf, i);

        /* Huge pages cannot be placed 4 KiB at a time */
        if (r->writable && (r->host_page_size != COWSNAP_PAGE_SIZE ||
                            !ram_is_private_anonymous(r->rb))) {
            return false;
        }
    }
    return true;
}

/*
 * UFFDIO_COPY (from @src) or UFFDIO_ZEROPAGE of @len bytes at @dst,
 * skipping the pages that are in already (a fault and the background
 * met): the kernel never overwrites a page.  Waiters on the pages
 * placed are woken; -errno
 */
static int place_range(CowSnapLazy *lz, uint8_t *dst, const uint8_t *src,
                       uint64_t len, bool present)
{
    uint64_t done = 0;
    int tries = 0;

    while (done < len) {
        int64_t moved;
        int ret;

        if (present) {
            struct uffdio_copy c = {
                .dst = (uintptr_t)(dst + done),
                .src = (uintptr_t)(src + done), .len = len - done,
            };

            ret = ioctl(lz->uffd, UFFDIO_COPY, &c);
            moved = c.copy;
        } else {
            struct uffdio_zeropage z = {
                .range = { .start = (uintptr_t)(dst + done),
                           .len = len - done },
            };

            ret = ioctl(lz->uffd, UFFDIO_ZEROPAGE, &z);
            moved = z.zeropage;
        }
        if (ret == 0) {
            return 0;
        }
        ret = errno;
        /* A partial copy ends with EAGAIN and the bytes placed */
        done += moved > 0 ? moved : 0;
        if (ret == EEXIST) {
            done += COWSNAP_PAGE_SIZE;
        } else if (ret != EAGAIN || (moved <= 0 && ++tries >= 1000)) {
            return -ret;
        }
    }
    return 0;
}

/*
 * Place pages [@first, @first + @n) of block @i: from the file when
 * @present, zeros otherwise; pages in already stay as they are
 */
static int place_pages(CowSnapLazy *lz, unsigned i, uint64_t first,
                       uint64_t n, bool present)
{
    CowSnapBlockRef *r = block_ref(lz->sf, i);
    uint64_t off = first * COWSNAP_PAGE_SIZE, len = n * COWSNAP_PAGE_SIZE;
    uint64_t data = le64_to_cpu(lz->sf->table[i].data_offset);

    if (present &&
        cowsnap_pread_all(lz->sf->fd, lz->buf, len, data + off) < 0) {
        return -errno;
    }
    return place_range(lz, r->host + off, lz->buf, len, present);
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

/*
 * Serve a fault on page @page of block @blk with the pages around it: the
 * aligned group of LAZY_FAULT_PAGES holding it, in runs of pages that
 * are all in the file or all zero.  A guest that touches a page mostly
 * touches its neighbours next; one fault then brings them all.  Pages of
 * the group that are in already are left as they are (UFFDIO_COPY never
 * overwrites a page).
 */
static int serve_fault(CowSnapLazy *lz, unsigned blk, uint64_t page)
{
    const uint8_t *map = cowsnap_block_map(lz->sf, blk);
    uint64_t pages = block_ref(lz->sf, blk)->used_length / COWSNAP_PAGE_SIZE;
    uint64_t p = QEMU_ALIGN_DOWN(page, LAZY_FAULT_PAGES);
    uint64_t end = MIN(p + LAZY_FAULT_PAGES, pages);
    int ret = 0;

    while (p < end && ret == 0) {
        bool present = cowsnap_page_present(map, p);
        uint64_t first = p;

        while (p < end && cowsnap_page_present(map, p) == present) {
            p++;
        }
        ret = place_pages(lz, blk, first, p - first, present);
    }
    if (ret == 0) {
        /*
         * The page may have been placed by the background after the
         * fault was queued: its waiters still need waking
         */
        ret = uffd_wakeup(lz->uffd, block_ref(lz->sf, blk)->host +
                          page * COWSNAP_PAGE_SIZE, COWSNAP_PAGE_SIZE);
    }
    return ret;
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
        ret = serve_fault(lz, blk, page);
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

static int unmerge_block(RAMBlock *rb, void *opaque)
{
    if (ram_is_private_anonymous(rb)) {
        qemu_madvise(qemu_ram_get_host_addr(rb), qemu_ram_get_max_length(rb),
                     QEMU_MADV_UNMERGEABLE);
    }
    return 0;
}

void cow_snapshot_prepare_lazy_loads(void)
{
    if (!ram_unmerged && machine_mem_merge(current_machine)) {
        qemu_ram_foreach_block(unmerge_block, NULL);
    }
    ram_unmerged = true;
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

/*
 * An unused address range of @len bytes at the same offset from a 1 GiB
 * boundary as @like: the kernel moves page tables whole (a PMD or PUD at
 * a time) only between addresses aligned alike, and one PTE at a time
 * otherwise, which is as slow as freeing the pages
 */
static void *reserve_like(void *like, uint64_t len)
{
    uint64_t align = 1 * GiB, skew = (uintptr_t)like & (align - 1);
    uint8_t *p = mmap(NULL, len + align, PROT_NONE,
                      MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    uint8_t *dst;

    if (p == MAP_FAILED) {
        return MAP_FAILED;
    }
    dst = (uint8_t *)QEMU_ALIGN_DOWN((uintptr_t)p, align) + skew;
    if (dst < p) {
        dst += align;
    }
    /* Keep [dst, dst + len) only */
    if (dst > p) {
        munmap(p, dst - p);
    }
    munmap(dst + len, p + len + align - (dst + len));
    return dst;
}

/*
 * Empty block @r for the load, fast: freeing its resident pages would
 * take time in proportion to RAM inside the pause (about 50 ms for 6 GiB
 * on transparent huge pages, 400 ms on 4 KiB pages).  MREMAP_DONTUNMAP
 * moves its page tables to a new address instead, and leaves the mapping
 * in place, with its attributes (madvise, the userfaultfd registration
 * to come) but without pages; the loader frees the old pages in the
 * background.  Where the kernel cannot move them (before Linux 5.13 for
 * this kind of mapping, strict overcommit), the pages are discarded.
 */
static int empty_block(CowSnapLazy *lz, CowSnapBlockRef *r)
{
    void *old = MAP_FAILED, *dst = MAP_FAILED;

    /* KSM would unmerge page by page inside mremap(): as slow as a discard */
    if (ram_unmerged || !machine_mem_merge(current_machine)) {
        dst = reserve_like(r->host, r->used_length);
    }
    if (dst != MAP_FAILED) {
        old = mremap(r->host, r->used_length, r->used_length,
                     MREMAP_MAYMOVE | MREMAP_FIXED | MREMAP_DONTUNMAP, dst);
        if (old == MAP_FAILED) {
            munmap(dst, r->used_length);
        }
    }
    if (old != MAP_FAILED) {
        CowSnapStale st = { .addr = old, .len = r->used_length };

        g_array_append_val(lz->stale, st);
        return 0;
    }
    return ram_block_discard_range(r->rb, 0, r->used_length) < 0 ? -EIO : 0;
}

/* Free up to @max bytes of the old pages; false when none are left */
static bool free_stale(CowSnapLazy *lz, uint64_t max)
{
    CowSnapStale *st;
    uint64_t len;

    if (!lz->stale->len) {
        return false;
    }
    /* munmap holds the mm's lock: a chunk at a time, faults in between */
    st = &g_array_index(lz->stale, CowSnapStale, lz->stale->len - 1);
    len = MIN(st->len, max);
    munmap(st->addr + st->len - len, len);
    st->len -= len;
    if (!st->len) {
        g_array_set_size(lz->stale, lz->stale->len - 1);
    }
    return true;
}

static void *loader_thread(void *opaque)
{
    CowSnapLazy *lz = opaque;
    uint64_t bytes = 0;

    rcu_register_thread();
    while (background_step(lz, &bytes)) {
        free_stale(lz, LAZY_FREE_CHUNK);
        lz->error = serve_faults_until_due(lz, bytes);
        if (lz->error) {
            break;
        }
    }
    while (free_stale(lz, LAZY_FREE_CHUNK)) {
        /* RAM smaller than what the steps freed on the way */
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
        } else {
            ret = empty_block(lz, r);
            if (ret == 0) {
                ret = uffd_register_memory(lz->uffd, r->host,
                                           r->used_length,
                                           UFFDIO_REGISTER_MODE_MISSING,
                                           NULL);
            }
        }
        if (ret < 0) {
            unregister_all(lz);
            while (free_stale(lz, UINT64_MAX)) {
                /* the eager load that follows writes every page */
            }
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
    lz->stale = g_array_new(false, false, sizeof(CowSnapStale));
    ret = arm_blocks(lz);
    if (ret < 0) {
        uffd_close_fd(lz->uffd);
        g_array_free(lz->stale, true);
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
    g_array_free(lazy->stale, true);
    g_free(lazy->sf);
    g_free(lazy);
    lazy = NULL;
}
