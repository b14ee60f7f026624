/*
 * libFuzzer target: the checkpoint store's manifest reader
 *
 * Copyright (c) 2026 The Hyper-V checkpoints project authors
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 *
 * Each input is the content of a manifest.json: it is written into a
 * scratch store folder and read with checkpoint_manifest_load() (file,
 * JSON parser, QAPI input visitor of CheckpointManifest, then
 * checkpoint_manifest_validate()), as QEMU does when it opens a store.
 *
 * A manifest that loads must also survive what QEMU does with it next:
 * written back with the QObject output visitor (as
 * checkpoint_manifest_save() does) and read again, it must load and
 * validate again, and say the same thing (the same JSON once more).
 * Anything else aborts, and so does any AddressSanitizer report
 * (including leaks: every path must free what it built).
 *
 * Links checkpoint/manifest.c, the generated QAPI code and libqemuutil only
 * (tests/fuzz/meson.build, tests/fuzz/build-fuzzer).
 */

#include "qemu/osdep.h"
#include "qemu/cutils.h"
#include "qapi/error.h"
#include "qapi/qapi-visit-checkpoint.h"
#include "qapi/qobject-input-visitor.h"
#include "qapi/qobject-output-visitor.h"
#include "qobject/qjson.h"
#include "qobject/qobject.h"
#include "checkpoint/checkpoint.h"

#include "fuzz.h"

static char *store_dir;
static char *manifest_path;

static void cleanup(void)
{
    unlink(manifest_path);
    rmdir(store_dir);
}

/*
 * The folders of runs that ended without atexit() (libFuzzer stops with
 * _Exit() on a finding): "hvcp-fuzz-manifest-PID" of a PID that is gone
 */
static void remove_stale(const char *base)
{
    g_autoptr(GDir) dir = g_dir_open(base, 0, NULL);
    const char *name;

    while (dir && (name = g_dir_read_name(dir))) {
        const char *p = g_str_has_prefix(name, "hvcp-fuzz-manifest-") ?
                        name + strlen("hvcp-fuzz-manifest-") : NULL;
        g_autofree char *path = NULL, *file = NULL;
        int pid;

        if (!p || qemu_strtoi(p, NULL, 10, &pid) < 0 || pid <= 0 ||
            kill(pid, 0) == 0 || errno != ESRCH) {
            continue;
        }
        path = g_build_filename(base, name, NULL);
        file = g_build_filename(path, "manifest.json", NULL);
        unlink(file);
        rmdir(path);
    }
}

static void setup(void)
{
    const char *base = g_file_test("/dev/shm", G_FILE_TEST_IS_DIR) ?
                       "/dev/shm" : g_get_tmp_dir();

    if (store_dir) {
        return;
    }
    remove_stale(base);
    store_dir = g_strdup_printf("%s/hvcp-fuzz-manifest-%d", base,
                                (int)getpid());
    if (g_mkdir_with_parents(store_dir, 0700) < 0) {
        perror("fuzz-manifest: cannot make a scratch folder");
        abort();
    }
    manifest_path = g_build_filename(store_dir, "manifest.json", NULL);
    atexit(cleanup);
}

static void write_manifest(const uint8_t *data, size_t size)
{
    int fd = open(manifest_path, O_WRONLY | O_CREAT | O_TRUNC, 0600);

    if (fd < 0 || (size && write(fd, data, size) != (ssize_t)size)) {
        perror("fuzz-manifest: cannot write the manifest");
        abort();
    }
    close(fd);
}

/* The JSON checkpoint_manifest_save() would write for @m */
static GString *manifest_to_json(CheckpointManifest *m)
{
    QObject *obj = NULL;
    GString *json;
    Visitor *v;

    v = qobject_output_visitor_new(&obj);
    visit_type_CheckpointManifest(v, NULL, &m, &error_abort);
    visit_complete(v, &obj);
    visit_free(v);
    json = qobject_to_json_pretty(obj, true);
    qobject_unref(obj);
    return json;
}

static void check_round_trip(CheckpointManifest *m)
{
    g_autoptr(GString) json = manifest_to_json(m);
    g_autoptr(GString) json2 = NULL;
    CheckpointManifest *m2;
    Error *err = NULL;

    write_manifest((const uint8_t *)json->str, json->len);
    m2 = checkpoint_manifest_load(store_dir, &err);
    if (!m2) {
        fprintf(stderr, "fuzz-manifest: a manifest that loaded does not load"
                " once written back: %s\n%s\n", error_get_pretty(err),
                json->str);
        abort();
    }
    json2 = manifest_to_json(m2);
    if (!g_string_equal(json, json2)) {
        fprintf(stderr, "fuzz-manifest: the manifest changed in a round"
                " trip:\n%s\n---\n%s\n", json->str, json2->str);
        abort();
    }
    qapi_free_CheckpointManifest(m2);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    CheckpointManifest *m;
    Error *err = NULL;

    setup();
    write_manifest(data, size);
    m = checkpoint_manifest_load(store_dir, &err);
    if (!m) {
        /* Refused: the message must name the manifest */
        if (!err || !strstr(error_get_pretty(err), manifest_path)) {
            fprintf(stderr, "fuzz-manifest: refused without naming the"
                    " manifest: %s\n", err ? error_get_pretty(err) : "(none)");
            abort();
        }
        if (getenv("HVCP_FUZZ_VERBOSE")) {
            fprintf(stderr, "  refused: %s\n", error_get_pretty(err));
        }
        error_free(err);
        return 0;
    }
    if (getenv("HVCP_FUZZ_VERBOSE")) {
        fprintf(stderr, "  loaded\n");
    }
    check_round_trip(m);
    qapi_free_CheckpointManifest(m);
    return 0;
}
