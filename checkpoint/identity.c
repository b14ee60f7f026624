/*
 * Hyper-V-style checkpoints: the identity of a frozen image
 *
 * Copyright (c) 2026 The Hyper-V checkpoints project
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 *
 * A checkpoint records what identifies the content of each of its
 * frozen images, so that an apply can tell an image that changed
 * behind its back (a block-commit, a qemu-img commit while QEMU was
 * down) from the one it froze.  MS-VHDX gives vhdx a DataWriteGuid
 * that every write session changes (the driver reports it in its
 * format-specific information); qcow2 has nothing of the kind, so
 * its identity is the file's modification time and size, taken once
 * nothing writes to it any more.
 */

#include "qemu/osdep.h"
#include "qapi/error.h"
#include "qapi/qapi-types-block-core.h"
#include "block/block-global-state.h"
#include "block/block-io.h"
#include "block/graph-lock.h"
#include "checkpoint.h"

#define IDENTITY_VHDX_PREFIX "vhdx-data-write-guid:"

/*
 * The DataWriteGuid of vhdx image @filename, as the driver reports it
 * (from the node checkpoint_image_node() gives)
 */
static char *vhdx_identity(const char *filename, Error **errp)
{
    g_autoptr(ImageInfoSpecific) spec = NULL;
    BlockDriverState *bs = checkpoint_image_node(filename, "vhdx", errp);
    Error *local_err = NULL;

    if (!bs) {
        return NULL;
    }
    bdrv_graph_rdlock_main_loop();
    spec = bdrv_get_specific_info(bs, &local_err);
    bdrv_graph_rdunlock_main_loop();
    bdrv_unref(bs);
    if (local_err) {
        error_propagate(errp, local_err);
        return NULL;
    }
    if (!spec || spec->type != IMAGE_INFO_SPECIFIC_KIND_VHDX) {
        error_setg(errp, "'%s' reports no VHDX DataWriteGuid", filename);
        return NULL;
    }
    return g_strconcat(IDENTITY_VHDX_PREFIX,
                       spec->u.vhdx.data->data_write_guid, NULL);
}

static char *file_identity(const char *filename, Error **errp)
{
    struct stat st;

    if (stat(filename, &st) < 0) {
        error_setg_errno(errp, errno, "Cannot read '%s'", filename);
        return NULL;
    }
    return g_strdup_printf("file-mtime:%lld.%09ld,size:%lld",
                           (long long)st.st_mtim.tv_sec,
                           (long)st.st_mtim.tv_nsec,
                           (long long)st.st_size);
}

char *checkpoint_image_identity(const char *filename, const char *fmt,
                                Error **errp)
{
    if (!strcmp(fmt, "vhdx")) {
        return vhdx_identity(filename, errp);
    }
    return file_identity(filename, errp);
}
