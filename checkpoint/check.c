/*
 * Hyper-V-style checkpoints: checkpoint-check, the chain audit and repair
 *
 * Copyright (c) 2026 The Hyper-V checkpoints project
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 *
 * Every image the manifest names (the frozen images of the checkpoints
 * and the active images of "Now") is looked at on its own, with its
 * backing chain not opened: whether it exists and opens, the parent it
 * names, its virtual size and, for a differencing vhdx, the
 * DataWriteGuid its parent locator links it to.  The chains are then
 * followed file by file, so that one broken link is reported where it
 * is, naming the file, rather than as "the chain does not open".
 *
 * Repairs (relink, reconnect, drop-lost) are all checked first, then
 * made; the store is examined again afterwards and what is still wrong
 * is returned.
 */

#include "qemu/osdep.h"
#include "qemu/error-report.h"
#include "qapi/error.h"
#include "qapi/qapi-commands-checkpoint.h"
#include "qobject/qdict.h"
#include "block/block.h"
#include "block/block_int-common.h"
#include "block/block-global-state.h"
#include "block/graph-lock.h"
#include "checkpoint.h"

/* What one image file is, as far as the check needs it */
typedef struct CheckImage {
    char *filename;
    char *format;
    bool exists;
    char *error;            /* why it does not open, or NULL */
    int64_t size;           /* virtual size, -1 if unknown */
    char *backing_name;     /* the parent as the image names it, or NULL */
    char *backing;          /* the parent's full file name, or NULL */
    char *backing_fmt;
    /* vhdx, from the driver's format-specific information: */
    char *guid;             /* its DataWriteGuid, or NULL */
    char *linkage;          /* a differencing image's parent linkage */
    char *linkage2;         /* ... and the one announced, or NULL */
} CheckImage;

typedef struct CheckCtx {
    CheckpointManifest *m;
    GHashTable *images;     /* canonical file name -> CheckImage */
    GHashTable *reported;   /* "kind filename" of the problems found */
    CheckpointProblemList *problems;
    CheckpointProblemList **tail;
    GHashTable *chain_lost; /* ids of checkpoints whose chain is lost */
    GHashTable *lost;       /* ids of lost checkpoints */
    bool now_lost;
} CheckCtx;

static void check_image_free(CheckImage *img)
{
    g_free(img->filename);
    g_free(img->format);
    g_free(img->error);
    g_free(img->backing_name);
    g_free(img->backing);
    g_free(img->backing_fmt);
    g_free(img->guid);
    g_free(img->linkage);
    g_free(img->linkage2);
    g_free(img);
}
G_DEFINE_AUTOPTR_CLEANUP_FUNC(CheckImage, check_image_free)

static void image_free(gpointer p)
{
    check_image_free(p);
}

/* What the vhdx driver says of the image of @bs */
static void read_vhdx_info(CheckImage *img, BlockDriverState *bs)
{
    g_autoptr(ImageInfoSpecific) spec = bdrv_get_specific_info(bs, NULL);
    ImageInfoSpecificVhdx *info;

    if (!spec || spec->type != IMAGE_INFO_SPECIFIC_KIND_VHDX) {
        return;
    }
    info = spec->u.vhdx.data;
    img->guid = g_strdup(info->data_write_guid);
    img->linkage = g_strdup(info->parent_linkage);
    img->linkage2 = g_strdup(info->parent_linkage2);
}

static void read_node(CheckImage *img, BlockDriverState *bs)
{
    GRAPH_RDLOCK_GUARD_MAINLOOP();

    img->size = bdrv_getlength(bs);
    if (bs->backing_file[0]) {
        img->backing_name = g_strdup(bs->backing_file);
        img->backing = bdrv_get_full_backing_filename_from_filename(
                           img->filename, bs->backing_file, NULL);
        if (!img->backing) {
            img->backing = g_strdup(bs->backing_file);
        }
        if (bs->backing_format[0]) {
            img->backing_fmt = g_strdup(bs->backing_format);
        }
    }
    read_vhdx_info(img, bs);
}

/* What image @filename of format @fmt is; looked at once per check */
static CheckImage *scan_image(CheckCtx *ctx, const char *filename,
                              const char *fmt)
{
    g_autofree char *key = checkpoint_canonical_path(filename);
    CheckImage *img = g_hash_table_lookup(ctx->images, key);
    BlockDriverState *bs;
    Error *local_err = NULL;
    struct stat st;

    if (img) {
        return img;
    }
    img = g_new0(CheckImage, 1);
    img->filename = g_strdup(filename);
    img->format = g_strdup(fmt);
    img->size = -1;
    g_hash_table_insert(ctx->images, g_steal_pointer(&key), img);
    if (stat(filename, &st) < 0) {
        return img;
    }
    img->exists = true;
    bs = checkpoint_image_node(filename, fmt, &local_err);
    if (!bs) {
        img->error = g_strdup(error_get_pretty(local_err));
        error_free(local_err);
        return img;
    }
    read_node(img, bs);
    bdrv_unref(bs);
    return img;
}

static void G_GNUC_PRINTF(6, 7)
report(CheckCtx *ctx, const char *id, const char *device,
       const char *filename, CheckpointProblemKind kind,
       const char *fmt, ...)
{
    g_autofree char *key = g_strdup_printf("%s %s",
                                           CheckpointProblemKind_str(kind),
                                           filename);
    CheckpointProblem *p;
    va_list ap;

    if (!g_hash_table_add(ctx->reported, g_steal_pointer(&key))) {
        return;
    }
    p = g_new0(CheckpointProblem, 1);
    p->checkpoint = g_strdup(id);
    p->device = g_strdup(device);
    p->filename = g_strdup(filename);
    p->kind = kind;
    va_start(ap, fmt);
    p->message = g_strdup_vprintf(fmt, ap);
    va_end(ap);
    QAPI_LIST_APPEND(ctx->tail, p);
}

static CheckpointManifestDisk *disk_of(CheckpointManifestDiskList *l,
                                       const char *device)
{
    for (; l; l = l->next) {
        if (!strcmp(l->value->device, device)) {
            return l->value;
        }
    }
    return NULL;
}

/* Does vhdx child @c link to the current DataWriteGuid of @p? */
static bool linked_to(CheckImage *c, CheckImage *p)
{
    return !g_strcmp0(p->guid, c->linkage) ||
           !g_strcmp0(p->guid, c->linkage2);
}

static bool vhdx_link_broken(CheckImage *c, CheckImage *p)
{
    return c->linkage && p->exists && !p->error && p->guid &&
           !linked_to(c, p);
}

/* Check the link from @c to its parent @p */
static void check_link(CheckCtx *ctx, const char *id, const char *device,
                       CheckImage *c, CheckImage *p)
{
    if (vhdx_link_broken(c, p)) {
        report(ctx, id, device, c->filename,
               CHECKPOINT_PROBLEM_KIND_PARENT_CHANGED,
               "'%s' is linked to a parent with DataWriteGuid %s, but its"
               " parent '%s' has %s: the parent was written after the"
               " child was made", c->filename, c->linkage, p->filename,
               p->guid);
    }
    if (c->size >= 0 && p->size >= 0 && c->size != p->size) {
        report(ctx, id, device, c->filename,
               CHECKPOINT_PROBLEM_KIND_SIZE_MISMATCH,
               "'%s' has virtual size %" PRId64 ", its parent '%s' %"
               PRId64, c->filename, c->size, p->filename, p->size);
    }
}

/*
 * Check that image @img of disk @d of checkpoint @id (NULL: "Now")
 * exists, opens and has the identity the checkpoint recorded; returns
 * false when it is lost (missing or unreadable)
 */
static bool check_image_itself(CheckCtx *ctx, const char *id,
                               CheckpointManifestDisk *d, CheckImage *img)
{
    Error *local_err = NULL;
    g_autofree char *now = NULL;

    if (!img->exists) {
        report(ctx, id, d->device, d->filename, CHECKPOINT_PROBLEM_KIND_MISSING,
               "Image '%s' does not exist", d->filename);
        return false;
    }
    if (img->error) {
        report(ctx, id, d->device, d->filename,
               CHECKPOINT_PROBLEM_KIND_UNREADABLE,
               "Cannot open '%s' as %s: %s", d->filename, d->format,
               img->error);
        return false;
    }
    if (!d->identity) {
        return true;
    }
    now = checkpoint_image_identity(d->filename, d->format, &local_err);
    if (!now) {
        report(ctx, id, d->device, d->filename,
               CHECKPOINT_PROBLEM_KIND_UNREADABLE, "%s",
               error_get_pretty(local_err));
        error_free(local_err);
        return false;
    }
    if (strcmp(now, d->identity)) {
        report(ctx, id, d->device, d->filename,
               CHECKPOINT_PROBLEM_KIND_IDENTITY_CHANGED,
               "'%s' changed since the checkpoint was created: its"
               " identity is %s, the checkpoint recorded %s",
               d->filename, now, d->identity);
    }
    return true;
}

/*
 * The parent of @cur in the chain of disk @d, reported when missing or
 * unreadable (then NULL)
 */
static CheckImage *scan_parent(CheckCtx *ctx, const char *id,
                               CheckpointManifestDisk *d, CheckImage *cur)
{
    CheckImage *par = scan_image(ctx, cur->backing,
                                 cur->backing_fmt ?: cur->format);

    if (!par->exists) {
        report(ctx, id, d->device, cur->filename,
               CHECKPOINT_PROBLEM_KIND_PARENT_MISSING,
               "The parent '%s' of '%s' does not exist", cur->backing,
               cur->filename);
        return NULL;
    }
    if (par->error) {
        report(ctx, id, d->device, par->filename,
               CHECKPOINT_PROBLEM_KIND_UNREADABLE,
               "Cannot open '%s' (parent of '%s') as %s: %s",
               par->filename, cur->filename, par->format, par->error);
        return NULL;
    }
    return par;
}

/*
 * Check image @d of disk @device of checkpoint @id (NULL: "Now"), whose
 * chain must reach @target (the parent checkpoint's image of the disk;
 * NULL: any chain, checked to its end).  Returns whether the chain
 * needs a lost file; *@reached says whether it reached @target.
 */
static bool check_disk(CheckCtx *ctx, const char *id,
                       CheckpointManifestDisk *d,
                       CheckpointManifestDisk *target, bool *reached)
{
    g_autoptr(GHashTable) seen = g_hash_table_new(g_direct_hash,
                                                  g_direct_equal);
    CheckImage *cur = scan_image(ctx, d->filename, d->format);

    *reached = false;
    if (!check_image_itself(ctx, id, d, cur)) {
        return true;
    }
    g_hash_table_add(seen, cur);
    for (;;) {
        CheckImage *par;

        if (!cur->backing) {
            if (target) {
                report(ctx, id, d->device, d->filename,
                       CHECKPOINT_PROBLEM_KIND_WRONG_PARENT,
                       "The backing chain of '%s' ends at '%s' without"
                       " reaching '%s', the image of the parent"
                       " checkpoint", d->filename, cur->filename,
                       target->filename);
            }
            return false;
        }
        par = scan_parent(ctx, id, d, cur);
        if (!par) {
            return true;
        }
        check_link(ctx, id, d->device, cur, par);
        if (target && checkpoint_same_path(par->filename, target->filename)) {
            *reached = true;
            return false;
        }
        if (!g_hash_table_add(seen, par)) {
            report(ctx, id, d->device, d->filename,
                   CHECKPOINT_PROBLEM_KIND_WRONG_PARENT,
                   "The backing chain of '%s' comes back to '%s'",
                   d->filename, par->filename);
            return false;
        }
        cur = par;
    }
}

/*
 * Check the disks @disks of checkpoint @id (NULL: "Now") hanging under
 * checkpoint @parent; returns whether their chains need a lost file
 */
static bool check_owner(CheckCtx *ctx, const char *id,
                        CheckpointManifestDiskList *disks,
                        CheckpointManifestEntry *parent)
{
    bool lost = false;

    for (; disks; disks = disks->next) {
        CheckpointManifestDisk *d = disks->value;
        CheckpointManifestDisk *target =
            parent ? disk_of(parent->disks, d->device) : NULL;
        bool reached;

        if (check_disk(ctx, id, d, target, &reached)) {
            lost = true;
        } else if (reached &&
                   g_hash_table_contains(ctx->chain_lost, parent->id)) {
            lost = true;
        }
    }
    return lost;
}

static void check_init(CheckCtx *ctx, CheckpointManifest *m)
{
    memset(ctx, 0, sizeof(*ctx));
    ctx->m = m;
    ctx->images = g_hash_table_new_full(g_str_hash, g_str_equal, g_free,
                                        image_free);
    ctx->reported = g_hash_table_new_full(g_str_hash, g_str_equal, g_free,
                                          NULL);
    ctx->chain_lost = g_hash_table_new(g_str_hash, g_str_equal);
    ctx->lost = g_hash_table_new(g_str_hash, g_str_equal);
    ctx->tail = &ctx->problems;
}

static void check_clear(CheckCtx *ctx)
{
    g_hash_table_destroy(ctx->images);
    g_hash_table_destroy(ctx->reported);
    g_hash_table_destroy(ctx->chain_lost);
    g_hash_table_destroy(ctx->lost);
    qapi_free_CheckpointProblemList(ctx->problems);
    memset(ctx, 0, sizeof(*ctx));
}

/* Examine the whole store (parents come before their children) */
static void check_store(CheckCtx *ctx)
{
    CheckpointManifest *m = ctx->m;
    const char *dir = checkpoint_store_dir();
    CheckpointManifestEntryList *l;

    for (l = m->checkpoints; l; l = l->next) {
        CheckpointManifestEntry *e = l->value;

        if (check_owner(ctx, e->id, e->disks,
                        checkpoint_manifest_entry(m, e->parent))) {
            g_hash_table_add(ctx->chain_lost, e->id);
            g_hash_table_add(ctx->lost, e->id);
        }
        if (e->type == CHECKPOINT_TYPE_STANDARD &&
            e->state == CHECKPOINT_STATE_READY) {
            g_autofree char *state = e->state_file ?
                g_build_filename(dir, e->state_file, NULL) : NULL;

            if (!state || !g_file_test(state, G_FILE_TEST_IS_REGULAR)) {
                report(ctx, e->id, NULL, state ?: dir,
                       CHECKPOINT_PROBLEM_KIND_STATE_FILE_MISSING,
                       "The state file '%s' of standard checkpoint '%s'"
                       " does not exist", state ?: "(none recorded)",
                       e->name);
                g_hash_table_add(ctx->lost, e->id);
            }
        }
    }
    ctx->now_lost = check_owner(ctx, NULL, m->active,
                                checkpoint_manifest_entry(m, m->current));
}

/* The image @filename as the check saw it, if it exists and opened */
static CheckImage *seen_image(CheckCtx *ctx, const char *filename)
{
    g_autofree char *key = checkpoint_canonical_path(filename);
    CheckImage *img = g_hash_table_lookup(ctx->images, key);

    return img && img->exists && !img->error ? img : NULL;
}

static bool in_list(strList *l, const char *filename)
{
    for (; l; l = l->next) {
        if (checkpoint_same_path(l->value, filename)) {
            return true;
        }
    }
    return false;
}

static bool refuse_open_in_vm(const char *filename, const char *what,
                              Error **errp)
{
    if (checkpoint_find_image(filename)) {
        error_setg(errp, "Cannot %s '%s': the running VM has it open (it"
                   " is in the chain of \"Now\"), and an image cannot be"
                   " repaired under it", what, filename);
        return false;
    }
    return true;
}

/* The identity recorded for @filename that differs from its current one */
static const char *changed_identity(CheckpointManifest *m,
                                    const char *filename, const char *fmt)
{
    CheckpointManifestEntryList *l;
    CheckpointManifestDiskList *dl;

    for (l = m->checkpoints; l; l = l->next) {
        for (dl = l->value->disks; dl; dl = dl->next) {
            CheckpointManifestDisk *d = dl->value;
            g_autofree char *now = NULL;

            if (!d->identity || !checkpoint_same_path(d->filename, filename)) {
                continue;
            }
            now = checkpoint_image_identity(filename, fmt, NULL);
            if (!now || strcmp(now, d->identity)) {
                return d->identity;
            }
        }
    }
    return NULL;
}

/*
 * The identity the manifest recorded for file @old, if file @moved,
 * which should be it, does not have it
 */
static const char *moved_identity_changed(CheckpointManifest *m,
                                          const char *old,
                                          const char *moved,
                                          const char *fmt)
{
    g_autofree char *now = checkpoint_image_identity(moved, fmt, NULL);
    CheckpointManifestEntryList *l;
    CheckpointManifestDiskList *dl;

    for (l = m->checkpoints; l; l = l->next) {
        for (dl = l->value->disks; dl; dl = dl->next) {
            CheckpointManifestDisk *d = dl->value;

            if (d->identity && checkpoint_same_path(d->filename, old) &&
                g_strcmp0(now, d->identity)) {
                return d->identity;
            }
        }
    }
    return NULL;
}

/*
 * Is relink request @r (the head of the rest of the list) one that can
 * be carried out: given once, for a store image whose parent is gone,
 * to a new parent named by an absolute path?  Returns its image.
 */
static CheckImage *relink_request_valid(CheckCtx *ctx,
                                        CheckpointRelinkList *r,
                                        Error **errp)
{
    CheckpointRelink *rl = r->value;
    CheckImage *c = seen_image(ctx, rl->filename);
    CheckpointRelinkList *r2;

    for (r2 = r->next; r2; r2 = r2->next) {
        if (checkpoint_same_path(r2->value->filename, rl->filename)) {
            error_setg(errp, "relink: '%s' is given twice", rl->filename);
            return NULL;
        }
    }
    if (!c) {
        error_setg(errp, "relink: '%s' is not an image of the"
                   " checkpoint store's chains (or it cannot be"
                   " opened)", rl->filename);
        return NULL;
    }
    if (!c->backing) {
        error_setg(errp, "relink: '%s' has no parent", rl->filename);
        return NULL;
    }
    if (g_file_test(c->backing, G_FILE_TEST_EXISTS)) {
        error_setg(errp, "relink: the parent '%s' of '%s' exists:"
                   " nothing to relink", c->backing, rl->filename);
        return NULL;
    }
    if (!refuse_open_in_vm(rl->filename, "relink", errp)) {
        return NULL;
    }
    if (!g_path_is_absolute(rl->parent)) {
        error_setg(errp, "relink: the parent '%s' of '%s' must be an"
                   " absolute file name", rl->parent, rl->filename);
        return NULL;
    }
    if (checkpoint_same_path(rl->parent, rl->filename)) {
        error_setg(errp, "relink: '%s' cannot be its own parent",
                   rl->filename);
        return NULL;
    }
    return c;
}

/* Read the new parent @rl->parent of @c as an image of its own */
static CheckImage *scan_new_parent(CheckImage *c, CheckpointRelink *rl,
                                   Error **errp)
{
    Error *local_err = NULL;
    BlockDriverState *bs;
    CheckImage *p;

    bs = checkpoint_open_alone(rl->parent, c->format, false, &local_err);
    if (!bs) {
        error_setg(errp, "relink: cannot open the new parent '%s' of"
                   " '%s' as %s: %s", rl->parent, rl->filename,
                   c->format, error_get_pretty(local_err));
        error_free(local_err);
        return NULL;
    }
    p = g_new0(CheckImage, 1);
    p->filename = g_strdup(rl->parent);
    read_node(p, bs);
    bdrv_unref(bs);
    return p;
}

/*
 * Is the new parent of @c the image it was made from?  Unless the user
 * accepts it with reconnect, its size, vhdx link and recorded identity
 * must say so.
 */
static bool new_parent_acceptable(CheckCtx *ctx, CheckImage *c,
                                  CheckpointRelink *rl, strList *reconnect,
                                  Error **errp)
{
    g_autoptr(CheckImage) p = scan_new_parent(c, rl, errp);
    const char *old_identity;

    if (!p) {
        return false;
    }
    if (p->size != c->size) {
        error_setg(errp, "relink: the new parent '%s' has virtual size %"
                   PRId64 ", '%s' has %" PRId64, rl->parent, p->size,
                   rl->filename, c->size);
        return false;
    }
    if (in_list(reconnect, rl->parent)) {
        return true;
    }
    if (c->linkage && p->guid && !linked_to(c, p)) {
        error_setg(errp, "relink: '%s' is not the parent '%s' was"
                   " made from (its DataWriteGuid differs from the"
                   " one the child is linked to); list it in"
                   " reconnect as well to accept it", rl->parent,
                   rl->filename);
        return false;
    }
    /* The moved file is recorded under its old name */
    old_identity = moved_identity_changed(ctx->m, c->backing,
                                          rl->parent, c->format);
    if (old_identity) {
        error_setg(errp, "relink: '%s' is not the image '%s' that the"
                   " store recorded (identity %s); list it in"
                   " reconnect as well to accept it", rl->parent,
                   c->backing, old_identity);
        return false;
    }
    return true;
}

static bool check_relink(CheckCtx *ctx, CheckpointRelinkList *relink,
                         strList *reconnect, Error **errp)
{
    CheckpointRelinkList *r;

    for (r = relink; r; r = r->next) {
        CheckImage *c = relink_request_valid(ctx, r, errp);

        if (!c ||
            !new_parent_acceptable(ctx, c, r->value, reconnect, errp)) {
            return false;
        }
    }
    return true;
}

/* The vhdx children in the store's chains not linked to @p */
static GPtrArray *unlinked_children(CheckCtx *ctx, CheckImage *p)
{
    GPtrArray *out = g_ptr_array_new();
    GHashTableIter iter;
    CheckImage *c;

    g_hash_table_iter_init(&iter, ctx->images);
    while (g_hash_table_iter_next(&iter, NULL, (gpointer *)&c)) {
        if (c->exists && !c->error && c->backing &&
            checkpoint_same_path(c->backing, p->filename) &&
            vhdx_link_broken(c, p)) {
            g_ptr_array_add(out, c);
        }
    }
    return out;
}

static bool relink_parent_in(CheckpointRelinkList *relink,
                             const char *filename)
{
    for (; relink; relink = relink->next) {
        if (checkpoint_same_path(relink->value->parent, filename)) {
            return true;
        }
    }
    return false;
}

static bool check_reconnect(CheckCtx *ctx, strList *reconnect,
                            CheckpointRelinkList *relink, Error **errp)
{
    strList *f, *f2;

    for (f = reconnect; f; f = f->next) {
        CheckImage *p = seen_image(ctx, f->value);
        g_autoptr(GPtrArray) children = NULL;
        guint i;

        for (f2 = f->next; f2; f2 = f2->next) {
            if (checkpoint_same_path(f2->value, f->value)) {
                error_setg(errp, "reconnect: '%s' is given twice", f->value);
                return false;
            }
        }
        if (relink_parent_in(relink, f->value)) {
            /* Checked with the relink: it names it as a parent */
            continue;
        }
        if (!p) {
            error_setg(errp, "reconnect: '%s' is not an image of the"
                       " checkpoint store's chains (or it is missing or"
                       " cannot be opened)", f->value);
            return false;
        }
        children = unlinked_children(ctx, p);
        if (!children->len &&
            !changed_identity(ctx->m, p->filename, p->format)) {
            error_setg(errp, "reconnect: '%s' has not changed: nothing to"
                       " reconnect", f->value);
            return false;
        }
        for (i = 0; i < children->len; i++) {
            CheckImage *c = g_ptr_array_index(children, i);

            if (!refuse_open_in_vm(c->filename, "relink", errp)) {
                return false;
            }
        }
    }
    return true;
}

/* Point @filename (format @fmt) at @parent (named as @parent_name) */
static bool change_parent(const char *filename, const char *fmt,
                          const char *parent_name, Error **errp)
{
    BlockDriverState *bs = checkpoint_open_alone(filename, fmt, true, errp);
    int ret;

    if (!bs) {
        return false;
    }
    ret = bdrv_change_backing_file(bs, parent_name, fmt, false);
    bdrv_unref(bs);
    if (ret < 0) {
        error_setg_errno(errp, -ret, "Cannot make '%s' the parent of '%s'",
                         parent_name, filename);
        return false;
    }
    return true;
}

/* Every disk record of the manifest, checkpoints and "Now" */
static bool do_relink(CheckCtx *ctx, CheckpointRelink *rl, Error **errp)
{
    CheckImage *c = seen_image(ctx, rl->filename);
    g_autofree char *old_parent = g_strdup(c->backing);
    /* The identity the change of the child's header must not hide */
    g_autofree char *before = checkpoint_image_identity(c->filename,
                                                        c->format, NULL);

    if (!change_parent(rl->filename, c->format, rl->parent, errp)) {
        return false;
    }
    return checkpoint_store_relink(rl->filename, before, old_parent,
                                   rl->parent, errp);
}

static bool do_reconnect(CheckCtx *ctx, const char *filename, Error **errp)
{
    CheckImage *p = seen_image(ctx, filename);
    g_autoptr(GPtrArray) children = NULL;
    guint i;

    if (!p) {
        error_setg(errp, "reconnect: '%s' is missing or cannot be opened",
                   filename);
        return false;
    }
    children = unlinked_children(ctx, p);
    for (i = 0; i < children->len; i++) {
        CheckImage *c = g_ptr_array_index(children, i);

        if (!refuse_open_in_vm(c->filename, "relink", errp) ||
            !change_parent(c->filename, c->format, c->backing_name, errp)) {
            return false;
        }
    }
    return checkpoint_store_reconnect(filename, errp);
}

/* Look at the store again, after a repair changed it */
static void check_again(CheckCtx *ctx)
{
    CheckpointManifest *m = ctx->m;

    check_clear(ctx);
    check_init(ctx, m);
    check_store(ctx);
}

/* Every repair asked for must apply before any is made */
static bool repairs_valid(CheckCtx *ctx, CheckpointRelinkList *relink,
                          strList *reconnect, bool drop_lost, Error **errp)
{
    if (!check_relink(ctx, relink, reconnect, errp) ||
        !check_reconnect(ctx, reconnect, relink, errp)) {
        return false;
    }
    if (drop_lost && !g_hash_table_size(ctx->lost)) {
        error_setg(errp, "drop-lost: no checkpoint is lost, nothing to"
                   " drop%s", ctx->now_lost ? " (the images of \"Now\""
                   " need a lost file, but \"Now\" cannot be dropped)" : "");
        return false;
    }
    return true;
}

/* Relink, then reconnect, as asked */
static bool relink_and_reconnect(CheckCtx *ctx, CheckpointRelinkList *relink,
                                 strList *reconnect, Error **errp)
{
    CheckpointRelinkList *r;
    strList *f;

    for (r = relink; r; r = r->next) {
        if (!do_relink(ctx, r->value, errp)) {
            return false;
        }
    }
    if (reconnect) {
        /* The relinks changed images: look again */
        check_again(ctx);
        for (f = reconnect; f; f = f->next) {
            if (!do_reconnect(ctx, f->value, errp)) {
                return false;
            }
        }
    }
    return true;
}

/* Drop the checkpoints found lost, listing them in @res->dropped */
static bool drop_lost_checkpoints(CheckCtx *ctx, CheckpointCheckResult *res,
                                  Error **errp)
{
    CheckpointManifestEntryList *l;
    strList **tail = &res->dropped;

    res->has_dropped = true;
    /* Each drop moves children up: collect the ids first */
    for (l = ctx->m->checkpoints; l; l = l->next) {
        if (g_hash_table_contains(ctx->lost, l->value->id)) {
            QAPI_LIST_APPEND(tail, g_strdup(l->value->id));
        }
    }
    return !res->dropped || checkpoint_store_drop_list(res->dropped, errp);
}

/* Carry out the repairs asked for; the result is the store's state after */
static CheckpointCheckResult *repair(CheckCtx *ctx,
                                     CheckpointRelinkList *relink,
                                     strList *reconnect, bool drop_lost,
                                     Error **errp)
{
    g_autoptr(CheckpointCheckResult) res = NULL;

    if (!repairs_valid(ctx, relink, reconnect, drop_lost, errp)) {
        return NULL;
    }
    if (!relink_and_reconnect(ctx, relink, reconnect, errp)) {
        goto fail;
    }
    check_again(ctx);
    res = g_new0(CheckpointCheckResult, 1);
    if (drop_lost) {
        if (!drop_lost_checkpoints(ctx, res, errp)) {
            goto fail;
        }
        check_again(ctx);
    }
    checkpoint_guard_frozen_images();
    res->problems = g_steal_pointer(&ctx->problems);
    return g_steal_pointer(&res);

fail:
    checkpoint_guard_frozen_images();
    return NULL;
}

CheckpointCheckResult *qmp_checkpoint_check(bool has_relink,
                                            CheckpointRelinkList *relink,
                                            bool has_reconnect,
                                            strList *reconnect,
                                            bool has_drop_lost,
                                            bool drop_lost, Error **errp)
{
    CheckpointManifest *m;
    bool repairing = relink || reconnect || drop_lost;
    CheckpointCheckResult *res;
    CheckCtx ctx;

    /*
     * A running merge ends first and waits until the check is done: it
     * changes the chains the check reads, and the manifest @m
     */
    checkpoint_merge_interrupt();
    m = checkpoint_store_manifest();
    if (!m) {
        checkpoint_merge_release();
        error_setg(errp, "No checkpoint store is set (-checkpoints dir=DIR"
                   " or checkpoint-set-parameters)");
        return NULL;
    }
    if (repairing && !checkpoint_op_idle()) {
        checkpoint_merge_release();
        error_setg(errp, "Cannot repair the checkpoint store while a"
                   " checkpoint is being created or applied");
        return NULL;
    }
    check_init(&ctx, m);
    check_store(&ctx);
    if (repairing) {
        res = repair(&ctx, relink, reconnect, drop_lost, errp);
    } else {
        res = g_new0(CheckpointCheckResult, 1);
        res->problems = g_steal_pointer(&ctx.problems);
    }
    check_clear(&ctx);
    checkpoint_merge_release();
    return res;
}
