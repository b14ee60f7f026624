/*
 * Hyper-V-style checkpoints: no writer on a frozen image
 *
 * Copyright (c) 2026 The Hyper-V checkpoints project
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 *
 * A checkpoint's frozen images must keep the content of its instant:
 * a block-commit into one, say, would give the guest the checkpoint's
 * memory over other disk content when it is applied.  As QEMU protects
 * the backing nodes of a running job, every open node of a frozen image
 * gets a parent of its own, an anonymous BlockBackend that takes no
 * permission and shares every one but write and resize: QEMU then
 * refuses whatever would write to the node, naming the conflict.
 */

#include "qemu/osdep.h"
#include "qemu/error-report.h"
#include "qapi/error.h"
#include "block/block_int-common.h"
#include "block/block-global-state.h"
#include "system/block-backend.h"
#include "checkpoint.h"

#define GUARD_SHARED (BLK_PERM_ALL & ~(BLK_PERM_WRITE | BLK_PERM_RESIZE))

/* The guards, one BlockBackend per guarded node */
static GSList *guards;

static void release_guards(void)
{
    g_slist_free_full(g_steal_pointer(&guards), (GDestroyNotify)blk_unref);
}

/* Give node @bs, the frozen image @filename, its guard */
static void guard_node(BlockDriverState *bs, const char *filename)
{
    BlockBackend *blk = blk_new(bdrv_get_aio_context(bs), 0, GUARD_SHARED);
    Error *local_err = NULL;

    /* Follow the chain into an iothread with the guest's disk */
    blk_set_allow_aio_context_change(blk, true);
    if (blk_insert_bs(blk, bs, &local_err) < 0) {
        warn_reportf_err(local_err, "The frozen image '%s' of a checkpoint"
                         " cannot be protected from writers: ", filename);
        blk_unref(blk);
        return;
    }
    guards = g_slist_prepend(guards, blk);
}

void checkpoint_guard_frozen_images(void)
{
    CheckpointManifest *m = checkpoint_store_manifest();
    g_autoptr(GHashTable) seen = g_hash_table_new(NULL, NULL);
    CheckpointManifestEntryList *l;
    CheckpointManifestDiskList *d;

    GLOBAL_STATE_CODE();
    release_guards();
    for (l = m ? m->checkpoints : NULL; l; l = l->next) {
        for (d = l->value->disks; d; d = d->next) {
            BlockDriverState *bs = checkpoint_find_image(d->value->filename);

            /* The images of a merge lose their guard: it relinks them */
            if (bs && !checkpoint_merge_uses(d->value->filename) &&
                g_hash_table_add(seen, bs)) {
                guard_node(bs, d->value->filename);
            }
        }
    }
    /* Every change of the VM's chains ends here: name their nodes too */
    checkpoint_plain_names();
}
