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

static void cowsnap_qmp_done(void *opaque, CowSnapshotStatus status,
                             const Error *err)
{
    if (cowsnap_qmp_resume_when_done) {
        cowsnap_qmp_resume_when_done = false;
        vm_start();
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

    if (cow_snapshot_is_active()) {
        error_setg(errp, "A copy-on-write snapshot is already being saved");
        return;
    }
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

void qmp_x_cow_snapshot_load(const char *path, Error **errp)
{
    cow_snapshot_load(path, errp);
}

void qmp_x_cow_snapshot_cancel(Error **errp)
{
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
