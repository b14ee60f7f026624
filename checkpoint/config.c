/*
 * Hyper-V-style checkpoints: the VM's configuration in the store
 *
 * Copyright (c) 2026 The Hyper-V checkpoints project
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 *
 * Hyper-V keeps a VM's configuration beside its checkpoints, so that a
 * VM whose disks moved to differencing images starts again without
 * anyone editing it.  QEMU's configuration is its command line: the
 * store keeps it in config.json (QAPI type CheckpointConfig) with the
 * image each disk was opened on, and each standard checkpoint keeps the
 * copy of its instant.  A management tool starts the VM from it with
 * each disk's image replaced by the manifest's active one.
 */

#include "qemu/osdep.h"
#include "qemu/cutils.h"
#include "qapi/error.h"
#include "qapi/qapi-visit-checkpoint.h"
#include "qapi/qobject-input-visitor.h"
#include "qapi/qobject-output-visitor.h"
#include "qobject/qjson.h"
#include "qobject/qobject.h"
#include "system/system.h"
#include "block/block_int-common.h"
#include "qapi/clone-visitor.h"
#include "checkpoint.h"

#define CONFIG_VERSION 1

static struct {
    strList *argv;
    char *cwd;
} cmdline;

void checkpoint_config_set_command_line(int argc, char **argv)
{
    strList **tail = &cmdline.argv;
    int i;

    for (i = 0; i < argc; i++) {
        QAPI_LIST_APPEND(tail, g_strdup(argv[i]));
    }
    cmdline.cwd = g_get_current_dir();
}

/* Each disk of the VM with the image it is on now */
static CheckpointManifestDiskList *vm_disks(void)
{
    CheckpointManifestDiskList *disks = NULL, **tail = &disks;
    BlockBackend *blk;

    for (blk = checkpoint_next_disk(NULL); blk;
         blk = checkpoint_next_disk(blk)) {
        CheckpointManifestDisk *d = g_new0(CheckpointManifestDisk, 1);
        BlockDriverState *bs = blk_bs(blk);

        d->device = checkpoint_disk_name(blk);
        d->filename = checkpoint_canonical_path(
            checkpoint_image_filename(bs));
        d->format = g_strdup(bs->drv ? bs->drv->format_name : "");
        QAPI_LIST_APPEND(tail, d);
    }
    return disks;
}

/* The configuration of the running VM */
static CheckpointConfig *config_of_vm(void)
{
    CheckpointConfig *c = g_new0(CheckpointConfig, 1);

    c->version = CONFIG_VERSION;
    c->argv = QAPI_CLONE(strList, cmdline.argv);
    c->cwd = g_strdup(cmdline.cwd ?: "/");
    c->name = g_strdup(qemu_name);
    c->disks = vm_disks();
    return c;
}

bool checkpoint_config_save(const char *path, CheckpointConfig *c,
                            bool replace, Error **errp)
{
    QObject *obj = NULL;
    GString *json;
    Visitor *v;
    bool ok;

    v = qobject_output_visitor_new(&obj);
    visit_type_CheckpointConfig(v, NULL, &c, &error_abort);
    visit_complete(v, &obj);
    visit_free(v);
    json = checkpoint_json_text(obj);
    ok = replace ? checkpoint_replace_file(path, json->str, json->len, errp)
                 : checkpoint_write_new_file(path, json->str, json->len, errp);
    g_string_free(json, true);
    return ok;
}

CheckpointConfig *checkpoint_config_load(const char *path, Error **errp)
{
    g_autofree char *text = NULL;
    g_autoptr(GError) gerr = NULL;
    CheckpointConfig *c = NULL;
    Error *local_err = NULL;
    QObject *obj;
    Visitor *v;

    if (!g_file_get_contents(path, &text, NULL, &gerr)) {
        error_setg(errp, "Cannot read the VM configuration: %s",
                   gerr->message);
        return NULL;
    }
    obj = qobject_from_json(text, &local_err);
    if (obj) {
        v = qobject_input_visitor_new(obj);
        visit_type_CheckpointConfig(v, NULL, &c, &local_err);
        visit_free(v);
        qobject_unref(obj);
    } else if (!local_err) {
        error_setg(&local_err, "the file is empty");
    }
    if (c && c->version != CONFIG_VERSION) {
        error_setg(&local_err, "format version %" PRId64 " is not"
                   " supported", c->version);
        g_clear_pointer(&c, qapi_free_CheckpointConfig);
    }
    if (!c) {
        error_propagate_prepend(errp, local_err, "VM configuration '%s' is"
                                " not valid: ", path);
    }
    return c;
}

/*
 * "<store>/config.json": the configuration the VM runs with, written
 * when the store is opened with the VM (never by a QEMU that manages
 * a stopped VM's store: its command line is not the VM's)
 */
bool checkpoint_config_write_store(const char *dir, Error **errp)
{
    g_autoptr(CheckpointConfig) c = config_of_vm();
    g_autofree char *path = g_build_filename(dir, CHECKPOINT_CONFIG_NAME,
                                             NULL);

    return checkpoint_config_save(path, c, true, errp);
}

/*
 * Copy the store's configuration to @path (a checkpoint's copy of its
 * instant); made durable, as the manifest names it next
 */
bool checkpoint_config_copy_store(const char *dir, const char *path,
                                  Error **errp)
{
    g_autofree char *src = g_build_filename(dir, CHECKPOINT_CONFIG_NAME,
                                            NULL);
    g_autoptr(CheckpointConfig) c = NULL;

    /* A store named before the devices existed has none yet */
    if (!g_file_test(src, G_FILE_TEST_EXISTS) &&
        !checkpoint_config_write_store(dir, errp)) {
        return false;
    }
    c = checkpoint_config_load(src, errp);
    return c && checkpoint_config_save(path, c, false, errp);
}
