/*
 * Hyper-V-style checkpoints: what to do with the images nothing needs
 *
 * Copyright (c) 2026 The Hyper-V checkpoints project
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 *
 * Hyper-V's rules, per image that no checkpoint and no "Now" needs:
 * nothing built on it, the file is deleted; one image built on it, it
 * is merged with that one; several, it is kept (merge pending) until
 * all but one are gone.  A run of such images, each the only parent of
 * the next, is merged at once.  The direction is the one that copies
 * fewer bytes, with two exceptions: a run that ends on the disk's
 * original file is committed into it (the disk stays on its file, as
 * on Hyper-V), and only an active image is streamed into (the frozen
 * images of checkpoints are never rewritten, only relinked).
 */

#include "qemu/osdep.h"
#include <sys/statvfs.h>
#include "qapi/error.h"
#include "qapi/qapi-visit-checkpoint.h"
#include "checkpoint.h"

static gint by_name(gconstpointer a, gconstpointer b)
{
    const CheckpointImage *ia = *(CheckpointImage * const *)a;
    const CheckpointImage *ib = *(CheckpointImage * const *)b;

    return strcmp(ia->filename, ib->filename);
}

/* The images of disk @device, sorted by name (plans are reproducible) */
static GPtrArray *disk_images(CheckpointChains *c, const char *device)
{
    GPtrArray *imgs = g_ptr_array_new();
    GHashTableIter it;
    gpointer value;

    g_hash_table_iter_init(&it, c->images);
    while (g_hash_table_iter_next(&it, NULL, &value)) {
        CheckpointImage *img = value;

        if (!strcmp(img->device, device)) {
            g_ptr_array_add(imgs, img);
        }
    }
    g_ptr_array_sort(imgs, by_name);
    return imgs;
}

static bool is_busy(GHashTable *busy, CheckpointImage *img)
{
    return busy && g_hash_table_contains(busy, img->filename);
}

/* May unneeded @img, with nothing built on it, be deleted now? */
static bool deletable(CheckpointImage *img, GHashTable *busy)
{
    return !img->gone && !img->needed && img->dependents->len == 0 &&
           img->parent && !is_busy(busy, img) &&
           checkpoint_leftover_name_valid(img->filename);
}

/* Delete what nothing is built on, then what that leaves unbuilt on */
static strList *plan_deletions(GPtrArray *imgs, GHashTable *busy)
{
    strList *deleted = NULL, **tail = &deleted;
    bool again = true;
    int i;

    while (again) {
        again = false;
        for (i = 0; i < imgs->len; i++) {
            CheckpointImage *img = g_ptr_array_index(imgs, i);

            if (deletable(img, busy)) {
                img->gone = true;
                g_ptr_array_remove(img->parent->dependents, img);
                QAPI_LIST_APPEND(tail, g_strdup(img->filename));
                again = true;
            }
        }
    }
    return deleted;
}

static strList *dependent_names(CheckpointImage *img)
{
    strList *names = NULL, **tail = &names;
    int i;

    for (i = 0; i < img->dependents->len; i++) {
        CheckpointImage *d = g_ptr_array_index(img->dependents, i);

        QAPI_LIST_APPEND(tail, g_strdup(d->filename));
    }
    return names;
}

static CheckpointPendingImage *pending(CheckpointImage *img, char *reason)
{
    CheckpointPendingImage *p = g_new0(CheckpointPendingImage, 1);

    p->filename = g_strdup(img->filename);
    p->dependents = dependent_names(img);
    p->reason = reason;
    return p;
}

static int64_t sum_bytes(GPtrArray *run, int from, int to)
{
    int64_t sum = 0;
    int i;

    for (i = from; i < to; i++) {
        CheckpointImage *img = g_ptr_array_index(run, i);

        sum += MAX(img->allocated, 0);
    }
    return sum;
}

/* The merge of @run (top-down) into or from @top */
static CheckpointMergePlan *plan_merge(CheckpointImage *top, GPtrArray *run)
{
    CheckpointMergePlan *p = g_new0(CheckpointMergePlan, 1);
    CheckpointImage *bottom = g_ptr_array_index(run, run->len - 1);
    strList **tail = &p->images;
    int i;

    for (i = 0; i < run->len; i++) {
        CheckpointImage *img = g_ptr_array_index(run, i);

        QAPI_LIST_APPEND(tail, g_strdup(img->filename));
    }
    p->top = g_strdup(top->filename);
    p->commit_bytes = MAX(top->allocated, 0) + sum_bytes(run, 0,
                                                         run->len - 1);
    p->online = top->open_in_vm;
    p->direction = CHECKPOINT_MERGE_DIRECTION_COMMIT;
    p->bytes = p->commit_bytes;
    p->target = g_strdup(bottom->filename);
    if (top->active && bottom->parent) {
        p->has_stream_bytes = true;
        p->stream_bytes = sum_bytes(run, 0, run->len);
        if (p->stream_bytes < p->commit_bytes) {
            p->direction = CHECKPOINT_MERGE_DIRECTION_STREAM;
            p->bytes = p->stream_bytes;
            g_free(p->target);
            p->target = g_strdup(top->filename);
        }
    }
    return p;
}

static char *several_reason(CheckpointImage *img)
{
    GString *s = g_string_new(NULL);
    int i;

    g_string_printf(s, "%u images are built on it:", img->dependents->len);
    for (i = 0; i < img->dependents->len; i++) {
        CheckpointImage *d = g_ptr_array_index(img->dependents, i);

        g_string_append_printf(s, "%s '%s'", i ? "," : "", d->filename);
    }
    return g_string_free(s, false);
}

/* Merges and pending images of one disk, deletions done */
static void plan_merges(CheckpointDiskPlan *dp, GPtrArray *imgs,
                        GHashTable *busy, GHashTable *failed)
{
    CheckpointMergePlanList **mtail = &dp->merges;
    CheckpointPendingImageList **ptail = &dp->pending;
    int i;

    for (i = 0; i < imgs->len; i++) {
        CheckpointImage *img = g_ptr_array_index(imgs, i);
        g_autoptr(GPtrArray) run = NULL;
        const char *why;

        /* Gone, or part of the run below the one image built on it */
        if (img->gone ||
            (!img->needed && img->dependents->len == 1 &&
             !is_busy(busy, img))) {
            continue;
        }
        if (!img->needed && img->dependents->len > 1) {
            QAPI_LIST_APPEND(ptail, pending(img, several_reason(img)));
        }
        run = checkpoint_chains_run_below(img, busy);
        if (!run->len) {
            continue;
        }
        why = failed ? g_hash_table_lookup(failed, img->filename) : NULL;
        if (why) {
            QAPI_LIST_APPEND(ptail,
                             pending(g_ptr_array_index(run, 0),
                                     g_strdup_printf("its merge failed: %s",
                                                     why)));
            continue;
        }
        QAPI_LIST_APPEND(mtail, plan_merge(img, run));
    }
}

/* Free bytes of the filesystem of @folder, -1 when unknown */
static int64_t free_bytes(const char *folder)
{
    struct statvfs st;

    if (statvfs(folder, &st) < 0) {
        return -1;
    }
    return (int64_t)st.f_bavail * st.f_frsize;
}

static CheckpointSpace *space_of(CheckpointSpaceList **list,
                                 const char *target)
{
    g_autofree char *folder = g_path_get_dirname(target);
    struct stat st, other;
    CheckpointSpaceList *l;
    CheckpointSpace *s;

    if (stat(folder, &st) < 0) {
        st.st_dev = (dev_t)-1;
    }
    for (l = *list; l; l = l->next) {
        if (stat(l->value->folder, &other) == 0 && other.st_dev == st.st_dev) {
            return l->value;
        }
    }
    s = g_new0(CheckpointSpace, 1);
    s->folder = g_steal_pointer(&folder);
    s->free = free_bytes(s->folder);
    QAPI_LIST_PREPEND(*list, s);
    return s;
}

/*
 * Add up what the merges of @plan may allocate per filesystem; a merge
 * that does not fit any more waits, pending, with the reason
 */
static void check_space(CheckpointDeletePlan *plan)
{
    CheckpointDiskPlanList *d;

    for (d = plan->disks; d; d = d->next) {
        CheckpointMergePlanList **p = &d->value->merges;

        while (*p) {
            CheckpointMergePlanList *l = *p;
            CheckpointSpace *s = space_of(&plan->space, l->value->target);

            if (s->free < 0 || s->needed + l->value->bytes <= s->free) {
                s->needed += l->value->bytes;
                p = &l->next;
                continue;
            }
            QAPI_LIST_PREPEND(d->value->pending,
                checkpoint_space_pending(l->value, s->folder,
                                         s->free));
            *p = l->next;
            l->next = NULL;
            qapi_free_CheckpointMergePlanList(l);
        }
    }
}

CheckpointPendingImage *checkpoint_space_pending(CheckpointMergePlan *mp,
                                                 const char *folder,
                                                 int64_t free)
{
    CheckpointPendingImage *p = g_new0(CheckpointPendingImage, 1);

    p->filename = g_strdup(mp->images->value);
    QAPI_LIST_PREPEND(p->dependents, g_strdup(mp->top));
    p->reason = g_strdup_printf("not enough free space on the filesystem of"
                                " '%s': the merge into '%s' needs up to %"
                                PRId64 " bytes, %" PRId64 " are free",
                                folder, mp->target, mp->bytes, free);
    return p;
}

CheckpointDeletePlan *checkpoint_plan(CheckpointManifest *m,
                                      CheckpointChains *c, GHashTable *busy,
                                      GHashTable *failed)
{
    CheckpointDeletePlan *plan = g_new0(CheckpointDeletePlan, 1);
    CheckpointDiskPlanList **tail = &plan->disks;
    CheckpointManifestDiskList *a;

    for (a = m->active; a; a = a->next) {
        CheckpointDiskPlan *dp = g_new0(CheckpointDiskPlan, 1);
        g_autoptr(GPtrArray) imgs = disk_images(c, a->value->device);

        dp->device = g_strdup(a->value->device);
        dp->deleted = plan_deletions(imgs, busy);
        plan_merges(dp, imgs, busy, failed);
        QAPI_LIST_APPEND(tail, dp);
    }
    check_space(plan);
    return plan;
}
