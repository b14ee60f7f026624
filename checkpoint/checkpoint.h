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

/* -checkpoints dir=DIR[,type=...] */
extern QemuOptsList qemu_checkpoints_opts;

/*
 * Apply the -checkpoints option, once the machine and its devices are
 * created (the store's disks are checked against the VM's).
 */
bool checkpoint_init_from_cmdline(Error **errp);

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
