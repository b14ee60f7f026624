/*
 * Hyper-V-style checkpoints: settings, query and rename, and what the
 * operations share (disks of the VM, child images, the deferred step)
 *
 * Copyright (c) 2026 The Hyper-V checkpoints project
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */

#include "qemu/osdep.h"
#include "qemu/cutils.h"
#include "qemu/error-report.h"
#include "qemu/uuid.h"
#include "qapi/error.h"
#include "qapi/qapi-commands-checkpoint.h"
#include "qapi/util.h"
#include "qobject/qdict.h"
#include "block/block.h"
#include "block/block_int-common.h"
#include "block/block-global-state.h"
#include "block/graph-lock.h"
#include "block/blockjob.h"
#include "block/block_int-io.h"
#include "system/block-backend.h"
#include "hw/qdev-core.h"
#include "system/runstate.h"
#include "migration/misc.h"
#include "migration/cow-snapshot/cow-snapshot.h"
#include "checkpoint.h"
#include "agent.h"

QemuOptsList qemu_checkpoints_opts = {
    .name = "checkpoints",
    .merge_lists = true,
    .head = QTAILQ_HEAD_INITIALIZER(qemu_checkpoints_opts.head),
    .desc = {
        {
            .name = "dir",
            .type = QEMU_OPT_STRING,
            .help = "folder of the VM's checkpoint store",
        }, {
            .name = "type",
            .type = QEMU_OPT_STRING,
            .help = "standard, production, production-only or disabled",
        }, {
            .name = "freeze-timeout",
            .type = QEMU_OPT_NUMBER,
            .help = "seconds to wait for each answer of the guest agent",
        }, {
            .name = "agent",
            .type = QEMU_OPT_STRING,
            .help = "a chardev that reaches the guest agent (default:"
                    " the virtserialport named " CHECKPOINT_AGENT_PORT_NAME
                    ")",
        }, {
            .name = "auto",
            .type = QEMU_OPT_BOOL,
            .help = "take an automatic checkpoint when the VM starts",
        }, {
            .name = "apply-load",
            .type = QEMU_OPT_STRING,
            .help = "eager (the default) or lazy (memory on demand)",
        }, {
            .name = "offline",
            .type = QEMU_OPT_BOOL,
            .help = "manage a stopped VM's store (no guest: -M none)",
        },
        { /* end of list */ }
    },
};

/* The VM's checkpoint settings (the store has its own file, store.c) */
#define FREEZE_TIMEOUT_MAX 3600

static struct {
    CheckpointDefaultType type;
    int64_t freeze_timeout;     /* seconds */
    bool auto_checkpoint;
    bool offline;
    CheckpointApplyLoad apply_load;
} ckpt = {
    .type = CHECKPOINT_DEFAULT_TYPE_PRODUCTION,
    .freeze_timeout = 10,
    /* Where on-demand loading cannot work, an apply loads eagerly */
    .apply_load = CHECKPOINT_APPLY_LOAD_LAZY,
};

int64_t checkpoint_freeze_timeout_ms(void)
{
    return ckpt.freeze_timeout * 1000;
}

static bool set_freeze_timeout(int64_t seconds, Error **errp)
{
    if (seconds < 1 || seconds > FREEZE_TIMEOUT_MAX) {
        error_setg(errp, "freeze-timeout must be 1 to %d seconds",
                   FREEZE_TIMEOUT_MAX);
        return false;
    }
    ckpt.freeze_timeout = seconds;
    return true;
}

CheckpointConsistency checkpoint_consistency(CheckpointManifestEntry *e)
{
    if (e->has_consistency) {
        return e->consistency;
    }
    /* A manifest written before consistency was recorded */
    return e->type == CHECKPOINT_TYPE_STANDARD ?
           CHECKPOINT_CONSISTENCY_SAVED_STATE :
           CHECKPOINT_CONSISTENCY_APPLICATION;
}

CheckpointDefaultType checkpoint_default_type(void)
{
    return ckpt.type;
}

const char *checkpoint_image_filename(BlockDriverState *bs)
{
    BlockDriverState *file = NULL;

    GRAPH_RDLOCK_GUARD_MAINLOOP();
    /* A filter (blkdebug, preallocate) may stand above the file */
    if (bs->file && bs->file->bs) {
        file = bdrv_skip_filters(bs->file->bs);
    }
    if (!file) {
        file = bs;
    }
    /* A blockdev-reopen leaves it empty until something refreshes it */
    if (!file->filename[0]) {
        bdrv_refresh_filename(file);
    }
    return file->filename;
}

/*
 * Record that @bs is built on the file its header names, when its
 * backing node is that file: what an implicit open of the backing file
 * records
 */
static void GRAPH_RDLOCK note_implicit_backing(BlockDriverState *bs)
{
    BlockDriverState *backing = bs->backing ? bs->backing->bs : NULL;
    g_autofree char *named = NULL;

    if (!backing || !bs->backing_file[0]) {
        return;
    }
    named = bdrv_get_full_backing_filename(bs, NULL);
    if (named && !strstart(backing->filename, "json:", NULL) &&
        checkpoint_same_file(named, backing->filename)) {
        pstrcpy(bs->auto_backing_file, sizeof(bs->auto_backing_file),
                backing->filename);
    }
}

/*
 * A node whose backing was attached at run time (blockdev-snapshot, an
 * apply's child on an open chain, a merge's pivot) keeps its header's
 * backing name, which the block layer compares with the backing node's
 * file name; they differ (relative and absolute), and the node reports
 * a "json:{...}" pseudo-filename to query-block, which management tools
 * parse.  Bottom-up, so that each node sees its backing's plain name.
 */
void checkpoint_plain_names(void)
{
    BlockBackend *blk;

    GLOBAL_STATE_CODE();
    GRAPH_RDLOCK_GUARD_MAINLOOP();
    for (blk = checkpoint_next_disk(NULL); blk;
         blk = checkpoint_next_disk(blk)) {
        g_autoptr(GPtrArray) chain = g_ptr_array_new();
        BlockDriverState *bs;
        int i;

        for (bs = blk_bs(blk); bs; bs = bdrv_filter_or_cow_bs(bs)) {
            g_ptr_array_add(chain, bs);
        }
        for (i = chain->len - 1; i >= 0; i--) {
            bs = g_ptr_array_index(chain, i);
            note_implicit_backing(bs);
            bdrv_refresh_filename(bs);
        }
    }
}

BlockBackend *checkpoint_next_disk(BlockBackend *blk)
{
    /* All backends: -device makes its own for a -blockdev node */
    while ((blk = blk_all_next(blk))) {
        if (blk_get_attached_dev(blk) && blk_bs(blk) &&
            blk_is_writable(blk)) {
            return blk;
        }
    }
    return NULL;
}

/* The first block job that uses @bs or an image under it, or NULL */
static BlockJob *job_on_chain(BlockDriverState *bs)
{
    BlockJob *job;

    GLOBAL_STATE_CODE();
    GRAPH_RDLOCK_GUARD_MAINLOOP();
    JOB_LOCK_GUARD();
    for (; bs; bs = bdrv_filter_or_cow_bs(bs)) {
        for (job = block_job_next_locked(NULL); job;
             job = block_job_next_locked(job)) {
            if (block_job_has_bdrv(job, bs)) {
                return job;
            }
        }
    }
    return NULL;
}

/*
 * A block job on a disk's chain (a commit, a stream, a mirror) would
 * change images under the checkpoint's feet: the frozen images it
 * takes, or the ones an apply replaces.
 */
static bool no_block_job_on_disks(const char *what, Error **errp)
{
    BlockBackend *blk;

    for (blk = checkpoint_next_disk(NULL); blk;
         blk = checkpoint_next_disk(blk)) {
        BlockJob *job = job_on_chain(blk_bs(blk));

        if (job) {
            g_autofree char *dev = checkpoint_disk_name(blk);

            error_setg(errp, "Cannot %s while block job '%s' uses disk"
                       " '%s'", what, job->job.id, dev);
            return false;
        }
    }
    return true;
}

bool checkpoint_vm_idle(const char *what, Error **errp)
{
    /* A merge of the VM's chain stops; it runs again afterwards */
    checkpoint_merge_interrupt();
    if (migration_is_running()) {
        error_setg(errp, "Cannot %s while a migration runs", what);
        return false;
    }
    if (cow_snapshot_is_active()) {
        error_setg(errp, "Cannot %s while a memory snapshot is being saved",
                   what);
        return false;
    }
    return no_block_job_on_disks(what, errp);
}

char *checkpoint_disk_name(BlockBackend *blk)
{
    if (*blk_name(blk)) {
        return g_strdup(blk_name(blk));
    }
    return blk_get_attached_dev_id(blk);
}

bool checkpoint_same_file(const char *a, const char *b)
{
    g_autofree char *ra = realpath(a, NULL);
    g_autofree char *rb = realpath(b, NULL);

    if (ra && rb) {
        return !strcmp(ra, rb);
    }
    return !strcmp(a, b);
}

/*
 * With lazy applies, RAM must be ready to be emptied in constant time
 * (see cow_snapshot_prepare_lazy_loads()); done once, while RAM is
 * nearly empty if the command line asks for it
 */
static void prepare_apply_load(void)
{
    if (ckpt.apply_load == CHECKPOINT_APPLY_LOAD_LAZY && !ckpt.offline &&
        phase_check(PHASE_MACHINE_READY)) {
        cow_snapshot_prepare_lazy_loads();
    }
}

bool checkpoint_init_from_cmdline(Error **errp)
{
    QemuOpts *opts = qemu_opts_find(&qemu_checkpoints_opts, NULL);
    const char *dir, *type, *agent;

    if (!opts) {
        return true;
    }
    type = qemu_opt_get(opts, "type");
    if (type) {
        int t = qapi_enum_parse(&CheckpointDefaultType_lookup, type, -1,
                                NULL);
        if (t < 0) {
            error_setg(errp, "-checkpoints type: '%s' is not one of"
                       " standard, production, production-only, disabled",
                       type);
            return false;
        }
        ckpt.type = t;
    }
    if (qemu_opt_get(opts, "freeze-timeout") &&
        !set_freeze_timeout(qemu_opt_get_number(opts, "freeze-timeout", 0),
                            errp)) {
        error_prepend(errp, "-checkpoints: ");
        return false;
    }
    ckpt.auto_checkpoint = qemu_opt_get_bool(opts, "auto", false);
    ckpt.offline = qemu_opt_get_bool(opts, "offline", false);
    if (qemu_opt_get(opts, "apply-load")) {
        int l = qapi_enum_parse(&CheckpointApplyLoad_lookup,
                                qemu_opt_get(opts, "apply-load"), -1, NULL);

        if (l < 0) {
            error_setg(errp, "-checkpoints apply-load: 'lazy' or 'eager'");
            return false;
        }
        ckpt.apply_load = l;
    }
    if (ckpt.offline && ckpt.auto_checkpoint) {
        error_setg(errp, "-checkpoints: auto=on needs the VM, not"
                   " offline=on");
        return false;
    }
    agent = qemu_opt_get(opts, "agent");
    if (agent && !checkpoint_agent_channel_use_chardev(agent, errp)) {
        return false;
    }
    checkpoint_agent_channel_find_port();
    prepare_apply_load();
    /* Without dir, checkpoint-set-parameters can name the store later */
    dir = qemu_opt_get(opts, "dir");
    if (dir && !checkpoint_store_open(dir, errp)) {
        return false;
    }
    return !ckpt.auto_checkpoint || checkpoint_auto_at_start(errp);
}

void qmp_checkpoint_set_parameters(const char *dir, bool has_type,
                                   CheckpointDefaultType type,
                                   bool has_freeze_timeout,
                                   int64_t freeze_timeout,
                                   bool has_auto, bool auto_checkpoint,
                                   bool has_apply_load,
                                   CheckpointApplyLoad apply_load,
                                   Error **errp)
{
    if (has_freeze_timeout && (freeze_timeout < 1 ||
                               freeze_timeout > FREEZE_TIMEOUT_MAX)) {
        error_setg(errp, "freeze-timeout must be 1 to %d seconds",
                   FREEZE_TIMEOUT_MAX);
        return;
    }
    if (dir && !checkpoint_store_open(dir, errp)) {
        return;
    }
    if (has_type) {
        ckpt.type = type;
    }
    if (has_freeze_timeout) {
        ckpt.freeze_timeout = freeze_timeout;
    }
    if (has_apply_load) {
        ckpt.apply_load = apply_load;
    }
    prepare_apply_load();
    if (has_auto) {
        ckpt.auto_checkpoint = auto_checkpoint;
        if (auto_checkpoint && runstate_check(RUN_STATE_PRELAUNCH)) {
            checkpoint_auto_at_start(errp);
        }
    }
}

bool checkpoint_apply_lazily(void)
{
    return ckpt.apply_load == CHECKPOINT_APPLY_LOAD_LAZY;
}

bool checkpoint_offline(void)
{
    return ckpt.offline;
}

bool checkpoint_online_or_error(const char *what, Error **errp)
{
    if (ckpt.offline) {
        error_setg(errp, "Cannot %s: the store is open offline (a stopped"
                   " VM's store, no guest); start the VM for that", what);
        return false;
    }
    return true;
}

CheckpointParameters *qmp_query_checkpoint_parameters(Error **errp)
{
    CheckpointParameters *p = g_new0(CheckpointParameters, 1);

    p->dir = g_strdup(checkpoint_store_dir());
    p->type = ckpt.type;
    p->freeze_timeout = ckpt.freeze_timeout;
    p->q_auto = ckpt.auto_checkpoint;
    p->apply_load = ckpt.apply_load;
    return p;
}

BlockDriverState *checkpoint_open_alone(const char *filename,
                                        const char *fmt, bool writable,
                                        Error **errp)
{
    QDict *opts = qdict_new();

    qdict_put_str(opts, "driver", fmt);
    qdict_put_null(opts, "backing");
    if (!writable) {
        qdict_put_bool(opts, BDRV_OPT_FORCE_SHARE, true);
    }
    /* The flag too: the vhdx driver looks for it, not for the option */
    return bdrv_open(filename, NULL, opts,
                     BDRV_O_NO_BACKING | (writable ? BDRV_O_RDWR : 0), errp);
}

char *checkpoint_backing_filename(BlockDriverState *bs, Error **errp)
{
    char *full;

    if (!bs->backing_file[0]) {
        return NULL;
    }
    bdrv_graph_rdlock_main_loop();
    full = bdrv_get_full_backing_filename(bs, errp);
    bdrv_graph_rdunlock_main_loop();
    return full;
}

BlockDriverState *checkpoint_find_image(const char *filename)
{
    BlockDriverState *bs = NULL;

    while ((bs = bdrv_next_all_states(bs))) {
        /*
         * A node still being opened (its driver polls the main loop
         * while it reads the image) has no request alignment yet
         */
        if (bs->drv && bs->drv->is_format && bs->bl.request_alignment &&
            checkpoint_same_file(checkpoint_image_filename(bs), filename)) {
            return bs;
        }
    }
    return NULL;
}

BlockDriverState *checkpoint_find_vm_image(const char *filename)
{
    BlockBackend *blk = NULL;
    BlockDriverState *bs;

    GLOBAL_STATE_CODE();
    GRAPH_RDLOCK_GUARD_MAINLOOP();
    while ((blk = checkpoint_next_disk(blk))) {
        for (bs = blk_bs(blk); bs; bs = bdrv_cow_bs(bs)) {
            bs = bdrv_skip_filters(bs);
            if (bs && bs->drv && bs->drv->is_format &&
                checkpoint_same_file(checkpoint_image_filename(bs),
                                     filename)) {
                return bs;
            }
            if (!bs) {
                break;
            }
        }
    }
    return NULL;
}

BlockDriverState *checkpoint_image_node(const char *filename,
                                        const char *fmt, Error **errp)
{
    BlockDriverState *bs = checkpoint_find_vm_image(filename);

    if (bs) {
        bdrv_ref(bs);
        return bs;
    }
    return checkpoint_open_alone(filename, fmt, false, errp);
}

static CheckpointDiskInfo *disk_info(CheckpointManifestDisk *d)
{
    CheckpointDiskInfo *info = g_new0(CheckpointDiskInfo, 1);
    BlockDriverState *bs;
    struct stat st;

    info->device = g_strdup(d->device);
    info->filename = g_strdup(d->filename);
    info->format = g_strdup(d->format);
    if (stat(d->filename, &st) == 0) {
        info->has_disk_size = true;
        info->disk_size = (int64_t)st.st_blocks * 512;
    }
    bs = checkpoint_find_image(d->filename);
    if (bs) {
        int64_t len;

        GRAPH_RDLOCK_GUARD_MAINLOOP();
        len = bdrv_getlength(bs);
        if (len >= 0) {
            info->has_virtual_size = true;
            info->virtual_size = len;
        }
    }
    return info;
}

CheckpointInfoList *qmp_query_checkpoints(Error **errp)
{
    CheckpointInfoList *head = NULL, **tail = &head;
    /* A copy: reading an image's size polls, where a merge may end */
    g_autoptr(CheckpointManifest) m = checkpoint_store_manifest_copy();
    CheckpointManifestEntryList *l;

    for (l = m ? m->checkpoints : NULL; l; l = l->next) {
        CheckpointManifestEntry *e = l->value;
        CheckpointInfo *info = g_new0(CheckpointInfo, 1);
        CheckpointDiskInfoList **dtail = &info->disks;
        CheckpointManifestDiskList *d;

        info->id = g_strdup(e->id);
        info->name = g_strdup(e->name);
        info->type = e->type;
        info->consistency = checkpoint_consistency(e);
        info->fallback_reason = g_strdup(e->fallback_reason);
        info->state = e->state;
        info->parent = g_strdup(e->parent);
        info->created = e->created;
        info->current = !g_strcmp0(m->current, e->id);
        for (d = e->disks; d; d = d->next) {
            QAPI_LIST_APPEND(dtail, disk_info(d->value));
        }
        if (e->state_file) {
            g_autofree char *path = g_build_filename(checkpoint_store_dir(),
                                                     e->state_file, NULL);
            struct stat st;

            if (stat(path, &st) == 0) {
                info->has_state_file_size = true;
                info->state_file_size = (int64_t)st.st_blocks * 512;
            }
        }
        QAPI_LIST_APPEND(tail, info);
    }
    return head;
}

void qmp_checkpoint_rename(const char *checkpoint, const char *name,
                           Error **errp)
{
    CheckpointManifestEntry *e;

    if (!checkpoint_name_valid(name, errp)) {
        return;
    }
    e = checkpoint_store_find(checkpoint, errp);
    if (e) {
        checkpoint_store_rename(e->id, name, errp);
    }
}

char *checkpoint_child_name(const char *parent, const char *id,
                            const char *ext)
{
    g_autofree char *dir = g_path_get_dirname(parent);
    g_autofree char *base = g_path_get_basename(parent);
    char *dot = strrchr(base, '.');
    g_autofree char *name = NULL;
    size_t len;
    QemuUUID uuid;

    if (dot && dot != base) {
        *dot = '\0';
    }
    /* A child of a child is named after the disk: drop "_<old id>" */
    len = strlen(base);
    if (len > UUID_STR_LEN && base[len - UUID_STR_LEN] == '_' &&
        qemu_uuid_parse(base + len - UUID_STR_LEN + 1, &uuid) == 0) {
        base[len - UUID_STR_LEN] = '\0';
    }
    name = g_strdup_printf("%s_%s.%s", base, id, ext);
    return g_build_filename(dir, name, NULL);
}

char *checkpoint_plan_child_name(GHashTable *taken, const char *parent,
                                 const char *id, const char *ext)
{
    char *name = checkpoint_child_name(parent, id, ext);

    while (g_hash_table_contains(taken, name)) {
        g_autofree char *own = NULL;
        QemuUUID uuid;

        qemu_uuid_generate(&uuid);
        own = qemu_uuid_unparse_strdup(&uuid);
        g_free(name);
        name = checkpoint_child_name(parent, own, ext);
    }
    g_hash_table_add(taken, g_strdup(name));
    return name;
}

BlockDriverState *checkpoint_make_child(const char *child,
                                        const char *parent, const char *fmt,
                                        int64_t size,
                                        BlockDriverState *backing,
                                        BlockDriverState *like, bool *made,
                                        Error **errp)
{
    Error *local_err = NULL;
    BlockDriverState *bs;
    QDict *opts;
    int flags;

    /* The child names its parent by file name (a node's may be json:) */
    bdrv_img_create(child, fmt, parent, fmt, NULL, size, BDRV_O_NO_BACKING,
                    true, &local_err);
    if (local_err) {
        error_propagate(errp, local_err);
        return NULL;
    }
    *made = true;
    /* Opened like the image it goes on top of or replaces (cache, AIO) */
    flags = like->open_flags & ~(BDRV_O_SNAPSHOT | BDRV_O_COPY_ON_READ |
                                 BDRV_O_NO_BACKING | BDRV_O_PROTOCOL);
    opts = qdict_new();
    qdict_put_str(opts, "driver", fmt);
    if (backing) {
        qdict_put_str(opts, "backing", bdrv_get_node_name(backing));
    } else {
        qdict_put_null(opts, "backing");
    }
    bs = bdrv_open(child, NULL, opts, flags | BDRV_O_RDWR, errp);
    /* On disk before the manifest names it (the open may write too) */
    if (bs && !checkpoint_sync_new_file(child, errp)) {
        bdrv_unref(bs);
        return NULL;
    }
    return bs;
}

/* The step the last operation left for later, and its data */
static struct {
    CheckpointSettleFn *fn;
    void *opaque;
} pending_step;

void checkpoint_defer(CheckpointSettleFn *fn, void *opaque)
{
    checkpoint_settle();
    pending_step.fn = fn;
    pending_step.opaque = opaque;
}

void checkpoint_settle(void)
{
    CheckpointSettleFn *fn = pending_step.fn;

    if (fn) {
        pending_step.fn = NULL;
        fn(g_steal_pointer(&pending_step.opaque));
    }
}

void checkpoint_crash_point(const char *point)
{
    const char *want = getenv("QEMU_CHECKPOINT_CRASH_AT");

    if (want && !strcmp(want, point)) {
        error_report("checkpoint: killed at '%s' (QEMU_CHECKPOINT_CRASH_AT)",
                     point);
        raise(SIGKILL);
    }
}

/* Run @fn(@opaque) in the main loop, outside of any coroutine */
typedef struct MainCall {
    void (*fn)(void *opaque);
    void *opaque;
    Coroutine *co;
} MainCall;

static void main_call_bh(void *opaque)
{
    MainCall *c = opaque;

    c->fn(c->opaque);
    aio_co_wake(c->co);
}

void coroutine_fn checkpoint_main_call(void (*fn)(void *), void *opaque)
{
    MainCall c = { .fn = fn, .opaque = opaque,
                   .co = qemu_coroutine_self() };

    aio_bh_schedule_oneshot(qemu_get_aio_context(), main_call_bh, &c);
    qemu_coroutine_yield();
}
