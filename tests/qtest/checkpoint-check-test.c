/*
 * QTest for checkpoint-check: the chain audit and repair of the store
 *
 * Copyright (c) 2026 The Hyper-V checkpoints project
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 *
 * Besides one store made by checkpoint-create, the stores are written
 * by hand: the images with qemu-img, then broken while QEMU is down
 * (a file removed or moved, a frozen image written with qemu-io or
 * committed into with qemu-img), as a user or a crash would.
 *
 * The hand-made tree, per test folder: checkpoint A (frozen image
 * base), B (b, a child of base), C (c, a child of b), and "Now" under
 * A on n, a child of base.  Only n and base are open in the VM.
 */

#include "qemu/osdep.h"
#include "libqtest.h"
#include "hvcp-qtest-util.h"
#include "qemu/bswap.h"
#include "qapi/error.h"
#include "qobject/qdict.h"
#include "qobject/qlist.h"
#include "qobject/qjson.h"

#define ID_A "0d4c7a3e-6f0e-4a43-9b5f-2a4ef1a7c2d1"
#define ID_B "5b0e2f7c-1a6d-4c52-8e3b-9f1d2c3b4a50"
#define ID_C "c8f1d6e2-3b4a-4f7e-a1d2-7e6f5a4b3c21"

static char *tmpdir;

typedef struct Tree {
    const char *fmt;
    char *dir;          /* the test's folder */
    char *store;
    char *base, *b, *c, *n;
} Tree;

/* Run a program of the build (qemu-img, qemu-io); returns its output */
static char *run_tool(const char *tool, const char *args, bool must_work)
{
    g_autofree char *dir = g_path_get_dirname(g_getenv("QTEST_QEMU_IMG"));
    g_autofree char *cmd = g_strdup_printf("%s/%s %s", dir, tool, args);
    g_autofree char *err = NULL;
    char *out = NULL;
    int status;

    g_assert(g_spawn_command_line_sync(cmd, &out, &err, &status, NULL));
    if (must_work && !(WIFEXITED(status) && WEXITSTATUS(status) == 0)) {
        g_test_message("'%s' failed: %s%s", cmd, out, err);
        g_assert_not_reached();
    }
    return out;
}

/* Run @tool, which must succeed; returns its output */
static char *tool_out(const char *tool, const char *fmt, ...)
    G_GNUC_PRINTF(2, 3);
static char *tool_out(const char *tool, const char *fmt, ...)
{
    g_autofree char *args = NULL;
    va_list ap;

    va_start(ap, fmt);
    args = g_strdup_vprintf(fmt, ap);
    va_end(ap);
    return run_tool(tool, args, true);
}

#define tool(...) g_free(tool_out(__VA_ARGS__))

/* The identity checkpoint_image_identity() gives (qapi/checkpoint.json) */
static char *identity(const char *file, const char *fmt)
{
    g_autofree char *data = NULL;
    const uint8_t *best = NULL;
    uint64_t best_seq = 0;
    gsize len;
    int i;

    if (strcmp(fmt, "vhdx")) {
        struct stat st;

        g_assert(stat(file, &st) == 0);
        return g_strdup_printf("file-mtime:%lld.%09ld,size:%lld",
                               (long long)st.st_mtim.tv_sec,
                               (long)st.st_mtim.tv_nsec,
                               (long long)st.st_size);
    }
    /* The header with the higher sequence number, at 64 or 128 KiB */
    g_assert(g_file_get_contents(file, &data, &len, NULL));
    g_assert(len >= 192 * 1024);
    for (i = 1; i <= 2; i++) {
        const uint8_t *h = (const uint8_t *)data + i * 64 * 1024;
        uint64_t seq = ldq_le_p(h + 8);

        if (!memcmp(h, "head", 4) && (!best || seq > best_seq)) {
            best = h;
            best_seq = seq;
        }
    }
    g_assert(best);
    best += 32;         /* DataWriteGuid */
    return g_strdup_printf("vhdx-data-write-guid:{%08x-%04x-%04x-%02x%02x-"
                           "%02x%02x%02x%02x%02x%02x}",
                           ldl_le_p(best), lduw_le_p(best + 4),
                           lduw_le_p(best + 6), best[8], best[9], best[10],
                           best[11], best[12], best[13], best[14], best[15]);
}

static char *disk_json(const char *file, const char *fmt, bool with_id)
{
    g_autofree char *id = with_id ? identity(file, fmt) : NULL;

    return g_strdup_printf("{ \"device\": \"d0\", \"format\": \"%s\","
                           " \"filename\": \"%s\"%s%s%s }", fmt, file,
                           id ? ", \"identity\": \"" : "", id ?: "",
                           id ? "\"" : "");
}

static char *entry_json(const char *id, const char *name, const char *parent,
                        const char *file, const char *fmt)
{
    g_autofree char *disk = disk_json(file, fmt, true);

    return g_strdup_printf("{ \"id\": \"%s\", \"name\": \"%s\","
                           " \"type\": \"production\", \"state\": \"ready\","
                           "%s%s%s \"created\": 1795000000,"
                           " \"disks\": [ %s ] }", id, name,
                           parent ? " \"parent\": \"" : "", parent ?: "",
                           parent ? "\"," : "", disk);
}

/* Make the tree described at the top in folder @name */
static Tree *make_tree(const char *name, const char *fmt)
{
    Tree *t = g_new0(Tree, 1);
    const char *ext = strcmp(fmt, "vhdx") ? "qcow2" : "avhdx";
    g_autofree char *a = NULL, *b = NULL, *c = NULL, *act = NULL;
    g_autofree char *text = NULL, *manifest = NULL;

    t->fmt = fmt;
    t->dir = g_strdup_printf("%s/%s", tmpdir, name);
    t->store = g_strdup_printf("%s/store", t->dir);
    g_assert(g_mkdir_with_parents(t->store, 0700) == 0);
    t->base = g_strdup_printf("%s/base.%s", t->dir,
                              strcmp(fmt, "vhdx") ? "qcow2" : "vhdx");
    t->b = g_strdup_printf("%s/base_" ID_A ".%s", t->dir, ext);
    t->c = g_strdup_printf("%s/base_" ID_B ".%s", t->dir, ext);
    t->n = g_strdup_printf("%s/base_" ID_C ".%s", t->dir, ext);
    g_assert(mkimg(t->base, fmt, 16));
    tool("qemu-img", "create -q -f %s -b %s -F %s %s", fmt, t->base, fmt,
         t->b);
    tool("qemu-io", "-f %s -c 'write -P 0x0b 0 64k' %s", fmt, t->b);
    tool("qemu-img", "create -q -f %s -b %s -F %s %s", fmt, t->b, fmt, t->c);
    tool("qemu-img", "create -q -f %s -b %s -F %s %s", fmt, t->base, fmt,
         t->n);

    a = entry_json(ID_A, "A", NULL, t->base, fmt);
    b = entry_json(ID_B, "B", ID_A, t->b, fmt);
    c = entry_json(ID_C, "C", ID_B, t->c, fmt);
    act = disk_json(t->n, fmt, false);
    text = g_strdup_printf("{ \"version\": 1, \"current\": \"" ID_A "\",\n"
                           "  \"checkpoints\": [ %s,\n %s,\n %s ],\n"
                           "  \"active\": [ %s ] }\n", a, b, c, act);
    manifest = g_strdup_printf("%s/manifest.json", t->store);
    g_assert(g_file_set_contents(manifest, text, -1, NULL));
    return t;
}

static void tree_free(Tree *t)
{
    g_free(t->dir);
    g_free(t->store);
    g_free(t->base);
    g_free(t->b);
    g_free(t->c);
    g_free(t->n);
    g_free(t);
}

static QTestState *tree_start(Tree *t)
{
    return qtest_initf("-M microvm -display none -nodefaults -m 64M"
                       " -drive if=none,id=d0,file=%s,format=%s"
                       " -device virtio-blk-device,drive=d0,share-rw=on"
                       " -checkpoints dir=%s", t->n, t->fmt, t->store);
}

/* checkpoint-check with @args (a JSON object, or NULL); its "problems" */
static QList *check(QTestState *qts, const char *args, QDict **result)
{
    QDict *rsp;
    QList *problems;

    if (args) {
        rsp = qtest_qmp_assert_success_ref(qts,
                  "{'execute': 'checkpoint-check', 'arguments': %p}",
                  qobject_from_json(args, &error_abort));
    } else {
        rsp = qtest_qmp_assert_success_ref(qts,
                  "{'execute': 'checkpoint-check'}");
    }
    problems = qdict_get_qlist(rsp, "problems");
    g_assert(problems);
    qobject_ref(problems);
    if (result) {
        *result = rsp;
    } else {
        qobject_unref(rsp);
    }
    return problems;
}

static void dump_problems(QList *problems)
{
    const QListEntry *e;

    QLIST_FOREACH_ENTRY(problems, e) {
        QDict *p = qobject_to(QDict, qlist_entry_obj(e));

        g_test_message("problem: %s %s: %s",
                       qdict_get_try_str(p, "checkpoint") ?: "now",
                       qdict_get_str(p, "kind"), qdict_get_str(p, "message"));
    }
}

/* Is there a problem @kind of @file for checkpoint @id (NULL: "Now")? */
static void assert_problem(QList *problems, const char *id, const char *kind,
                           const char *file)
{
    const QListEntry *e;

    QLIST_FOREACH_ENTRY(problems, e) {
        QDict *p = qobject_to(QDict, qlist_entry_obj(e));

        if (!strcmp(qdict_get_str(p, "kind"), kind) &&
            !strcmp(qdict_get_str(p, "filename"), file) &&
            !g_strcmp0(qdict_get_try_str(p, "checkpoint"), id)) {
            g_assert_cmpstr(qdict_get_try_str(p, "device"), ==, "d0");
            assert_contains(qdict_get_str(p, "message"), file);
            return;
        }
    }
    g_test_message("no problem %s of '%s' for %s", kind, file, id ?: "now");
    dump_problems(problems);
    g_assert_not_reached();
}

static void assert_count(QList *problems, size_t n)
{
    if (qlist_size(problems) != n) {
        dump_problems(problems);
        g_assert_cmpint(qlist_size(problems), ==, n);
    }
}

static void assert_healthy(QTestState *qts)
{
    QList *problems = check(qts, NULL, NULL);

    assert_count(problems, 0);
    qobject_unref(problems);
}

static void assert_error(QTestState *qts, const char *args, const char *sub)
{
    g_autofree char *err = qmp_error(qts, "{'execute': 'checkpoint-check',"
                                     " 'arguments': %p}",
                                     qobject_from_json(args, &error_abort));

    assert_contains(err, sub);
}

static char *read_manifest(Tree *t)
{
    g_autofree char *path = g_strdup_printf("%s/manifest.json", t->store);
    char *text;

    g_assert(g_file_get_contents(path, &text, NULL, NULL));
    return text;
}

/* A store made by checkpoint-create: nothing to report */
static void test_healthy(void)
{
    g_autofree char *dir = g_strdup_printf("%s/healthy/store", tmpdir);
    g_autofree char *qcow2 = g_strdup_printf("%s/healthy/d0.qcow2", tmpdir);
    g_autofree char *vhdx = g_strdup_printf("%s/healthy/d1.vhdx", tmpdir);
    g_autofree char *out = NULL, *manifest = NULL, *err = NULL;
    QTestState *qts;
    QDict *rsp;
    int i;

    qts = qtest_init("-M microvm -display none -nodefaults");
    err = qmp_error(qts, "{'execute': 'checkpoint-check'}");
    assert_contains(err, "No checkpoint store is set");
    qtest_quit(qts);

    g_assert(g_mkdir_with_parents(dir, 0700) == 0);
    g_assert(mkimg(qcow2, "qcow2", 16));
    g_assert(mkimg(vhdx, "vhdx", 16));
    qts = qtest_initf("-M microvm -display none -nodefaults -m 64M"
                      " -drive if=none,id=d0,file=%s,format=qcow2"
                      " -device virtio-blk-device,drive=d0,share-rw=on"
                      " -drive if=none,id=d1,file=%s,format=vhdx"
                      " -device virtio-blk-device,drive=d1,share-rw=on"
                      " -checkpoints dir=%s,type=standard",
                      qcow2, vhdx, dir);
    assert_healthy(qts);
    for (i = 0; i < 2; i++) {
        QDict *ev;

        qtest_qmp_assert_success(qts, "{'execute': 'checkpoint-create'}");
        ev = qtest_qmp_eventwait_ref(qts, "CHECKPOINT_CREATED");
        qobject_unref(ev);
    }
    /* The identities were recorded, so they are checked too */
    {
        Tree t = { .store = dir };

        manifest = read_manifest(&t);
        assert_contains(manifest, "\"identity\": \"file-mtime:");
        assert_contains(manifest, "\"identity\": \"vhdx-data-write-guid:");
    }
    assert_healthy(qts);
    out = qtest_hmp(qts, "checkpoint_check");
    assert_contains(out, "No problem found in checkpoint store");
    g_clear_pointer(&out, g_free);
    out = qtest_hmp(qts, "checkpoint_check -l");
    assert_contains(out, "-l needs the image and its new parent");
    g_clear_pointer(&out, g_free);
    out = qtest_hmp(qts, "checkpoint_check %s", qcow2);
    assert_contains(out, "only for -l or -r");

    /* Every repair is refused on a healthy store */
    assert_error(qts, "{'drop-lost': true}", "no checkpoint is lost");
    rsp = qtest_qmp(qts, "{'execute': 'checkpoint-check', 'arguments':"
                    " {'reconnect': [%s]}}", qcow2);
    g_assert(qdict_haskey(rsp, "error"));
    assert_contains(qdict_get_str(qdict_get_qdict(rsp, "error"), "desc"),
                    "has not changed");
    qobject_unref(rsp);
    qtest_quit(qts);
}

/* An image that is gone is reported, naming it */
static void test_missing(void)
{
    Tree *t = make_tree("missing", "qcow2");
    QTestState *qts;
    QList *problems;
    g_autofree char *out = NULL, *line = NULL;

    qts = tree_start(t);
    assert_healthy(qts);
    qtest_quit(qts);

    g_assert(unlink(t->c) == 0);
    qts = tree_start(t);
    problems = check(qts, NULL, NULL);
    assert_problem(problems, ID_C, "missing", t->c);
    assert_count(problems, 1);
    qobject_unref(problems);
    out = qtest_hmp(qts, "checkpoint_check");
    line = g_strdup_printf("checkpoint " ID_C ", disk d0: missing: Image"
                           " '%s' does not exist", t->c);
    assert_contains(out, line);
    qtest_quit(qts);
    tree_free(t);
}

/* A parent that moved: reported on its child, repaired by relink */
static void test_relink(void)
{
    Tree *t = make_tree("relink", "vhdx");
    g_autofree char *moved_dir = g_strdup_printf("%s/moved", t->dir);
    g_autofree char *moved = g_strdup_printf("%s/b.avhdx", moved_dir);
    g_autofree char *args = NULL, *manifest = NULL, *out = NULL;
    QTestState *qts;
    QList *problems;

    g_assert(g_mkdir_with_parents(moved_dir, 0700) == 0);
    g_assert(rename(t->b, moved) == 0);
    qts = tree_start(t);
    problems = check(qts, NULL, NULL);
    assert_problem(problems, ID_B, "missing", t->b);
    assert_problem(problems, ID_C, "parent-missing", t->c);
    assert_count(problems, 2);
    qobject_unref(problems);

    /* Refused where it does not apply; nothing changes */
    args = g_strdup_printf("{'relink': [{'filename': '%s',"
                           " 'parent': '%s/nowhere.avhdx'}]}", t->c, t->dir);
    assert_error(qts, args, "cannot open the new parent");
    g_clear_pointer(&args, g_free);
    args = g_strdup_printf("{'relink': [{'filename': '%s',"
                           " 'parent': 'b.avhdx'}]}", t->c);
    assert_error(qts, args, "must be an absolute file name");
    g_clear_pointer(&args, g_free);
    args = g_strdup_printf("{'relink': [{'filename': '%s', 'parent': '%s'}]}",
                           t->n, moved);
    assert_error(qts, args, "nothing to relink");
    g_clear_pointer(&args, g_free);
    args = g_strdup_printf("{'relink': [{'filename': '%s/x.avhdx',"
                           " 'parent': '%s'}]}", t->dir, moved);
    assert_error(qts, args, "is not an image of the checkpoint store");
    g_clear_pointer(&args, g_free);
    /* base is not the file c was made from: another DataWriteGuid */
    args = g_strdup_printf("{'relink': [{'filename': '%s', 'parent': '%s'}]}",
                           t->c, t->base);
    assert_error(qts, args, "is not the parent");
    g_clear_pointer(&args, g_free);
    problems = check(qts, NULL, NULL);
    assert_count(problems, 2);
    qobject_unref(problems);

    /* HMP -l, the repair */
    out = qtest_hmp(qts, "checkpoint_check -l %s %s", t->c, moved);
    assert_contains(out, "No problem found");
    assert_healthy(qts);
    manifest = read_manifest(t);
    assert_contains(manifest, moved);
    g_assert(!strstr(manifest, t->b));
    qtest_quit(qts);

    /* The repair is on disk: a new QEMU finds the chain whole */
    qts = tree_start(t);
    assert_healthy(qts);
    qtest_quit(qts);
    g_clear_pointer(&out, g_free);
    out = tool_out("qemu-img", "info --backing-chain %s", t->c);
    assert_contains(out, moved);
    tree_free(t);
}

/* A frozen vhdx written while QEMU was down: reconnect accepts it */
static void test_reconnect_vhdx(void)
{
    Tree *t = make_tree("reconnect-vhdx", "vhdx");
    g_autofree char *args = NULL, *manifest = NULL, *new_id = NULL;
    g_autofree char *out = NULL;
    QTestState *qts;
    QList *problems;

    tool("qemu-io", "-f vhdx -c 'write -P 0x22 0 64k' %s", t->b);
    new_id = identity(t->b, "vhdx");
    qts = tree_start(t);
    problems = check(qts, NULL, NULL);
    assert_problem(problems, ID_B, "identity-changed", t->b);
    assert_problem(problems, ID_C, "parent-changed", t->c);
    assert_count(problems, 2);
    qobject_unref(problems);

    args = g_strdup_printf("{'reconnect': ['%s']}", t->base);
    assert_error(qts, args, "has not changed");
    g_clear_pointer(&args, g_free);
    args = g_strdup_printf("{'reconnect': ['%s/nothing.vhdx']}", t->dir);
    assert_error(qts, args, "is not an image of the checkpoint store");
    g_clear_pointer(&args, g_free);
    args = g_strdup_printf("{'reconnect': ['%s', '%s']}", t->b, t->b);
    assert_error(qts, args, "given twice");

    out = qtest_hmp(qts, "checkpoint_check -r %s", t->b);
    assert_contains(out, "No problem found");
    assert_healthy(qts);
    manifest = read_manifest(t);
    assert_contains(manifest, new_id);
    qtest_quit(qts);
    /* c is linked to b's new DataWriteGuid: its chain opens */
    g_clear_pointer(&out, g_free);
    out = tool_out("qemu-img", "info --backing-chain %s", t->c);
    assert_contains(out, t->base);
    tree_free(t);
}

/* qemu-img commit of a frozen qcow2's child: both changed */
static void test_reconnect_qcow2(void)
{
    Tree *t = make_tree("reconnect-qcow2", "qcow2");
    g_autofree char *args = NULL;
    QTestState *qts;
    QList *problems;

    g_usleep(20 * 1000);        /* a later mtime than the recorded one */
    tool("qemu-io", "-f qcow2 -c 'write -P 0x33 0 64k' %s", t->c);
    tool("qemu-img", "commit -q -f qcow2 %s", t->c);
    qts = tree_start(t);
    problems = check(qts, NULL, NULL);
    assert_problem(problems, ID_B, "identity-changed", t->b);
    assert_problem(problems, ID_C, "identity-changed", t->c);
    assert_count(problems, 2);
    qobject_unref(problems);

    args = g_strdup_printf("{'reconnect': ['%s', '%s']}", t->b, t->n);
    assert_error(qts, args, "has not changed");
    g_clear_pointer(&args, g_free);
    args = g_strdup_printf("{'reconnect': ['%s', '%s']}", t->b, t->c);
    problems = check(qts, args, NULL);
    assert_count(problems, 0);
    qobject_unref(problems);
    assert_healthy(qts);
    qtest_quit(qts);
    tree_free(t);
}

static bool has_checkpoint(QTestState *qts, const char *id)
{
    QDict *rsp = qtest_qmp(qts, "{'execute': 'query-checkpoints'}");
    const QListEntry *e;
    bool found = false;

    QLIST_FOREACH_ENTRY(qdict_get_qlist(rsp, "return"), e) {
        QDict *c = qobject_to(QDict, qlist_entry_obj(e));

        found |= !strcmp(qdict_get_str(c, "id"), id);
    }
    qobject_unref(rsp);
    return found;
}

/* Lost files: the checkpoints that need them go, the rest stays */
static void test_drop_lost(void)
{
    Tree *t = make_tree("drop-lost", "qcow2");
    QTestState *qts;
    QList *problems, *dropped;
    QDict *res;

    g_assert(unlink(t->b) == 0);
    qts = tree_start(t);
    problems = check(qts, NULL, NULL);
    assert_problem(problems, ID_B, "missing", t->b);
    assert_problem(problems, ID_C, "parent-missing", t->c);
    assert_count(problems, 2);
    qobject_unref(problems);

    problems = check(qts, "{'drop-lost': true}", &res);
    assert_count(problems, 0);
    qobject_unref(problems);
    dropped = qdict_get_qlist(res, "dropped");
    g_assert_cmpint(qlist_size(dropped), ==, 2);
    qobject_unref(res);
    g_assert(has_checkpoint(qts, ID_A));
    g_assert(!has_checkpoint(qts, ID_B));
    g_assert(!has_checkpoint(qts, ID_C));
    g_assert(g_file_test(t->c, G_FILE_TEST_EXISTS));
    assert_error(qts, "{'drop-lost': true}", "no checkpoint is lost");
    qtest_quit(qts);

    /* The store opens again with A alone */
    qts = tree_start(t);
    g_assert(has_checkpoint(qts, ID_A));
    assert_healthy(qts);
    qtest_quit(qts);
    tree_free(t);
}

/* What the running VM has open cannot be repaired, "Now" not dropped */
static void test_open_in_vm(void)
{
    Tree *t = make_tree("open-in-vm", "qcow2");
    g_autofree char *moved = g_strdup_printf("%s/moved.qcow2", t->dir);
    g_autofree char *args = NULL, *out = NULL;
    QTestState *qts;
    QList *problems;
    QDict *res;

    qts = tree_start(t);
    /* The VM keeps reading base through its open file */
    g_assert(rename(t->base, moved) == 0);
    problems = check(qts, NULL, NULL);
    assert_problem(problems, ID_A, "missing", t->base);
    assert_problem(problems, ID_B, "parent-missing", t->b);
    assert_problem(problems, NULL, "parent-missing", t->n);
    qobject_unref(problems);

    args = g_strdup_printf("{'relink': [{'filename': '%s', 'parent': '%s'}]}",
                           t->n, moved);
    assert_error(qts, args, "the running VM has it open");
    out = qtest_hmp(qts, "checkpoint_check -l %s %s", t->n, moved);
    assert_contains(out, "the running VM has it open");

    /* All checkpoints need base; "Now" stays, its problem reported */
    problems = check(qts, "{'drop-lost': true}", &res);
    g_assert_cmpint(qlist_size(qdict_get_qlist(res, "dropped")), ==, 3);
    assert_problem(problems, NULL, "parent-missing", t->n);
    assert_count(problems, 1);
    qobject_unref(problems);
    qobject_unref(res);
    assert_error(qts, "{'drop-lost': true}", "\"Now\" cannot be dropped");
    qtest_quit(qts);
    tree_free(t);
}

int main(int argc, char **argv)
{
    g_test_init(&argc, &argv, NULL);
    if (!qtest_has_machine("microvm")) {
        g_test_skip("microvm machine not available");
        return g_test_run();
    }
    tmpdir = hvcp_make_tmpdir("checkpoint-check-test-XXXXXX");

    qtest_add_func("/checkpoint-check/healthy", test_healthy);
    qtest_add_func("/checkpoint-check/missing", test_missing);
    qtest_add_func("/checkpoint-check/relink", test_relink);
    qtest_add_func("/checkpoint-check/reconnect-vhdx", test_reconnect_vhdx);
    qtest_add_func("/checkpoint-check/reconnect-qcow2",
                   test_reconnect_qcow2);
    qtest_add_func("/checkpoint-check/drop-lost", test_drop_lost);
    qtest_add_func("/checkpoint-check/open-in-vm", test_open_in_vm);
    return hvcp_run_and_remove(tmpdir);
}
