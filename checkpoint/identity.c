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
 * that every write session changes; qcow2 has nothing of the kind, so
 * its identity is the file's modification time and size, taken once
 * nothing writes to it any more.
 */

#include "qemu/osdep.h"
#include "qapi/error.h"
#include "../block/vhdx-diff/vhdx-diff.h"
#include "checkpoint.h"

#define IDENTITY_VHDX_PREFIX "vhdx-data-write-guid:"

static char *vhdx_identity(const char *filename, Error **errp)
{
    g_autofree char *guid = NULL;
    VHDXHeader header;
    int fd;
    bool ok;

    fd = qemu_open(filename, O_RDONLY, errp);
    if (fd < 0) {
        return NULL;
    }
    ok = vhdx_diff_read_current_header(fd, &header);
    close(fd);
    if (!ok) {
        error_setg(errp, "'%s' has no valid VHDX header", filename);
        return NULL;
    }
    guid = vhdx_guid_format(&header.data_write_guid);
    return g_strconcat(IDENTITY_VHDX_PREFIX, guid, NULL);
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
