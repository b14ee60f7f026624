/*
 * Copy-on-write RAM snapshot engine for standard checkpoints
 *
 * Copyright (c) 2026 The Hyper-V checkpoints project
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 *
 * The engine saves the device state and RAM of a running VM as of one
 * instant into a state file (format: FORMAT.md beside this file):
 *
 *   caller pauses the vCPUs
 *   cow_snapshot_begin()      device state captured, RAM write-protected
 *   caller switches disks, resumes the vCPUs
 *   ... a background thread writes every page as it was at begin; a
 *       guest write to a page not saved yet saves that page first ...
 *   done callback (main loop, BQL held) and event COW_SNAPSHOT_DONE
 *
 * cow_snapshot_load() loads a completed file back into the same process
 * with the VM stopped, after validating the whole file.
 *
 * One snapshot runs at a time.  All functions are called from the main
 * loop with the BQL held.
 */

#ifndef HVCP_COW_SNAPSHOT_H
#define HVCP_COW_SNAPSHOT_H

#include "qapi/qapi-types-cow-snapshot.h"

/*
 * Called once in the main loop, BQL held, when a snapshot begun with
 * cow_snapshot_begin() ends.  @status is COW_SNAPSHOT_STATUS_COMPLETED,
 * _FAILED (then @err says why) or _CANCELLED.  The partial file of a
 * failed or cancelled snapshot has been removed already.
 */
typedef void CowSnapshotDoneFn(void *opaque, CowSnapshotStatus status,
                               const Error *err);

typedef struct CowSnapshotOptions {
    /*
     * Save without write-protecting RAM.  The caller must keep the VM
     * paused until @done is called.  This is the fallback when
     * cow_snapshot_prepare() says that RAM cannot be write-protected
     * (its error names the block or the kernel feature missing); it is
     * never chosen silently.
     */
    bool paused_save;
    CowSnapshotDoneFn *done;
    void *opaque;
} CowSnapshotOptions;

/*
 * Get a snapshot into @path ready, before the caller's pause: create the
 * file and write-protect all RAM (unless opts->paused_save).  The VM may
 * run; until cow_snapshot_begin() a guest write only marks its page for
 * protecting again at begin.  This moves the part of the work that grows
 * with RAM (page tables) out of the pause.  Optional: begin prepares by
 * itself when this was not called, inside the pause then.
 */
bool cow_snapshot_prepare(const char *path, const CowSnapshotOptions *opts,
                          Error **errp);

/* Drop a prepared snapshot that will not be begun (removes its file). */
void cow_snapshot_abort_prepared(void);

/*
 * Begin the snapshot into @path (created or replaced; pass a new file:
 * truncating a large old one costs time in the pause).  The vCPUs must
 * be stopped.  Captures the device state, write-protects again what the
 * guest wrote since cow_snapshot_prepare(), and starts the background
 * save.  With a prepared snapshot, @opts is ignored (prepare's are used)
 * and the work done here does not depend on the amount of RAM.
 * Returns false and sets @errp when no snapshot was started (a prepared
 * one is dropped then).
 */
bool cow_snapshot_begin(const char *path, const CowSnapshotOptions *opts,
                        Error **errp);

/* Is a snapshot prepared or being saved? */
bool cow_snapshot_is_active(void);

/*
 * Ask the running snapshot to stop; its file is removed and @done is
 * called with COW_SNAPSHOT_STATUS_CANCELLED.  A prepared snapshot is
 * dropped at once (no callback).  No-op when there is none.
 */
void cow_snapshot_cancel(void);

/* Progress of the current or last snapshot. */
CowSnapshotInfo *cow_snapshot_query(void);

/*
 * Check that @path is a complete, intact state file that fits this VM
 * (machine type and RAM layout), without touching the VM.
 */
bool cow_snapshot_validate(const char *path, Error **errp);

/*
 * Load @path into this VM: reset, RAM, device state.  The VM must be
 * stopped and stays stopped.  The file is validated as a whole first;
 * when validation fails nothing in the VM has changed.
 */
bool cow_snapshot_load(const char *path, Error **errp);

/*
 * cow_snapshot_load(), with @lazy: the RAM is not read before the call
 * returns.  The writable RAM blocks are emptied and registered for
 * userfaultfd missing-page faults; a loader thread serves each fault
 * from the file (so that vCPUs, devices, DMA and QEMU's own reads of
 * guest memory all get the snapshot's data) and meanwhile brings in
 * every other page in order, then lets go of RAM and file.  Where
 * on-demand loading cannot work (no userfaultfd, huge pages), the load
 * is eager.  The environment variable QEMU_COW_SNAPSHOT_LOAD_SPEED
 * (bytes per second) slows the background part down, for tests.
 */
bool cow_snapshot_load_mode(const char *path, bool lazy, Error **errp);

/*
 * Make the lazy loads to come empty RAM in constant time: KSM
 * (mem-merge) is turned off for the VM's RAM, since the kernel unmerges
 * page by page whatever it moves.  Cheap while RAM is nearly empty (at
 * machine init), once per process; main loop, BQL held.
 */
void cow_snapshot_prepare_lazy_loads(void);

/* Is a lazy load still bringing pages in? */
bool cow_snapshot_loading(void);

/*
 * Wait until a lazy load has brought every page in (main loop, BQL
 * held; the loader needs neither): for what must not share guest RAM
 * with it (a memory snapshot's write-protection, another load)
 */
void cow_snapshot_wait_loaded(void);

#endif
