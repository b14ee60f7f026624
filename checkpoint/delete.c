/*
 * Hyper-V-style checkpoints: deleting checkpoints
 *
 * Copyright (c) 2026 The Hyper-V checkpoints project
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 *
 * A delete takes the checkpoints out of the tree in one manifest write,
 * which also lists the files that nothing needs any more (their state
 * files, the images nothing is built on): a QEMU killed before they
 * are gone removes them at its next start.  The images that something
 * is still built on are left to the merges (merge.c), planned by
 * plan.c with Hyper-V's rules.
 */

#include "qemu/osdep.h"
#include "qemu/error-report.h"
#include "qapi/clone-visitor.h"
#include "qapi/error.h"
#include "qapi/qapi-commands-checkpoint.h"
#include "qapi/qapi-events-checkpoint.h"
#include "qapi/qapi-visit-checkpoint.h"
#include "checkpoint.h"

/* Is @e, or a checkpoint above it, the checkpoint @id? */
static bool descends_from(CheckpointManifest *m, CheckpointManifestEntry *e,
                          const char *id)
{
    for (; e; e = checkpoint_manifest_entry(m, e->parent)) {
        if (!strcmp(e->id, id)) {
            return true;
        }
    }
    return false;
}

/* The ids to delete: @e (with its descendants for @subtree) or all */
static strList *victims(CheckpointManifest *m, CheckpointManifestEntry *e,
                        bool subtree)
{
    strList *ids = NULL, **tail = &ids;
    CheckpointManifestEntryList *l;

    for (l = m->checkpoints; l; l = l->next) {
        if (!e || l->value == e || (subtree && descends_from(m, l->value,
                                                               e->id))) {
            QAPI_LIST_APPEND(tail, g_strdup(l->value->id));
        }
    }
    return ids;
}

/* Refuse what a delete must not touch; on success *@ids is set */
static bool delete_allowed(const char *checkpoint, bool all, bool subtree,
                           strList **ids, Error **errp)
{
    CheckpointManifest *m = checkpoint_store_manifest();
    CheckpointManifestEntry *e = NULL;
    strList *l;

    if (!!checkpoint == all) {
        error_setg(errp, "Give either 'checkpoint' or 'all': true");
        return false;
    }
    if (checkpoint) {
        e = checkpoint_store_find(checkpoint, errp);
        if (!e) {
            return false;
        }
    } else if (!m) {
        error_setg(errp, "No checkpoint store is set (-checkpoints dir=DIR"
                   " or checkpoint-set-parameters)");
        return false;
    }
    if (!checkpoint_op_idle()) {
        error_setg(errp, "Cannot delete checkpoints while a checkpoint is"
                   " being %s", checkpoint_op_applying() ? "applied"
                                                         : "created");
        return false;
    }
    *ids = victims(m, e, subtree);
    for (l = *ids; l; l = l->next) {
        CheckpointManifestEntry *v = checkpoint_manifest_entry(m,
                                                               l->value);

        if (v->state == CHECKPOINT_STATE_CREATING) {
            error_setg(errp, "Checkpoint '%s' (%s) is still being created;"
                       " it can be deleted once it is ready", v->name,
                       v->id);
            qapi_free_strList(*ids);
            *ids = NULL;
            return false;
        }
    }
    return true;
}

/* The image records of the checkpoints @ids of @m */
static CheckpointManifestDiskList *images_of(CheckpointManifest *m,
                                             strList *ids)
{
    CheckpointManifestDiskList *out = NULL;

    for (; ids; ids = ids->next) {
        CheckpointManifestEntry *e = checkpoint_manifest_entry(m,
                                                               ids->value);
        CheckpointManifestDiskList *d;

        for (d = e->disks; d; d = d->next) {
            QAPI_LIST_PREPEND(out, QAPI_CLONE(CheckpointManifestDisk,
                                              d->value));
        }
    }
    return out;
}

/* The plan of deleting @ids, without changing anything */
static CheckpointDeletePlan *plan_delete(strList *ids, Error **errp)
{
    CheckpointManifest *m = checkpoint_store_manifest();
    g_autoptr(CheckpointManifest) after = QAPI_CLONE(CheckpointManifest, m);
    g_autoptr(CheckpointManifestDiskList) extra = images_of(m, ids);
    g_autoptr(CheckpointChains) chains = NULL;
    CheckpointDeletePlan *plan;
    strList *l;

    for (l = ids; l; l = l->next) {
        checkpoint_manifest_drop(after, l->value);
    }
    chains = checkpoint_chains_scan(after, extra, errp);
    if (!chains) {
        return NULL;
    }
    plan = checkpoint_plan(after, chains, checkpoint_merge_busy(), NULL);
    plan->deleted = QAPI_CLONE(strList, ids);
    return plan;
}

/* The state files and folders of @ids, then the images @plan deletes */
static strList *stale_files(strList *ids, CheckpointDeletePlan *plan)
{
    CheckpointManifest *m = checkpoint_store_manifest();
    strList *stale = NULL, **tail = &stale;
    CheckpointDiskPlanList *d;
    strList *l;

    for (l = ids; l; l = l->next) {
        CheckpointManifestEntry *e = checkpoint_manifest_entry(m,
                                                               l->value);
        const char *own[] = { e->state_file, e->config_file };
        int i;

        for (i = 0; i < ARRAY_SIZE(own); i++) {
            g_autofree char *path = own[i] ?
                g_build_filename(checkpoint_store_dir(), own[i], NULL) : NULL;

            if (path) {
                QAPI_LIST_APPEND(tail, g_strdup(path));
                QAPI_LIST_APPEND(tail, g_path_get_dirname(path));
            }
        }
    }
    for (d = plan->disks; d; d = d->next) {
        for (l = d->value->deleted; l; l = l->next) {
            QAPI_LIST_APPEND(tail, g_strdup(l->value));
        }
    }
    return stale;
}

/* Remove what the delete recorded as stale: files, then folders */
static void remove_stale(void)
{
    CheckpointManifest *m = checkpoint_store_manifest();
    strList *f;

    for (f = m->operation->stale_files; f; f = f->next) {
        if (checkpoint_unlink(f->value) < 0 && errno != ENOENT &&
            errno != EISDIR) {
            warn_report("Cannot delete '%s', which no checkpoint needs any"
                        " more: %s", f->value, strerror(errno));
        }
    }
    for (f = m->operation->stale_files; f; f = f->next) {
        if (g_file_test(f->value, G_FILE_TEST_IS_DIR) &&
            rmdir(f->value) < 0) {
            warn_report("Cannot delete folder '%s': %s", f->value,
                        strerror(errno));
        }
    }
}

/* The delete itself: one manifest write, then the files */
static bool do_delete(strList *ids, CheckpointDeletePlan *plan,
                      Error **errp)
{
    strList *l;

    checkpoint_crash_point("delete-before-commit");
    if (!checkpoint_store_delete(ids, stale_files(ids, plan), errp)) {
        return false;
    }
    checkpoint_crash_point("delete-after-commit");
    remove_stale();
    checkpoint_store_end_operation();
    checkpoint_guard_frozen_images();
    for (l = ids; l; l = l->next) {
        qapi_event_send_checkpoint_deleted(l->value);
    }
    return true;
}

CheckpointDeletePlan *qmp_checkpoint_delete(const char *checkpoint,
                                            bool has_all, bool all,
                                            bool has_subtree, bool subtree,
                                            bool has_dry_run, bool dry_run,
                                            const char *job_id, Error **errp)
{
    g_autoptr(strList) ids = NULL;
    CheckpointDeletePlan *plan;

    if (!delete_allowed(checkpoint, has_all && all, has_subtree && subtree,
                        &ids, errp)) {
        return NULL;
    }
    if (!ids) {
        error_setg(errp, "The VM has no checkpoints");
        return NULL;
    }
    if (!(has_dry_run && dry_run)) {
        /* What the previous operation left goes first */
        checkpoint_settle();
    }
    plan = plan_delete(ids, errp);
    if (!plan || (has_dry_run && dry_run)) {
        return plan;
    }
    if (checkpoint_exporting()) {
        error_setg(errp, "Cannot delete checkpoints while a checkpoint is"
                   " being exported");
        qapi_free_CheckpointDeletePlan(plan);
        return NULL;
    }
    if (!do_delete(ids, plan, errp)) {
        qapi_free_CheckpointDeletePlan(plan);
        return NULL;
    }
    checkpoint_merge_resume_all();
    checkpoint_merge_schedule(job_id, &plan->job_id);
    return plan;
}
