/*
 * Copy-on-write RAM snapshot: begin and background save
 *
 * Copyright (c) 2026 The Hyper-V checkpoints project
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 *
 * Two threads run while a snapshot is saved, and neither ever takes the
 * BQL (a vCPU or the main loop may be blocked on a write fault that only
 * they can resolve):
 *
 * - the saver walks RAM in chunks: it claims the chunk's pages that are
 *   not saved yet, copies them to a buffer, releases their write
 *   protection and writes the non-zero pages at their fixed offsets;
 * - the fault thread reads write faults from the userfaultfd: it claims
 *   the faulting page (and its unsaved neighbours in a small window),
 *   copies them to a buffer, releases the protection, so that the guest
 *   continues at once, and hands the buffer to the saver to write.
 *
 * A page is claimed exactly once (bitmap under job->lock), so it is
 * saved exactly once, and always as it was at begin: it is copied while
 * still write-protected.
 */

#include "qemu/osdep.h"
#include "qemu/bitmap.h"
#include "qemu/bitops.h"
#include "qemu/cutils.h"
#include "qemu/error-report.h"
#include "qemu/event_notifier.h"
#include "qemu/main-loop.h"
#include "qemu/thread.h"
#include "qemu/timer.h"
#include "qemu/userfaultfd.h"
#include "qapi/error.h"
#include "qapi/qapi-events-cow-snapshot.h"
#include "io/channel-buffer.h"
#include "exec/memory.h"
#include "exec/ramblock.h"
#include "migration/global_state.h"
#include "migration/misc.h"
#include "migration/qemu-file.h"
#include "migration/savevm.h"
#include "system/runstate.h"
#include "system/system.h"
#include "cow-snapshot.h"
#include "internal.h"
#include "save.h"

/* The current or last snapshot; only touched by the main loop */
static CowSnapJob *cowsnap_job;
/* A snapshot prepared (RAM armed) and not begun yet */
static CowSnapJob *cowsnap_prepared;

void cowsnap_set_error(CowSnapJob *job, int err, const char *what)
{
    qemu_mutex_lock(&job->lock);
    if (!job->err) {
        error_setg_errno(&job->err, err, "Copy-on-write snapshot to '%s': %s",
                         job->path, what);
    }
    qemu_mutex_unlock(&job->lock);
    qatomic_set(&job->aborting, true);
}

/* Write the non-zero pages of @buf, the pages from @first_page on */
int cowsnap_write_pages(CowSnapJob *job, CowSnapBlock *b,
                        uint64_t first_page, const uint8_t *buf,
                        uint64_t npages)
{
    uint64_t i = 0;

    while (i < npages) {
        uint64_t run;

        if (buffer_is_zero(buf + i * COWSNAP_PAGE_SIZE, COWSNAP_PAGE_SIZE)) {
            i++;
            continue;
        }
        run = i;
        while (i < npages &&
               !buffer_is_zero(buf + i * COWSNAP_PAGE_SIZE,
                               COWSNAP_PAGE_SIZE)) {
            i++;
        }
        if (cowsnap_pwrite_all(job->fd, buf + run * COWSNAP_PAGE_SIZE,
                               (i - run) * COWSNAP_PAGE_SIZE,
                               b->data_offset +
                               (first_page + run) * COWSNAP_PAGE_SIZE) < 0) {
            return -errno;
        }
        bitmap_set_atomic(b->map, first_page + run, i - run);
        qatomic_add(&job->written_bytes, (i - run) * COWSNAP_PAGE_SIZE);
    }
    qatomic_add(&job->done_bytes, npages * COWSNAP_PAGE_SIZE);
    return 0;
}

/* Write the buffers the fault thread queued; job->lock held */
static void cowsnap_drain_queue_locked(CowSnapJob *job)
{
    CowSnapSlot *slot;

    while ((slot = QSIMPLEQ_FIRST(&job->queue))) {
        int ret;

        QSIMPLEQ_REMOVE_HEAD(&job->queue, next);
        qemu_mutex_unlock(&job->lock);
        ret = cowsnap_write_pages(job, &job->blocks[slot->block],
                                  slot->first_page, slot->data,
                                  slot->npages);
        if (ret < 0) {
            cowsnap_set_error(job, -ret, "write failed");
        }
        qemu_mutex_lock(&job->lock);
        QSIMPLEQ_INSERT_TAIL(&job->free_slots, slot, next);
        job->inflight--;
    }
}

static bool cowsnap_should_stop(CowSnapJob *job)
{
    return qatomic_read(&job->aborting) || qatomic_read(&job->cancel);
}

/*
 * Bytes per second of the background save, 0 for full speed: the
 * environment variable QEMU_COW_SNAPSHOT_SAVE_SPEED, for tests that need
 * a save (a "creating" checkpoint) to last
 */
static uint64_t cowsnap_save_speed;

static void cowsnap_throttle(uint64_t len)
{
    if (cowsnap_save_speed) {
        g_usleep(len * G_USEC_PER_SEC / cowsnap_save_speed);
    }
}

/* Save the whole block @b in chunks; false when the job must stop */
static bool cowsnap_save_block(CowSnapJob *job, CowSnapBlock *b,
                               uint8_t *chunk_buf)
{
    uint64_t hps = b->ref.host_page_size;
    uint64_t chunk = MAX(COWSNAP_CHUNK / hps, 1);
    uint64_t hp = 0;

    while (hp < b->hpages) {
        uint64_t s, e, len;
        const uint8_t *src;
        int ret;

        if (cowsnap_should_stop(job)) {
            return false;
        }
        qemu_mutex_lock(&job->lock);
        cowsnap_drain_queue_locked(job);
        s = find_next_zero_bit(b->claimed, b->hpages, hp);
        if (s >= b->hpages) {
            qemu_mutex_unlock(&job->lock);
            break;
        }
        e = s + 1;
        while (e < MIN(s + chunk, b->hpages) && !test_bit(e, b->claimed)) {
            e++;
        }
        bitmap_set(b->claimed, s, e - s);
        qemu_mutex_unlock(&job->lock);

        len = (e - s) * hps;
        if (b->rom_copy) {
            src = b->rom_copy + s * hps;
        } else if (b->registered) {
            /* Copy first: a vCPU faulting on these pages waits for us */
            memcpy(chunk_buf, b->ref.host + s * hps, len);
            if (uffd_change_protection(job->uffd, b->ref.host + s * hps, len,
                                       false, false)) {
                cowsnap_set_error(job, EIO, "cannot release write protection");
                return false;
            }
            src = chunk_buf;
        } else {
            /* Paused save: nothing writes guest RAM */
            src = b->ref.host + s * hps;
        }
        ret = cowsnap_write_pages(job, b, s * hps / COWSNAP_PAGE_SIZE, src,
                                  len / COWSNAP_PAGE_SIZE);
        if (ret < 0) {
            cowsnap_set_error(job, -ret, "write failed");
            return false;
        }
        cowsnap_throttle(len);
        hp = e;
    }
    return true;
}

/* Wait until every page the fault thread claimed is written */
static void cowsnap_wait_faults(CowSnapJob *job)
{
    qemu_mutex_lock(&job->lock);
    for (;;) {
        cowsnap_drain_queue_locked(job);
        if (!job->inflight) {
            break;
        }
        qemu_cond_wait(&job->cond, &job->lock);
    }
    qemu_mutex_unlock(&job->lock);
}

/* Page maps, checksum, then the header with the complete flag, synced */
static int cowsnap_write_trailer(CowSnapJob *job)
{
    uint64_t maps_size = le64_to_cpu(job->hdr.maps_size);
    g_autofree uint8_t *maps = g_malloc0(maps_size);
    uint64_t maps_offset = le64_to_cpu(job->hdr.maps_offset);

    for (unsigned i = 0; i < job->nr_blocks; i++) {
        CowSnapBlock *b = &job->blocks[i];
        uint64_t *out = (uint64_t *)(maps + (b->map_offset - maps_offset));
        uint64_t words = cowsnap_map_size(b->ref.used_length) / 8;

        for (uint64_t w = 0; w < words; w++) {
            out[w] = cpu_to_le64(b->map[w]);
        }
    }
    if (cowsnap_pwrite_all(job->fd, maps, maps_size, maps_offset) < 0) {
        return -errno;
    }

    job->hdr.flags |= cpu_to_le64(COWSNAP_FLAG_COMPLETE);
    job->hdr.data_bytes = cpu_to_le64(qatomic_read(&job->written_bytes));
    job->hdr.metadata_crc = 0;
    job->hdr.metadata_crc = cpu_to_le32(cowsnap_metadata_crc(&job->hdr,
                                        job->table, maps, job->devstate));
    /* Everything the header vouches for is stable before the header */
    if (qemu_fdatasync(job->fd) < 0) {
        return -errno;
    }
    if (cowsnap_pwrite_all(job->fd, &job->hdr, sizeof(job->hdr), 0) < 0) {
        return -errno;
    }
    if (qemu_fdatasync(job->fd) < 0) {
        return -errno;
    }
    return 0;
}

/* Header (not complete yet), block table and device state */
static int cowsnap_write_prologue(CowSnapJob *job)
{
    if (cowsnap_pwrite_all(job->fd, &job->hdr, sizeof(job->hdr), 0) < 0 ||
        cowsnap_pwrite_all(job->fd, job->table,
                           le64_to_cpu(job->hdr.table_size),
                           le64_to_cpu(job->hdr.table_offset)) < 0 ||
        cowsnap_pwrite_all(job->fd, job->devstate, job->devstate_size,
                           le64_to_cpu(job->hdr.devstate_offset)) < 0) {
        return -errno;
    }
    return 0;
}

static void cowsnap_finish_bh(void *opaque);

static void *cowsnap_saver_thread(void *opaque)
{
    CowSnapJob *job = opaque;
    g_autofree uint8_t *chunk_buf = g_malloc(MAX(COWSNAP_CHUNK,
                                                 job->slot_size));
    const char *speed = getenv("QEMU_COW_SNAPSHOT_SAVE_SPEED");
    int ret;

    cowsnap_save_speed = speed ? g_ascii_strtoull(speed, NULL, 10) : 0;
    ret = cowsnap_write_prologue(job);
    if (ret < 0) {
        cowsnap_set_error(job, -ret, "write failed");
    }
    for (unsigned i = 0; i < job->nr_blocks && !cowsnap_should_stop(job);
         i++) {
        cowsnap_save_block(job, &job->blocks[i], chunk_buf);
    }
    if (!cowsnap_should_stop(job)) {
        cowsnap_wait_faults(job);
    } else {
        /* Let blocked writers go before waiting for the fault thread */
        qatomic_set(&job->aborting, true);
    }
    cowsnap_stop_tracking(job);
    /* Slots still queued after an abort are dropped with the file */

    if (!cowsnap_should_stop(job)) {
        ret = cowsnap_write_trailer(job);
        if (ret < 0) {
            cowsnap_set_error(job, -ret, "write failed");
        }
    }
    close(job->fd);
    job->fd = -1;
    if (cowsnap_should_stop(job)) {
        unlink(job->path);
    }
    aio_bh_schedule_oneshot(qemu_get_aio_context(), cowsnap_finish_bh, job);
    return NULL;
}

/*
 * Everything but what x-query-cow-snapshot reports; in the main loop,
 * once the threads are gone.
 */
static void cowsnap_job_release(CowSnapJob *job)
{
    for (unsigned i = 0; i < job->nr_blocks; i++) {
        CowSnapBlock *b = &job->blocks[i];

        if (b->mr_ref) {
            memory_region_unref(b->ref.rb->mr);
            b->mr_ref = false;
        }
        g_free(b->claimed);
        g_free(b->touched);
        g_free(b->map);
        g_free(b->rom_copy);
    }
    for (unsigned i = 0; job->slots && i < COWSNAP_FAULT_SLOTS; i++) {
        g_free(job->slots[i].data);
    }
    g_free(job->slots);
    g_free(job->fault_buf);
    g_free(job->blocks);
    g_free(job->table);
    g_free(job->devstate);
    job->slots = NULL;
    job->fault_buf = NULL;
    job->blocks = NULL;
    job->nr_blocks = 0;
    job->table = NULL;
    job->devstate = NULL;
    if (job->discard_disabled) {
        ram_block_discard_disable(false);
        job->discard_disabled = false;
    }
}

static void cowsnap_job_free(CowSnapJob *job)
{
    if (!job) {
        return;
    }
    cowsnap_job_release(job);
    g_free(job->path);
    error_free(job->err);
    event_notifier_cleanup(&job->stop_faulter);
    qemu_cond_destroy(&job->cond);
    qemu_mutex_destroy(&job->lock);
    g_free(job);
}

static void cowsnap_finish_bh(void *opaque)
{
    CowSnapJob *job = opaque;

    qemu_thread_join(&job->saver);
    cowsnap_job_release(job);
    job->end_ns = qemu_clock_get_ns(QEMU_CLOCK_REALTIME);
    job->active = false;
    if (job->err) {
        job->status = COW_SNAPSHOT_STATUS_FAILED;
        error_report_err(error_copy(job->err));
    } else if (qatomic_read(&job->cancel)) {
        job->status = COW_SNAPSHOT_STATUS_CANCELLED;
    } else {
        job->status = COW_SNAPSHOT_STATUS_COMPLETED;
    }
    qapi_event_send_cow_snapshot_done(job->path, job->status,
                                      job->err ?
                                      error_get_pretty(job->err) : NULL);
    if (job->done) {
        job->done(job->done_opaque, job->status, job->err);
    }
}

/* Device state as a migration stream (no RAM), into memory */
static bool cowsnap_capture_devstate(CowSnapJob *job, Error **errp)
{
    QIOChannelBuffer *bioc = qio_channel_buffer_new(512 * 1024);
    QEMUFile *f = qemu_file_new_output(QIO_CHANNEL(bioc));
    int ret;

    /* The "globalstate" section carries the run state; loading checks it */
    global_state_store();
    ret = qemu_save_device_state(f);
    qemu_fflush(f);
    if (ret == 0) {
        ret = qemu_file_get_error(f);
    }
    if (ret == 0) {
        job->devstate = g_memdup2(bioc->data, bioc->usage);
        job->devstate_size = bioc->usage;
    }
    qemu_fclose(f);
    object_unref(OBJECT(bioc));
    if (ret) {
        error_setg_errno(errp, -ret, "Cannot save the device state");
        return false;
    }
    return true;
}

/* Where everything goes in the file; fills job->hdr and job->table */
static void cowsnap_layout(CowSnapJob *job)
{
    uint64_t table_size = job->nr_blocks * sizeof(CowSnapFileBlock);
    uint64_t off, maps_offset, ram = 0;
    CowSnapFileHeader *h = &job->hdr;

    maps_offset = ROUND_UP(COWSNAP_HEADER_REGION + table_size,
                           COWSNAP_PAGE_SIZE);
    off = maps_offset;
    for (unsigned i = 0; i < job->nr_blocks; i++) {
        job->blocks[i].map_offset = off;
        off += cowsnap_map_size(job->blocks[i].ref.used_length);
    }
    h->maps_offset = cpu_to_le64(maps_offset);
    h->maps_size = cpu_to_le64(off - maps_offset);
    off = ROUND_UP(off, COWSNAP_PAGE_SIZE);
    h->devstate_offset = cpu_to_le64(off);
    h->devstate_size = cpu_to_le64(job->devstate_size);
    off += job->devstate_size;

    job->table = g_new0(CowSnapFileBlock, job->nr_blocks);
    for (unsigned i = 0; i < job->nr_blocks; i++) {
        CowSnapBlock *b = &job->blocks[i];
        CowSnapFileBlock *t = &job->table[i];

        off = ROUND_UP(off, MAX(COWSNAP_DATA_ALIGN, b->ref.host_page_size));
        b->data_offset = off;
        off += b->pages * COWSNAP_PAGE_SIZE;
        ram += b->ref.used_length;

        pstrcpy(t->idstr, sizeof(t->idstr), b->ref.idstr);
        t->used_length = cpu_to_le64(b->ref.used_length);
        t->page_map_offset = cpu_to_le64(b->map_offset);
        t->page_map_size = cpu_to_le64(cowsnap_map_size(b->ref.used_length));
        t->data_offset = cpu_to_le64(b->data_offset);
        t->host_page_size = cpu_to_le64(b->ref.host_page_size);
    }

    memcpy(h->magic, COWSNAP_MAGIC, sizeof(h->magic));
    h->version = cpu_to_le32(COWSNAP_VERSION);
    h->header_size = cpu_to_le32(sizeof(*h));
    h->flags = cpu_to_le64(job->paused_save ? COWSNAP_FLAG_PAUSED_SAVE : 0);
    h->page_size = cpu_to_le32(COWSNAP_PAGE_SIZE);
    h->nr_blocks = cpu_to_le32(job->nr_blocks);
    h->table_offset = cpu_to_le64(COWSNAP_HEADER_REGION);
    h->table_size = cpu_to_le64(table_size);
    h->file_size = cpu_to_le64(off);
    h->ram_bytes = cpu_to_le64(ram);
    h->created_ns = cpu_to_le64(qemu_clock_get_ns(QEMU_CLOCK_HOST));
    pstrcpy(h->machine_type, sizeof(h->machine_type), cowsnap_machine_type());
    job->total_bytes = ram;
}

static bool cowsnap_setup_blocks(CowSnapJob *job, Error **errp)
{
    g_autoptr(GArray) refs = cowsnap_vm_blocks();
    size_t max_hps = 0;

    if (refs->len > COWSNAP_MAX_BLOCKS) {
        error_setg(errp, "Too many RAM blocks (%u)", refs->len);
        return false;
    }
    job->nr_blocks = refs->len;
    job->blocks = g_new0(CowSnapBlock, refs->len);
    for (unsigned i = 0; i < refs->len; i++) {
        CowSnapBlock *b = &job->blocks[i];

        b->ref = g_array_index(refs, CowSnapBlockRef, i);
        if (b->ref.host_page_size % COWSNAP_PAGE_SIZE ||
            b->ref.used_length % b->ref.host_page_size) {
            error_setg(errp, "RAM block '%s' has an unsupported page size",
                       b->ref.idstr);
            return false;
        }
        b->pages = b->ref.used_length / COWSNAP_PAGE_SIZE;
        b->hpages = b->ref.used_length / b->ref.host_page_size;
        b->claimed = bitmap_new(b->hpages);
        b->map = bitmap_new(b->pages);
        b->touched = bitmap_new(b->hpages);
        max_hps = MAX(max_hps, b->ref.host_page_size);
        /* Keep the block alive (memory unplug) while threads use it */
        memory_region_ref(b->ref.rb->mr);
        b->mr_ref = true;
    }
    job->slot_size = MAX(COWSNAP_FAULT_WINDOW, max_hps);
    return true;
}

/*
 * ROM cannot be write-protected, but the device model may still rewrite
 * it (on reset, say): keep it as it is at begin.  Its size does not grow
 * with the guest's RAM.
 */
static void cowsnap_copy_roms(CowSnapJob *job)
{
    for (unsigned i = 0; i < job->nr_blocks; i++) {
        CowSnapBlock *b = &job->blocks[i];

        if (!b->ref.writable) {
            b->rom_copy = g_memdup2(b->ref.host, b->ref.used_length);
        }
    }
}

static void cowsnap_alloc_slots(CowSnapJob *job)
{
    job->slots = g_new0(CowSnapSlot, COWSNAP_FAULT_SLOTS);
    for (unsigned i = 0; i < COWSNAP_FAULT_SLOTS; i++) {
        job->slots[i].data = g_malloc(job->slot_size);
        QSIMPLEQ_INSERT_TAIL(&job->free_slots, &job->slots[i], next);
    }
    job->fault_buf = g_malloc(job->slot_size);
}

static void cowsnap_abort_begin(CowSnapJob *job)
{
    cowsnap_stop_tracking(job);
    if (job->fd >= 0) {
        close(job->fd);
        job->fd = -1;
        unlink(job->path);
    }
}

/* Checks shared by prepare and begin */
static bool cowsnap_can_start(Error **errp)
{
    /* Write-protection and a lazy load cannot share RAM: it ends first */
    cow_snapshot_wait_loaded();
    if (cowsnap_job && cowsnap_job->active) {
        error_setg(errp, "A copy-on-write snapshot is already being saved");
        return false;
    }
    if (migration_is_running()) {
        error_setg(errp, "Cannot take a snapshot while a migration runs");
        return false;
    }
    /*
     * Devices that cannot be migrated cannot be snapshotted either.  The
     * migration blockers (migration_is_blocked()) are not checked: they
     * include the vhdx driver's, which is about moving a disk to another
     * host and does not concern a snapshot of RAM and devices.
     */
    return !qemu_savevm_state_blocked(errp);
}

/*
 * QEMU exits with a snapshot prepared or running: the file would stay
 * incomplete (load refuses it, but it takes space).  Remove it; the
 * threads end with the process, whatever they were doing.
 */
static void cowsnap_exit(Notifier *n, void *data)
{
    CowSnapJob *job = cowsnap_prepared;

    if (!job && cowsnap_job && cowsnap_job->active) {
        job = cowsnap_job;
    }
    if (job) {
        qatomic_set(&job->cancel, true);
        unlink(job->path);
    }
}

static Notifier cowsnap_exit_notifier = { .notify = cowsnap_exit };

bool cow_snapshot_prepare(const char *path, const CowSnapshotOptions *opts,
                          Error **errp)
{
    static bool exit_notifier_added;
    bool unpopulated = false;
    CowSnapJob *job;

    assert(bql_locked());
    if (!exit_notifier_added) {
        qemu_add_exit_notifier(&cowsnap_exit_notifier);
        exit_notifier_added = true;
    }
    if (cowsnap_prepared) {
        error_setg(errp, "A copy-on-write snapshot is already prepared");
        return false;
    }
    if (!cowsnap_can_start(errp)) {
        return false;
    }
    /* A balloon must not drop pages whose content the snapshot needs */
    if (ram_block_discard_disable(true)) {
        error_setg(errp, "Cannot take a snapshot while a device relies on "
                   "discarding RAM");
        return false;
    }

    job = g_new0(CowSnapJob, 1);
    job->discard_disabled = true;
    job->path = g_strdup(path);
    job->fd = -1;
    job->uffd = -1;
    job->paused_save = opts->paused_save;
    job->done = opts->done;
    job->done_opaque = opts->opaque;
    job->tracking = true;
    qemu_mutex_init(&job->lock);
    qemu_cond_init(&job->cond);
    QSIMPLEQ_INIT(&job->queue);
    QSIMPLEQ_INIT(&job->free_slots);
    event_notifier_init(&job->stop_faulter, false);

    if (!job->paused_save) {
        cowsnap_uffd_features(&unpopulated);
        job->uffd = cowsnap_open_uffd(errp);
        if (job->uffd < 0) {
            goto fail;
        }
    }
    if (!cowsnap_setup_blocks(job, errp)) {
        goto fail;
    }
    job->fd = qemu_create(path, O_RDWR | O_TRUNC | O_CLOEXEC, 0600, errp);
    if (job->fd < 0) {
        goto fail;
    }

    if (!job->paused_save) {
        cowsnap_alloc_slots(job);
        /*
         * Arm write protection now, while the VM may still run: this is
         * the part that costs time in proportion to RAM (page tables).
         * Until begin, a write fault only records the page as touched
         * and lets the write go; begin protects those pages again.
         */
        qemu_thread_create(&job->faulter, "cowsnap-fault",
                           cowsnap_fault_thread, job, QEMU_THREAD_JOINABLE);
        job->faulter_started = true;
        for (unsigned i = 0; i < job->nr_blocks; i++) {
            CowSnapBlock *b = &job->blocks[i];

            if (b->ref.writable &&
                !cowsnap_protect_block(job->uffd, b, !unpopulated, errp)) {
                goto fail;
            }
        }
    }
    cowsnap_prepared = job;
    return true;

fail:
    cowsnap_abort_begin(job);
    cowsnap_job_free(job);
    return false;
}

void cow_snapshot_abort_prepared(void)
{
    if (cowsnap_prepared) {
        cowsnap_abort_begin(cowsnap_prepared);
        cowsnap_job_free(cowsnap_prepared);
        cowsnap_prepared = NULL;
    }
}

bool cow_snapshot_begin(const char *path, const CowSnapshotOptions *opts,
                        Error **errp)
{
    int64_t t0 = qemu_clock_get_ns(QEMU_CLOCK_REALTIME);
    CowSnapJob *job;

    assert(bql_locked());
    cow_snapshot_wait_loaded();
    if (runstate_is_running()) {
        error_setg(errp, "The vCPUs must be stopped to begin a snapshot");
        return false;
    }
    if (cowsnap_prepared && strcmp(cowsnap_prepared->path, path)) {
        error_setg(errp, "The prepared snapshot is for '%s', not '%s'",
                   cowsnap_prepared->path, path);
        cow_snapshot_abort_prepared();
        return false;
    }
    if (!cowsnap_prepared && !cow_snapshot_prepare(path, opts, errp)) {
        return false;
    }
    job = cowsnap_prepared;
    cowsnap_prepared = NULL;
    job->start_ns = t0;

    if (!cowsnap_can_start(errp)) {
        goto fail;
    }
    /*
     * Device state first, as upstream's background snapshot does: what
     * a device's pre_save writes to guest RAM belongs to the snapshot
     * (in tracking mode it only marks pages for re-arming).
     */
    cowsnap_copy_roms(job);
    if (!cowsnap_capture_devstate(job, errp) ||
        (!job->paused_save && !cowsnap_rearm(job, errp))) {
        goto fail;
    }
    cowsnap_layout(job);
    /* The file is new and empty: sizing it only writes its inode */
    if (ftruncate(job->fd, le64_to_cpu(job->hdr.file_size)) < 0) {
        error_setg_errno(errp, errno, "Cannot size '%s'", path);
        goto fail;
    }

    cowsnap_job_free(cowsnap_job);
    cowsnap_job = job;
    job->active = true;
    job->status = COW_SNAPSHOT_STATUS_ACTIVE;
    qemu_thread_create(&job->saver, "cowsnap-save", cowsnap_saver_thread,
                       job, QEMU_THREAD_JOINABLE);
    job->pause_us = (qemu_clock_get_ns(QEMU_CLOCK_REALTIME) - t0) / 1000;
    return true;

fail:
    cowsnap_abort_begin(job);
    cowsnap_job_free(job);
    return false;
}

bool cow_snapshot_is_active(void)
{
    return cowsnap_prepared || (cowsnap_job && cowsnap_job->active);
}

void cow_snapshot_cancel(void)
{
    if (cowsnap_prepared) {
        cow_snapshot_abort_prepared();
    } else if (cowsnap_job && cowsnap_job->active) {
        qatomic_set(&cowsnap_job->cancel, true);
    }
}

CowSnapshotInfo *cow_snapshot_query(void)
{
    CowSnapshotInfo *info = g_new0(CowSnapshotInfo, 1);
    CowSnapJob *job = cowsnap_job;
    int64_t end;

    info->loading = cow_snapshot_loading();
    if (!job) {
        info->status = COW_SNAPSHOT_STATUS_NONE;
        return info;
    }
    info->status = job->status;
    info->path = g_strdup(job->path);
    info->paused_save = job->paused_save;
    info->total_bytes = job->total_bytes;
    info->done_bytes = qatomic_read(&job->done_bytes);
    info->written_bytes = qatomic_read(&job->written_bytes);
    info->faulted_pages = qatomic_read(&job->faulted_pages);
    info->rearmed_pages = job->rearmed_pages;
    info->pause_us = job->pause_us;
    end = job->active ? qemu_clock_get_ns(QEMU_CLOCK_REALTIME) : job->end_ns;
    info->elapsed_ms = (end - job->start_ns) / SCALE_MS;
    if (job->status == COW_SNAPSHOT_STATUS_FAILED && job->err) {
        info->error = g_strdup(error_get_pretty(job->err));
    }
    return info;
}
