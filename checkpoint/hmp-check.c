/*
 * Hyper-V-style checkpoints: HMP checkpoint_check
 *
 * Copyright (c) 2026 The Hyper-V checkpoints project
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */

#include "qemu/osdep.h"
#include "qapi/error.h"
#include "qapi/qapi-commands-checkpoint.h"
#include "qobject/qdict.h"
#include "monitor/hmp.h"
#include "monitor/monitor.h"
#include "checkpoint.h"

/*
 * checkpoint_check              audit the store
 * checkpoint_check -l FILE PARENT  relink FILE to PARENT
 * checkpoint_check -r FILE      reconnect (accept that FILE changed)
 * checkpoint_check -d           drop the lost checkpoints
 */
void hmp_checkpoint_check(Monitor *mon, const QDict *qdict)
{
    bool relink = qdict_get_try_bool(qdict, "relink", false);
    bool reconnect = qdict_get_try_bool(qdict, "reconnect", false);
    bool drop_lost = qdict_get_try_bool(qdict, "drop_lost", false);
    const char *file = qdict_get_try_str(qdict, "file");
    const char *parent = qdict_get_try_str(qdict, "parent");
    g_autoptr(CheckpointRelinkList) rl = NULL;
    g_autoptr(strList) rc = NULL;
    g_autoptr(CheckpointCheckResult) res = NULL;
    CheckpointProblemList *p;
    strList *d;
    Error *err = NULL;

    if (relink && reconnect) {
        error_setg(&err, "Give -l or -r, not both");
    } else if (relink && (!file || !parent)) {
        error_setg(&err, "-l needs the image and its new parent");
    } else if (reconnect && (!file || parent)) {
        error_setg(&err, "-r needs one image");
    } else if (!relink && !reconnect && file) {
        error_setg(&err, "A file name is only for -l or -r");
    }
    if (err) {
        hmp_handle_error(mon, err);
        return;
    }
    if (relink) {
        CheckpointRelink *r = g_new0(CheckpointRelink, 1);

        r->filename = g_strdup(file);
        r->parent = g_strdup(parent);
        QAPI_LIST_PREPEND(rl, r);
    }
    if (reconnect) {
        QAPI_LIST_PREPEND(rc, g_strdup(file));
    }
    res = qmp_checkpoint_check(!!rl, rl, !!rc, rc, drop_lost, drop_lost,
                               &err);
    if (err) {
        hmp_handle_error(mon, err);
        return;
    }
    for (d = res->dropped; d; d = d->next) {
        monitor_printf(mon, "Dropped lost checkpoint %s\n", d->value);
    }
    if (!res->problems) {
        monitor_printf(mon, "No problem found in checkpoint store %s\n",
                       checkpoint_store_dir());
        return;
    }
    for (p = res->problems; p; p = p->next) {
        CheckpointProblem *pb = p->value;

        monitor_printf(mon, "%s%s%s%s: %s: %s\n",
                       pb->checkpoint ? "checkpoint " : "Now",
                       pb->checkpoint ?: "",
                       pb->device ? ", disk " : "", pb->device ?: "",
                       CheckpointProblemKind_str(pb->kind), pb->message);
    }
}
