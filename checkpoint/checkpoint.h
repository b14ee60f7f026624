/*
 * Hyper-V-style checkpoints: the checkpoint manager
 *
 * Copyright (c) 2026 The Hyper-V checkpoints project
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 *
 * The VM's checkpoints live in a store folder whose manifest
 * (FORMAT.md beside this file) is the single source of truth.  All
 * functions are called from the main loop with the BQL held.
 */

#ifndef HVCP_CHECKPOINT_H
#define HVCP_CHECKPOINT_H

#include "qemu/option.h"
#include "qapi/qapi-types-checkpoint.h"
#include "system/block-backend.h"

/* -checkpoints dir=DIR[,type=...] */
extern QemuOptsList qemu_checkpoints_opts;

/*
 * Apply the -checkpoints option, once the machine and its devices are
 * created (the store's disks are checked against the VM's).
 */
bool checkpoint_init_from_cmdline(Error **errp);

/* checkpoint.c: the VM's store */

/* The store folder, or NULL while none is set */
const char *checkpoint_store_dir(void);
CheckpointDefaultType checkpoint_default_type(void);

/*
 * The file name of image node @bs (its protocol child's: a format node
 * whose backing was set at run time gets a "json:" filename)
 */
const char *checkpoint_image_filename(BlockDriverState *bs);

/* The name a disk has in the manifest */
char *checkpoint_disk_name(BlockBackend *blk);

/*
 * Add @e (taken over) to the tree under the current checkpoint, make
 * it current and @active (taken over) the disks' active images; save.
 * On a save error the tree in memory is changed all the same.
 */
bool checkpoint_store_add(CheckpointManifestEntry *e,
                          CheckpointManifestDiskList *active, Error **errp);

/* Set the state of checkpoint @id and save */
bool checkpoint_store_set_state(const char *id, CheckpointState state,
                                Error **errp);

/*
 * Remove the leaf checkpoint @id from the tree (its parent becomes
 * current if it was) and save.
 */
bool checkpoint_store_drop(const char *id, Error **errp);

/* create.c */

/* Is a checkpoint being created? */
bool checkpoint_create_busy(void);

/* store.c: the manifest */

#define CHECKPOINT_MANIFEST_NAME "manifest.json"
#define CHECKPOINT_MANIFEST_VERSION 1
#define CHECKPOINT_NAME_MAX 100

/* A new, empty manifest */
CheckpointManifest *checkpoint_manifest_new(void);

/*
 * Read and validate @dir/manifest.json.  Returns a new empty manifest
 * when the file does not exist, NULL with @errp set when it cannot be
 * read or is not a valid manifest.
 */
CheckpointManifest *checkpoint_manifest_load(const char *dir, Error **errp);

/*
 * Replace @dir/manifest.json by @m atomically: a crash at any moment
 * leaves either the old or the new manifest.
 */
bool checkpoint_manifest_save(const char *dir, CheckpointManifest *m,
                              Error **errp);

/* Check the rules of FORMAT.md; @errp names what is wrong */
bool checkpoint_manifest_validate(CheckpointManifest *m, Error **errp);

/* Is @name a valid checkpoint name (1 to 100 characters)? */
bool checkpoint_name_valid(const char *name, Error **errp);

#endif
