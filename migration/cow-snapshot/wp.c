/*
 * Copy-on-write RAM snapshot: write protection
 *
 * Copyright (c) 2026 The Hyper-V checkpoints project
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 *
 * The userfaultfd side of a snapshot (see save.c for the whole): RAM
 * blocks registered and write-protected at prepare, protected again at
 * begin where the guest wrote since (tracking mode), and the fault
 * thread, which saves a page the guest is about to write before it lets
 * the write go on.  Nothing here takes the BQL.
 */

#include "qemu/osdep.h"
#include <poll.h>
#include <sys/ioctl.h>
#include "qemu/bitmap.h"
#include "qemu/bitops.h"
#include "qemu/atomic.h"
#include "qemu/error-report.h"
#include "qemu/userfaultfd.h"
#include "qapi/error.h"
#include "exec/ramblock.h"
#include "save.h"

static CowSnapBlock *cowsnap_block_of(CowSnapJob *job, uint64_t addr,
                                      unsigned *idx)
{
    for (unsigned i = 0; i < job->nr_blocks; i++) {
        CowSnapBlock *b = &job->blocks[i];
        uintptr_t host = (uintptr_t)b->ref.host;

        if (b->registered && addr >= host && addr < host + b->ref.used_length) {
            *idx = i;
            return b;
        }
    }
    return NULL;
}

/*
 * A guest write hit a page that is still write-protected.  Save it (and
 * the unsaved pages around it) to a buffer, let the guest go, then get
 * the buffer written.
 */
/* A fault beyond our blocks: never leave a vCPU blocked */
static void cowsnap_release_foreign(CowSnapJob *job, uint64_t addr)
{
    uint64_t page = qemu_real_host_page_size();

    uffd_change_protection(job->uffd,
                           (void *)(uintptr_t)(addr & ~(page - 1)), page,
                           false, false);
}

/*
 * Claim, for the fault on host page @hp of @b, the run [*@s, *@e) of
 * pages around it in its window that nobody claimed yet, and take a
 * free slot for the copy (NULL when every slot waits for the disk).
 * Returns false when there is nothing to copy: the pages were only
 * noted (prepared, not begun), or the saver has the page already.
 */
static bool cowsnap_claim(CowSnapJob *job, CowSnapBlock *b, uint64_t hp,
                          uint64_t *s, uint64_t *e, CowSnapSlot **slot)
{
    uint64_t hps = b->ref.host_page_size;
    uint64_t win = MAX(COWSNAP_FAULT_WINDOW / hps, 1);
    uint64_t w0 = QEMU_ALIGN_DOWN(hp, win);
    uint64_t w1 = MIN(w0 + win, b->hpages);

    qemu_mutex_lock(&job->lock);
    if (qatomic_read(&job->tracking)) {
        /* Prepared, not begun: note the pages and let the write go */
        bitmap_set(b->touched, w0, w1 - w0);
        uffd_change_protection(job->uffd, b->ref.host + w0 * hps,
                               (w1 - w0) * hps, false, false);
        qemu_mutex_unlock(&job->lock);
        return false;
    }
    if (test_bit(hp, b->claimed)) {
        /* The saver has it: its release of the protection wakes us */
        qemu_mutex_unlock(&job->lock);
        return false;
    }
    *s = hp;
    while (*s > w0 && !test_bit(*s - 1, b->claimed)) {
        (*s)--;
    }
    *e = hp + 1;
    while (*e < w1 && !test_bit(*e, b->claimed)) {
        (*e)++;
    }
    bitmap_set(b->claimed, *s, *e - *s);
    job->inflight++;
    *slot = QSIMPLEQ_FIRST(&job->free_slots);
    if (*slot) {
        QSIMPLEQ_REMOVE_HEAD(&job->free_slots, next);
    }
    qemu_mutex_unlock(&job->lock);
    return true;
}

/*
 * Copy the claimed host pages [@s, @e) of block @idx, let the guest's
 * writes go on, and hand the copy to the saver (in @slot) or, with no
 * slot free, write it to the state file here
 */
static void cowsnap_copy_claimed(CowSnapJob *job, CowSnapBlock *b,
                                 unsigned idx, uint64_t s, uint64_t e,
                                 CowSnapSlot *slot)
{
    uint64_t hps = b->ref.host_page_size;
    uint64_t len = (e - s) * hps;
    uint8_t *buf = slot ? slot->data : job->fault_buf;
    int ret;

    memcpy(buf, b->ref.host + s * hps, len);
    if (uffd_change_protection(job->uffd, b->ref.host + s * hps, len,
                               false, false)) {
        cowsnap_set_error(job, EIO, "cannot release write protection");
    }
    qatomic_add(&job->faulted_pages, len / COWSNAP_PAGE_SIZE);

    if (slot) {
        slot->block = idx;
        slot->first_page = s * hps / COWSNAP_PAGE_SIZE;
        slot->npages = len / COWSNAP_PAGE_SIZE;
        qemu_mutex_lock(&job->lock);
        QSIMPLEQ_INSERT_TAIL(&job->queue, slot, next);
        qemu_cond_signal(&job->cond);
        qemu_mutex_unlock(&job->lock);
        return;
    }

    /* Every slot is waiting for the disk: write this one ourselves */
    ret = cowsnap_write_pages(job, b, s * hps / COWSNAP_PAGE_SIZE, buf,
                              len / COWSNAP_PAGE_SIZE);
    if (ret < 0) {
        cowsnap_set_error(job, -ret, "write failed");
    }
    qemu_mutex_lock(&job->lock);
    job->inflight--;
    qemu_cond_signal(&job->cond);
    qemu_mutex_unlock(&job->lock);
}

static void cowsnap_handle_fault(CowSnapJob *job, uint64_t addr)
{
    CowSnapSlot *slot = NULL;
    CowSnapBlock *b;
    uint64_t hps, hp, s, e;
    unsigned idx;

    b = cowsnap_block_of(job, addr, &idx);
    if (!b) {
        cowsnap_release_foreign(job, addr);
        return;
    }
    hps = b->ref.host_page_size;
    hp = (addr - (uintptr_t)b->ref.host) / hps;
    if (qatomic_read(&job->aborting)) {
        uffd_change_protection(job->uffd, b->ref.host + hp * hps, hps,
                               false, false);
        return;
    }
    if (cowsnap_claim(job, b, hp, &s, &e, &slot)) {
        cowsnap_copy_claimed(job, b, idx, s, e, slot);
    }
}

void *cowsnap_fault_thread(void *opaque)
{
    CowSnapJob *job = opaque;
    struct pollfd pfd[2] = {
        { .fd = job->uffd, .events = POLLIN },
        { .fd = event_notifier_get_fd(&job->stop_faulter), .events = POLLIN },
    };

    for (;;) {
        struct uffd_msg msg[16];
        int n;

        if (poll(pfd, 2, -1) < 0) {
            if (errno == EINTR) {
                continue;
            }
            cowsnap_set_error(job, errno, "poll on userfaultfd failed");
            break;
        }
        n = uffd_read_events(job->uffd, msg, ARRAY_SIZE(msg));
        if (n < 0) {
            cowsnap_set_error(job, EIO, "reading userfaultfd failed");
            break;
        }
        for (int i = 0; i < n; i++) {
            if (msg[i].event == UFFD_EVENT_PAGEFAULT) {
                cowsnap_handle_fault(job, msg[i].arg.pagefault.address);
            }
        }
        if (n == 0 && (pfd[1].revents & POLLIN)) {
            break;
        }
    }
    return NULL;
}

/*
 * Drop write tracking.  The fault thread goes first, so that it never
 * works on a range being unregistered; whoever is still blocked on a
 * fault (after an abort) is woken by the final unprotect.
 */
void cowsnap_stop_tracking(CowSnapJob *job)
{
    if (job->faulter_started) {
        event_notifier_set(&job->stop_faulter);
        qemu_thread_join(&job->faulter);
        job->faulter_started = false;
    }
    for (unsigned i = 0; i < job->nr_blocks; i++) {
        CowSnapBlock *b = &job->blocks[i];

        if (!b->registered) {
            continue;
        }
        uffd_change_protection(job->uffd, b->ref.host, b->ref.used_length,
                               false, false);
        uffd_unregister_memory(job->uffd, b->ref.host, b->ref.used_length);
        b->registered = false;
    }
    if (job->uffd >= 0) {
        uffd_close_fd(job->uffd);
        job->uffd = -1;
    }
}

uint64_t cowsnap_uffd_features(bool *unpopulated)
{
    uint64_t features = 0;

    *unpopulated = false;
    if (uffd_query_features(&features)) {
        return 0;
    }
#ifdef UFFD_FEATURE_WP_UNPOPULATED
    *unpopulated = features & UFFD_FEATURE_WP_UNPOPULATED;
#endif
    return features;
}

const char cowsnap_wp_hint[] =
    "userfaultfd write-protect is needed: a Linux host >= 5.7 (>= 5.19 "
    "for shared memory backends), permission to use userfaultfd, and RAM "
    "that is anonymous, shmem/memfd or hugetlbfs; otherwise take the "
    "snapshot with the VM paused (paused-save)";

int cowsnap_open_uffd(Error **errp)
{
    bool unpopulated;
    uint64_t features = cowsnap_uffd_features(&unpopulated);
    uint64_t want = UFFD_FEATURE_PAGEFAULT_FLAG_WP;
    int fd;

    if (!(features & UFFD_FEATURE_PAGEFAULT_FLAG_WP)) {
        error_setg(errp, "Write tracking of RAM is not available: %s",
                   cowsnap_wp_hint);
        return -1;
    }
#ifdef UFFD_FEATURE_WP_UNPOPULATED
    if (unpopulated) {
        /* Protect never-touched pages too, without populating them */
        want |= UFFD_FEATURE_WP_UNPOPULATED;
    }
#endif
    fd = uffd_create_fd(want, true);
    if (fd < 0) {
        error_setg(errp, "Write tracking of RAM is not available: %s",
                   cowsnap_wp_hint);
    }
    return fd;
}

/* Register @b with @uffd and write-protect it */
bool cowsnap_protect_block(int uffd, CowSnapBlock *b, bool populate,
                                  Error **errp)
{
    uint64_t ioctls = 0;

    if (uffd_register_memory(uffd, b->ref.host, b->ref.used_length,
                             UFFDIO_REGISTER_MODE_WP, &ioctls) ||
        !(ioctls & BIT(_UFFDIO_WRITEPROTECT))) {
        if (!(ioctls & BIT(_UFFDIO_WRITEPROTECT))) {
            uffd_unregister_memory(uffd, b->ref.host, b->ref.used_length);
        }
        error_setg(errp, "Write tracking is not available for RAM block "
                   "'%s': %s", b->ref.idstr, cowsnap_wp_hint);
        return false;
    }
    b->registered = true;
    if (populate) {
        /*
         * Without UFFD_FEATURE_WP_UNPOPULATED, protection silently skips
         * pages that were never touched: read each page first.  This is
         * O(RAM) and is what the feature avoids.
         */
        for (uint64_t off = 0; off < b->ref.used_length;
             off += b->ref.host_page_size) {
            char tmp = *(char *)(b->ref.host + off);

            /* Keep the read (as ram_block_populate_read() does) */
            asm volatile("" : "+r" (tmp));
        }
    }
    if (uffd_change_protection(uffd, b->ref.host, b->ref.used_length,
                               true, false)) {
        error_setg(errp, "Cannot write-protect RAM block '%s'",
                   b->ref.idstr);
        return false;
    }
    return true;
}

/*
 * Leave tracking mode: from now on a fault saves the page first.  Pages
 * written since prepare lost their protection; protect them again.  The
 * vCPUs are stopped, so this is the only work that depends on the guest,
 * and it is proportional to what it wrote since prepare, not to RAM.
 */
bool cowsnap_rearm(CowSnapJob *job, Error **errp)
{
    qemu_mutex_lock(&job->lock);
    qatomic_set(&job->tracking, false);
    qemu_mutex_unlock(&job->lock);

    for (unsigned i = 0; i < job->nr_blocks; i++) {
        CowSnapBlock *b = &job->blocks[i];
        uint64_t hps = b->ref.host_page_size;
        uint64_t s = 0, e;

        if (!b->registered) {
            continue;
        }
        while ((s = find_next_bit(b->touched, b->hpages, s)) < b->hpages) {
            e = find_next_zero_bit(b->touched, b->hpages, s);
            if (uffd_change_protection(job->uffd, b->ref.host + s * hps,
                                       (e - s) * hps, true, false)) {
                error_setg(errp, "Cannot write-protect RAM block '%s'",
                           b->ref.idstr);
                return false;
            }
            job->rearmed_pages += (e - s) * hps / COWSNAP_PAGE_SIZE;
            s = e;
        }
    }
    return true;
}

