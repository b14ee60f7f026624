/*
 * Hyper-V-style checkpoints: HMP commands
 *
 * Copyright (c) 2026 The Hyper-V checkpoints project
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */

#include "qemu/osdep.h"
#include "qemu/cutils.h"
#include "qapi/error.h"
#include "qapi/qapi-commands-checkpoint.h"
#include "qobject/qdict.h"
#include "monitor/hmp.h"
#include "monitor/monitor.h"
#include "checkpoint.h"

static void print_size(Monitor *mon, const char *what, bool has, int64_t n)
{
    g_autofree char *s = NULL;

    if (has) {
        s = size_to_str(n);
        monitor_printf(mon, ", %s %s", s, what);
    }
}

static void print_checkpoint(Monitor *mon, CheckpointInfo *c, int depth)
{
    g_autoptr(GDateTime) t = g_date_time_new_from_unix_local(c->created);
    g_autofree char *when = t ? g_date_time_format(t, "%Y-%m-%d %H:%M:%S")
                              : g_strdup("?");
    CheckpointDiskInfoList *d;

    monitor_printf(mon, "%*s%s  (id %s, %s, %s, %s, %s", depth * 2, "",
                   c->name, c->id, CheckpointType_str(c->type),
                   CheckpointConsistency_str(c->consistency),
                   CheckpointState_str(c->state), when);
    print_size(mon, "state file", c->has_state_file_size,
               c->state_file_size);
    monitor_printf(mon, ")\n");
    if (c->fallback_reason) {
        monitor_printf(mon, "%*s  standard instead of production: %s\n",
                       depth * 2, "", c->fallback_reason);
    }
    for (d = c->disks; d; d = d->next) {
        monitor_printf(mon, "%*s  disk %s: %s", depth * 2, "",
                       d->value->device, d->value->filename);
        print_size(mon, "on disk", d->value->has_disk_size,
                   d->value->disk_size);
        print_size(mon, "virtual", d->value->has_virtual_size,
                   d->value->virtual_size);
        monitor_printf(mon, "\n");
    }
}

/* Print the checkpoints whose parent is @parent, and their subtrees */
static void print_children(Monitor *mon, CheckpointInfoList *all,
                           const char *parent, int depth)
{
    CheckpointInfoList *l;

    for (l = all; l; l = l->next) {
        if (g_strcmp0(l->value->parent, parent)) {
            continue;
        }
        print_checkpoint(mon, l->value, depth);
        print_children(mon, all, l->value->id, depth + 1);
        if (l->value->current) {
            monitor_printf(mon, "%*sNow\n", (depth + 1) * 2, "");
        }
    }
}

/* The merges waiting or running, with their progress */
static void print_merges(Monitor *mon)
{
    g_autoptr(CheckpointMergeInfoList) list = NULL;
    CheckpointMergeInfoList *l;
    Error *err = NULL;

    list = qmp_query_checkpoint_merges(&err);
    if (hmp_handle_error(mon, err) || !list) {
        return;
    }
    monitor_printf(mon, "Merges:\n");
    for (l = list; l; l = l->next) {
        CheckpointMergeInfo *i = l->value;
        int pct = i->bytes_total ? i->bytes_done * 100 / i->bytes_total : 0;

        monitor_printf(mon, "  disk %s: %s, %s", i->device, i->images->value,
                       CheckpointMergeState_str(i->state));
        if (i->state == CHECKPOINT_MERGE_STATE_RUNNING ||
            i->state == CHECKPOINT_MERGE_STATE_PAUSED) {
            monitor_printf(mon, " %d%% (%s %s)", pct,
                           CheckpointMergeDirection_str(i->direction),
                           i->top);
        }
        monitor_printf(mon, "%s%s\n", i->reason ? ": " : "",
                       i->reason ?: "");
    }
}

void hmp_info_checkpoints(Monitor *mon, const QDict *qdict)
{
    g_autoptr(CheckpointParameters) p = NULL;
    g_autoptr(CheckpointInfoList) list = NULL;
    CheckpointInfoList *l;
    Error *err = NULL;
    bool current = false;

    p = qmp_query_checkpoint_parameters(&err);
    if (hmp_handle_error(mon, err)) {
        return;
    }
    if (!p->dir) {
        monitor_printf(mon, "No checkpoint store is set (-checkpoints"
                       " dir=DIR or checkpoint-set-parameters)\n");
        return;
    }
    list = qmp_query_checkpoints(&err);
    if (hmp_handle_error(mon, err)) {
        return;
    }
    monitor_printf(mon, "Checkpoint store %s (default type %s%s)\n", p->dir,
                   CheckpointDefaultType_str(p->type),
                   p->q_auto ? ", automatic checkpoint at start" : "");
    if (!list) {
        monitor_printf(mon, "No checkpoints\n");
    }
    print_children(mon, list, NULL, 0);
    for (l = list; l; l = l->next) {
        current |= l->value->current;
    }
    if (!current) {
        /* The running VM has no checkpoint above it */
        monitor_printf(mon, "Now\n");
    }
    print_merges(mon);
}

void hmp_checkpoint_rename(Monitor *mon, const QDict *qdict)
{
    Error *err = NULL;

    qmp_checkpoint_rename(qdict_get_str(qdict, "checkpoint"),
                          qdict_get_str(qdict, "name"), &err);
    hmp_handle_error(mon, err);
}

/* The type -s, -p or -P asks for; false if none or several */
static bool create_type_flag(Monitor *mon, const QDict *qdict,
                             CheckpointDefaultType *type, bool *has_type)
{
    static const struct {
        const char *flag;
        CheckpointDefaultType type;
    } flags[] = {
        { "standard", CHECKPOINT_DEFAULT_TYPE_STANDARD },
        { "production", CHECKPOINT_DEFAULT_TYPE_PRODUCTION },
        { "production_only", CHECKPOINT_DEFAULT_TYPE_PRODUCTION_ONLY },
    };
    int i;

    *has_type = false;
    for (i = 0; i < ARRAY_SIZE(flags); i++) {
        if (!qdict_get_try_bool(qdict, flags[i].flag, false)) {
            continue;
        }
        if (*has_type) {
            monitor_printf(mon, "Give one of -s, -p and -P\n");
            return false;
        }
        *has_type = true;
        *type = flags[i].type;
    }
    return true;
}

void hmp_checkpoint_create(Monitor *mon, const QDict *qdict)
{
    const char *name = qdict_get_try_str(qdict, "name");
    g_autoptr(CheckpointCreateResult) r = NULL;
    CheckpointDefaultType type = CHECKPOINT_DEFAULT_TYPE_STANDARD;
    bool has_type;
    Error *err = NULL;

    if (!create_type_flag(mon, qdict, &type, &has_type)) {
        return;
    }
    if (!has_type) {
        type = checkpoint_default_type();
    }
    r = qmp_checkpoint_create(name, true, type, NULL, &err);
    if (hmp_handle_error(mon, err)) {
        return;
    }
    if (r->fallback_reason) {
        monitor_printf(mon, "A standard checkpoint instead of a production"
                       " one: %s\n", r->fallback_reason);
    }
    if (type == CHECKPOINT_DEFAULT_TYPE_STANDARD || r->fallback_reason) {
        monitor_printf(mon, "Creating checkpoint %s (memory is saved in the"
                       " background; see info checkpoints)\n", r->id);
    } else {
        monitor_printf(mon, "Creating production checkpoint %s (the guest"
                       " agent freezes the guest's filesystems; see info"
                       " checkpoints)\n", r->id);
    }
}

void hmp_checkpoint_apply(Monitor *mon, const QDict *qdict)
{
    bool first = qdict_get_try_bool(qdict, "checkpoint_first", false);
    g_autoptr(CheckpointApplyResult) r = NULL;
    Error *err = NULL;

    r = qmp_checkpoint_apply(qdict_get_str(qdict, "checkpoint"), first, first,
                             false, false, NULL, &err);
    if (hmp_handle_error(mon, err)) {
        return;
    }
    if (r->created) {
        monitor_printf(mon, "The state before the apply is checkpoint %s\n",
                       r->created);
    }
    if (r->powered_off) {
        monitor_printf(mon, "The VM is off, on the disks of a production"
                       " checkpoint: 'cont' starts it\n");
    }
}

static void print_disk_plan(Monitor *mon, CheckpointDiskPlan *dp)
{
    CheckpointMergePlanList *m;
    CheckpointPendingImageList *p;
    strList *f;

    for (f = dp->deleted; f; f = f->next) {
        monitor_printf(mon, "  disk %s: delete %s\n", dp->device, f->value);
    }
    for (m = dp->merges; m; m = m->next) {
        g_autofree char *size = size_to_str(m->value->bytes);

        monitor_printf(mon, "  disk %s: merge %s%s %s %s (%s, %s, %s)\n",
                       dp->device, m->value->images->value,
                       m->value->images->next ? " and the images below" : "",
                       m->value->direction == CHECKPOINT_MERGE_DIRECTION_STREAM
                       ? "into" : "with", m->value->top,
                       CheckpointMergeDirection_str(m->value->direction),
                       size, m->value->online ? "online" : "offline");
    }
    for (p = dp->pending; p; p = p->next) {
        monitor_printf(mon, "  disk %s: keep %s, merge pending: %s\n",
                       dp->device, p->value->filename, p->value->reason);
    }
}

static void print_plan(Monitor *mon, CheckpointDeletePlan *plan, bool dry)
{
    CheckpointDiskPlanList *d;
    CheckpointSpaceList *sp;
    strList *id;

    for (id = plan->deleted; id; id = id->next) {
        monitor_printf(mon, "%s checkpoint %s\n",
                       dry ? "Would delete" : "Deleted", id->value);
    }
    for (d = plan->disks; d; d = d->next) {
        print_disk_plan(mon, d->value);
    }
    for (sp = plan->space; sp; sp = sp->next) {
        g_autofree char *need = size_to_str(sp->value->needed);
        g_autofree char *avail = size_to_str(sp->value->free);

        monitor_printf(mon, "  space on %s: %s needed, %s free\n",
                       sp->value->folder, need, avail);
    }
    if (plan->job_id) {
        monitor_printf(mon, "Merging in job %s (see info checkpoints)\n",
                       plan->job_id);
    }
}

void hmp_checkpoint_delete(Monitor *mon, const QDict *qdict)
{
    const char *key = qdict_get_try_str(qdict, "checkpoint");
    bool all = qdict_get_try_bool(qdict, "all", false);
    bool subtree = qdict_get_try_bool(qdict, "subtree", false);
    bool dry = qdict_get_try_bool(qdict, "dry_run", false);
    g_autoptr(CheckpointDeletePlan) plan = NULL;
    Error *err = NULL;

    if (!all && !key) {
        monitor_printf(mon, "checkpoint_delete: give a checkpoint, or -a to"
                       " delete them all\n");
        return;
    }
    plan = qmp_checkpoint_delete(key, all, all, subtree, subtree, dry, dry,
                                 NULL, &err);
    if (hmp_handle_error(mon, err)) {
        return;
    }
    print_plan(mon, plan, dry);
}

void hmp_checkpoint_export(Monitor *mon, const QDict *qdict)
{
    g_autoptr(CheckpointExportResult) r = NULL;
    Error *err = NULL;

    r = qmp_checkpoint_export(qdict_get_str(qdict, "checkpoint"),
                              qdict_get_str(qdict, "dir"), false, 0, NULL,
                              &err);
    if (hmp_handle_error(mon, err)) {
        return;
    }
    monitor_printf(mon, "Exporting in job %s ('info jobs' shows its"
                   " progress)\n", r->job_id);
}
