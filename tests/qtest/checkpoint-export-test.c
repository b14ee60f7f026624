/*
 * QTest for checkpoint-export, the VM's configuration in the store,
 * stores opened offline and the block names checkpoints leave
 *
 * Copyright (c) 2026 The Hyper-V checkpoints project
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 *
 * No guest code runs: the disks the VM has open are written and read
 * with qemu-io over NBD, RAM through qtest; images QEMU does not write
 * (exported, frozen) are read with qemu-io and qemu-img directly.  What
 * must happen while an export runs is done while its job is paused
 * (job-pause), so that it does not depend on how fast the copy is.
 */

#include "qemu/osdep.h"
#include "qemu/units.h"
#include "libqtest.h"
#include "hvcp-qtest-util.h"
#include "qapi/error.h"
#include "qobject/qdict.h"
#include "qobject/qlist.h"
#include "qobject/qjson.h"
#include "qobject/qstring.h"

#define PATTERN_RAM 0x200000
#define PATTERN_LEN 4096
/* The data of the disk of the slow exports */
#define BIG_MB 128

static char *tmpdir;

static char *tmp_path(const char *name)
{
    return g_strdup_printf("%s/%s", tmpdir, name);
}

static void assert_gone(const char *path)
{
    if (g_file_test(path, G_FILE_TEST_EXISTS)) {
        g_test_message("'%s' should not exist", path);
        g_assert_not_reached();
    }
}

static char *read_file(const char *path)
{
    char *text;

    if (!g_file_get_contents(path, &text, NULL, NULL)) {
        g_test_message("cannot read '%s'", path);
        g_assert_not_reached();
    }
    return text;
}

static void assert_same_bytes(const char *a, const char *b)
{
    g_autofree char *ta = NULL, *tb = NULL;
    gsize la, lb;

    g_assert(g_file_get_contents(a, &ta, &la, NULL));
    g_assert(g_file_get_contents(b, &tb, &lb, NULL));
    g_assert_cmpuint(la, ==, lb);
    g_assert(memcmp(ta, tb, la) == 0);
}

static QDict *load_json(const char *path)
{
    g_autofree char *text = read_file(path);
    QDict *d = qobject_to(QDict, qobject_from_json(text, &error_abort));

    g_assert(d);
    return d;
}

static char *real_path(const char *path)
{
    char *r = realpath(path, NULL);

    g_assert(r);
    return r;
}

static gint by_name(gconstpointer a, gconstpointer b)
{
    return strcmp(*(const char * const *)a, *(const char * const *)b);
}

/* The names in folder @dir, sorted, with the content of its files */
static void snapshot_dir(GString *s, const char *dir)
{
    g_autoptr(GDir) d = g_dir_open(dir, 0, NULL);
    g_autoptr(GPtrArray) names = g_ptr_array_new_with_free_func(g_free);
    const char *name;
    int i;

    g_assert(d);
    while ((name = g_dir_read_name(d))) {
        g_ptr_array_add(names, g_strdup(name));
    }
    g_ptr_array_sort(names, by_name);
    for (i = 0; i < names->len; i++) {
        g_autofree char *path = g_build_filename(dir, names->pdata[i], NULL);

        if (g_file_test(path, G_FILE_TEST_IS_DIR)) {
            g_string_append_printf(s, "%s/ {\n", path);
            snapshot_dir(s, path);
            g_string_append(s, "}\n");
        } else {
            g_autofree char *text = read_file(path);

            g_string_append_printf(s, "%s: %s\n", path, text);
        }
    }
}

static char *dir_snapshot(const char *dir)
{
    GString *s = g_string_new("");

    snapshot_dir(s, dir);
    return g_string_free(s, false);
}

static int count_entries(const char *dir)
{
    g_autoptr(GDir) d = g_dir_open(dir, 0, NULL);
    int n = 0;

    g_assert(d);
    while (g_dir_read_name(d)) {
        n++;
    }
    return n;
}

/*
 * Run a program of the build (qemu-img, qemu-io) with @args; its exit
 * code, its standard output in *@out when @out is not NULL
 */
static int run_tool(const char *tool, const char *args, char **out)
{
    g_autofree char *dir = g_path_get_dirname(g_getenv("QTEST_QEMU_IMG"));
    g_autofree char *cmd = g_strdup_printf("%s/%s %s", dir, tool, args);
    g_autofree char *o = NULL, *e = NULL;
    int status;

    g_assert(g_spawn_command_line_sync(cmd, &o, &e, &status, NULL));
    if (!WIFEXITED(status) || WEXITSTATUS(status)) {
        g_test_message("'%s': %s%s", cmd, o, e);
    }
    if (out) {
        *out = g_steal_pointer(&o);
    }
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

/* qemu-img info of @file (shared: QEMU may have it open) */
static QDict *image_info(const char *file)
{
    g_autofree char *args = g_strdup_printf("info -U --output=json %s",
                                            file);
    g_autofree char *out = NULL;
    QDict *info;

    g_assert_cmpint(run_tool("qemu-img", args, &out), ==, 0);
    info = qobject_to(QDict, qobject_from_json(out, &error_abort));
    g_assert(info);
    return info;
}

/* Image @file reads 64 KiB of @p at @off (qemu-io, read only, shared) */
static void assert_image_pattern(const char *file, uint8_t p,
                                 const char *off)
{
    g_autofree char *args = g_strdup_printf(
        "-r -U -c 'read -P 0x%02x %s 64k' %s", p, off, file);
    g_autofree char *out = NULL;

    g_assert_cmpint(run_tool("qemu-io", args, &out), ==, 0);
    if (!strstr(out, "read 65536/65536") ||
        strstr(out, "verification failed")) {
        g_test_message("%s at %s, pattern 0x%02x: %s", file, off, p, out);
        g_assert_not_reached();
    }
}

/* Image @file of @size bytes has no data of its own */
static void assert_unallocated(const char *file, int64_t size)
{
    g_autofree char *args = g_strdup_printf(
        "-r -U -c 'alloc 0 %" PRId64 "' %s", size, file);
    g_autofree char *want = g_strdup_printf("0/%" PRId64 " bytes allocated",
                                            size);
    g_autofree char *out = NULL;

    g_assert_cmpint(run_tool("qemu-io", args, &out), ==, 0);
    assert_contains(out, want);
}

/* The guest's view of both images is the same (qemu-img compare) */
static void assert_same_content(const char *a, const char *b)
{
    g_autofree char *args = g_strdup_printf("compare -U %s %s", a, b);

    g_assert_cmpint(run_tool("qemu-img", args, NULL), ==, 0);
}

static QTestState *vm_start(const char *extra)
{
    return qtest_initf("-M microvm -display none -nodefaults %s", extra);
}

/*
 * A VM on new disks @qcow2 (d0, 16 MiB) and @vhdx (d1, @vhdx_mb MiB)
 * in the test folder, standard checkpoints in store @dir
 */
static QTestState *vm_with_new_disks(const char *dir, const char *qcow2,
                                     const char *vhdx, unsigned vhdx_mb)
{
    g_autofree char *d0 = tmp_path(qcow2);
    g_autofree char *d1 = tmp_path(vhdx);
    g_autofree char *disks = NULL, *args = NULL;

    g_assert(mkimg(d0, "qcow2", 16));
    g_assert(mkimg(d1, "vhdx", vhdx_mb));
    disks = disk_args(d0, d1);
    args = g_strdup_printf("%s -checkpoints dir=%s,type=standard", disks,
                           dir);
    return vm_start(args);
}

/* The node the guest device of -drive @device uses now */
static char *disk_node(QTestState *qts, const char *device)
{
    QDict *rsp = qtest_qmp(qts, "{'execute': 'query-block'}");
    const QListEntry *e;
    char *node = NULL;

    QLIST_FOREACH_ENTRY(qdict_get_qlist(rsp, "return"), e) {
        QDict *b = qobject_to(QDict, qlist_entry_obj(e));

        if (!strcmp(qdict_get_str(b, "device"), device)) {
            node = g_strdup(qdict_get_str(qdict_get_qdict(b, "inserted"),
                                          "node-name"));
        }
    }
    qobject_unref(rsp);
    g_assert(node);
    return node;
}

/*
 * Run qemu-io command @io on what the guest sees as @device: the node
 * is exported over NBD and the qemu-io program does the I/O (HMP's
 * qemu-io prints on QEMU's stdout, which would mix with the TAP
 * output).  Returns what qemu-io printed.
 */
static char *disk_io(QTestState *qts, const char *device, bool write,
                     const char *io)
{
    g_autofree char *node = disk_node(qts, device);
    g_autofree char *sock = g_strdup_printf("%s/nbd.sock", tmpdir);
    g_autofree char *args = NULL;
    char *out = NULL;

    /* Started already, or now */
    qobject_unref(qtest_qmp(qts, "{'execute': 'nbd-server-start',"
                            " 'arguments': {'addr': {'type': 'unix',"
                            " 'data': {'path': %s}}}}", sock));
    qtest_qmp_assert_success(qts,
        "{'execute': 'block-export-add', 'arguments':"
        " {'type': 'nbd', 'id': 'check', 'node-name': %s,"
        "  'name': 'check', 'writable': %i}}", node, write);
    args = g_strdup_printf("%s -f raw nbd+unix:///check?socket=%s -c '%s'",
                           write ? "" : "-r", sock, io);
    g_assert_cmpint(run_tool("qemu-io", args, &out), ==, 0);
    qtest_qmp_assert_success(qts,
        "{'execute': 'block-export-del', 'arguments': {'id': 'check'}}");
    qtest_qmp_eventwait(qts, "BLOCK_EXPORT_DELETED");
    return out;
}

/* 64 KiB of @p at @off in both disks and in RAM */
static void write_pattern(QTestState *qts, uint8_t p, const char *off)
{
    static const char *const devices[] = { "d0", "d1" };
    int i;

    for (i = 0; i < ARRAY_SIZE(devices); i++) {
        g_autofree char *io = g_strdup_printf("write -P 0x%02x %s 64k", p,
                                              off);
        g_autofree char *out = disk_io(qts, devices[i], true, io);

        assert_contains(out, "wrote 65536/65536");
    }
    qtest_memset(qts, PATTERN_RAM, p, PATTERN_LEN);
}

static void assert_disk_pattern(QTestState *qts, const char *device,
                                uint8_t p, const char *off)
{
    g_autofree char *io = g_strdup_printf("read -P 0x%02x %s 64k", p, off);
    g_autofree char *out = disk_io(qts, device, false, io);

    if (!strstr(out, "read 65536/65536") ||
        strstr(out, "verification failed")) {
        g_test_message("disk %s at %s, pattern 0x%02x: %s", device, off, p,
                       out);
        g_assert_not_reached();
    }
}

static void assert_ram_pattern(QTestState *qts, uint8_t p)
{
    uint8_t buf[PATTERN_LEN];
    int i;

    qtest_memread(qts, PATTERN_RAM, buf, sizeof(buf));
    for (i = 0; i < sizeof(buf); i++) {
        g_assert_cmphex(buf[i], ==, p);
    }
}

static void assert_running(QTestState *qts)
{
    QDict *rsp = qtest_qmp_assert_success_ref(qts,
                     "{'execute': 'query-status'}");

    g_assert(qdict_get_bool(rsp, "running"));
    qobject_unref(rsp);
}

static QDict *find_disk(QList *list, const char *device)
{
    const QListEntry *e;

    QLIST_FOREACH_ENTRY(list, e) {
        QDict *d = qobject_to(QDict, qlist_entry_obj(e));

        if (!strcmp(qdict_get_str(d, "device"), device)) {
            return d;
        }
    }
    g_test_message("no disk '%s'", device);
    g_assert_not_reached();
}

/* The frozen image of @device in checkpoint @id, as queried */
static char *frozen_image(QTestState *qts, const char *id,
                          const char *device)
{
    QDict *rsp = qtest_qmp(qts, "{'execute': 'query-checkpoints'}");
    QDict *c = find_checkpoint(qdict_get_qlist(rsp, "return"), id);
    char *file;

    g_assert(c);
    file = g_strdup(qdict_get_str(find_disk(qdict_get_qlist(c, "disks"),
                                            device), "filename"));
    qobject_unref(rsp);
    return file;
}

/* The manifest's active image of @device */
static char *active_image(const char *dir, const char *device)
{
    g_autofree char *path = g_build_filename(dir, "manifest.json", NULL);
    QDict *m = load_json(path);
    char *file;

    file = g_strdup(qdict_get_str(find_disk(qdict_get_qlist(m, "active"),
                                            device), "filename"));
    qobject_unref(m);
    return file;
}

/* Job @id as query-jobs shows it (a new reference), NULL when none */
static QDict *query_job(QTestState *qts, const char *id)
{
    QDict *rsp = qtest_qmp(qts, "{'execute': 'query-jobs'}");
    const QListEntry *e;
    QDict *job = NULL;

    QLIST_FOREACH_ENTRY(qdict_get_qlist(rsp, "return"), e) {
        QDict *j = qobject_to(QDict, qlist_entry_obj(e));

        if (!strcmp(qdict_get_str(j, "id"), id)) {
            job = j;
            qobject_ref(job);
        }
    }
    qobject_unref(rsp);
    return job;
}

/* Start exporting @key into @dir (@format, @job may be NULL); job id */
static char *export_start(QTestState *qts, const char *key, const char *dir,
                          const char *format, const char *job)
{
    QDict *args = qdict_new(), *rsp;
    char *id;

    qdict_put_str(args, "checkpoint", key);
    qdict_put_str(args, "dir", dir);
    if (format) {
        qdict_put_str(args, "format", format);
    }
    if (job) {
        qdict_put_str(args, "job-id", job);
    }
    rsp = qtest_qmp_assert_success_ref(qts,
              "{'execute': 'checkpoint-export', 'arguments': %p}", args);
    id = g_strdup(qdict_get_str(rsp, "job-id"));
    qobject_unref(rsp);
    return id;
}

/* The export job @job of checkpoint @id into @dir succeeds */
static void export_wait(QTestState *qts, const char *job, const char *id,
                        const char *dir)
{
    g_autofree char *real = real_path(dir);
    QDict *ev = qtest_qmp_eventwait_ref(qts, "CHECKPOINT_EXPORTED");
    QDict *data = qdict_get_qdict(ev, "data");

    g_assert_cmpstr(qdict_get_str(data, "id"), ==, id);
    g_assert_cmpstr(qdict_get_str(data, "dir"), ==, real);
    qobject_unref(ev);
    wait_job_concluded(qts, job);
}

/* checkpoint-export with arguments @args (JSON) fails: its error */
static char *export_error(QTestState *qts, const char *args)
{
    return qmp_error(qts, "{'execute': 'checkpoint-export', 'arguments': %p}",
                     qobject_from_json(args, &error_abort));
}

/* == 1. An export's folder and images == */

/*
 * The exported images of @device (frozen image @frozen): flattened,
 * with an empty child
 */
static void assert_export_disk(const char *dir, QDict *manifest,
                               const char *device, const char *format,
                               const char *frozen)
{
    QDict *e = qobject_to(QDict, qlist_peek(qdict_get_qlist(manifest,
                                                            "checkpoints")));
    QDict *d = find_disk(qdict_get_qlist(e, "disks"), device);
    QDict *a = find_disk(qdict_get_qlist(manifest, "active"), device);
    g_autofree char *name = g_strdup_printf("%s.%s", device, format);
    g_autofree char *prefix = g_strdup_printf("%s_", device);
    g_autofree char *image = g_build_filename(dir, name, NULL);
    g_autofree char *child = NULL, *full = NULL, *real = NULL;
    const char *cname = qdict_get_str(a, "filename");
    QDict *info = image_info(frozen);
    int64_t size = qdict_get_int(info, "virtual-size");

    qobject_unref(info);
    /* Named relative to the folder */
    g_assert_cmpstr(qdict_get_str(d, "filename"), ==, name);
    g_assert_cmpstr(qdict_get_str(d, "format"), ==, format);
    g_assert_cmpint(qdict_haskey(d, "identity"), ==,
                    !strcmp(format, "vhdx"));
    g_assert(g_str_has_prefix(cname, prefix) && !strchr(cname, '/'));
    g_assert(g_str_has_suffix(cname, strcmp(format, "vhdx") ? ".qcow2"
                                                            : ".avhdx"));
    g_assert_cmpstr(qdict_get_str(a, "format"), ==, format);

    info = image_info(image);
    g_assert_cmpstr(qdict_get_str(info, "format"), ==, format);
    g_assert_cmpint(qdict_get_int(info, "virtual-size"), ==, size);
    g_assert(!qdict_haskey(info, "backing-filename"));
    qobject_unref(info);

    /* The active child: empty, its parent named relative to it */
    child = g_build_filename(dir, cname, NULL);
    info = image_info(child);
    g_assert_cmpstr(qdict_get_str(info, "format"), ==, format);
    g_assert_cmpstr(qdict_get_str(info, "backing-filename"), ==, name);
    full = real_path(qdict_get_str(info, "full-backing-filename"));
    real = real_path(image);
    g_assert_cmpstr(full, ==, real);
    qobject_unref(info);
    assert_unallocated(child, size);
}

/* The folder @dir of an export of checkpoint @id (store @store) */
static void assert_export_folder(const char *dir, const char *store,
                                 const char *id, const char *fmt0,
                                 const char *fmt1)
{
    g_autofree char *path = g_build_filename(dir, "manifest.json", NULL);
    g_autofree char *state = g_strdup_printf("%s/state", id);
    g_autofree char *cfg = g_strdup_printf("%s/config.json", id);
    g_autofree char *top = g_build_filename(dir, "config.json", NULL);
    g_autofree char *own = g_build_filename(dir, cfg, NULL);
    g_autofree char *st = g_build_filename(dir, state, NULL);
    g_autofree char *st_src = g_build_filename(store, state, NULL);
    g_autofree char *sub = g_build_filename(dir, id, NULL);
    g_autofree char *src = g_build_filename(store, "manifest.json", NULL);
    QDict *m = load_json(path), *e, *c, *exported;
    QList *list = qdict_get_qlist(m, "checkpoints");

    g_assert_cmpint(qdict_get_int(m, "version"), ==, 1);
    g_assert_cmpstr(qdict_get_str(m, "current"), ==, id);
    g_assert(!qdict_haskey(m, "operation") && !qdict_haskey(m, "merge"));
    g_assert_cmpint(qlist_size(list), ==, 1);
    e = qobject_to(QDict, qlist_peek(list));
    g_assert_cmpstr(qdict_get_str(e, "id"), ==, id);
    g_assert_cmpstr(qdict_get_str(e, "state"), ==, "ready");
    g_assert_cmpstr(qdict_get_str(e, "type"), ==, "standard");
    g_assert(!qdict_haskey(e, "parent"));
    g_assert_cmpstr(qdict_get_str(e, "state-file"), ==, state);
    g_assert_cmpstr(qdict_get_str(e, "config-file"), ==, cfg);
    g_assert_cmpint(qlist_size(qdict_get_qlist(e, "disks")), ==, 2);
    g_assert_cmpint(qlist_size(qdict_get_qlist(m, "active")), ==, 2);
    exported = m;
    m = load_json(src);
    e = find_checkpoint(qdict_get_qlist(m, "checkpoints"), id);
    assert_export_disk(dir, exported, "d0", fmt0, qdict_get_str(
        find_disk(qdict_get_qlist(e, "disks"), "d0"), "filename"));
    assert_export_disk(dir, exported, "d1", fmt1, qdict_get_str(
        find_disk(qdict_get_qlist(e, "disks"), "d1"), "filename"));
    qobject_unref(m);
    qobject_unref(exported);

    /* The configuration, asking to apply the checkpoint at start */
    c = load_json(top);
    g_assert_cmpstr(qdict_get_str(c, "resume-checkpoint"), ==, id);
    g_assert(!qlist_empty(qdict_get_qlist(c, "argv")));
    qobject_unref(c);
    assert_same_bytes(top, own);
    /* The state file, a copy of the checkpoint's */
    g_assert(g_file_test(st, G_FILE_TEST_IS_REGULAR));
    assert_same_bytes(st, st_src);
    /* Nothing else: 2 images, 2 children, 2 files, 1 folder */
    g_assert_cmpint(count_entries(dir), ==, 7);
    g_assert_cmpint(count_entries(sub), ==, 2);
}

/*
 * The content of checkpoint B of test_export in the exported images
 * @img0 and @img1: 0xaa at 0, 0xbb at 1M, not what came later at 2M;
 * the same as the frozen chains of B
 */
static void assert_export_content(QTestState *qts, const char *b,
                                  const char *img0, const char *img1)
{
    g_autofree char *f0 = frozen_image(qts, b, "d0");
    g_autofree char *f1 = frozen_image(qts, b, "d1");
    const char *imgs[] = { img0, img1 };
    QDict *info;
    int i;

    /* B's disks are children of A's: the export flattens the chains */
    for (i = 0; i < ARRAY_SIZE(imgs); i++) {
        info = image_info(i ? f1 : f0);
        g_assert(qdict_haskey(info, "backing-filename"));
        qobject_unref(info);
    }
    assert_same_content(img0, f0);
    assert_same_content(img1, f1);
    for (i = 0; i < ARRAY_SIZE(imgs); i++) {
        assert_image_pattern(imgs[i], 0xaa, "0");
        assert_image_pattern(imgs[i], 0xbb, "1M");
        assert_image_pattern(imgs[i], 0, "2M");
    }
}

/*
 * The export's store @orig moved to @dir: a new VM on it goes on from
 * checkpoint @id
 */
static void start_export(const char *orig, const char *dir, const char *id)
{
    g_autofree char *a0 = NULL, *a1 = NULL, *disks = NULL, *args = NULL;
    g_autofree char *img0 = g_build_filename(dir, "d0.qcow2", NULL);
    g_autofree char *f0 = NULL, *real = NULL, *n0 = NULL, *n1 = NULL;
    QTestState *qts;
    QDict *rsp;

    g_assert(rename(orig, dir) == 0);
    /* Relative in the file; the loader makes them absolute */
    n0 = active_image(dir, "d0");
    n1 = active_image(dir, "d1");
    a0 = g_build_filename(dir, n0, NULL);
    a1 = g_build_filename(dir, n1, NULL);
    disks = disk_args(a0, a1);
    args = g_strdup_printf("%s -checkpoints dir=%s", disks, dir);
    qts = vm_start(args);
    f0 = frozen_image(qts, id, "d0");
    real = real_path(img0);
    g_assert_cmpstr(f0, ==, real);
    g_free(current_of(qts));

    qtest_qmp_assert_success(qts, "{'execute': 'checkpoint-apply',"
                             " 'arguments': {'checkpoint': %s}}", id);
    wait_event_of(qts, "CHECKPOINT_APPLIED", id);
    assert_running(qts);
    assert_ram_pattern(qts, 0xbb);
    assert_disk_pattern(qts, "d0", 0xaa, "0");
    assert_disk_pattern(qts, "d1", 0xbb, "1M");
    assert_disk_pattern(qts, "d1", 0, "2M");
    rsp = qtest_qmp(qts, "{'execute': 'query-checkpoints'}");
    g_assert_cmpint(qlist_size(qdict_get_qlist(rsp, "return")), ==, 1);
    qobject_unref(rsp);
    qtest_quit(qts);
}

static void test_export(void)
{
    g_autofree char *store = tmp_path("export-store");
    g_autofree char *exp = tmp_path("export-b");
    g_autofree char *expq = tmp_path("export-b-qcow2");
    g_autofree char *expv = tmp_path("export-b-vhdx");
    g_autofree char *moved = tmp_path("export-b-moved");
    g_autofree char *a = NULL, *b = NULL, *job = NULL, *want_job = NULL;
    g_autofree char *i0 = NULL, *i1 = NULL, *q0 = NULL, *q1 = NULL;
    g_autofree char *v0 = NULL, *v1 = NULL;
    QTestState *qts = vm_with_new_disks(store, "e0.qcow2", "e1.vhdx", 16);

    write_pattern(qts, 0xaa, "0");
    a = create_and_wait(qts, "A");
    write_pattern(qts, 0xbb, "1M");
    b = create_and_wait(qts, "B");
    write_pattern(qts, 0xcc, "0");
    write_pattern(qts, 0xcc, "2M");

    /* Each disk's own format; the default job id */
    job = export_start(qts, "B", exp, NULL, NULL);
    want_job = g_strdup_printf("checkpoint-export-%s", b);
    g_assert_cmpstr(job, ==, want_job);
    export_wait(qts, job, b, exp);
    assert_running(qts);
    assert_export_folder(exp, store, b, "qcow2", "vhdx");
    i0 = g_build_filename(exp, "d0.qcow2", NULL);
    i1 = g_build_filename(exp, "d1.vhdx", NULL);
    assert_export_content(qts, b, i0, i1);

    /* qcow2 for both; the same content */
    g_free(job);
    job = export_start(qts, b, expq, "qcow2", "export-q");
    g_assert_cmpstr(job, ==, "export-q");
    export_wait(qts, job, b, expq);
    assert_export_folder(expq, store, b, "qcow2", "qcow2");
    q0 = g_build_filename(expq, "d0.qcow2", NULL);
    q1 = g_build_filename(expq, "d1.qcow2", NULL);
    assert_export_content(qts, b, q0, q1);
    assert_same_content(i1, q1);

    /* vhdx for both */
    g_free(job);
    job = export_start(qts, b, expv, "vhdx", "export-v");
    export_wait(qts, job, b, expv);
    assert_export_folder(expv, store, b, "vhdx", "vhdx");
    v0 = g_build_filename(expv, "d0.vhdx", NULL);
    v1 = g_build_filename(expv, "d1.vhdx", NULL);
    assert_export_content(qts, b, v0, v1);
    assert_same_content(i0, v0);

    /* The VM went on with what it wrote after B */
    assert_disk_pattern(qts, "d0", 0xcc, "0");
    assert_ram_pattern(qts, 0xcc);
    qtest_quit(qts);

    start_export(exp, moved, b);
}

/* == 2. Refusals: nothing made, nothing changed == */

static void assert_refusals_leave_nothing(QTestState *qts)
{
    g_autofree char *fresh = tmp_path("refused-new/sub");
    g_autofree char *parent = tmp_path("refused-new");
    g_autofree char *full = tmp_path("refused-full");
    g_autofree char *file = tmp_path("refused-file");
    g_autofree char *inner = tmp_path("refused-full/sub/inner");
    g_autofree char *keep = tmp_path("refused-full/keep");
    g_autofree char *under = g_strdup_printf("%s/sub", file);
    g_autofree char *before = NULL, *after = NULL, *err = NULL, *js = NULL;

    js = g_strdup_printf("{'checkpoint': 'nosuch', 'dir': '%s'}", fresh);
    err = export_error(qts, js);
    assert_contains(err, "no checkpoint with id or name 'nosuch'");
    g_free(err);
    g_free(js);
    assert_gone(parent);

    g_assert(g_mkdir_with_parents(tmp_path("refused-full/sub"), 0700) == 0);
    write_file(keep, "keep me");
    write_file(inner, "and me");
    before = dir_snapshot(full);
    js = g_strdup_printf("{'checkpoint': 'A', 'dir': '%s'}", full);
    err = export_error(qts, js);
    assert_contains(err, "is not empty");
    g_free(err);
    g_free(js);
    after = dir_snapshot(full);
    g_assert_cmpstr(after, ==, before);

    write_file(file, "a file");
    js = g_strdup_printf("{'checkpoint': 'A', 'dir': '%s'}", file);
    err = export_error(qts, js);
    assert_contains(err, file);
    g_free(err);
    g_free(js);
    js = g_strdup_printf("{'checkpoint': 'A', 'dir': '%s'}", under);
    err = export_error(qts, js);
    assert_contains(err, under);
    g_free(err);
    g_free(js);
    g_free(after);
    after = read_file(file);
    g_assert_cmpstr(after, ==, "a file");

    js = g_strdup_printf("{'checkpoint': 'A', 'dir': '%s',"
                         " 'job-id': '1 bad'}", parent);
    err = export_error(qts, js);
    assert_contains(err, "Invalid job ID '1 bad'");
    assert_gone(parent);
    g_free(err);
    err = export_error(qts, "{'checkpoint': 'A', 'dir': ''}");
    assert_contains(err, "empty");
}

static void test_export_refused(void)
{
    g_autofree char *store = tmp_path("refused-store");
    g_autofree char *manifest = g_build_filename(store, "manifest.json",
                                                 NULL);
    g_autofree char *before = NULL, *after = NULL, *err = NULL;
    g_autofree char *dir = tmp_path("refused-nostore");
    g_autofree char *a = NULL;
    QTestState *qts = vm_start("-m 64M");
    QDict *rsp;
    int files;

    err = qmp_error(qts, "{'execute': 'checkpoint-export', 'arguments':"
                    " {'checkpoint': 'A', 'dir': %s}}", dir);
    assert_contains(err, "No checkpoint store is set");
    assert_gone(dir);
    qtest_quit(qts);

    qts = vm_with_new_disks(store, "r0.qcow2", "r1.vhdx", 16);
    a = create_and_wait(qts, "A");
    before = read_file(manifest);
    files = count_entries(tmpdir);
    assert_refusals_leave_nothing(qts);
    after = read_file(manifest);
    g_assert_cmpstr(after, ==, before);
    /* refused-full and refused-file, made by the test */
    g_assert_cmpint(count_entries(tmpdir), ==, files + 2);
    rsp = qtest_qmp(qts, "{'execute': 'query-jobs'}");
    g_assert(qlist_empty(qdict_get_qlist(rsp, "return")));
    qobject_unref(rsp);
    qtest_quit(qts);
}

/*
 * A standard checkpoint whose memory is still being saved: 256 MiB of
 * RAM to write.  The export and query-checkpoints are sent right after
 * the create; when the query still shows "creating", the export came
 * while it was, and must have been refused.
 */
static void test_export_creating(void)
{
    g_autofree char *store = tmp_path("creating-store");
    g_autofree char *dir = tmp_path("creating-export");
    g_autofree char *id = NULL;
    QTestState *qts = qtest_initf("-M microvm -display none -nodefaults"
                                  " -m 512M -checkpoints dir=%s,"
                                  "type=standard", store);
    QDict *create, *export, *query, *c, *ev;
    bool creating;

    qtest_memset(qts, 16 * MiB, 0x5a, 256 * MiB);
    qtest_qmp_send(qts, "{'execute': 'checkpoint-create',"
                   " 'arguments': {'name': 'C'}}");
    qtest_qmp_send(qts, "{'execute': 'checkpoint-export',"
                   " 'arguments': {'checkpoint': 'C', 'dir': %s}}", dir);
    qtest_qmp_send(qts, "{'execute': 'query-checkpoints'}");
    create = qtest_qmp_receive(qts);
    export = qtest_qmp_receive(qts);
    query = qtest_qmp_receive(qts);
    id = g_strdup(qdict_get_str(qdict_get_qdict(create, "return"), "id"));
    c = find_checkpoint(qdict_get_qlist(query, "return"), id);
    creating = !strcmp(qdict_get_str(c, "state"), "creating");
    if (creating) {
        assert_contains(qdict_get_str(qdict_get_qdict(export, "error"),
                                      "desc"), "still being created");
        assert_gone(dir);
    } else {
        g_test_skip("the memory save ended before the export came");
    }
    qobject_unref(create);
    qobject_unref(export);
    qobject_unref(query);

    /* Once ready, it can be exported */
    ev = qtest_qmp_eventwait_ref(qts, "CHECKPOINT_CREATED");
    qobject_unref(ev);
    if (creating) {
        g_autofree char *job = export_start(qts, id, dir, NULL, NULL);

        export_wait(qts, job, id, dir);
    }
    qtest_quit(qts);
}

/* == 3, 4. A slow export: paused, refused deletes, cancelled == */

/*
 * A VM on new disks @prefix0.qcow2 and @prefix1.vhdx, whose disk d1 has
 * BIG_MB MiB of data (written before QEMU opens it), with checkpoint A;
 * its id in *@a
 */
static QTestState *vm_with_big_disk(const char *store, const char *prefix,
                                    char **a)
{
    g_autofree char *n0 = g_strdup_printf("%s0.qcow2", prefix);
    g_autofree char *n1 = g_strdup_printf("%s1.vhdx", prefix);
    g_autofree char *d0 = tmp_path(n0);
    g_autofree char *d1 = tmp_path(n1);
    g_autofree char *io = NULL, *disks = NULL, *args = NULL;
    QTestState *qts;

    g_assert(mkimg(d0, "qcow2", 16));
    g_assert(mkimg(d1, "vhdx", BIG_MB));
    io = g_strdup_printf("-f vhdx -c 'write -P 0x5a 0 %dM' %s", BIG_MB, d1);
    g_assert_cmpint(run_tool("qemu-io", io, NULL), ==, 0);
    disks = disk_args(d0, d1);
    args = g_strdup_printf("%s -checkpoints dir=%s,type=standard", disks,
                           store);
    qts = vm_start(args);
    *a = create_and_wait(qts, "A");
    return qts;
}

/*
 * Export @key into @dir as job @job, paused right away (the command
 * comes while the export copies); false when the export ended first
 */
static bool export_paused(QTestState *qts, const char *key, const char *dir,
                          const char *job)
{
    QDict *rsp, *j;
    bool paused;

    qtest_qmp_send(qts, "{'execute': 'checkpoint-export', 'arguments':"
                   " {'checkpoint': %s, 'dir': %s, 'job-id': %s}}",
                   key, dir, job);
    qtest_qmp_send(qts, "{'execute': 'job-pause', 'arguments': {'id': %s}}",
                   job);
    rsp = qtest_qmp_receive(qts);
    g_assert(qdict_haskey(rsp, "return"));
    qobject_unref(rsp);
    rsp = qtest_qmp_receive(qts);
    paused = qdict_haskey(rsp, "return");
    qobject_unref(rsp);
    if (!paused) {
        return false;
    }
    /* Paused at the next chunk */
    for (;;) {
        j = query_job(qts, job);
        g_assert(j);
        if (!strcmp(qdict_get_str(j, "status"), "paused")) {
            break;
        }
        qobject_unref(j);
        g_usleep(1000);
    }
    g_assert_cmpstr(qdict_get_str(j, "type"), ==, "checkpoint-export");
    g_assert_cmpint(qdict_get_int(j, "total-progress"), >=, BIG_MB * MiB);
    g_assert_cmpint(qdict_get_int(j, "current-progress"), <,
                    qdict_get_int(j, "total-progress"));
    qobject_unref(j);
    return true;
}

/* CHECKPOINT_EXPORT_FAILED for checkpoint @id into @real, job ended */
static void export_failed(QTestState *qts, const char *job, const char *id,
                          const char *real)
{
    QDict *ev = qtest_qmp_eventwait_ref(qts, "CHECKPOINT_EXPORT_FAILED");
    QDict *data = qdict_get_qdict(ev, "data");

    g_assert_cmpstr(qdict_get_str(data, "id"), ==, id);
    g_assert_cmpstr(qdict_get_str(data, "dir"), ==, real);
    g_test_message("export failed: %s", qdict_get_str(data, "error"));
    assert_contains(qdict_get_str(data, "error"), "cancel");
    qobject_unref(ev);
    wait_job_concluded(qts, job);
}

/* While an export runs: deletes refused, dry runs work, ids taken */
static void while_exporting(QTestState *qts, const char *store,
                            const char *a)
{
    g_autofree char *manifest = g_build_filename(store, "manifest.json",
                                                 NULL);
    g_autofree char *before = read_file(manifest);
    g_autofree char *after = NULL, *err = NULL, *js = NULL;
    g_autofree char *dup = tmp_path("slow-dup");
    g_autofree char *empty = tmp_path("slow-empty");
    g_autofree char *other = tmp_path("slow-other");
    g_autofree char *big = g_build_filename(other, "d1.vhdx", NULL);
    g_autofree char *frozen = frozen_image(qts, a, "d1");
    QDict *rsp;
    QList *ids;

    err = qmp_error(qts, "{'execute': 'checkpoint-delete',"
                    " 'arguments': {'checkpoint': 'A'}}");
    assert_contains(err, "being exported");
    g_free(err);
    rsp = qtest_qmp_assert_success_ref(qts,
              "{'execute': 'checkpoint-delete',"
              " 'arguments': {'checkpoint': 'A', 'dry-run': true}}");
    ids = qdict_get_qlist(rsp, "deleted");
    g_assert_cmpint(qlist_size(ids), ==, 1);
    g_assert_cmpstr(qstring_get_str(qobject_to(QString, qlist_peek(ids))),
                    ==, a);
    qobject_unref(rsp);
    after = read_file(manifest);
    g_assert_cmpstr(after, ==, before);

    /* The job id is taken: refused, no folder made or left */
    js = g_strdup_printf("{'checkpoint': 'A', 'dir': '%s',"
                         " 'job-id': 'slow'}", dup);
    err = export_error(qts, js);
    assert_contains(err, "Job ID 'slow' already in use");
    assert_gone(dup);
    g_free(err);
    g_free(js);
    g_assert(g_mkdir_with_parents(empty, 0700) == 0);
    js = g_strdup_printf("{'checkpoint': 'A', 'dir': '%s',"
                         " 'job-id': 'slow'}", empty);
    err = export_error(qts, js);
    assert_contains(err, "already in use");
    g_assert_cmpint(count_entries(empty), ==, 0);

    /* Another export of A completes meanwhile; deletes stay refused */
    g_free(err);
    err = export_start(qts, "A", other, NULL, "other");
    export_wait(qts, "other", a, other);
    assert_export_folder(other, store, a, "qcow2", "vhdx");
    assert_same_content(big, frozen);
    g_free(err);
    err = qmp_error(qts, "{'execute': 'checkpoint-delete',"
                    " 'arguments': {'all': true}}");
    assert_contains(err, "being exported");
}

static void test_export_cancel(void)
{
    g_autofree char *store = tmp_path("slow-store");
    g_autofree char *dir = tmp_path("slow-export");
    g_autofree char *empty = tmp_path("slow-empty");
    g_autofree char *a = NULL, *real = NULL, *err = NULL;
    QTestState *qts = vm_with_big_disk(store, "s", &a);
    QDict *rsp;

    if (!export_paused(qts, "A", dir, "slow")) {
        g_test_skip("the export ended before it could be paused");
        qtest_quit(qts);
        return;
    }
    real = real_path(dir);
    assert_running(qts);
    while_exporting(qts, store, a);

    /* Cancelled while it copies: resumed, then cancelled at once */
    qtest_qmp_send(qts, "{'execute': 'job-resume',"
                   " 'arguments': {'id': 'slow'}}");
    qtest_qmp_send(qts, "{'execute': 'job-cancel',"
                   " 'arguments': {'id': 'slow'}}");
    rsp = qtest_qmp_receive(qts);
    g_assert(qdict_haskey(rsp, "return"));
    qobject_unref(rsp);
    rsp = qtest_qmp_receive(qts);
    g_assert(qdict_haskey(rsp, "return"));
    qobject_unref(rsp);
    export_failed(qts, "slow", a, real);
    assert_gone(dir);

    /* A folder that existed stays, empty; cancelled while paused */
    g_assert(export_paused(qts, a, empty, "slow2"));
    qtest_qmp_assert_success(qts, "{'execute': 'job-cancel',"
                             " 'arguments': {'id': 'slow2'}}");
    g_free(real);
    real = real_path(empty);
    export_failed(qts, "slow2", a, real);
    g_assert(g_file_test(empty, G_FILE_TEST_IS_DIR));
    g_assert_cmpint(count_entries(empty), ==, 0);

    /* No export runs any more: deletes work again */
    rsp = qtest_qmp_assert_success_ref(qts,
              "{'execute': 'checkpoint-delete',"
              " 'arguments': {'checkpoint': 'A'}}");
    qobject_unref(rsp);
    qtest_qmp_eventwait(qts, "CHECKPOINT_DELETED");
    qtest_quit(qts);
}

static void assert_not_left(const char *path)
{
    if (g_file_test(path, G_FILE_TEST_EXISTS)) {
        g_test_message("'%s' was created by the export and is left", path);
        g_assert_not_reached();
    }
}

/*
 * A new folder whose parents are missing too: what a refused or
 * cancelled export created is removed, parents included
 */
static void test_export_new_parents(void)
{
    g_autofree char *store = tmp_path("parents-store");
    g_autofree char *top1 = tmp_path("parents1");
    g_autofree char *top2 = tmp_path("parents2");
    g_autofree char *dir1 = tmp_path("parents1/a/b");
    g_autofree char *dir2 = tmp_path("parents2/a/b");
    g_autofree char *js = NULL, *err = NULL, *a = NULL, *real = NULL;
    QTestState *qts = vm_with_big_disk(store, "p", &a);

    js = g_strdup_printf("{'checkpoint': 'A', 'dir': '%s',"
                         " 'job-id': '1 bad'}", dir1);
    err = export_error(qts, js);
    assert_contains(err, "Invalid job ID");
    assert_gone(dir1);
    assert_not_left(top1);

    if (!export_paused(qts, "A", dir2, "nested")) {
        g_test_skip("the export ended before it could be paused");
        qtest_quit(qts);
        return;
    }
    real = real_path(dir2);
    qtest_qmp_assert_success(qts, "{'execute': 'job-cancel',"
                             " 'arguments': {'id': 'nested'}}");
    export_failed(qts, "nested", a, real);
    assert_gone(dir2);
    assert_not_left(top2);
    qtest_quit(qts);
}

/* QEMU quits while an export runs: the export is cancelled, removed */
static void test_export_quit(void)
{
    g_autofree char *store = tmp_path("quit-store");
    g_autofree char *dir = tmp_path("quit-export");
    g_autofree char *a = NULL;
    QTestState *qts = vm_with_big_disk(store, "q", &a);

    if (!export_paused(qts, "A", dir, "quitting")) {
        g_test_skip("the export ended before it could be paused");
        qtest_quit(qts);
        return;
    }
    g_assert(g_file_test(dir, G_FILE_TEST_IS_DIR));
    qtest_quit(qts);
    assert_gone(dir);
}

/* == 5. Plain file and node names in query-block == */

/* What command @cmd (with arguments @args, JSON) returns has no json: */
static void assert_no_json_names(QTestState *qts, const char *cmd,
                                 const char *args)
{
    QDict *rsp = qtest_qmp(qts, "{'execute': %s, 'arguments': %p}", cmd,
                           qobject_from_json(args, &error_abort));
    g_autoptr(GString) json = qobject_to_json(QOBJECT(rsp));

    g_assert(qdict_haskey(rsp, "return"));
    if (strstr(json->str, "json:")) {
        g_test_message("%s: %s", cmd, json->str);
        g_assert_not_reached();
    }
    qobject_unref(rsp);
}

/* @backing names the current checkpoint's frozen image of @device */
static void assert_backing(QTestState *qts, const char *image,
                           const char *backing, const char *device)
{
    g_autofree char *cur = current_of(qts);
    g_autofree char *frozen = frozen_image(qts, cur, device);
    g_autofree char *dir = g_path_get_dirname(image);
    g_autofree char *path = g_path_is_absolute(backing) ?
        g_strdup(backing) : g_build_filename(dir, backing, NULL);
    g_autofree char *real = real_path(path);

    g_assert_cmpstr(real, ==, frozen);
}

/* Each disk shows the plain names of its active image and its parent */
static void assert_plain_names(QTestState *qts, const char *store)
{
    QDict *rsp = qtest_qmp(qts, "{'execute': 'query-block'}");
    const QListEntry *e;
    int n = 0;

    QLIST_FOREACH_ENTRY(qdict_get_qlist(rsp, "return"), e) {
        QDict *b = qobject_to(QDict, qlist_entry_obj(e));
        const char *dev = qdict_get_str(b, "device");
        QDict *ins = qdict_get_qdict(b, "inserted");
        g_autofree char *act = active_image(store, dev);
        const char *node = qdict_get_str(ins, "node-name");

        g_assert_cmpstr(qdict_get_str(ins, "file"), ==, act);
        assert_backing(qts, act, qdict_get_str(ins, "backing_file"), dev);
        if (node[0] != '#' || g_str_has_prefix(node, "ckpt-")) {
            g_test_message("disk %s: node name '%s'", dev, node);
            g_assert_not_reached();
        }
        n++;
    }
    g_assert_cmpint(n, ==, 2);
    qobject_unref(rsp);
    assert_no_json_names(qts, "query-block", "{}");
    assert_no_json_names(qts, "query-named-block-nodes", "{}");
    assert_no_json_names(qts, "query-named-block-nodes", "{'flat': true}");
}

static void test_plain_names(void)
{
    g_autofree char *store = tmp_path("names-store");
    g_autofree char *a = NULL, *b = NULL, *act = NULL;
    QTestState *qts = vm_with_new_disks(store, "n0.qcow2", "n1.vhdx", 16);
    QDict *ev;

    write_pattern(qts, 0xaa, "0");
    a = create_and_wait(qts, "A");
    act = active_image(store, "d0");
    assert_contains(act, a);
    assert_plain_names(qts, store);
    write_pattern(qts, 0xbb, "0");
    b = create_and_wait(qts, "B");
    assert_plain_names(qts, store);

    qtest_qmp_assert_success(qts, "{'execute': 'checkpoint-apply',"
                             " 'arguments': {'checkpoint': 'A'}}");
    ev = qtest_qmp_eventwait_ref(qts, "CHECKPOINT_APPLIED");
    qobject_unref(ev);
    assert_disk_pattern(qts, "d0", 0xaa, "0");
    assert_plain_names(qts, store);
    qtest_quit(qts);
}

/* == 6. The configuration in the store; a store opened offline == */

/* The command line libqtest starts QEMU with for vm_start(@extra) */
static char **qemu_argv(const char *extra)
{
    const char *trace = g_getenv("QTEST_TRACE");
    g_autofree char *tracearg = trace ? g_strdup_printf("-trace %s ", trace)
                                      : g_strdup("");
    g_autofree char *cmd = g_strdup_printf(
        "%s %s-qtest unix:%s/qtest-%d.sock -qtest-log %s"
        " -chardev socket,path=%s/qtest-%d.qmp,id=char0"
        " -mon chardev=char0,mode=control -display none -audio none"
        " -M microvm -display none -nodefaults %s -accel qtest",
        g_getenv("QTEST_QEMU_BINARY"), tracearg, g_get_tmp_dir(), getpid(),
        g_getenv("QTEST_LOG") ? "/dev/fd/2" : "/dev/null", g_get_tmp_dir(),
        getpid(), extra);
    char **argv;

    g_assert(g_shell_parse_argv(cmd, NULL, &argv, NULL));
    return argv;
}

static void assert_config_disk(QList *disks, const char *device,
                               const char *file, const char *format)
{
    QDict *d = find_disk(disks, device);
    g_autofree char *real = real_path(file);

    g_assert_cmpstr(qdict_get_str(d, "filename"), ==, real);
    g_assert_cmpstr(qdict_get_str(d, "format"), ==, format);
}

/* config.json @path: the command line vm_start(@extra) used */
static void assert_config(const char *path, const char *extra,
                          const char *qcow2, const char *vhdx)
{
    g_auto(GStrv) want = qemu_argv(extra);
    g_autofree char *cwd = g_get_current_dir();
    QDict *c = load_json(path);
    QList *disks = qdict_get_qlist(c, "disks");
    const QListEntry *e;
    int i = 0;

    g_assert_cmpint(qdict_get_int(c, "version"), ==, 1);
    QLIST_FOREACH_ENTRY(qdict_get_qlist(c, "argv"), e) {
        g_assert(want[i]);
        g_assert_cmpstr(qstring_get_str(qobject_to(QString,
                                                   qlist_entry_obj(e))),
                        ==, want[i]);
        i++;
    }
    g_assert(!want[i]);
    g_assert_cmpstr(qdict_get_str(c, "cwd"), ==, cwd);
    g_assert_cmpstr(qdict_get_str(c, "name"), ==, "cfgvm");
    g_assert_cmpint(qlist_size(disks), ==, 2);
    assert_config_disk(disks, "d0", qcow2, "qcow2");
    assert_config_disk(disks, "d1", vhdx, "vhdx");
    qobject_unref(c);
}

/* The store @store and checkpoint @id keep the same configuration */
static void assert_checkpoint_config(const char *store, const char *id)
{
    g_autofree char *path = g_build_filename(store, "manifest.json", NULL);
    g_autofree char *want = g_strdup_printf("%s/config.json", id);
    g_autofree char *own = g_build_filename(store, want, NULL);
    g_autofree char *top = g_build_filename(store, "config.json", NULL);
    QDict *m = load_json(path);
    QDict *c = find_checkpoint(qdict_get_qlist(m, "checkpoints"), id);

    g_assert_cmpstr(qdict_get_str(c, "config-file"), ==, want);
    assert_same_bytes(own, top);
    qobject_unref(m);
}

/*
 * A QEMU without a guest on the stopped VM's store @store (checkpoints
 * @a, then @b, current): lists, exports; no create, no apply, and
 * config.json (@config) stays as it is
 */
static void offline_store(const char *store, const char *a, const char *b,
                          const char *config, const char *extra,
                          const char *qcow2, const char *vhdx)
{
    g_autofree char *top = g_build_filename(store, "config.json", NULL);
    g_autofree char *exp = tmp_path("offline-export");
    g_autofree char *cfg = g_build_filename(exp, "config.json", NULL);
    g_autofree char *img = g_build_filename(exp, "d1.vhdx", NULL);
    g_autofree char *now = NULL, *err = NULL, *job = NULL, *text = NULL;
    QTestState *qts = qtest_initf("-M none -nodefaults"
                                  " -checkpoints dir=%s,offline=on", store);
    QDict *rsp, *c;

    rsp = qtest_qmp(qts, "{'execute': 'query-checkpoints'}");
    g_assert_cmpint(qlist_size(qdict_get_qlist(rsp, "return")), ==, 2);
    qobject_unref(rsp);
    now = current_of(qts);
    g_assert_cmpstr(now, ==, b);
    text = read_file(top);
    g_assert_cmpstr(text, ==, config);

    err = qmp_error(qts, "{'execute': 'checkpoint-create',"
                    " 'arguments': {'type': 'standard'}}");
    assert_contains(err, "offline");
    g_free(err);
    err = qmp_error(qts, "{'execute': 'checkpoint-apply',"
                    " 'arguments': {'checkpoint': 'A'}}");
    assert_contains(err, "offline");
    qtest_qmp_assert_success(qts, "{'execute': 'checkpoint-rename',"
                             " 'arguments': {'checkpoint': %s,"
                             " 'name': 'renamed offline'}}", b);

    job = export_start(qts, "A", exp, NULL, NULL);
    export_wait(qts, job, a, exp);
    assert_export_folder(exp, store, a, "qcow2", "vhdx");
    assert_image_pattern(img, 0xaa, "0");
    /* A's configuration: the VM's command line, not this QEMU's */
    assert_config(cfg, extra, qcow2, vhdx);
    c = load_json(cfg);
    g_assert_cmpstr(qdict_get_str(c, "resume-checkpoint"), ==, a);
    qobject_unref(c);
    qtest_quit(qts);

    g_free(text);
    text = read_file(top);
    g_assert_cmpstr(text, ==, config);
}

/*
 * An export that fails once it copied the images and the state file
 * (the checkpoint's configuration and the store's are gone) removes
 * them all
 */
static void offline_export_fails(const char *store, const char *a)
{
    g_autofree char *exp = tmp_path("offline-failed");
    g_autofree char *top = g_build_filename(store, "config.json", NULL);
    g_autofree char *own = g_build_filename(store, a, "config.json", NULL);
    g_autofree char *job = NULL, *real = NULL;
    QTestState *qts = qtest_initf("-M none -nodefaults"
                                  " -checkpoints dir=%s,offline=on", store);
    QDict *ev, *data;

    g_assert(unlink(top) == 0 && unlink(own) == 0);
    job = export_start(qts, "A", exp, NULL, NULL);
    real = real_path(exp);
    ev = qtest_qmp_eventwait_ref(qts, "CHECKPOINT_EXPORT_FAILED");
    data = qdict_get_qdict(ev, "data");
    g_assert_cmpstr(qdict_get_str(data, "id"), ==, a);
    g_assert_cmpstr(qdict_get_str(data, "dir"), ==, real);
    assert_contains(qdict_get_str(data, "error"), "no configuration");
    qobject_unref(ev);
    wait_job_concluded(qts, job);
    assert_gone(exp);
    qtest_quit(qts);
}

static void test_config_offline(void)
{
    g_autofree char *store = tmp_path("config-store");
    g_autofree char *qcow2 = tmp_path("cfg0.qcow2");
    g_autofree char *vhdx = tmp_path("cfg1.vhdx");
    g_autofree char *top = g_build_filename(store, "config.json", NULL);
    g_autofree char *disks = NULL, *extra = NULL, *config = NULL;
    g_autofree char *a = NULL, *b = NULL;
    QTestState *qts;

    g_assert(mkimg(qcow2, "qcow2", 16));
    g_assert(mkimg(vhdx, "vhdx", 16));
    disks = disk_args(qcow2, vhdx);
    extra = g_strdup_printf("-name cfgvm %s -checkpoints dir=%s,"
                            "type=standard", disks, store);
    qts = vm_start(extra);
    assert_config(top, extra, qcow2, vhdx);

    write_pattern(qts, 0xaa, "0");
    a = create_and_wait(qts, "A");
    assert_checkpoint_config(store, a);
    write_pattern(qts, 0xbb, "0");
    b = create_and_wait(qts, "B");
    assert_checkpoint_config(store, b);
    /* Still the images the VM was started on */
    assert_config(top, extra, qcow2, vhdx);
    qtest_quit(qts);

    config = read_file(top);
    offline_store(store, a, b, config, extra, qcow2, vhdx);
    offline_export_fails(store, a);
}

int main(int argc, char **argv)
{
    g_test_init(&argc, &argv, NULL);
    if (!qtest_has_machine("microvm")) {
        g_test_skip("microvm machine not available");
        return g_test_run();
    }
    tmpdir = hvcp_make_tmpdir("checkpoint-export-test-XXXXXX");

    qtest_add_func("/checkpoint-export/export", test_export);
    qtest_add_func("/checkpoint-export/refused", test_export_refused);
    qtest_add_func("/checkpoint-export/creating", test_export_creating);
    qtest_add_func("/checkpoint-export/cancel", test_export_cancel);
    qtest_add_func("/checkpoint-export/new-parents", test_export_new_parents);
    qtest_add_func("/checkpoint-export/quit", test_export_quit);
    qtest_add_func("/checkpoint-export/plain-names", test_plain_names);
    qtest_add_func("/checkpoint-export/config-offline",
                   test_config_offline);
    return hvcp_run_and_remove(tmpdir);
}
