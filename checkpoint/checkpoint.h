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
#include "qemu/job.h"

/* -checkpoints dir=DIR[,type=...] */
extern QemuOptsList qemu_checkpoints_opts;

/*
 * Apply the -checkpoints option, once the machine and its devices are
 * created (the store's disks are checked against the VM's).
 */
bool checkpoint_init_from_cmdline(Error **errp);

/*
 * Before the disks open (-drive, -blockdev): the images a merge was
 * writing when QEMU was killed are opened read-write once, alone, so
 * that their vhdx log is replayed (the disks open backing files
 * read-only, which refuses a log to replay), and the image built on the
 * merge's bottom is linked to it again.  Errors are left to the store's
 * open, which reports them.
 */
void checkpoint_settle_merge_early(void);

/* checkpoint.c: settings, and what the operations share */

/* What checkpoint @e is consistent with (older manifests: by type) */
CheckpointConsistency checkpoint_consistency(CheckpointManifestEntry *e);

CheckpointDefaultType checkpoint_default_type(void);

/* Does an apply load memory on demand (apply-load=lazy)? */
bool checkpoint_apply_lazily(void);

/*
 * The file name of image node @bs (its protocol child's: a format node
 * whose backing was set at run time gets a "json:" filename)
 */
const char *checkpoint_image_filename(BlockDriverState *bs);

/*
 * The backend after @blk (the first with NULL) of a disk that takes
 * part in checkpoints: writable and attached to a guest device; NULL
 * after the last
 */
BlockBackend *checkpoint_next_disk(BlockBackend *blk);

/*
 * Let the nodes of the VM's disk chains report plain file and backing
 * file names (never "json:{...}"), after their chains changed
 */
void checkpoint_plain_names(void);

/*
 * Is the VM free of what a create or an apply must not run beside (a
 * migration, a memory snapshot)?  @errp says "Cannot @what while ...".
 * A merge of the VM's chain is stopped first, and merges wait until
 * the caller calls checkpoint_merge_release().
 */
bool checkpoint_vm_idle(const char *what, Error **errp);

/* The name a disk has in the manifest */
char *checkpoint_disk_name(BlockBackend *blk);

/*
 * store.c: the VM's store, the only code that changes its manifest.
 * Every operation below writes the manifest before it returns.
 */

/* The store folder, or NULL while none is set */
const char *checkpoint_store_dir(void);

/*
 * Open (or create) the store in folder @dir, in place of the current
 * one (refused while that has checkpoints): its disks are checked
 * against the VM's once the machine is ready, and what a killed QEMU
 * left is recovered (FORMAT.md)
 */
bool checkpoint_store_open(const char *dir, Error **errp);

/*
 * Add @e (taken over) to the tree under the current checkpoint, make
 * it current and @active (taken over) the disks' active images, and
 * record @new_files (taken over; may be NULL) as the new files of its
 * create, in place of any recorded operation; save.  On a save error
 * the tree in memory is changed all the same.
 */
bool checkpoint_store_add(CheckpointManifestEntry *e,
                          CheckpointManifestDiskList *active,
                          strList *new_files, Error **errp);

/*
 * A create begins: record that it is about to make @new_files (taken
 * over), and make @active (taken over) the active images (they are the
 * disks' images at this moment; recorded so that the recovery of the
 * first create knows the parents of the children it removes); save.
 * On failure nothing changed.
 */
bool checkpoint_store_begin_create(const char *id,
                                   CheckpointManifestDiskList *active,
                                   strList *new_files, Error **errp);

/*
 * A create failed before checkpoint_store_add(): @old_active (taken
 * over) are the active images again and the operation ends; save
 * (errors are reported only)
 */
void checkpoint_store_abort_create(CheckpointManifestDiskList *old_active);

/*
 * Undo checkpoint_store_add() of checkpoint @id: drop it, make
 * @old_active (taken over) the active images again, and record
 * @new_files (taken over) as what its create made, for removal; save.
 * On a save error the manifest in memory is changed all the same.
 */
bool checkpoint_store_unadd(const char *id,
                            CheckpointManifestDiskList *old_active,
                            strList *new_files, Error **errp);

/*
 * Set the state of checkpoint @id, end its operation, and save; a
 * checkpoint becoming ready records the identity of its frozen images
 */
bool checkpoint_store_set_state(const char *id, CheckpointState state,
                                Error **errp);

/*
 * Remove checkpoint @id from the tree (its children and, if it was
 * current, "Now" move to its parent), end its operation, and save.
 */
bool checkpoint_store_drop(const char *id, Error **errp);

/*
 * checkpoint_store_drop() of every checkpoint of @ids, with one save
 * (checkpoint-check's drop-lost)
 */
bool checkpoint_store_drop_list(strList *ids, Error **errp);

/*
 * Delete checkpoints @ids (their children and "Now" move up), and
 * record @stale (taken over) as files that a crash must not leave
 * behind (removed on the next open if nothing uses them); save
 */
bool checkpoint_store_delete(strList *ids, strList *stale, Error **errp);

/*
 * The merge in progress is @merge (taken over; NULL: none any more);
 * save
 */
bool checkpoint_store_set_merge(CheckpointManifestMerge *merge,
                                Error **errp);

/*
 * After an active commit's pivot, in one manifest write: the records
 * naming image @old name @image (the disk's new active image), and the
 * merge in progress is @merge (taken over)
 */
bool checkpoint_store_pivot(const char *old, const char *image,
                            CheckpointManifestMerge *merge, Error **errp);

/*
 * A merge replaced image @old by @image: every record of @old names
 * @image, with @image's identity where one was recorded, and the
 * records of @relinked (images whose parent link was rewritten) get
 * their new identity; save
 */
bool checkpoint_store_replace_image(const char *old, const char *image,
                                    strList *relinked, Error **errp);

/* checkpoint_store_replace_image() in @m, not saved */
void checkpoint_manifest_replace_image(CheckpointManifest *m,
                                       const char *old, const char *image,
                                       strList *relinked);

/* Remove checkpoint @id from @m: children and "Now" go to its parent */
void checkpoint_manifest_drop(CheckpointManifest *m, const char *id);

/* The checkpoint of @m with id @id (NULL: none, or @id NULL) */
CheckpointManifestEntry *checkpoint_manifest_entry(CheckpointManifest *m,
                                                   const char *id);

/* Is @filename the frozen image of a checkpoint? */
bool checkpoint_store_is_frozen(const char *filename);

/*
 * The commit point of an apply of checkpoint @id: "Now" under it,
 * @active (taken over) the active images, the operation's new files
 * forgotten and @stale (taken over) recorded as the files it replaced;
 * save.  On failure the manifest is as it was.
 */
bool checkpoint_store_commit_apply(const char *id,
                                   CheckpointManifestDiskList *active,
                                   strList *stale, Error **errp);

/*
 * The loaded manifest (NULL while no store is set), to read: it
 * changes only through the checkpoint_store_*() operations
 */
CheckpointManifest *checkpoint_store_manifest(void);

/*
 * A copy of the manifest, for code that polls the main loop while it
 * reads it (opening an image does): a merge, a create or an apply that
 * runs meanwhile replaces the store's manifest
 */
CheckpointManifest *checkpoint_store_manifest_copy(void);

/* Rename checkpoint @id to @name (valid) */
bool checkpoint_store_rename(const char *id, const char *name, Error **errp);

/*
 * checkpoint-check relinked image @child to @new_parent, the file
 * @old_parent moved to: every record of @old_parent names @new_parent,
 * and the records of @child whose identity was @before (the identity
 * before the relink changed its header; NULL: none) get its new one
 */
bool checkpoint_store_relink(const char *child, const char *before,
                             const char *old_parent, const char *new_parent,
                             Error **errp);

/*
 * The user accepts image @filename as it is now (checkpoint-check's
 * reconnect): its records get its current identity
 */
bool checkpoint_store_reconnect(const char *filename, Error **errp);

/*
 * The checkpoint with id or (unique) name @key; @errp says why there is
 * none (no store, unknown, ambiguous name)
 */
CheckpointManifestEntry *checkpoint_store_find(const char *key,
                                               Error **errp);

/*
 * Record in the manifest that operation @op on checkpoint @id is about
 * to make @new_files (taken over): a crash before the operation ends
 * has them removed when the store is opened again.
 */
bool checkpoint_store_begin_operation(CheckpointOperation op,
                                      const char *id, strList *new_files,
                                      Error **errp);

/* Forget the recorded operation and save (errors are reported only) */
void checkpoint_store_end_operation(void);

/* Do @a and @b name the same file (after resolving links)? */
bool checkpoint_same_file(const char *a, const char *b);

/*
 * @filename with links resolved; for a file that is missing, with its
 * folder resolved (checkpoint-check looks at lost files too)
 */
char *checkpoint_canonical_path(const char *filename);

/* Do @a and @b name the same file, which may be missing? */
bool checkpoint_same_path(const char *a, const char *b);

/*
 * The full name of the backing file image @bs names (NULL if it names
 * none, or with @errp set if the name cannot be resolved)
 */
char *checkpoint_backing_filename(BlockDriverState *bs, Error **errp);

/* The node of the open image whose file is @filename, or NULL */
BlockDriverState *checkpoint_find_image(const char *filename);

/*
 * The node of image @filename in the backing chain of a guest disk, or
 * NULL (a node of the file may still be open elsewhere: a guard, the
 * chain the VM left at an apply)
 */
BlockDriverState *checkpoint_find_vm_image(const char *filename);

/*
 * Open image @filename of format @fmt alone, without its backing chain
 * (writable or read-only; read-only, it shares everything, so that an
 * image another process has open can be looked at)
 */
BlockDriverState *checkpoint_open_alone(const char *filename,
                                        const char *fmt, bool writable,
                                        Error **errp);

/*
 * A reference to a node of image @filename, to read: the VM's node when
 * the VM has the image open (the file is locked, and the node knows
 * what it changed), else the image opened alone, read-only.  The caller
 * drops it with bdrv_unref().
 */
BlockDriverState *checkpoint_image_node(const char *filename,
                                        const char *fmt, Error **errp);

/*
 * "<dir>/<disk>_<id>.<ext>" for the parent "<dir>/<disk>.<anything>" or
 * "<dir>/<disk>_<older id>.<anything>": differencing images are named
 * after their disk, as Hyper-V names its AVHDX files
 */
char *checkpoint_child_name(const char *parent, const char *id,
                            const char *ext);

/*
 * checkpoint_child_name() for one of the disks of an operation: a name
 * that another disk of the operation took already (the parents
 * "disk.qcow2" and "disk.img" give the same) gets a UUID of its own in
 * place of @id.  @taken (a set of strings it owns) holds the names
 * given so far.
 */
char *checkpoint_plan_child_name(GHashTable *taken, const char *parent,
                                 const char *id, const char *ext);

/*
 * Create the differencing image @child of file @parent (format @fmt,
 * virtual size @size; *@made is set once the file exists) and open it
 * read-write (QEMU names the node, as for an image a user did not
 * name), on top of node @backing, or with no backing yet when @backing
 * is NULL, with the cache and AIO options of
 * node @like.  The file and its folder are synced before it returns.
 * Returns a new reference.
 */
BlockDriverState *checkpoint_make_child(const char *child,
                                        const char *parent, const char *fmt,
                                        int64_t size,
                                        BlockDriverState *backing,
                                        BlockDriverState *like, bool *made,
                                        Error **errp);

/*
 * A step that an operation leaves until after its command returned (an
 * apply deletes the images it replaced), with its data @opaque (taken
 * over); it runs at the latest when the next operation starts, which
 * calls checkpoint_settle() first, so that no operation needs to know
 * what the previous one left.
 */
typedef void CheckpointSettleFn(void *opaque);
void checkpoint_defer(CheckpointSettleFn *fn, void *opaque);

/* Run the step an operation left for later, if there is one */
void checkpoint_settle(void);

/*
 * Crash tests: when the environment variable QEMU_CHECKPOINT_CRASH_AT
 * names @point, QEMU kills itself with SIGKILL here.
 */
void checkpoint_crash_point(const char *point);

/* operation.c: the one record of the operation in progress */

/* Is a checkpoint being applied (from the checks to the load)? */
bool checkpoint_op_applying(void);
/* Does a create's memory save run (alone or inside an apply)? */
bool checkpoint_op_saving(void);
/* Neither */
bool checkpoint_op_idle(void);
void checkpoint_op_set_applying(bool applying);
/* A create's memory save began (in its pause) or ended */
void checkpoint_op_save_started(void);
void checkpoint_op_save_ended(void);
/* Call @fn(@opaque) once, when the running memory save ends */
void checkpoint_op_when_saved(CheckpointSettleFn *fn, void *opaque);
/* @opaque no longer waits (its job was cancelled) */
void checkpoint_op_forget_waiter(void *opaque);

/* create.c */

/* The job of a checkpoint-create (type checkpoint-create) */
typedef struct CheckpointCreateJob {
    Job common;
    bool finished;              /* the memory save has ended */
    char *error;                /* why it failed */
} CheckpointCreateJob;

/* A new checkpoint id (a UUID) */
char *checkpoint_new_id(void);

/* Can a checkpoint be taken now? */
bool checkpoint_create_allowed(Error **errp);

/*
 * Start creating a standard checkpoint (checkpoint-create); returns its
 * id.  The memory save goes on after the return, in job @job_id.
 * @fallback_reason: a production checkpoint was asked for, and why it
 * is a standard one.
 */
char *checkpoint_create_start(const char *name, const char *job_id,
                              const char *fallback_reason, Error **errp);

/*
 * The same for checkpoint @id inside running job @job (a production
 * checkpoint's job falling back): @job then waits for the save with
 * checkpoint_create_job_wait()
 */
bool checkpoint_create_standard_in_job(const char *id, const char *name,
                                       const char *fallback_reason,
                                       CheckpointCreateJob *job,
                                       Error **errp);

/* The run of a checkpoint-create job: wait until the save has ended */
int coroutine_fn checkpoint_create_job_wait(CheckpointCreateJob *s,
                                            Error **errp);

/*
 * Checkpoint @id of the disks only, in one pause (a production or
 * automatic checkpoint): ready when this returns true
 */
bool checkpoint_create_disks_only(const char *id, const char *name,
                                  CheckpointConsistency consistency,
                                  Error **errp);

/* production.c */

/*
 * Start a production checkpoint (@only: production-only); returns its
 * id.  Without a connected agent, @only fails and otherwise a standard
 * checkpoint is started, *@fallback_reason saying why; else a job
 * takes it (freeze, switch, thaw) after the return.
 */
char *checkpoint_production_start(const char *name, bool only,
                                  const char *job_id,
                                  char **fallback_reason, Error **errp);

/*
 * The automatic checkpoint (-checkpoints auto=on) of the disks, before
 * the guest runs; none without a store or on an incoming migration
 */
bool checkpoint_auto_at_start(Error **errp);

/* Milliseconds a production checkpoint waits for each agent answer */
int64_t checkpoint_freeze_timeout_ms(void);

/* Run @fn(@opaque) in the main loop, outside of any coroutine */
void coroutine_fn checkpoint_main_call(void (*fn)(void *), void *opaque);

/* Why the last create whose memory save ended failed, or NULL */
const char *checkpoint_create_last_error(void);


/* disks.c: the per-disk work of create and apply */

/* One writable disk of the VM during an operation */
typedef struct CheckpointDisk {
    BlockBackend *blk;          /* the guest's disk */
    char *device;               /* its name in the manifest */
    char *format;               /* vhdx or qcow2 */
    char *parent;               /* the image its child is made on */
    char *child;                /* the new image's file */
    int64_t size;
    BlockDriverState *bs;       /* create: the disk's node, not referenced */
    BlockDriverState *child_bs; /* referenced from open on */
    bool made;                  /* the child's file exists */
    /* apply: what the disk used before the switch */
    BlockDriverState *old_bs;   /* referenced while switched */
    char *old_filename;
    char *old_node;             /* its node, and its file's */
    char *old_file_node;
    GPtrArray *hidden;          /* images under it that only it used */
    bool switched;
} CheckpointDisk;

/*
 * The disks of a create: the writable disks attached to guest devices,
 * each with the child of its image now, named after checkpoint @id
 */
GPtrArray *checkpoint_disks_plan_create(const char *id, Error **errp);

/*
 * The disks of an apply of @e: each with a child of @e's frozen image,
 * named after @child_id; every disk of @e must be the VM's, with the
 * same format, and unchanged (its recorded identity)
 */
GPtrArray *checkpoint_disks_plan_apply(CheckpointManifestEntry *e,
                                       const char *child_id, Error **errp);

/*
 * Create and open every child while the VM runs: on its parent and the
 * parent's chain (@on_parent, apply) or with no backing, for
 * checkpoint_disks_snapshot() (create).  On failure the children made
 * are removed.
 */
bool checkpoint_disks_make_children(GPtrArray *disks, bool on_parent,
                                    Error **errp);

/*
 * Image @filename with its backing chain, the nodes the VM has open
 * shared; @writable: the image itself read-write (it must not be open).
 * Returns a new reference.
 */
BlockDriverState *checkpoint_open_chain(const char *filename,
                                        const char *fmt, bool writable,
                                        Error **errp);

/* Close the children and delete the files made */
void checkpoint_disks_remove_children(GPtrArray *disks);

/* Close the children, keeping their files */
void checkpoint_disks_forget_children(GPtrArray *disks);

/* Create, in the pause: every disk onto its child, or none */
bool checkpoint_disks_snapshot(GPtrArray *disks, Error **errp);

/*
 * Apply, with the vCPUs stopped: every disk's image replaced by its
 * child, or none
 */
bool checkpoint_disks_replace(GPtrArray *disks, Error **errp);

/* Put every replaced disk back on its old image */
void checkpoint_disks_switch_back(GPtrArray *disks);

/* After an apply's commit: close the images the disks used before */
void checkpoint_disks_close_old(GPtrArray *disks);

/* The children's files */
strList *checkpoint_disks_children(GPtrArray *disks);

/* The manifest records of the children, or of the parents */
CheckpointManifestDiskList *checkpoint_disks_images(GPtrArray *disks,
                                                    bool children);

/* chains.c: the images of the disks, and what is built on what */

typedef struct CheckpointImage {
    char *filename;             /* canonical */
    char *format;
    char *device;
    char *parent_name;          /* canonical; NULL: the disk's original */
    struct CheckpointImage *parent;
    GPtrArray *dependents;      /* the images built on it */
    bool needed;                /* a checkpoint's or "Now"'s image */
    bool active;                /* a disk's active image */
    bool open_in_vm;
    bool gone;                  /* a plan deletes it */
    int64_t size;
    int64_t allocated;          /* bytes of its own layer, -1 unknown */
} CheckpointImage;

typedef struct CheckpointChains {
    GHashTable *images;         /* canonical name -> CheckpointImage */
} CheckpointChains;

/*
 * The images that the records of @m and @extra (images of checkpoints
 * about to be deleted) need, following backing files; @errp names an
 * image that cannot be read
 */
CheckpointChains *checkpoint_chains_scan(CheckpointManifest *m,
                                         CheckpointManifestDiskList *extra,
                                         Error **errp);
void checkpoint_chains_free(CheckpointChains *c);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(CheckpointChains, checkpoint_chains_free)
CheckpointImage *checkpoint_chains_find(CheckpointChains *c,
                                        const char *filename);

/*
 * The images under @top that no one needs and that only the one above
 * each is built on, top-down (none of @busy, a set of file names)
 */
GPtrArray *checkpoint_chains_run_below(CheckpointImage *top,
                                       GHashTable *busy);

/* plan.c: Hyper-V's rules on the images that nothing needs */

/*
 * Per disk of @m: the images to delete, the merges to run and the
 * images that wait, leaving out images of @busy (a set of file names)
 * and merging no image whose top is in @failed (name -> reason)
 */
CheckpointDeletePlan *checkpoint_plan(CheckpointManifest *m,
                                      CheckpointChains *c, GHashTable *busy,
                                      GHashTable *failed);

/* The pending image of merge @mp that its filesystem cannot hold */
CheckpointPendingImage *checkpoint_space_pending(CheckpointMergePlan *mp,
                                                 const char *folder,
                                                 int64_t free);

/* merge.c: the checkpoint-merge job */

/*
 * Plan the merges again and start those that can run, in a job with id
 * @job_id (NULL: "checkpoint-merge") unless one runs; *@started_id
 * gets the job's id when merges run
 */
void checkpoint_merge_schedule(const char *job_id, char **started_id);

/* Is @filename an image of the merge in progress? */
bool checkpoint_merge_uses(const char *filename);

/* The images of the merge in progress, as a set of names (or NULL) */
GHashTable *checkpoint_merge_busy(void);

/*
 * A create or an apply is about to change the disks: a merge of the
 * VM's chain stops (it runs again, planned anew, afterwards)
 */
void checkpoint_merge_interrupt(void);

/* Is a merge copying or relinking images now? */
bool checkpoint_merge_running(void);

/* The create or apply has ended: merges may run again */
void checkpoint_merge_release(void);

/* Resume a paused merge, retry failed ones */
void checkpoint_merge_resume_all(void);

/*
 * Store open: finish the merge that a killed QEMU recorded in @m
 * (store folder @dir), or forget it so that it runs again
 */
void checkpoint_merge_recover(const char *dir, CheckpointManifest *m);

/* guard.c */

/*
 * Protect every open node of a checkpoint's frozen image from writers
 * (and forget the nodes that are no longer frozen or open); called
 * whenever the store or the VM's disks change
 */
void checkpoint_guard_frozen_images(void);

/* identity.c */

/*
 * What identifies the content of image @filename of format @fmt
 * (CheckpointManifestDisk.identity in qapi/checkpoint.json); NULL with
 * @errp set when the file cannot be read
 */
char *checkpoint_image_identity(const char *filename, const char *fmt,
                                Error **errp);

/* manifest.c: the manifest's format (load, validate, save) */

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

/*
 * Make the new file @path and its entry in its folder durable, before
 * the manifest names it
 */
bool checkpoint_sync_new_file(const char *path, Error **errp);

/*
 * unlink(@path) in the main loop without its cost: the kernel frees a
 * file's page cache and extents when its last reference goes (about
 * 250 ms per GiB here, holding up the guest's I/O and the monitor), so
 * a descriptor kept open across the unlink is closed in a worker
 * thread.  The name is gone on return, as with unlink(); the space
 * follows shortly, or when QEMU exits.  Returns as unlink() does.
 */
int checkpoint_unlink(const char *path);

/*
 * Replace the file @path by @len bytes of @text atomically and
 * durably (write "@path.tmp", fsync, rename, fsync the folder)
 */
bool checkpoint_replace_file(const char *path, const char *text, size_t len,
                             Error **errp);

/* @obj (taken over) as pretty JSON text with a final newline */
GString *checkpoint_json_text(QObject *obj);

/*
 * Write the new file @path (an operation lists it, so that a kill
 * leaves nothing else behind) and make it durable with its folder entry
 */
bool checkpoint_write_new_file(const char *path, const char *text,
                               size_t len, Error **errp);

/* config.c: the VM's configuration in the store (CheckpointConfig) */

#define CHECKPOINT_CONFIG_NAME "config.json"

/* Called by qemu_init() with QEMU's command line, which the store keeps */
void checkpoint_config_set_command_line(int argc, char **argv);

/*
 * Write @c to @path: replacing it atomically, or as a new file that an
 * operation lists (no temporary file beside it) when !@replace
 */
bool checkpoint_config_save(const char *path, CheckpointConfig *c,
                            bool replace, Error **errp);
CheckpointConfig *checkpoint_config_load(const char *path, Error **errp);

/* Write @dir/config.json: the running VM's command line and disks */
bool checkpoint_config_write_store(const char *dir, Error **errp);

/* Copy @dir/config.json to @path (a checkpoint's copy) */
bool checkpoint_config_copy_store(const char *dir, const char *path,
                                  Error **errp);

/*
 * Is the store open for management only (-checkpoints offline=on): no
 * guest, disks not checked against devices, no create or apply?
 */
bool checkpoint_offline(void);

/* Refuse @what with a clear error when the store is opened offline */
bool checkpoint_online_or_error(const char *what, Error **errp);

/* export.c */

/* Is an export running?  Merges wait and deletes are refused meanwhile */
bool checkpoint_exporting(void);

/* Check the rules of FORMAT.md; @errp names what is wrong */
bool checkpoint_manifest_validate(CheckpointManifest *m, Error **errp);

/*
 * Is @path a name an operation may record for removal after a crash:
 * absolute, and a state file, a checkpoint folder or a differencing
 * image "<disk>_<uuid>.<ext>"?
 */
bool checkpoint_leftover_name_valid(const char *path);

/* Is @name a valid checkpoint name (1 to 100 characters)? */
bool checkpoint_name_valid(const char *name, Error **errp);

#endif
