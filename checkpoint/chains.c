/*
 * Hyper-V-style checkpoints: the images of the disks, and what is
 * built on what
 *
 * Copyright (c) 2026 The Hyper-V checkpoints project
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 *
 * The manifest names only the images that checkpoints and "Now" need;
 * the images under them (merge pending, or left by a dropped create)
 * are found by following each image's backing file.  Delete and the
 * merges plan from this graph: an image nothing needs is deleted when
 * nothing is built on it, merged when one image is, and kept while
 * several are.
 */

#include "qemu/osdep.h"
#include "qapi/error.h"
#include "qapi/clone-visitor.h"
#include "qapi/qapi-visit-checkpoint.h"
#include "block/block-global-state.h"
#include "block/block_int-io.h"
#include "checkpoint.h"

#define CHAIN_MAX 1024

static void checkpoint_image_free(gpointer p)
{
    CheckpointImage *img = p;

    g_free(img->filename);
    g_free(img->format);
    g_free(img->device);
    g_free(img->parent_name);
    g_ptr_array_unref(img->dependents);
    g_free(img);
}

void checkpoint_chains_free(CheckpointChains *c)
{
    if (c) {
        g_hash_table_unref(c->images);
        g_free(c);
    }
}

CheckpointImage *checkpoint_chains_find(CheckpointChains *c,
                                        const char *filename)
{
    g_autofree char *key = checkpoint_canonical_path(filename);

    return g_hash_table_lookup(c->images, key);
}

/* Bytes of @bs's own layer that hold data or zeros (not its backing's) */
static int64_t layer_bytes(BlockDriverState *bs, int64_t size)
{
    int64_t off = 0, total = 0, pnum;
    int ret;

    while (off < size) {
        ret = bdrv_is_allocated(bs, off, size - off, &pnum);
        if (ret < 0) {
            return -1;
        }
        if (pnum == 0) {
            break;
        }
        if (ret) {
            total += pnum;
        }
        off += pnum;
    }
    return total;
}

/* Learn what image @img is: its parent's name, size, allocation */
static bool read_image(CheckpointImage *img, Error **errp)
{
    BlockDriverState *bs = checkpoint_image_node(img->filename, img->format,
                                                 errp);

    if (!bs) {
        return false;
    }
    img->open_in_vm = checkpoint_find_vm_image(img->filename) != NULL;
    img->size = bdrv_getlength(bs);
    img->allocated = layer_bytes(bs, img->size);
    if (bs->backing_file[0]) {
        g_autofree char *full = checkpoint_backing_filename(bs, errp);

        if (!full) {
            bdrv_unref(bs);
            return false;
        }
        img->parent_name = checkpoint_canonical_path(full);
    }
    bdrv_unref(bs);
    return true;
}

/* The image @filename of disk @device, scanned once */
static CheckpointImage *scan_one(CheckpointChains *c, const char *filename,
                                 const char *format, const char *device,
                                 Error **errp)
{
    g_autofree char *key = checkpoint_canonical_path(filename);
    CheckpointImage *img = g_hash_table_lookup(c->images, key);

    if (img) {
        return img;
    }
    img = g_new0(CheckpointImage, 1);
    img->filename = g_strdup(key);
    img->format = g_strdup(format);
    img->device = g_strdup(device);
    img->dependents = g_ptr_array_new();
    if (!read_image(img, errp)) {
        error_prepend(errp, "Cannot read image '%s' of disk '%s'"
                      " (checkpoint-check tells what is wrong): ",
                      filename, device);
        checkpoint_image_free(img);
        return NULL;
    }
    g_hash_table_insert(c->images, g_strdup(key), img);
    return img;
}

/* Scan @filename and the images under it, linking each to its parent */
static bool scan_chain(CheckpointChains *c, CheckpointManifestDisk *d,
                       Error **errp)
{
    CheckpointImage *img = scan_one(c, d->filename, d->format, d->device,
                                    errp);
    int depth;

    for (depth = 0; img && img->parent_name && !img->parent; depth++) {
        CheckpointImage *p;

        if (depth > CHAIN_MAX) {
            error_setg(errp, "The backing chain of '%s' is longer than %d"
                       " images (or loops)", d->filename, CHAIN_MAX);
            return false;
        }
        p = scan_one(c, img->parent_name, img->format, d->device, errp);
        if (!p) {
            return false;
        }
        img->parent = p;
        g_ptr_array_add(p->dependents, img);
        img = p;
    }
    return img != NULL;
}

static void mark_needed(CheckpointChains *c, CheckpointManifestDiskList *l,
                        bool active)
{
    for (; l; l = l->next) {
        CheckpointImage *img = checkpoint_chains_find(c, l->value->filename);

        if (img) {
            img->needed = true;
            img->active |= active;
        }
    }
}

static bool scan_list(CheckpointChains *c, CheckpointManifestDiskList *l,
                      Error **errp)
{
    for (; l; l = l->next) {
        if (!scan_chain(c, l->value, errp)) {
            return false;
        }
    }
    return true;
}

CheckpointChains *checkpoint_chains_scan(CheckpointManifest *store_m,
                                         CheckpointManifestDiskList *extra,
                                         Error **errp)
{
    /*
     * Opening an image polls the main loop, where a merge may replace
     * the store's manifest: scan a copy
     */
    g_autoptr(CheckpointManifest) m = QAPI_CLONE(CheckpointManifest,
                                                 store_m);
    g_autoptr(CheckpointManifestDiskList) more =
        extra ? QAPI_CLONE(CheckpointManifestDiskList, extra) : NULL;
    CheckpointChains *c = g_new0(CheckpointChains, 1);
    CheckpointManifestEntryList *l;

    c->images = g_hash_table_new_full(g_str_hash, g_str_equal, g_free,
                                      checkpoint_image_free);
    if (!scan_list(c, m->active, errp)) {
        goto fail;
    }
    for (l = m->checkpoints; l; l = l->next) {
        if (!scan_list(c, l->value->disks, errp)) {
            goto fail;
        }
    }
    if (!scan_list(c, more, errp)) {
        goto fail;
    }
    mark_needed(c, m->active, true);
    for (l = m->checkpoints; l; l = l->next) {
        mark_needed(c, l->value->disks, false);
    }
    return c;

fail:
    checkpoint_chains_free(c);
    return NULL;
}

/* Is @img the image of a disk, unneeded, with exactly one dependent? */
static bool mergeable(CheckpointImage *img, GHashTable *busy)
{
    return !img->needed && img->dependents->len == 1 &&
           !(busy && g_hash_table_contains(busy, img->filename));
}

GPtrArray *checkpoint_chains_run_below(CheckpointImage *top, GHashTable *busy)
{
    GPtrArray *run = g_ptr_array_new();
    CheckpointImage *img;

    if (busy && g_hash_table_contains(busy, top->filename)) {
        return run;
    }
    for (img = top->parent; img && mergeable(img, busy); img = img->parent) {
        g_ptr_array_add(run, img);
    }
    return run;
}
