/*
 * Hyper-V-style checkpoints: the merge in progress, shared by the job
 * (merge.c) and the ways a merge copies (merge-copy.c)
 *
 * Copyright (c) 2026 The Hyper-V checkpoints project
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */

#ifndef HVCP_MERGE_H
#define HVCP_MERGE_H

#include "qemu/job.h"
#include "qemu/notify.h"
#include "checkpoint.h"

/* How the data moves */
typedef enum MergeMode {
    MERGE_ACTIVE_COMMIT,    /* the disk's active image into the bottom */
    MERGE_STREAM,           /* the images into the disk's active image */
    MERGE_CHAIN_COMMIT,     /* an image of the VM's chain into the bottom */
    MERGE_OFFLINE_COMMIT,   /* an image of another branch, QEMU's own copy */
} MergeMode;

typedef struct Merge {
    CheckpointManifestMerge *rec;   /* as recorded in the manifest */
    MergeMode mode;
    char *target;                   /* the file holding the result */
    int64_t bytes_total;
    int64_t bytes_done;
    Job *inner;                     /* the block job that copies */
    char *inner_id;                 /* its id: the merge job's + "-copy" */
    GPtrArray *leaving;             /* names of the nodes the job drops */
    Notifier on_ready, on_pending, on_done, on_cancelled;
    bool vm_stopped;                /* by the pivot, to start again */
    char *made_writable;            /* node reopened read-write, by name */
    bool completing;                /* job-complete sent at READY */
    bool finalized;
    bool cancel_sent;
    bool interrupted;               /* by a create or an apply */
    bool paused;                    /* by a full filesystem */
    char *error;                    /* why it failed */
    /* the offline copy: the layers, bottom-up, and the bottom */
    GPtrArray *src;                 /* BlockBackend */
    BlockBackend *dst;
} Merge;

/* The job's coroutine wakes up (a notifier of the inner job) */
void merge_wake(Merge *mg);

/* Start the inner block job of an online merge; false with mg->error */
bool merge_start_inner(Merge *mg, const char *merge_job_id);

/*
 * The inner job has moved on: the READY, PENDING and CONCLUDED steps
 * (main loop); true once the merge has ended
 */
bool merge_step_inner(Merge *mg);

/* Cancel the inner job (main loop) */
void merge_cancel_inner(Merge *mg);

/* Did the inner job stop on a full filesystem? */
bool merge_inner_out_of_space(Merge *mg);
void merge_resume_inner(Merge *mg);
void merge_inner_progress(Merge *mg);

/* The offline copy: open the images (main loop), copy, close */
bool merge_offline_open(Merge *mg);
int coroutine_fn merge_offline_copy_layer(Merge *mg, Job *job, int layer);
void merge_offline_close(Merge *mg);

/*
 * The copy of commit @rec is complete: point the children of its top
 * at its bottom, move the records, remove the merged files; save
 */
bool merge_finish_commit(CheckpointManifestMerge *rec, Error **errp);

/*
 * Point every image built on the top of commit @rec (from the chains
 * of @m) at its bottom; *@relinked: the images built on the bottom now
 */
bool merge_relink_children(CheckpointManifest *m,
                           CheckpointManifestMerge *rec, strList **relinked,
                           Error **errp);

/*
 * A vhdx image built on the bottom of commit @rec keeps its link to the
 * bottom, whose DataWriteGuid the copy changed: point it at the bottom
 * again (when no device has it open).  The content seen through the
 * top does not change: the copy goes bottom-up.
 */
void merge_reconnect_bottom_child(CheckpointManifestMerge *rec);

/* Remove the files of @rec that no record and no chain uses any more */
void merge_remove_merged(CheckpointManifest *m, CheckpointManifestMerge *rec);

#endif
