/*
 * Copy-on-write RAM snapshot: QMP commands for tests and experiments
 *
 * Copyright (c) 2026 The Hyper-V checkpoints project
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */

#include "qemu/osdep.h"
#include "qapi/error.h"
#include "qapi/qapi-commands-cow-snapshot.h"
#include "system/runstate.h"
#include "cow-snapshot.h"

/* Resume after a paused save, if the VM was running before it */
static bool cowsnap_qmp_resume_when_done;
/* x-cow-snapshot-prepare succeeded and no save has used it yet */
static bool cowsnap_qmp_prepared;

static void cowsnap_qmp_done(void *opaque, CowSnapshotStatus status,
                             const Error *err)
{
    if (cowsnap_qmp_resume_when_done) {
        cowsnap_qmp_resume_when_done = false;
        vm_start();
    }
}

/* The paused-save choice of the prepared snapshot */
static bool cowsnap_qmp_prepared_paused;

void qmp_x_cow_snapshot_prepare(const char *path, bool has_paused_save,
                                bool paused_save, Error **errp)
{
    CowSnapshotOptions opts = {
        .paused_save = has_paused_save && paused_save,
        .done = cowsnap_qmp_done,
    };

    if (cow_snapshot_is_active()) {
        error_setg(errp, "A copy-on-write snapshot is already being saved");
        return;
    }
    /* Replacing a big old file is slow: not inside the pause */
    if (unlink(path) < 0 && errno != ENOENT) {
        error_setg_errno(errp, errno, "Cannot replace '%s'", path);
        return;
    }
    if (cow_snapshot_prepare(path, &opts, errp)) {
        cowsnap_qmp_prepared_paused = opts.paused_save;
        cowsnap_qmp_prepared = true;
    }
}

void qmp_x_cow_snapshot_save(const char *path, bool has_paused_save,
                             bool paused_save, Error **errp)
{
    CowSnapshotOptions opts = {
        .paused_save = has_paused_save && paused_save,
        .done = cowsnap_qmp_done,
    };
    bool was_running = runstate_is_running();
    bool ok;

    if (!cowsnap_qmp_prepared) {
        qmp_x_cow_snapshot_prepare(path, has_paused_save, paused_save, errp);
        if (!cowsnap_qmp_prepared) {
            return;
        }
    }
    cowsnap_qmp_prepared = false;
    opts.paused_save = cowsnap_qmp_prepared_paused;
    if (was_running) {
        vm_stop(RUN_STATE_PAUSED);
    }
    ok = cow_snapshot_begin(path, &opts, errp);
    if (ok && opts.paused_save) {
        cowsnap_qmp_resume_when_done = was_running;
    } else if (was_running) {
        vm_start();
    }
}

void qmp_x_cow_snapshot_load(const char *path, bool has_lazy, bool lazy,
                             Error **errp)
{
    cow_snapshot_load_mode(path, has_lazy && lazy, errp);
}

void qmp_x_cow_snapshot_cancel(Error **errp)
{
    if (cowsnap_qmp_prepared) {
        /* Prepared, never begun: no event, the file just goes */
        cowsnap_qmp_prepared = false;
        cow_snapshot_abort_prepared();
        return;
    }
    if (!cow_snapshot_is_active()) {
        error_setg(errp, "No copy-on-write snapshot is being saved");
        return;
    }
    cow_snapshot_cancel();
}

CowSnapshotInfo *qmp_x_query_cow_snapshot(Error **errp)
{
    return cow_snapshot_query();
}
