/*
 * QTest for the checkpoint manager: settings, store, query, rename
 *
 * Copyright (c) 2026 The Hyper-V checkpoints project
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 *
 * No guest code runs: disks are written with qemu-io over NBD, RAM
 * through qtest.  Some stores are written by hand (checkpoint/FORMAT.md)
 * to reach states the commands do not make (corrupt files, production
 * checkpoints, what a crash leaves).
 */

#include "qemu/osdep.h"
#include "libqtest.h"
#include "hvcp-qtest-util.h"
#include "qapi/error.h"
#include "qobject/qdict.h"
#include "qobject/qlist.h"
#include "qobject/qjson.h"
#include "qobject/qstring.h"

#define ID_A "0d4c7a3e-6f0e-4a43-9b5f-2a4ef1a7c2d1"
#define ID_B "5b0e2f7c-1a6d-4c52-8e3b-9f1d2c3b4a50"
#define ID_C "c8f1d6e2-3b4a-4f7e-a1d2-7e6f5a4b3c21"

static char *tmpdir;

static QTestState *vm_start(const char *extra)
{
    return qtest_initf("-M microvm -display none -nodefaults %s",
                       extra ? extra : "");
}

static char *tmp_path(const char *name)
{
    return g_strdup_printf("%s/%s", tmpdir, name);
}


/* A store with A (standard) -> B (production), A -> C; Now under B */
static char *make_store(const char *name, const char *disks)
{
    g_autofree char *state_dir = NULL, *state = NULL, *manifest = NULL;
    g_autofree char *text = NULL;
    char *dir = tmp_path(name);

    state_dir = g_strdup_printf("%s/%s", dir, ID_A);
    g_assert(g_mkdir_with_parents(state_dir, 0700) == 0);
    state = g_strdup_printf("%s/state", state_dir);
    write_file(state, "not really a state file, but it has a size");
    text = g_strdup_printf(
        "{ \"version\": 1, \"current\": \"" ID_B "\",\n"
        "  \"checkpoints\": [\n"
        "    { \"id\": \"" ID_A "\", \"name\": \"first\","
        "      \"type\": \"standard\", \"state\": \"ready\","
        "      \"created\": 1795000000, \"disks\": [%s],"
        "      \"state-file\": \"" ID_A "/state\" },\n"
        "    { \"id\": \"" ID_B "\", \"name\": \"second\","
        "      \"type\": \"production\", \"state\": \"ready\","
        "      \"parent\": \"" ID_A "\", \"created\": 1795000100,"
        "      \"disks\": [] },\n"
        "    { \"id\": \"" ID_C "\", \"name\": \"second\","
        "      \"type\": \"production\", \"state\": \"ready\","
        "      \"parent\": \"" ID_A "\", \"created\": 1795000200,"
        "      \"disks\": [] } ],\n"
        "  \"active\": [%s] }\n", disks, disks);
    manifest = g_strdup_printf("%s/manifest.json", dir);
    write_file(manifest, text);
    return dir;
}

static void test_fresh(void)
{
    QTestState *qts = vm_start(NULL);
    QDict *rsp;
    QList *list;
    g_autofree char *out = NULL;

    rsp = qtest_qmp_assert_success_ref(qts,
              "{'execute': 'query-checkpoint-parameters'}");
    g_assert_cmpstr(qdict_get_str(rsp, "type"), ==, "production");
    g_assert(!qdict_haskey(rsp, "dir"));
    qobject_unref(rsp);

    rsp = qtest_qmp(qts, "{'execute': 'query-checkpoints'}");
    list = qdict_get_qlist(rsp, "return");
    g_assert(list && qlist_empty(list));
    qobject_unref(rsp);

    out = qtest_hmp(qts, "info checkpoints");
    assert_contains(out, "No checkpoint store is set");
    qtest_quit(qts);
}

static void test_set_parameters(void)
{
    g_autofree char *dir = tmp_path("new/store");
    g_autofree char *file = tmp_path("a-file");
    g_autofree char *manifest = NULL, *err = NULL;
    QTestState *qts = vm_start(NULL);
    QDict *rsp;

    qtest_qmp_assert_success(qts,
        "{'execute': 'checkpoint-set-parameters',"
        " 'arguments': {'dir': %s, 'type': 'standard'}}", dir);
    rsp = qtest_qmp_assert_success_ref(qts,
              "{'execute': 'query-checkpoint-parameters'}");
    g_assert_cmpstr(qdict_get_str(rsp, "type"), ==, "standard");
    g_assert_cmpstr(qdict_get_str(rsp, "dir"), ==, dir);
    qobject_unref(rsp);
    manifest = g_strdup_printf("%s/manifest.json", dir);
    g_assert(g_file_test(manifest, G_FILE_TEST_IS_REGULAR));

    /* type alone; the folder stays */
    qtest_qmp_assert_success(qts,
        "{'execute': 'checkpoint-set-parameters',"
        " 'arguments': {'type': 'disabled'}}");
    rsp = qtest_qmp_assert_success_ref(qts,
              "{'execute': 'query-checkpoint-parameters'}");
    g_assert_cmpstr(qdict_get_str(rsp, "type"), ==, "disabled");
    g_assert_cmpstr(qdict_get_str(rsp, "dir"), ==, dir);
    qobject_unref(rsp);

    err = qmp_error(qts, "{'execute': 'checkpoint-set-parameters',"
                    " 'arguments': {'type': 'sometimes'}}");
    assert_contains(err, "sometimes");
    g_clear_pointer(&err, g_free);
    err = qmp_error(qts, "{'execute': 'checkpoint-set-parameters',"
                    " 'arguments': {'dir': ''}}");
    assert_contains(err, "empty");
    g_clear_pointer(&err, g_free);
    write_file(file, "x");
    err = qmp_error(qts, "{'execute': 'checkpoint-set-parameters',"
                    " 'arguments': {'dir': %s}}", file);
    assert_contains(err, file);
    g_clear_pointer(&err, g_free);

    /* A store without checkpoints can be left */
    g_free(dir);
    dir = tmp_path("other-store");
    qtest_qmp_assert_success(qts,
        "{'execute': 'checkpoint-set-parameters',"
        " 'arguments': {'dir': %s}}", dir);
    qtest_quit(qts);
}

static void test_rename_refused(void)
{
    g_autofree char *dir = tmp_path("empty-store");
    g_autofree char *err = NULL;
    QTestState *qts = vm_start(NULL);

    err = qmp_error(qts, "{'execute': 'checkpoint-rename',"
                    " 'arguments': {'checkpoint': 'x', 'name': 'y'}}");
    assert_contains(err, "No checkpoint store is set");
    g_clear_pointer(&err, g_free);
    qtest_qmp_assert_success(qts,
        "{'execute': 'checkpoint-set-parameters',"
        " 'arguments': {'dir': %s}}", dir);
    err = qmp_error(qts, "{'execute': 'checkpoint-rename',"
                    " 'arguments': {'checkpoint': 'x', 'name': 'y'}}");
    assert_contains(err, "no checkpoint with id or name 'x'");
    g_clear_pointer(&err, g_free);
    err = qmp_error(qts, "{'execute': 'checkpoint-rename',"
                    " 'arguments': {'checkpoint': 'x', 'name': ''}}");
    assert_contains(err, "must not be empty");
    g_clear_pointer(&err, g_free);
    err = qmp_error(qts, "{'execute': 'checkpoint-rename',"
                    " 'arguments': {'checkpoint': 'x'}}");
    assert_contains(err, "name");
    qtest_quit(qts);
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
    g_assert_not_reached();
}

static const char *name_of(QTestState *qts, const char *id)
{
    static char name[256];
    QDict *rsp = qtest_qmp(qts, "{'execute': 'query-checkpoints'}");
    QDict *c = find_checkpoint(qdict_get_qlist(rsp, "return"), id);

    g_assert(c);
    g_strlcpy(name, qdict_get_str(c, "name"), sizeof(name));
    qobject_unref(rsp);
    return name;
}

/* query-checkpoints on the store make_store("tree") wrote */
static void assert_tree_queried(QTestState *qts)
{
    QDict *rsp, *c;
    QList *list;

    rsp = qtest_qmp(qts, "{'execute': 'query-checkpoints'}");
    list = qdict_get_qlist(rsp, "return");
    g_assert_cmpint(qlist_size(list), ==, 3);
    c = find_checkpoint(list, ID_A);
    g_assert_cmpstr(qdict_get_str(c, "name"), ==, "first");
    g_assert_cmpstr(qdict_get_str(c, "type"), ==, "standard");
    g_assert_cmpstr(qdict_get_str(c, "state"), ==, "ready");
    g_assert(!qdict_haskey(c, "parent"));
    g_assert_cmpint(qdict_get_int(c, "created"), ==, 1795000000);
    g_assert(!qdict_get_bool(c, "current"));
    g_assert(qdict_get_int(c, "state-file-size") > 0);
    c = find_checkpoint(list, ID_B);
    g_assert_cmpstr(qdict_get_str(c, "parent"), ==, ID_A);
    g_assert(qdict_get_bool(c, "current"));
    g_assert(!qdict_haskey(c, "state-file-size"));
    qobject_unref(rsp);
}

/* The same tree in "info checkpoints", with Now under B */
static void assert_tree_shown(QTestState *qts)
{
    g_autofree char *out = qtest_hmp(qts, "info checkpoints");
    g_autofree char *a = g_strdup_printf("\nfirst  (id %s, standard,"
                                         " saved-state, ready, ", ID_A);
    g_autofree char *b = g_strdup_printf("\n  second  (id %s, production,"
                                         " application, ready, ", ID_B);

    assert_contains(out, a);
    assert_contains(out, b);
    assert_contains(out, ", production, application, ready, 2026-");
    g_assert(strstr(out, "    Now\r\n"));
    g_assert(strstr(out, b) < strstr(out, "    Now\r\n"));
}

/*
 * Rename by unique name, by id, through HMP; an ambiguous name, a name
 * too long and an unknown checkpoint are refused.  A is renamed to
 * @long_name, B to "hmp-name", C to "été".
 */
static void rename_tree(QTestState *qts, const char *long_name)
{
    g_autofree char *too_long = g_strnfill(101, 'y');
    g_autofree char *out = NULL, *err = NULL;

    qtest_qmp_assert_success(qts,
        "{'execute': 'checkpoint-rename',"
        " 'arguments': {'checkpoint': 'first', 'name': %s}}", long_name);
    g_assert_cmpstr(name_of(qts, ID_A), ==, long_name);
    err = qmp_error(qts, "{'execute': 'checkpoint-rename',"
                    " 'arguments': {'checkpoint': 'second', 'name': 'z'}}");
    assert_contains(err, "Several checkpoints are named 'second'");
    g_clear_pointer(&err, g_free);
    qtest_qmp_assert_success(qts,
        "{'execute': 'checkpoint-rename',"
        " 'arguments': {'checkpoint': %s, 'name': 'été'}}", ID_C);
    g_assert_cmpstr(name_of(qts, ID_C), ==, "été");
    err = qmp_error(qts, "{'execute': 'checkpoint-rename',"
                    " 'arguments': {'checkpoint': %s, 'name': %s}}",
                    ID_C, too_long);
    assert_contains(err, "at most 100 characters");
    g_assert_cmpstr(name_of(qts, ID_C), ==, "été");
    out = qtest_hmp(qts, "checkpoint_rename second hmp-name");
    g_assert_cmpstr(out, ==, "");
    g_assert_cmpstr(name_of(qts, ID_B), ==, "hmp-name");
    g_clear_pointer(&out, g_free);
    out = qtest_hmp(qts, "checkpoint_rename nosuch other");
    assert_contains(out, "no checkpoint with id or name 'nosuch'");
}

static void test_store_reload(void)
{
    g_autofree char *dir = make_store("tree", "");
    g_autofree char *args = g_strdup_printf("-checkpoints dir=%s,type=standard",
                                            dir);
    g_autofree char *tmp = g_strdup_printf("%s/manifest.json.tmp", dir);
    g_autofree char *other = tmp_path("other");
    g_autofree char *err = NULL;
    g_autofree char *long_name = g_strnfill(100, 'x');
    QTestState *qts;
    QDict *rsp;

    /* What a crash while replacing the manifest leaves: ignored */
    write_file(tmp, "{ \"half\": ");
    qts = vm_start(args);
    assert_tree_queried(qts);
    assert_tree_shown(qts);
    rename_tree(qts, long_name);
    g_assert(!g_file_test(tmp, G_FILE_TEST_EXISTS));

    /* The folder cannot change while there are checkpoints */
    err = qmp_error(qts, "{'execute': 'checkpoint-set-parameters',"
                    " 'arguments': {'dir': %s}}", other);
    assert_contains(err, "can change only while there are none");
    qtest_quit(qts);

    /* A new QEMU on the same store sees the renamed tree */
    qts = vm_start(args);
    g_assert_cmpstr(name_of(qts, ID_A), ==, long_name);
    g_assert_cmpstr(name_of(qts, ID_B), ==, "hmp-name");
    g_assert_cmpstr(name_of(qts, ID_C), ==, "été");
    rsp = qtest_qmp_assert_success_ref(qts,
              "{'execute': 'query-checkpoint-parameters'}");
    g_assert_cmpstr(qdict_get_str(rsp, "type"), ==, "standard");
    g_assert_cmpstr(qdict_get_str(rsp, "dir"), ==, dir);
    qobject_unref(rsp);
    qtest_quit(qts);
}

/* Corrupt manifests: set-parameters refuses them with the reason */
static void test_corrupt(void)
{
    static const struct {
        const char *manifest, *error;
    } cases[] = {
        { "", "Expecting a JSON value" },
        { "{ \"version\": 1, ", "JSON parse error" },
        { "[]", "Invalid parameter type" },
        { "{ \"version\": 2, \"checkpoints\": [], \"active\": [] }",
          "format version 2 is not supported" },
        { "{ \"version\": 1, \"checkpoints\": [], \"active\": [],"
          " \"extra\": 1 }", "extra" },
        { "{ \"version\": 1, \"checkpoints\": [] }", "active" },
        { "{ \"version\": 1, \"current\": \"" ID_A "\", \"checkpoints\": [],"
          " \"active\": [] }", "current checkpoint " ID_A " is not in" },
        { "{ \"version\": 1, \"checkpoints\": [ { \"id\": \"nope\","
          " \"name\": \"n\", \"type\": \"production\", \"state\": \"ready\","
          " \"created\": 1, \"disks\": [] } ], \"active\": [] }",
          "'nope' is not a UUID" },
        { "{ \"version\": 1, \"checkpoints\": [ { \"id\": \"" ID_A "\","
          " \"name\": \"\", \"type\": \"production\", \"state\": \"ready\","
          " \"created\": 1, \"disks\": [] } ], \"active\": [] }",
          "must not be empty" },
        { "{ \"version\": 1, \"checkpoints\": [ { \"id\": \"" ID_A "\","
          " \"name\": \"n\", \"type\": \"production\", \"state\": \"ready\","
          " \"parent\": \"" ID_B "\", \"created\": 1, \"disks\": [] } ],"
          " \"active\": [] }", "parent " ID_B " is not listed before" },
        { "{ \"version\": 1, \"checkpoints\": ["
          " { \"id\": \"" ID_A "\", \"name\": \"n\", \"type\": \"production\","
          " \"state\": \"ready\", \"created\": 1, \"disks\": [] },"
          " { \"id\": \"" ID_A "\", \"name\": \"n\", \"type\": \"production\","
          " \"state\": \"ready\", \"created\": 1, \"disks\": [] } ],"
          " \"active\": [] }", "used twice" },
        { "{ \"version\": 1, \"checkpoints\": [ { \"id\": \"" ID_A "\","
          " \"name\": \"n\", \"type\": \"standard\", \"state\": \"ready\","
          " \"created\": 1, \"disks\": [], \"state-file\": \"../x\" } ],"
          " \"active\": [] }", "leaves the store folder" },
        { "{ \"version\": 1, \"checkpoints\": [ { \"id\": \"" ID_A "\","
          " \"name\": \"n\", \"type\": \"standard\", \"state\": \"ready\","
          " \"created\": 1, \"disks\": [] } ], \"active\": [] }",
          "needs a state file" },
        { "{ \"version\": 1, \"checkpoints\": [], \"active\": ["
          " { \"device\": \"d\", \"filename\": \"f\", \"format\": \"raw\" } ] }",
          "only vhdx and qcow2" },
    };
    QTestState *qts = vm_start(NULL);
    int i;

    for (i = 0; i < ARRAY_SIZE(cases); i++) {
        g_autofree char *name = g_strdup_printf("corrupt%d", i);
        g_autofree char *dir = tmp_path(name);
        g_autofree char *file = g_strdup_printf("%s/manifest.json", dir);
        g_autofree char *err = NULL;
        QDict *rsp;

        g_assert(g_mkdir_with_parents(dir, 0700) == 0);
        write_file(file, cases[i].manifest);
        err = qmp_error(qts, "{'execute': 'checkpoint-set-parameters',"
                        " 'arguments': {'dir': %s}}", dir);
        assert_contains(err, "is not valid: ");
        assert_contains(err, cases[i].error);
        /* Nothing changed */
        rsp = qtest_qmp_assert_success_ref(qts,
                  "{'execute': 'query-checkpoint-parameters'}");
        g_assert(!qdict_haskey(rsp, "dir"));
        qobject_unref(rsp);
    }
    qtest_quit(qts);
}

/* QEMU does not start on a corrupt store given on the command line */
static void test_corrupt_cmdline(void)
{
    g_autofree char *dir = tmp_path("corrupt-cmdline");
    g_autofree char *file = g_strdup_printf("%s/manifest.json", dir);
    g_autofree char *cmd = NULL, *err_out = NULL;
    const char *qemu = g_getenv("QTEST_QEMU_BINARY");
    int status;

    g_assert(g_mkdir_with_parents(dir, 0700) == 0);
    write_file(file, "{ \"version\": 1 }");
    cmd = g_strdup_printf("%s -M microvm -display none -nodefaults"
                          " -checkpoints dir=%s -S -qtest null", qemu, dir);
    g_assert(g_spawn_command_line_sync(cmd, NULL, &err_out, &status, NULL));
    g_assert(!WIFEXITED(status) || WEXITSTATUS(status) != 0);
    assert_contains(err_out, "Checkpoint manifest");
    assert_contains(err_out, "is not valid");

    g_clear_pointer(&cmd, g_free);
    g_clear_pointer(&err_out, g_free);
    cmd = g_strdup_printf("%s -M microvm -display none -nodefaults"
                          " -checkpoints dir=%s,type=x -S -qtest null",
                          qemu, dir);
    g_assert(g_spawn_command_line_sync(cmd, NULL, &err_out, &status, NULL));
    g_assert(!WIFEXITED(status) || WEXITSTATUS(status) != 0);
    assert_contains(err_out, "-checkpoints type: 'x' is not one of");
}

/* -checkpoints type=... alone: the folder can be set later */
static void test_type_only(void)
{
    g_autofree char *dir = tmp_path("later");
    QTestState *qts = vm_start("-checkpoints type=production-only");
    QDict *rsp;

    rsp = qtest_qmp_assert_success_ref(qts,
              "{'execute': 'query-checkpoint-parameters'}");
    g_assert_cmpstr(qdict_get_str(rsp, "type"), ==, "production-only");
    g_assert(!qdict_haskey(rsp, "dir"));
    qobject_unref(rsp);
    qtest_qmp_assert_success(qts,
        "{'execute': 'checkpoint-set-parameters',"
        " 'arguments': {'dir': %s}}", dir);
    rsp = qtest_qmp_assert_success_ref(qts,
              "{'execute': 'query-checkpoint-parameters'}");
    g_assert_cmpstr(qdict_get_str(rsp, "type"), ==, "production-only");
    g_assert_cmpstr(qdict_get_str(rsp, "dir"), ==, dir);
    qobject_unref(rsp);
    qtest_quit(qts);
}

/* The store's disks must be the VM's */
static void test_disk_mismatch(void)
{
    g_autofree char *img = tmp_path("disk.qcow2");
    g_autofree char *img2 = tmp_path("disk2.qcow2");
    g_autofree char *disks = g_strdup_printf(
        "{ \"device\": \"disk0\", \"filename\": \"%s\","
        " \"format\": \"qcow2\" }", img);
    g_autofree char *dir = make_store("with-disk", disks);
    g_autofree char *good = NULL, *bad = NULL, *err = NULL;
    QTestState *qts;
    QDict *rsp, *c, *d;

    g_assert(mkimg(img, "qcow2", 1));
    g_assert(mkimg(img2, "qcow2", 1));
    good = g_strdup_printf("-drive if=none,id=disk0,file=%s,format=qcow2"
                           " -device virtio-blk-device,drive=disk0", img);
    bad = g_strdup_printf("-drive if=none,id=disk0,file=%s,format=qcow2"
                          " -device virtio-blk-device,drive=disk0", img2);

    qts = vm_start(good);
    qtest_qmp_assert_success(qts,
        "{'execute': 'checkpoint-set-parameters',"
        " 'arguments': {'dir': %s}}", dir);
    rsp = qtest_qmp(qts, "{'execute': 'query-checkpoints'}");
    c = find_checkpoint(qdict_get_qlist(rsp, "return"), ID_A);
    d = qobject_to(QDict, qlist_peek(qdict_get_qlist(c, "disks")));
    g_assert_cmpstr(qdict_get_str(d, "device"), ==, "disk0");
    g_assert_cmpstr(qdict_get_str(d, "filename"), ==, img);
    g_assert_cmpstr(qdict_get_str(d, "format"), ==, "qcow2");
    g_assert_cmpint(qdict_get_int(d, "virtual-size"), ==, 1024 * 1024);
    g_assert(qdict_get_int(d, "disk-size") > 0);
    qobject_unref(rsp);
    qtest_quit(qts);

    qts = vm_start(bad);
    err = qmp_error(qts, "{'execute': 'checkpoint-set-parameters',"
                    " 'arguments': {'dir': %s}}", dir);
    assert_contains(err, "expects disk 'disk0' to use");
    assert_contains(err, img2);
    qtest_quit(qts);

    g_clear_pointer(&err, g_free);
    qts = vm_start(NULL);
    err = qmp_error(qts, "{'execute': 'checkpoint-set-parameters',"
                    " 'arguments': {'dir': %s}}", dir);
    assert_contains(err, "which this VM does not have");
    qtest_quit(qts);
}

/* The create refusals of a VM with a store: they change nothing */
static void assert_create_refusals(QTestState *qts)
{
    g_autofree char *err = NULL;
    QDict *rsp;

    /* production-only without a guest agent */
    err = qmp_error(qts, "{'execute': 'checkpoint-create',"
                    " 'arguments': {'type': 'production-only'}}");
    assert_contains(err, "No production checkpoint (type production-only)");
    g_clear_pointer(&err, g_free);
    err = qmp_error(qts, "{'execute': 'checkpoint-create',"
                    " 'arguments': {'type': 'standard', 'name': ''}}");
    assert_contains(err, "must not be empty");
    g_clear_pointer(&err, g_free);
    err = qmp_error(qts, "{'execute': 'checkpoint-create',"
                    " 'arguments': {'type': 'disabled'}}");
    assert_contains(err, "Checkpoints are disabled");
    rsp = qtest_qmp(qts, "{'execute': 'query-checkpoints'}");
    g_assert(qlist_empty(qdict_get_qlist(rsp, "return")));
    qobject_unref(rsp);
}

/* Checkpoint @a of the disks @qcow2 (d0) and @vhdx (d1), as queried */
static void assert_first_checkpoint(QDict *c, const char *qcow2,
                                    const char *vhdx)
{
    QList *disks = qdict_get_qlist(c, "disks");
    QDict *d;

    g_assert_cmpstr(qdict_get_str(c, "name"), ==, "A");
    g_assert_cmpstr(qdict_get_str(c, "state"), ==, "ready");
    g_assert_cmpstr(qdict_get_str(c, "type"), ==, "standard");
    g_assert(!qdict_haskey(c, "parent"));
    g_assert(!qdict_get_bool(c, "current"));
    g_assert(qdict_get_int(c, "state-file-size") > 0);
    g_assert_cmpint(qlist_size(disks), ==, 2);
    d = find_disk(disks, "d0");
    g_assert_cmpstr(qdict_get_str(d, "filename"), ==, qcow2);
    g_assert_cmpstr(qdict_get_str(d, "format"), ==, "qcow2");
    g_assert_cmpint(qdict_get_int(d, "virtual-size"), ==, 16 * 1024 * 1024);
    d = find_disk(disks, "d1");
    g_assert_cmpstr(qdict_get_str(d, "filename"), ==, vhdx);
    g_assert_cmpstr(qdict_get_str(d, "format"), ==, "vhdx");
}

/* A, then B (default name) under it on A's children, "Now" under B */
static void assert_created_tree(QTestState *qts, const char *a,
                                const char *b, const char *qcow2,
                                const char *vhdx)
{
    g_autofree char *child0 = g_strdup_printf("%s/c0_%s.qcow2", tmpdir, a);
    g_autofree char *child1 = g_strdup_printf("%s/c1_%s.avhdx", tmpdir, a);
    g_autofree char *out = NULL;
    QDict *rsp, *c, *d;
    QList *list;

    rsp = qtest_qmp(qts, "{'execute': 'query-checkpoints'}");
    list = qdict_get_qlist(rsp, "return");
    g_assert_cmpint(qlist_size(list), ==, 2);
    assert_first_checkpoint(find_checkpoint(list, a), qcow2, vhdx);
    c = find_checkpoint(list, b);
    assert_contains(qdict_get_str(c, "name"), "VM - 20");
    g_assert_cmpstr(qdict_get_str(c, "parent"), ==, a);
    g_assert(qdict_get_bool(c, "current"));
    d = find_disk(qdict_get_qlist(c, "disks"), "d0");
    g_assert_cmpstr(qdict_get_str(d, "filename"), ==, child0);
    d = find_disk(qdict_get_qlist(c, "disks"), "d1");
    g_assert_cmpstr(qdict_get_str(d, "filename"), ==, child1);
    qobject_unref(rsp);

    out = qtest_hmp(qts, "info checkpoints");
    assert_contains(out, "\r\n  VM - 20");
    assert_contains(out, "\r\n    Now\r\n");
}

/* A new QEMU on the active images (B's children) gets the tree */
static void assert_reopened_on_children(const char *dir, const char *b)
{
    g_autofree char *bchild0 = g_strdup_printf("%s/c0_%s.qcow2", tmpdir, b);
    g_autofree char *bchild1 = g_strdup_printf("%s/c1_%s.avhdx", tmpdir, b);
    g_autofree char *disks = disk_args(bchild0, bchild1);
    g_autofree char *args = NULL;
    QTestState *qts;
    QDict *rsp;
    QList *list;

    g_assert(g_file_test(bchild0, G_FILE_TEST_IS_REGULAR));
    g_assert(g_file_test(bchild1, G_FILE_TEST_IS_REGULAR));
    args = g_strdup_printf("%s -checkpoints dir=%s", disks, dir);
    qts = vm_start(args);
    rsp = qtest_qmp(qts, "{'execute': 'query-checkpoints'}");
    list = qdict_get_qlist(rsp, "return");
    g_assert_cmpint(qlist_size(list), ==, 2);
    g_assert(qdict_get_bool(find_checkpoint(list, b), "current"));
    qobject_unref(rsp);
    qtest_quit(qts);
}

static void test_create(void)
{
    g_autofree char *dir = tmp_path("create-store");
    g_autofree char *qcow2 = tmp_path("c0.qcow2");
    g_autofree char *vhdx = tmp_path("c1.vhdx");
    g_autofree char *disks = NULL, *args = NULL, *err = NULL;
    g_autofree char *a = NULL, *b = NULL;
    QTestState *qts;

    g_assert(mkimg(qcow2, "qcow2", 16));
    g_assert(mkimg(vhdx, "vhdx", 16));
    disks = disk_args(qcow2, vhdx);
    args = g_strdup_printf("%s -checkpoints dir=%s", disks, dir);
    qts = vm_start(args);
    assert_create_refusals(qts);

    /* A, then B with the default name and type */
    a = create_and_wait(qts, "A");
    qtest_qmp_assert_success(qts,
        "{'execute': 'checkpoint-set-parameters',"
        " 'arguments': {'type': 'standard'}}");
    b = create_and_wait(qts, NULL);
    assert_created_tree(qts, a, b, qcow2, vhdx);
    qtest_quit(qts);

    assert_reopened_on_children(dir, b);

    /* The old images do not match the store any more */
    qts = vm_start(disks);
    err = qmp_error(qts, "{'execute': 'checkpoint-set-parameters',"
                    " 'arguments': {'dir': %s}}", dir);
    assert_contains(err, "expects disk 'd0' to use");
    qtest_quit(qts);
}

static void test_create_no_store(void)
{
    QTestState *qts = vm_start(NULL);
    g_autofree char *err = NULL;

    err = qmp_error(qts, "{'execute': 'checkpoint-create',"
                    " 'arguments': {'type': 'standard'}}");
    assert_contains(err, "No checkpoint store is set");
    qtest_quit(qts);
}

/* Patterns in both disks (qemu-io over NBD) and in guest RAM */
#define PATTERN_RAM 0x200000
#define PATTERN_LEN 4096

static void assert_pattern(QTestState *qts, uint8_t p);
static void write_disk_pattern(QTestState *qts, const char *device,
                               uint8_t p);

static void write_pattern(QTestState *qts, uint8_t p)
{
    static const char *const drives[] = { "d0", "d1" };
    int i;

    for (i = 0; i < ARRAY_SIZE(drives); i++) {
        write_disk_pattern(qts, drives[i], p);
    }
    qtest_memset(qts, PATTERN_RAM, p, PATTERN_LEN);
    assert_pattern(qts, p);
}

/* The node the guest device of disk @device uses now */
static char *disk_node(QTestState *qts, const char *device)
{
    QDict *rsp = qtest_qmp(qts, "{'execute': 'query-block'}");
    const QListEntry *e;
    char *node = NULL;

    QLIST_FOREACH_ENTRY(qdict_get_qlist(rsp, "return"), e) {
        QDict *b = qobject_to(QDict, qlist_entry_obj(e));

        /* A -drive id, or the id of a device with a -blockdev node */
        if (!strcmp(qdict_get_str(b, "device"), device) ||
            !g_strcmp0(qdict_get_try_str(b, "qdev"), device)) {
            node = g_strdup(qdict_get_str(qdict_get_qdict(b, "inserted"),
                                          "node-name"));
        }
    }
    qobject_unref(rsp);
    g_assert(node);
    return node;
}

/*
 * Run qemu-io command @io on what the guest sees as @device: the node is
 * exported over NBD and the qemu-io program does the I/O (HMP's qemu-io
 * prints on QEMU's stdout, which would mix with this test's TAP output).
 * Returns what qemu-io printed.
 */
static char *disk_io(QTestState *qts, const char *device, bool write,
                     const char *io)
{
    g_autofree char *node = disk_node(qts, device);
    g_autofree char *sock = g_strdup_printf("%s/nbd.sock", tmpdir);
    g_autofree char *qemu_io = NULL, *cmd = NULL;
    g_autofree char *dir = g_path_get_dirname(g_getenv("QTEST_QEMU_IMG"));
    char *out = NULL;
    QDict *rsp;
    int status;

    rsp = qtest_qmp(qts, "{'execute': 'nbd-server-start', 'arguments':"
                    " {'addr': {'type': 'unix', 'data': {'path': %s}}}}",
                    sock);
    qobject_unref(rsp);     /* started already, or now */
    qtest_qmp_assert_success(qts,
        "{'execute': 'block-export-add', 'arguments':"
        " {'type': 'nbd', 'id': 'check', 'node-name': %s,"
        "  'name': 'check', 'writable': %i}}", node, write);
    qemu_io = g_build_filename(dir, "qemu-io", NULL);
    cmd = g_strdup_printf("%s %s -f raw nbd+unix:///check?socket=%s"
                          " -c '%s'", qemu_io, write ? "" : "-r", sock, io);
    g_assert(g_spawn_command_line_sync(cmd, &out, NULL, &status, NULL));
    qtest_qmp_assert_success(qts,
        "{'execute': 'block-export-del', 'arguments': {'id': 'check'}}");
    qtest_qmp_eventwait(qts, "BLOCK_EXPORT_DELETED");
    return out;
}

static void write_disk_pattern(QTestState *qts, const char *device,
                               uint8_t p)
{
    g_autofree char *io = g_strdup_printf("write -P 0x%02x 0 64k", p);
    g_autofree char *out = disk_io(qts, device, true, io);

    if (!strstr(out, "wrote 65536/65536")) {
        g_test_message("disk %s, pattern 0x%02x: %s", device, p, out);
        g_assert_not_reached();
    }
}

/* What the guest would read on @device */
static void assert_disk_pattern(QTestState *qts, const char *device,
                                uint8_t p)
{
    g_autofree char *io = g_strdup_printf("read -P 0x%02x 0 64k", p);
    g_autofree char *out = disk_io(qts, device, false, io);

    if (!strstr(out, "read 65536/65536") ||
        strstr(out, "verification failed")) {
        g_test_message("disk %s, pattern 0x%02x: %s", device, p, out);
        g_assert_not_reached();
    }
}

static void assert_pattern(QTestState *qts, uint8_t p)
{
    uint8_t buf[PATTERN_LEN];
    int i;

    assert_disk_pattern(qts, "d0", p);
    assert_disk_pattern(qts, "d1", p);
    qtest_memread(qts, PATTERN_RAM, buf, sizeof(buf));
    for (i = 0; i < sizeof(buf); i++) {
        g_assert_cmphex(buf[i], ==, p);
    }
}

static void assert_run_state(QTestState *qts, bool running)
{
    QDict *rsp = qtest_qmp_assert_success_ref(qts,
                     "{'execute': 'query-status'}");

    g_assert_cmpint(qdict_get_bool(rsp, "running"), ==, running);
    qobject_unref(rsp);
}

/* Apply @key; returns the id of the checkpoint taken first, if any */
static char *apply_and_wait(QTestState *qts, const char *key,
                            const char *id, bool first)
{
    QDict *rsp;
    char *created = NULL;

    rsp = qtest_qmp_assert_success_ref(qts,
              "{'execute': 'checkpoint-apply',"
              " 'arguments': {'checkpoint': %s, 'checkpoint-first': %i}}",
              key, first);
    if (first) {
        created = g_strdup(qdict_get_str(rsp, "created"));
    } else {
        g_assert(!qdict_haskey(rsp, "created"));
    }
    qobject_unref(rsp);
    wait_event_of(qts, "CHECKPOINT_APPLIED", id);
    return created;
}

/* The manifest's active image of @device */
static char *active_image(const char *dir, const char *device)
{
    g_autofree char *path = g_strdup_printf("%s/manifest.json", dir);
    g_autofree char *text = NULL;
    const QListEntry *e;
    QDict *m;
    char *file = NULL;

    g_assert(g_file_get_contents(path, &text, NULL, NULL));
    m = qobject_to(QDict, qobject_from_json(text, &error_abort));
    g_assert(!qdict_haskey(m, "operation"));
    QLIST_FOREACH_ENTRY(qdict_get_qlist(m, "active"), e) {
        QDict *d = qobject_to(QDict, qlist_entry_obj(e));

        if (!strcmp(qdict_get_str(d, "device"), device)) {
            file = g_strdup(qdict_get_str(d, "filename"));
        }
    }
    qobject_unref(m);
    g_assert(file);
    return file;
}

static void assert_gone(const char *path)
{
    if (g_file_test(path, G_FILE_TEST_EXISTS)) {
        g_test_message("'%s' should have been deleted", path);
        g_assert_not_reached();
    }
}

/*
 * Apply A (written 0xaa) from B's "Now" (0xcc): A's disks and memory;
 * the images written since go.  Returns the active image of d0.
 */
static char *apply_back(QTestState *qts, const char *dir, const char *a,
                        const char *b)
{
    g_autofree char *b0 = g_strdup_printf("%s/a0_%s.qcow2", tmpdir, b);
    g_autofree char *b1 = g_strdup_printf("%s/a1_%s.avhdx", tmpdir, b);
    g_autofree char *cur = NULL;
    char *act0;

    g_assert(g_file_test(b0, G_FILE_TEST_IS_REGULAR));
    g_assert(!apply_and_wait(qts, "A", a, false));
    assert_run_state(qts, true);
    assert_pattern(qts, 0xaa);
    cur = current_of(qts);
    g_assert_cmpstr(cur, ==, a);
    assert_gone(b0);
    assert_gone(b1);
    act0 = active_image(dir, "d0");
    assert_contains(act0, "/a0_");
    g_assert(g_file_test(act0, G_FILE_TEST_IS_REGULAR));
    return act0;
}

/*
 * Apply B (0xbb), checkpointing the current state (0xdd, under A, on
 * image @act0) first; then apply that checkpoint
 */
static void apply_checkpoint_first(QTestState *qts, const char *act0,
                                   const char *a, const char *b)
{
    g_autofree char *p = NULL, *pchild = NULL;
    QDict *rsp, *c;

    write_pattern(qts, 0xdd);
    p = apply_and_wait(qts, b, b, true);
    assert_pattern(qts, 0xbb);
    /* The image of the state before is kept, the one after P is not */
    g_assert(g_file_test(act0, G_FILE_TEST_IS_REGULAR));
    pchild = g_strdup_printf("%s/a0_%s.qcow2", tmpdir, p);
    assert_gone(pchild);
    rsp = qtest_qmp(qts, "{'execute': 'query-checkpoints'}");
    c = find_checkpoint(qdict_get_qlist(rsp, "return"), p);
    g_assert(c);
    g_assert_cmpstr(qdict_get_str(c, "parent"), ==, a);
    g_assert_cmpstr(qdict_get_str(c, "state"), ==, "ready");
    g_assert(qdict_get_bool(find_checkpoint(qdict_get_qlist(rsp, "return"),
                                            b), "current"));
    qobject_unref(rsp);

    /* ... and that checkpoint can itself be applied */
    g_assert(!apply_and_wait(qts, p, p, false));
    assert_pattern(qts, 0xdd);
}

/* A paused VM stays paused; resume: false keeps it stopped too */
static void apply_stopped_vm(QTestState *qts, const char *a, const char *b)
{
    qtest_qmp_assert_success(qts, "{'execute': 'stop'}");
    g_assert(!apply_and_wait(qts, a, a, false));
    assert_run_state(qts, false);
    assert_pattern(qts, 0xaa);
    qtest_qmp_assert_success(qts, "{'execute': 'cont'}");
    qtest_qmp_assert_success(qts,
        "{'execute': 'checkpoint-apply',"
        " 'arguments': {'checkpoint': %s, 'resume': false}}", b);
    assert_run_state(qts, false);
    assert_pattern(qts, 0xbb);
    qtest_qmp_assert_success(qts, "{'execute': 'cont'}");
}

/* checkpoint_apply -c, checkpoint_create -s and info checkpoints */
static void apply_through_hmp(QTestState *qts)
{
    g_autofree char *out = NULL, *h = NULL, *now = NULL;
    QDict *rsp;

    out = qtest_hmp(qts, "checkpoint_apply -c A");
    assert_contains(out, "The state before the apply is checkpoint ");
    assert_pattern(qts, 0xaa);
    g_clear_pointer(&out, g_free);
    out = qtest_hmp(qts, "checkpoint_create -s from-hmp");
    assert_contains(out, "Creating checkpoint ");
    g_clear_pointer(&out, g_free);
    rsp = qtest_qmp_eventwait_ref(qts, "CHECKPOINT_CREATED");
    h = g_strdup(qdict_get_str(qdict_get_qdict(rsp, "data"), "id"));
    qobject_unref(rsp);
    g_assert_cmpstr(name_of(qts, h), ==, "from-hmp");
    out = qtest_hmp(qts, "info checkpoints");
    now = g_strdup_printf("\r\n  from-hmp  (id %s, standard, saved-state,"
                          " ready, ", h);
    assert_contains(out, now);
    g_assert(strstr(out, "\r\n    Now\r\n") > strstr(out, now));
    g_clear_pointer(&out, g_free);
    out = qtest_hmp(qts, "checkpoint_apply nosuch");
    assert_contains(out, "no checkpoint with id or name 'nosuch'");
}

/*
 * A new QEMU (@options before the disks) on the store's active images;
 * the images' names in *@act0 and *@act1
 */
static QTestState *start_on_active(const char *dir, const char *options,
                                   char **act0, char **act1)
{
    g_autofree char *disks = NULL, *args = NULL;

    *act0 = active_image(dir, "d0");
    *act1 = active_image(dir, "d1");
    disks = disk_args(*act0, *act1);
    args = g_strdup_printf("%s %s -checkpoints dir=%s", options, disks, dir);
    return vm_start(args);
}

/*
 * A VM with new 16 MiB disks @qcow2 (d0) and @vhdx (d1) in the test
 * folder and the store @dir, standard checkpoints by default
 */
static QTestState *vm_with_new_disks(const char *dir, const char *qcow2,
                                     const char *vhdx)
{
    g_autofree char *d0 = tmp_path(qcow2);
    g_autofree char *d1 = tmp_path(vhdx);
    g_autofree char *disks = NULL, *args = NULL;

    g_assert(mkimg(d0, "qcow2", 16));
    g_assert(mkimg(d1, "vhdx", 16));
    disks = disk_args(d0, d1);
    args = g_strdup_printf("%s -checkpoints dir=%s,type=standard", disks,
                           dir);
    return vm_start(args);
}

static void test_apply(void)
{
    g_autofree char *dir = tmp_path("apply-store");
    g_autofree char *err = NULL;
    g_autofree char *a = NULL, *b = NULL, *act0 = NULL, *act1 = NULL;
    QTestState *qts = vm_with_new_disks(dir, "a0.qcow2", "a1.vhdx");

    err = qmp_error(qts, "{'execute': 'checkpoint-apply',"
                    " 'arguments': {'checkpoint': 'nosuch'}}");
    assert_contains(err, "no checkpoint with id or name 'nosuch'");

    write_pattern(qts, 0xaa);
    a = create_and_wait(qts, "A");
    write_pattern(qts, 0xbb);
    b = create_and_wait(qts, "B");
    write_pattern(qts, 0xcc);
    act0 = apply_back(qts, dir, a, b);
    apply_checkpoint_first(qts, act0, a, b);
    g_clear_pointer(&act0, g_free);
    apply_stopped_vm(qts, a, b);
    apply_through_hmp(qts);
    qtest_quit(qts);

    /* A new QEMU on the store's active images applies B */
    qts = start_on_active(dir, "", &act0, &act1);
    g_assert(!apply_and_wait(qts, "B", b, false));
    assert_pattern(qts, 0xbb);
    assert_gone(act0);
    assert_gone(act1);
    qtest_quit(qts);
    g_clear_pointer(&act0, g_free);
    g_clear_pointer(&act1, g_free);

    /* ... and so does one started with -S, which stays stopped */
    qts = start_on_active(dir, "-S", &act0, &act1);
    g_assert(!apply_and_wait(qts, "A", a, false));
    assert_run_state(qts, false);
    assert_pattern(qts, 0xaa);
    qtest_qmp_assert_success(qts, "{'execute': 'cont'}");
    assert_run_state(qts, true);
    qtest_quit(qts);
}

/*
 * checkpoint-apply with a job-id returns once the checks passed; the
 * job "apply0" applies checkpoint @key (@id) and concludes
 */
static char *apply_as_job(QTestState *qts, const char *key, const char *id,
                          bool first)
{
    QDict *rsp;
    char *created = NULL;

    rsp = qtest_qmp_assert_success_ref(qts,
              "{'execute': 'checkpoint-apply',"
              " 'arguments': {'checkpoint': %s, 'checkpoint-first': %i,"
              "               'job-id': 'apply0'}}", key, first);
    g_assert_cmpint(qdict_haskey(rsp, "created"), ==, first);
    if (first) {
        created = g_strdup(qdict_get_str(rsp, "created"));
    }
    qobject_unref(rsp);
    wait_event_of(qts, "CHECKPOINT_APPLIED", id);
    wait_job_concluded(qts, "apply0");
    return created;
}

static void test_apply_job(void)
{
    g_autofree char *dir = tmp_path("apply-job-store");
    g_autofree char *err = NULL;
    g_autofree char *a = NULL, *p = NULL, *cur = NULL;
    QTestState *qts = vm_with_new_disks(dir, "j0.qcow2", "j1.vhdx");
    QDict *rsp;
    write_pattern(qts, 0xaa);
    a = create_and_wait(qts, "A");
    write_pattern(qts, 0xbb);

    /* A bad job id is refused before anything happens */
    err = qmp_error(qts, "{'execute': 'checkpoint-apply',"
                    " 'arguments': {'checkpoint': 'A',"
                    " 'checkpoint-first': true, 'job-id': '1 bad'}}");
    assert_contains(err, "job ID");
    rsp = qtest_qmp(qts, "{'execute': 'query-checkpoints'}");
    g_assert_cmpint(qlist_size(qdict_get_qlist(rsp, "return")), ==, 1);
    qobject_unref(rsp);
    assert_run_state(qts, true);

    /* Checkpoint first, then apply A: the job waits for P's memory */
    p = apply_as_job(qts, "A", a, true);
    assert_run_state(qts, true);
    assert_pattern(qts, 0xaa);
    cur = current_of(qts);
    g_assert_cmpstr(cur, ==, a);
    g_assert_cmpstr(name_of(qts, p), !=, "");

    /* Back to P (0xbb), as a job too */
    g_assert(!apply_as_job(qts, p, p, false));
    assert_pattern(qts, 0xbb);
    rsp = qtest_qmp(qts, "{'execute': 'query-jobs'}");
    g_assert(qlist_empty(qdict_get_qlist(rsp, "return")));
    qobject_unref(rsp);
    qtest_quit(qts);
}

/* Wait until checkpoint @id is ready (its memory saved) */
static void wait_checkpoint_ready(QTestState *qts, const char *id)
{
    for (int i = 0; i < 6000; i++) {
        QDict *rsp = qtest_qmp(qts, "{'execute': 'query-checkpoints'}");
        QDict *c = find_checkpoint(qdict_get_qlist(rsp, "return"), id);
        bool ready = c && !strcmp(qdict_get_str(c, "state"), "ready");

        qobject_unref(rsp);
        if (ready) {
            return;
        }
        g_usleep(10 * 1000);
    }
    g_assert_not_reached();
}

/*
 * An apply job cancelled at once, most likely while it waits for
 * checkpoint-first's memory save (the record of the operation wakes
 * it): either the apply was done before the cancel came, or it changed
 * nothing and the VM runs on at the checkpoint taken first.  Either
 * way that checkpoint is completed and nothing is left marked as
 * running: the next apply works.
 */
static void test_apply_job_cancel(void)
{
    g_autofree char *dir = tmp_path("apply-cancel-store");
    g_autofree char *a = NULL, *p = NULL, *cur = NULL;
    QTestState *qts = vm_with_new_disks(dir, "k0.qcow2", "k1.vhdx");
    QDict *rsp;

    write_pattern(qts, 0xaa);
    a = create_and_wait(qts, "A");
    write_pattern(qts, 0xbb);
    rsp = qtest_qmp(qts, "{'execute': 'checkpoint-apply',"
                    " 'arguments': {'checkpoint': 'A',"
                    " 'checkpoint-first': true, 'job-id': 'apply-c'}}");
    p = g_strdup(qdict_get_str(qdict_get_qdict(rsp, "return"), "created"));
    qobject_unref(rsp);
    /* Refused only when the job has concluded already */
    qobject_unref(qtest_qmp(qts, "{'execute': 'job-cancel',"
                            " 'arguments': {'id': 'apply-c'}}"));
    /*
     * P's CHECKPOINT_CREATED comes before the job concludes when the
     * apply was done, after it when cancelled: waiting for one event
     * drops the others, so P's state is asked instead
     */
    wait_job_concluded(qts, "apply-c");
    wait_checkpoint_ready(qts, p);
    assert_run_state(qts, true);
    cur = current_of(qts);
    g_test_message("the apply was %s", strcmp(cur, a) ? "cancelled" :
                   "done before the cancel");
    if (!strcmp(cur, a)) {
        assert_pattern(qts, 0xaa);
    } else {
        g_assert_cmpstr(cur, ==, p);
        assert_pattern(qts, 0xbb);
    }

    g_assert(!apply_as_job(qts, "A", a, false));
    assert_pattern(qts, 0xaa);
    qtest_quit(qts);
}

static char *blockdev_args(const char *qcow2, const char *vhdx)
{
    return g_strdup_printf(
        "-m 64M"
        " -blockdev driver=file,filename=%s,node-name=f0"
        " -blockdev driver=qcow2,file=f0,node-name=n0"
        " -device virtio-blk-device,drive=n0,id=vd0,share-rw=on"
        " -blockdev driver=file,filename=%s,node-name=f1"
        " -blockdev driver=vhdx,file=f1,node-name=n1"
        " -device virtio-blk-device,drive=n1,id=vd1,share-rw=on",
        qcow2, vhdx);
}

static bool has_node(QTestState *qts, const char *name)
{
    QDict *rsp = qtest_qmp(qts, "{'execute': 'query-named-block-nodes',"
                           " 'arguments': {'flat': true}}");
    const QListEntry *e;
    bool found = false;

    QLIST_FOREACH_ENTRY(qdict_get_qlist(rsp, "return"), e) {
        QDict *n = qobject_to(QDict, qlist_entry_obj(e));

        found |= !strcmp(qdict_get_str(n, "node-name"), name);
    }
    qobject_unref(rsp);
    return found;
}

/* Disks given as -blockdev nodes to -device, as management tools do */
static void test_apply_blockdev(void)
{
    g_autofree char *dir = tmp_path("blockdev-store");
    g_autofree char *qcow2 = tmp_path("bd0.qcow2");
    g_autofree char *vhdx = tmp_path("bd1.vhdx");
    g_autofree char *args = NULL, *a = NULL, *b = NULL, *bnode = NULL;
    g_autofree char *b0 = NULL, *act0 = NULL, *act1 = NULL, *disks = NULL;
    QTestState *qts;
    QDict *rsp, *c;
    QList *list;

    g_assert(mkimg(qcow2, "qcow2", 16));
    g_assert(mkimg(vhdx, "vhdx", 16));
    disks = blockdev_args(qcow2, vhdx);
    args = g_strdup_printf("%s -checkpoints dir=%s,type=standard", disks,
                           dir);
    qts = vm_start(args);
    write_disk_pattern(qts, "vd0", 0xaa);
    write_disk_pattern(qts, "vd1", 0xaa);
    a = create_and_wait(qts, "A");
    rsp = qtest_qmp(qts, "{'execute': 'query-checkpoints'}");
    list = qdict_get_qlist(rsp, "return");
    c = find_checkpoint(list, a);
    g_assert_cmpint(qlist_size(qdict_get_qlist(c, "disks")), ==, 2);
    g_assert_cmpstr(qdict_get_str(find_disk(qdict_get_qlist(c, "disks"),
                                            "vd0"), "filename"), ==, qcow2);
    g_assert_cmpstr(qdict_get_str(find_disk(qdict_get_qlist(c, "disks"),
                                            "vd1"), "filename"), ==, vhdx);
    qobject_unref(rsp);

    write_disk_pattern(qts, "vd0", 0xbb);
    write_disk_pattern(qts, "vd1", 0xbb);
    b = create_and_wait(qts, "B");
    assert_disk_pattern(qts, "vd0", 0xbb);
    bnode = disk_node(qts, "vd0");
    g_assert(apply_and_wait(qts, "A", a, false) == NULL);
    assert_disk_pattern(qts, "vd0", 0xaa);
    assert_disk_pattern(qts, "vd1", 0xaa);
    /* The node B's child had is gone with its file */
    g_assert(!has_node(qts, bnode));
    b0 = g_strdup_printf("%s/bd0_%s.qcow2", tmpdir, b);
    assert_gone(b0);
    qtest_quit(qts);

    /* A new QEMU on the active images, as -blockdev nodes too */
    act0 = active_image(dir, "vd0");
    act1 = active_image(dir, "vd1");
    g_clear_pointer(&disks, g_free);
    g_clear_pointer(&args, g_free);
    disks = blockdev_args(act0, act1);
    args = g_strdup_printf("%s -checkpoints dir=%s", disks, dir);
    qts = vm_start(args);
    g_assert(apply_and_wait(qts, b, b, false) == NULL);
    assert_disk_pattern(qts, "vd0", 0xbb);
    assert_disk_pattern(qts, "vd1", 0xbb);
    /* The nodes given on the command line went with their files */
    g_assert(!has_node(qts, "n0"));
    g_assert(!has_node(qts, "f0"));
    assert_gone(act0);
    assert_gone(act1);
    qtest_quit(qts);
}

/* Operations that would conflict with a running migration are refused */
static void test_migration_refused(void)
{
    g_autofree char *dir = tmp_path("migrate-store");
    g_autofree char *img = tmp_path("migrate.qcow2");
    g_autofree char *out = tmp_path("migrate.out");
    g_autofree char *uri = g_strdup_printf("file:%s", out);
    g_autofree char *args = NULL, *err = NULL, *a = NULL;
    QTestState *qts;
    QDict *rsp;

    g_assert(mkimg(img, "qcow2", 1));
    args = g_strdup_printf("-m 64M -drive if=none,id=disk0,file=%s,"
                           "format=qcow2 -device virtio-blk-device,"
                           "drive=disk0 -checkpoints dir=%s,type=standard",
                           img, dir);
    qts = vm_start(args);
    a = create_and_wait(qts, "A");

    /*
     * Non-zero RAM at 1000 bytes/s: the migration runs until cancelled.
     * Not less: QEMU limits each 100 ms, and a limit under 10 bytes/s
     * rounds to 0 there, which means no limit at all (the migration then
     * completed before the checks, now and then).
     */
    qtest_memset(qts, PATTERN_RAM, 0x11, 8 * 1024 * 1024);
    qtest_qmp_assert_success(qts,
        "{'execute': 'migrate-set-parameters',"
        " 'arguments': {'max-bandwidth': 1000}}");
    qtest_qmp_assert_success(qts,
        "{'execute': 'migrate', 'arguments': {'uri': %s}}", uri);
    err = qmp_error(qts, "{'execute': 'checkpoint-create'}");
    assert_contains(err, "while a migration runs");
    g_clear_pointer(&err, g_free);
    err = qmp_error(qts, "{'execute': 'checkpoint-apply',"
                    " 'arguments': {'checkpoint': 'A'}}");
    assert_contains(err, "while a migration runs");
    qtest_qmp_assert_success(qts, "{'execute': 'migrate_cancel'}");
    for (;;) {
        g_autofree char *status = NULL;

        rsp = qtest_qmp_assert_success_ref(qts,
                  "{'execute': 'query-migrate'}");
        status = g_strdup(qdict_get_str(rsp, "status"));
        qobject_unref(rsp);
        g_assert_cmpstr(status, !=, "completed");
        if (!strcmp(status, "cancelled")) {
            break;
        }
        g_usleep(10 * 1000);
    }

    /* Nothing changed: the VM runs on, and applying works again */
    assert_run_state(qts, true);
    g_assert(apply_and_wait(qts, "A", a, false) == NULL);
    qtest_quit(qts);
}

/* A store with one disk; @frozen is its image in checkpoints A and B */
static char *make_apply_store(const char *name, const char *active,
                              const char *frozen)
{
    g_autofree char *manifest = NULL, *text = NULL, *state = NULL;
    char *dir = tmp_path(name);

    state = g_strdup_printf("%s/%s", dir, ID_A);
    g_assert(g_mkdir_with_parents(state, 0700) == 0);
    g_free(state);
    state = g_strdup_printf("%s/%s/state", dir, ID_A);
    write_file(state, "garbage, not a state file");
    text = g_strdup_printf(
        "{ \"version\": 1, \"current\": \"" ID_B "\",\n"
        "  \"checkpoints\": [\n"
        "    { \"id\": \"" ID_A "\", \"name\": \"standard\","
        "      \"type\": \"standard\", \"state\": \"ready\","
        "      \"created\": 1795000000, \"state-file\": \"" ID_A "/state\","
        "      \"disks\": [ { \"device\": \"disk0\", \"filename\": \"%s\","
        "                     \"format\": \"qcow2\" } ] },\n"
        "    { \"id\": \"" ID_B "\", \"name\": \"production\","
        "      \"type\": \"production\", \"state\": \"ready\","
        "      \"parent\": \"" ID_A "\", \"created\": 1795000100,"
        "      \"disks\": [ { \"device\": \"disk0\", \"filename\": \"%s\","
        "                     \"format\": \"qcow2\" } ] } ],\n"
        "  \"active\": [ { \"device\": \"disk0\", \"filename\": \"%s\","
        "                  \"format\": \"qcow2\" } ] }\n",
        frozen, frozen, active);
    manifest = g_strdup_printf("%s/manifest.json", dir);
    write_file(manifest, text);
    return dir;
}

static int count_files(const char *dir)
{
    g_autoptr(GDir) d = g_dir_open(dir, 0, NULL);
    int n = 0;

    g_assert(d);
    while (g_dir_read_name(d)) {
        n++;
    }
    return n;
}

static char *read_manifest(const char *dir)
{
    g_autofree char *path = g_strdup_printf("%s/manifest.json", dir);
    char *text;

    g_assert(g_file_get_contents(path, &text, NULL, NULL));
    return text;
}

/* Refused applies change nothing; a production checkpoint resets */
static void test_apply_refused(void)
{
    g_autofree char *active = tmp_path("refused-active.qcow2");
    g_autofree char *frozen = tmp_path("refused-frozen.qcow2");
    g_autofree char *missing = tmp_path("refused-missing.qcow2");
    g_autofree char *dir = NULL, *dir2 = NULL, *args = NULL, *err = NULL;
    g_autofree char *before = NULL, *after = NULL, *now = NULL;
    int files;
    QTestState *qts;

    g_assert(mkimg(active, "qcow2", 1));
    g_assert(mkimg(frozen, "qcow2", 1));
    dir = make_apply_store("refused-store", active, frozen);
    args = g_strdup_printf("-m 64M -drive if=none,id=disk0,file=%s,"
                           "format=qcow2 -device virtio-blk-device,"
                           "drive=disk0,share-rw=on -checkpoints dir=%s",
                           active, dir);
    qts = vm_start(args);
    write_disk_pattern(qts, "disk0", 0x5a);
    assert_disk_pattern(qts, "disk0", 0x5a);
    before = read_manifest(dir);
    files = count_files(tmpdir);

    /* A state file that is not one */
    err = qmp_error(qts, "{'execute': 'checkpoint-apply',"
                    " 'arguments': {'checkpoint': 'standard'}}");
    assert_contains(err, "Cannot apply checkpoint 'standard'");
    assert_run_state(qts, true);
    after = read_manifest(dir);
    g_assert_cmpstr(after, ==, before);
    g_assert_cmpint(count_files(tmpdir), ==, files);
    assert_disk_pattern(qts, "disk0", 0x5a);

    /* A production checkpoint: its disks, the VM reset and stopped */
    g_assert(!apply_and_wait(qts, "production", ID_B, false));
    assert_run_state(qts, false);
    assert_disk_pattern(qts, "disk0", 0);
    now = current_of(qts);
    g_assert_cmpstr(now, ==, ID_B);
    /* The active image was not one a checkpoint made: it is kept */
    g_assert(g_file_test(active, G_FILE_TEST_IS_REGULAR));
    qtest_quit(qts);

    /* A frozen image that is gone */
    dir2 = make_apply_store("refused-store2", active, missing);
    g_clear_pointer(&args, g_free);
    args = g_strdup_printf("-m 64M -drive if=none,id=disk0,file=%s,"
                           "format=qcow2 -device virtio-blk-device,"
                           "drive=disk0,share-rw=on -checkpoints dir=%s",
                           active, dir2);
    qts = vm_start(args);
    g_clear_pointer(&before, g_free);
    before = read_manifest(dir2);
    g_clear_pointer(&err, g_free);
    err = qmp_error(qts, "{'execute': 'checkpoint-apply',"
                    " 'arguments': {'checkpoint': 'production'}}");
    assert_contains(err, "cannot be read");
    assert_contains(err, missing);
    assert_run_state(qts, true);
    g_clear_pointer(&after, g_free);
    after = read_manifest(dir2);
    g_assert_cmpstr(after, ==, before);
    qtest_quit(qts);
}

/* What a QEMU killed in the middle of an operation leaves, recovered */
static void test_recovery(void)
{
    g_autofree char *dir = tmp_path("recover-store");
    g_autofree char *img = tmp_path("recover.qcow2");
    g_autofree char *child = g_strdup_printf("%s/recover_%s.qcow2", tmpdir,
                                             ID_C);
    g_autofree char *cdir = g_strdup_printf("%s/%s", dir, ID_C);
    g_autofree char *cstate = g_strdup_printf("%s/state", cdir);
    g_autofree char *bdir = g_strdup_printf("%s/%s", dir, ID_B);
    g_autofree char *bstate = g_strdup_printf("%s/state", bdir);
    g_autofree char *manifest = g_strdup_printf("%s/manifest.json", dir);
    g_autofree char *text = NULL, *args = NULL, *now = NULL, *err = NULL;
    g_autofree char *disk = NULL;
    QTestState *qts;
    QDict *rsp;

    g_assert(mkimg(img, "qcow2", 1));
    g_assert(mkimg(child, "qcow2", 1));
    g_assert(g_mkdir_with_parents(cdir, 0700) == 0);
    g_assert(g_mkdir_with_parents(bdir, 0700) == 0);
    write_file(cstate, "half");
    write_file(bstate, "half");
    disk = g_strdup_printf("{ \"device\": \"disk0\", \"filename\": \"%s\","
                           " \"format\": \"qcow2\" }", img);
    /* B's memory save never ended; C's create never got recorded */
    text = g_strdup_printf(
        "{ \"version\": 1, \"current\": \"" ID_B "\",\n"
        "  \"checkpoints\": [\n"
        "    { \"id\": \"" ID_A "\", \"name\": \"a\", \"type\": \"production\","
        "      \"state\": \"ready\", \"created\": 1, \"disks\": [%s] },\n"
        "    { \"id\": \"" ID_B "\", \"name\": \"b\", \"type\": \"standard\","
        "      \"state\": \"creating\", \"parent\": \"" ID_A "\","
        "      \"created\": 2, \"disks\": [%s],"
        "      \"state-file\": \"" ID_B "/state\" } ],\n"
        "  \"active\": [%s],\n"
        "  \"operation\": { \"op\": \"create\", \"checkpoint\": \"" ID_C "\","
        "    \"new-files\": [ \"%s\", \"%s\", \"%s\" ] } }\n",
        disk, disk, disk, child, cstate, cdir);
    write_file(manifest, text);

    args = g_strdup_printf("-drive if=none,id=disk0,file=%s,format=qcow2"
                           " -device virtio-blk-device,drive=disk0"
                           " -checkpoints dir=%s", img, dir);
    qts = vm_start(args);
    rsp = qtest_qmp(qts, "{'execute': 'query-checkpoints'}");
    g_assert_cmpint(qlist_size(qdict_get_qlist(rsp, "return")), ==, 1);
    qobject_unref(rsp);
    now = current_of(qts);
    g_assert_cmpstr(now, ==, ID_A);
    assert_gone(child);
    assert_gone(cdir);
    assert_gone(bdir);
    g_assert(g_file_test(img, G_FILE_TEST_IS_REGULAR));
    g_free(active_image(dir, "disk0"));     /* no operation left */
    qtest_quit(qts);

    /* A recorded operation may only name files checkpoints make */
    g_clear_pointer(&text, g_free);
    text = g_strdup_printf(
        "{ \"version\": 1, \"checkpoints\": [], \"active\": [%s],"
        "  \"operation\": { \"op\": \"apply\", \"checkpoint\": \"" ID_C "\","
        "    \"new-files\": [], \"stale-files\": [ \"%s\" ] } }\n",
        disk, img);
    write_file(manifest, text);
    qts = vm_start(NULL);
    err = qmp_error(qts, "{'execute': 'checkpoint-set-parameters',"
                    " 'arguments': {'dir': %s}}", dir);
    assert_contains(err, "is not a file a checkpoint operation makes");
    g_assert(g_file_test(img, G_FILE_TEST_IS_REGULAR));
    qtest_quit(qts);
}

/* checkpoint-delete with arguments @args (a literal) fails with @msg */
#define assert_delete_error(qts, args, msg)                               \
    do {                                                                  \
        g_autofree char *err_ = qmp_error(qts,                            \
            "{'execute': 'checkpoint-delete', 'arguments': " args "}");   \
        assert_contains(err_, msg);                                       \
    } while (0)

/* checkpoint-delete: every refusal names the problem and changes nothing */
static void assert_delete_refusals(QTestState *qts)
{
    assert_delete_error(qts, "{}", "Give either 'checkpoint' or 'all': true");
    assert_delete_error(qts, "{'checkpoint': 'first', 'all': true}",
                        "Give either");
    assert_delete_error(qts, "{'all': false}", "Give either");
    assert_delete_error(qts, "{'checkpoint': 'nosuch'}",
                        "no checkpoint with id or name");
    assert_delete_error(qts, "{'checkpoint': 'second'}",
                        "Several checkpoints are named");
    assert_delete_error(qts, "{'checkpoint': 'first', 'dry-run': 'yes'}",
                        "dry-run");
    assert_delete_error(qts, "{'checkpoint': 'first', 'subtree': 1}",
                        "subtree");
    assert_delete_error(qts, "{'checkpoint': 'first', 'bogus': 1}",
                        "bogus");
}

static gint by_string(gconstpointer a, gconstpointer b)
{
    return strcmp(*(const char * const *)a, *(const char * const *)b);
}

/* The ids a delete (or its dry run) returned, sorted, comma-separated */
static char *deleted_ids(QDict *plan)
{
    QList *ids = qdict_get_qlist(plan, "deleted");
    g_autoptr(GPtrArray) names = g_ptr_array_new();
    const QListEntry *e;

    QLIST_FOREACH_ENTRY(ids, e) {
        QString *id = qobject_to(QString, qlist_entry_obj(e));

        g_ptr_array_add(names, (char *)qstring_get_str(id));
    }
    g_ptr_array_sort(names, by_string);
    g_ptr_array_add(names, NULL);
    return g_strjoinv(",", (char **)names->pdata);
}

/* A dry run returns the plan of the real delete and changes no byte */
static void assert_dry_run(QTestState *qts, const char *dir,
                           const char *args, const char *want)
{
    g_autofree char *before = read_manifest(dir);
    g_autofree char *after = NULL, *ids = NULL;
    QDict *rsp;

    rsp = qtest_qmp_assert_success_ref(qts,
              "{'execute': 'checkpoint-delete', 'arguments': %p}",
              qobject_from_json(args, &error_abort));
    ids = deleted_ids(rsp);
    g_assert_cmpstr(ids, ==, want);
    g_assert(!qdict_haskey(rsp, "job-id"));
    g_assert(qdict_haskey(rsp, "disks") && qdict_haskey(rsp, "space"));
    qobject_unref(rsp);
    after = read_manifest(dir);
    g_assert_cmpstr(before, ==, after);
}

static void test_delete_refused(void)
{
    g_autofree char *dir = make_store("delete-refused", "");
    g_autofree char *args = g_strdup_printf("-checkpoints dir=%s,type=standard",
                                            dir);
    g_autofree char *err = NULL, *before = NULL, *after = NULL;
    QTestState *qts = vm_start(NULL);

    err = qmp_error(qts, "{'execute': 'checkpoint-delete',"
                    " 'arguments': {'all': true}}");
    assert_contains(err, "No checkpoint store is set");
    qtest_quit(qts);

    qts = vm_start(args);
    before = read_manifest(dir);
    assert_delete_refusals(qts);
    after = read_manifest(dir);
    g_assert_cmpstr(before, ==, after);
    qtest_quit(qts);
}

static void test_delete_dry_run(void)
{
    g_autofree char *dir = make_store("delete-dry", "");
    g_autofree char *args = g_strdup_printf("-checkpoints dir=%s,type=standard",
                                            dir);
    g_autofree char *state = g_strdup_printf("%s/%s/state", dir, ID_A);
    g_autofree char *out = NULL;
    QTestState *qts = vm_start(args);
    QDict *rsp;

    assert_dry_run(qts, dir, "{'checkpoint': '" ID_C "', 'dry-run': true}",
                   ID_C);
    assert_dry_run(qts, dir, "{'checkpoint': 'first', 'subtree': true,"
                   " 'dry-run': true}", ID_A "," ID_B "," ID_C);
    assert_dry_run(qts, dir, "{'all': true, 'dry-run': true}",
                   ID_A "," ID_B "," ID_C);
    out = qtest_hmp(qts, "checkpoint_delete -r -n first");
    assert_contains(out, "Would delete checkpoint " ID_A);
    assert_contains(out, "Would delete checkpoint " ID_C);
    g_assert(g_file_test(state, G_FILE_TEST_IS_REGULAR));
    rsp = qtest_qmp(qts, "{'execute': 'query-checkpoints'}");
    g_assert_cmpint(qlist_size(qdict_get_qlist(rsp, "return")), ==, 3);
    qobject_unref(rsp);
    qtest_quit(qts);
}

/* A delete leaves the tree at once; children and "Now" move up */
static void test_delete_tree(void)
{
    g_autofree char *dir = make_store("delete-tree", "");
    g_autofree char *args = g_strdup_printf("-checkpoints dir=%s,type=standard",
                                            dir);
    g_autofree char *state_dir = g_strdup_printf("%s/%s", dir, ID_A);
    g_autofree char *ids = NULL, *out = NULL;
    QTestState *qts = vm_start(args);
    QDict *rsp, *b;
    QList *list;

    /* C: a leaf; "second" then names B alone */
    rsp = qtest_qmp_assert_success_ref(qts,
              "{'execute': 'checkpoint-delete',"
              " 'arguments': {'checkpoint': '" ID_C "'}}");
    ids = deleted_ids(rsp);
    g_assert_cmpstr(ids, ==, ID_C);
    qobject_unref(rsp);
    wait_event_of(qts, "CHECKPOINT_DELETED", ID_C);

    /* A, with its state folder: B (with "Now") becomes a root */
    out = qtest_hmp(qts, "checkpoint_delete first");
    assert_contains(out, "Deleted checkpoint " ID_A);
    g_assert(!g_file_test(state_dir, G_FILE_TEST_EXISTS));
    rsp = qtest_qmp(qts, "{'execute': 'query-checkpoints'}");
    list = qdict_get_qlist(rsp, "return");
    g_assert_cmpint(qlist_size(list), ==, 1);
    b = find_checkpoint(list, ID_B);
    g_assert(b && !qdict_haskey(b, "parent") &&
             qdict_get_bool(b, "current"));
    qobject_unref(rsp);

    /* All: nothing left */
    qtest_qmp_assert_success(qts, "{'execute': 'checkpoint-delete',"
                             " 'arguments': {'all': true}}");
    rsp = qtest_qmp(qts, "{'execute': 'query-checkpoints'}");
    g_assert(qlist_empty(qdict_get_qlist(rsp, "return")));
    qobject_unref(rsp);
    g_clear_pointer(&out, g_free);
    out = qtest_hmp(qts, "checkpoint_delete -a");
    assert_contains(out, "The VM has no checkpoints");
    qtest_quit(qts);
}

/*
 * A state file replaced by a FIFO or by a symbolic link: the delete
 * neither blocks on the FIFO nor deletes what the link points to
 */
static void delete_odd_state(const char *name, bool fifo)
{
    g_autofree char *dir = make_store(name, "");
    g_autofree char *args = g_strdup_printf("-checkpoints dir=%s,type=standard",
                                            dir);
    g_autofree char *state = g_strdup_printf("%s/%s/state", dir, ID_A);
    g_autofree char *outside = g_strdup_printf("%s-outside", dir);
    g_autofree char *kept = NULL;
    QTestState *qts;

    write_file(outside, "not the checkpoint's");
    g_assert(unlink(state) == 0);
    if (fifo) {
        g_assert(mkfifo(state, 0600) == 0);
    } else {
        g_assert(symlink(outside, state) == 0);
    }
    qts = vm_start(args);
    qtest_qmp_assert_success(qts, "{'execute': 'checkpoint-delete',"
                             " 'arguments': {'checkpoint': '" ID_A "'}}");
    g_assert(!g_file_test(state, G_FILE_TEST_EXISTS) &&
             !g_file_test(state, G_FILE_TEST_IS_SYMLINK));
    g_assert(g_file_get_contents(outside, &kept, NULL, NULL));
    g_assert_cmpstr(kept, ==, "not the checkpoint's");
    qtest_quit(qts);
}

static void test_delete_fifo_state(void)
{
    delete_odd_state("delete-fifo", true);
}

static void test_delete_symlink_state(void)
{
    delete_odd_state("delete-symlink", false);
}

int main(int argc, char **argv)
{
    g_test_init(&argc, &argv, NULL);
    if (!qtest_has_machine("microvm")) {
        g_test_skip("microvm machine not available");
        return g_test_run();
    }
    tmpdir = hvcp_make_tmpdir("checkpoint-test-XXXXXX");

    qtest_add_func("/checkpoint/fresh", test_fresh);
    qtest_add_func("/checkpoint/set-parameters", test_set_parameters);
    qtest_add_func("/checkpoint/rename-refused", test_rename_refused);
    qtest_add_func("/checkpoint/store-reload", test_store_reload);
    qtest_add_func("/checkpoint/corrupt", test_corrupt);
    qtest_add_func("/checkpoint/corrupt-cmdline", test_corrupt_cmdline);
    qtest_add_func("/checkpoint/disk-mismatch", test_disk_mismatch);
    qtest_add_func("/checkpoint/type-only", test_type_only);
    qtest_add_func("/checkpoint/create", test_create);
    qtest_add_func("/checkpoint/create-no-store", test_create_no_store);
    qtest_add_func("/checkpoint/apply", test_apply);
    qtest_add_func("/checkpoint/apply-job", test_apply_job);
    qtest_add_func("/checkpoint/apply-job-cancel", test_apply_job_cancel);
    qtest_add_func("/checkpoint/apply-blockdev", test_apply_blockdev);
    qtest_add_func("/checkpoint/apply-refused", test_apply_refused);
    qtest_add_func("/checkpoint/migration-refused", test_migration_refused);
    qtest_add_func("/checkpoint/recovery", test_recovery);
    qtest_add_func("/checkpoint/delete-refused", test_delete_refused);
    qtest_add_func("/checkpoint/delete-dry-run", test_delete_dry_run);
    qtest_add_func("/checkpoint/delete-tree", test_delete_tree);
    qtest_add_func("/checkpoint/delete-fifo-state", test_delete_fifo_state);
    qtest_add_func("/checkpoint/delete-symlink-state",
                   test_delete_symlink_state);
    return hvcp_run_and_remove(tmpdir);
}
