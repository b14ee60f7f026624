/*
 * QTest for the copy-on-write RAM snapshot engine (no guest code runs)
 *
 * Copyright (c) 2026 The Hyper-V checkpoints project
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 *
 * Guest RAM is written through qtest (memset/memwrite), which goes
 * through the same write-protected host mappings a vCPU uses, so the
 * copy-on-write path is exercised: RAM written after begin must come
 * back as it was at begin.
 */

#include "qemu/osdep.h"
#include "qemu/crc32c.h"
#include "qemu/bswap.h"
#include "qemu/cutils.h"
#include "libqtest.h"
#include "hvcp-qtest-util.h"
#include "qobject/qdict.h"
#include "migration/cow-snapshot/format.h"

#define MiB (1024 * 1024)

static char *tmpdir;

static QTestState *vm_start(const char *mem_opts)
{
    return qtest_initf("-M microvm -display none -nodefaults %s",
                       mem_opts ? mem_opts : "-m 256M");
}

static char *tmp_path(const char *name)
{
    return g_strdup_printf("%s/%s", tmpdir, name);
}

/* Start a save and wait for its end; returns the final status */
static char *save_and_wait(QTestState *qts, const char *path,
                           bool paused_save)
{
    QDict *ev, *data;
    char *status;

    qtest_qmp_assert_success(qts,
        "{'execute': 'x-cow-snapshot-save',"
        " 'arguments': {'path': %s, 'paused-save': %i}}",
        path, paused_save);
    ev = qtest_qmp_eventwait_ref(qts, "COW_SNAPSHOT_DONE");
    data = qdict_get_qdict(ev, "data");
    g_assert_cmpstr(qdict_get_str(data, "path"), ==, path);
    status = g_strdup(qdict_get_str(data, "status"));
    qobject_unref(ev);
    return status;
}


static char *load_error(QTestState *qts, const char *path)
{
    return qmp_error(qts, "{'execute': 'x-cow-snapshot-load',"
                     " 'arguments': {'path': %s}}", path);
}

static void load_ok(QTestState *qts, const char *path)
{
    qtest_qmp_assert_success(qts, "{'execute': 'x-cow-snapshot-load',"
                             " 'arguments': {'path': %s}}", path);
}

static void vm_stop(QTestState *qts)
{
    qtest_qmp_assert_success(qts, "{'execute': 'stop'}");
}

static void fill_pattern(uint8_t *buf, size_t len, uint32_t seed)
{
    for (size_t i = 0; i < len; i++) {
        seed = seed * 1103515245 + 12345;
        buf[i] = seed >> 16;
    }
}

/* A recognisable picture of RAM: patterns, a filled area, zero areas */
#define PAT_ADDR    (32 * MiB)
#define PAT_LEN     (64 * 1024)
#define FILL_ADDR   (40 * MiB)
#define FILL_LEN    (8 * MiB)
#define ZERO_ADDR   (60 * MiB)
#define ZERO_LEN    (2 * MiB)

static void write_picture(QTestState *qts, uint32_t seed, uint8_t fill)
{
    g_autofree uint8_t *pat = g_malloc(PAT_LEN);

    fill_pattern(pat, PAT_LEN, seed);
    qtest_memwrite(qts, PAT_ADDR, pat, PAT_LEN);
    qtest_memset(qts, FILL_ADDR, fill, FILL_LEN);
}

static void check_picture(QTestState *qts, uint32_t seed, uint8_t fill)
{
    g_autofree uint8_t *pat = g_malloc(PAT_LEN);
    g_autofree uint8_t *got = g_malloc(FILL_LEN);

    fill_pattern(pat, PAT_LEN, seed);
    qtest_memread(qts, PAT_ADDR, got, PAT_LEN);
    g_assert(memcmp(pat, got, PAT_LEN) == 0);
    /* Sample pages: reading all of it through qtest is slow */
    for (size_t i = 0; i < FILL_LEN; i += 61 * 4096) {
        qtest_memread(qts, FILL_ADDR + i, got, 4096);
        g_assert_cmphex(got[0], ==, fill);
        g_assert_cmphex(got[4095], ==, fill);
    }
    for (size_t i = 0; i < ZERO_LEN; i += 31 * 4096) {
        qtest_memread(qts, ZERO_ADDR + i, got, 4096);
        g_assert(buffer_is_zero(got, 4096));
    }
}

/* Change everything the picture covers, including the zero area */
static void scribble(QTestState *qts)
{
    write_picture(qts, 999, 0x5a);
    qtest_memset(qts, ZERO_ADDR, 0xee, ZERO_LEN);
}

static void read_header(const char *path, CowSnapFileHeader *h)
{
    int fd = open(path, O_RDONLY);

    g_assert(fd >= 0);
    g_assert_cmpint(pread(fd, h, sizeof(*h), 0), ==, sizeof(*h));
    close(fd);
}

/* A copy of @src at @dst, whose bytes at @off become @len bytes of @buf */
static void copy_patched(const char *src, const char *dst, off_t off,
                         const void *buf, size_t len)
{
    g_autofree char *data = NULL;
    gsize size;
    int fd;

    g_assert(g_file_get_contents(src, &data, &size, NULL));
    g_assert(g_file_set_contents(dst, data, size, NULL));
    if (buf) {
        fd = open(dst, O_WRONLY);
        g_assert(fd >= 0);
        g_assert_cmpint(pwrite(fd, buf, len, off), ==, len);
        close(fd);
    }
}

/* The metadata checksum as FORMAT.md defines it */
static uint32_t file_crc(const char *path, CowSnapFileHeader *h)
{
    g_autofree char *data = NULL;
    CowSnapFileHeader hc = *h;
    uint32_t crc = 0xffffffff;
    gsize size;

    g_assert(g_file_get_contents(path, &data, &size, NULL));
    hc.metadata_crc = 0;
    crc = crc32c(crc, (uint8_t *)&hc, sizeof(hc));
    crc = crc32c(crc, (uint8_t *)data + le64_to_cpu(h->table_offset),
                 le64_to_cpu(h->table_size));
    crc = crc32c(crc, (uint8_t *)data + le64_to_cpu(h->maps_offset),
                 le64_to_cpu(h->maps_size));
    crc = crc32c(crc, (uint8_t *)data + le64_to_cpu(h->devstate_offset),
                 le64_to_cpu(h->devstate_size));
    return crc ^ 0xffffffff;
}

static void test_query_none(void)
{
    QTestState *qts = vm_start(NULL);
    QDict *rsp = qtest_qmp(qts, "{'execute': 'x-query-cow-snapshot'}");
    QDict *ret = qdict_get_qdict(rsp, "return");

    g_assert_cmpstr(qdict_get_str(ret, "status"), ==, "none");
    g_assert(!qdict_haskey(ret, "path"));
    qobject_unref(rsp);
    g_free(qmp_error(qts, "{'execute': 'x-cow-snapshot-cancel'}"));
    qtest_quit(qts);
}

/*
 * Save while RAM is rewritten, then load: RAM is as it was at begin.
 * Also checks the file's layout and that zero pages are holes.
 */
static void do_roundtrip(const char *mem_opts, bool paused_save)
{
    QTestState *qts = vm_start(mem_opts);
    g_autofree char *path = tmp_path("roundtrip.state");
    g_autofree char *status = NULL;
    CowSnapFileHeader h;
    QDict *rsp, *ret;
    struct stat st;

    write_picture(qts, 1, 0xa5);
    qtest_qmp_assert_success(qts,
        "{'execute': 'x-cow-snapshot-save',"
        " 'arguments': {'path': %s, 'paused-save': %i}}", path, paused_save);
    if (paused_save) {
        /* The VM, devices included, stays paused until the save ends */
        rsp = qtest_qmp(qts, "{'execute': 'query-status'}");
        g_assert(!qdict_get_bool(qdict_get_qdict(rsp, "return"), "running"));
        qobject_unref(rsp);
    } else {
        /* While the save runs: these writes must not reach the file */
        scribble(qts);
    }
    rsp = qtest_qmp(qts, "{'execute': 'x-query-cow-snapshot'}");
    ret = qdict_get_qdict(rsp, "return");
    g_assert_cmpint(qdict_get_bool(ret, "paused-save"), ==, paused_save);
    g_assert_cmpint(qdict_get_int(ret, "total-bytes"), >=, 64 * MiB);
    g_test_message("pause %" PRId64 " us, %" PRId64 " pages saved ahead "
                   "of guest writes", qdict_get_int(ret, "pause-us"),
                   qdict_get_int(ret, "faulted-pages"));
    qobject_unref(rsp);
    {
        QDict *ev = qtest_qmp_eventwait_ref(qts, "COW_SNAPSHOT_DONE");

        g_assert_cmpstr(qdict_get_str(qdict_get_qdict(ev, "data"), "status"),
                        ==, "completed");
        qobject_unref(ev);
    }

    read_header(path, &h);
    g_assert(memcmp(h.magic, COWSNAP_MAGIC, 8) == 0);
    g_assert_cmpint(le64_to_cpu(h.flags) & COWSNAP_FLAG_COMPLETE, !=, 0);
    g_assert_cmpint(!!(le64_to_cpu(h.flags) & COWSNAP_FLAG_PAUSED_SAVE), ==,
                    paused_save);
    g_assert_cmpstr(h.machine_type, ==, "microvm");
    g_assert_cmphex(file_crc(path, &h), ==, le32_to_cpu(h.metadata_crc));
    g_assert_cmpint(stat(path, &st), ==, 0);
    g_assert_cmpint(st.st_size, ==, le64_to_cpu(h.file_size));
    /* Zero pages are holes: far less on disk than RAM */
    g_assert_cmpint(le64_to_cpu(h.data_bytes), >=, FILL_LEN + PAT_LEN);
    g_assert_cmpint(le64_to_cpu(h.data_bytes), <, 32 * MiB);
    g_assert_cmpint((uint64_t)st.st_blocks * 512, <,
                    le64_to_cpu(h.data_bytes) + 8 * MiB);

    vm_stop(qts);
    scribble(qts);
    load_ok(qts, path);
    check_picture(qts, 1, 0xa5);
    /* The VM runs on after a load */
    qtest_qmp_assert_success(qts, "{'execute': 'cont'}");
    qtest_quit(qts);
    unlink(path);
}

/* The pattern's first bytes as the monitor shows them (xp) */
static void check_pattern_hmp(QTestState *qts, uint32_t seed)
{
    uint8_t pat[4];
    g_autofree char *out = qtest_hmp(qts, "xp /4bx 0x%x", PAT_ADDR);
    g_autofree char *want = NULL;

    fill_pattern(pat, sizeof(pat), seed);
    want = g_strdup_printf("0x%02x 0x%02x 0x%02x 0x%02x", pat[0], pat[1],
                           pat[2], pat[3]);
    g_assert(strstr(out, want));
}

/*
 * Lazy load: the command returns with pages still missing (the
 * background is slowed down); reads through qtest and the monitor get
 * the snapshot's data, not zeros; a save started during the load waits
 * for it and saves the loaded state; the VM runs on
 */
static void test_lazy_load(void)
{
    QTestState *qts;
    g_autofree char *path = tmp_path("lazy.state");
    g_autofree char *again = tmp_path("lazy-again.state");
    g_autofree char *status = NULL;

    g_setenv("QEMU_COW_SNAPSHOT_LOAD_SPEED", "1048576", true);
    qts = vm_start(NULL);
    g_unsetenv("QEMU_COW_SNAPSHOT_LOAD_SPEED");
    write_picture(qts, 7, 0x3c);
    status = save_and_wait(qts, path, false);
    g_assert_cmpstr(status, ==, "completed");
    vm_stop(qts);
    scribble(qts);
    qtest_qmp_assert_success(qts, "{'execute': 'x-cow-snapshot-load',"
                             " 'arguments': {'path': %s, 'lazy': true}}",
                             path);
    /* 8 MiB of data at 1 MiB/s: most of it is still in the file */
    g_assert(loading(qts));
    check_pattern_hmp(qts, 7);
    check_picture(qts, 7, 0x3c);
    qtest_qmp_assert_success(qts, "{'execute': 'cont'}");
    /* A new snapshot waits for the load, then has the loaded state */
    g_free(status);
    status = save_and_wait(qts, again, false);
    g_assert_cmpstr(status, ==, "completed");
    g_assert(!loading(qts));
    check_picture(qts, 7, 0x3c);
    vm_stop(qts);
    scribble(qts);
    load_ok(qts, again);
    check_picture(qts, 7, 0x3c);
    qtest_quit(qts);
    unlink(path);
    unlink(again);
}

/* Lazy load at full speed: every page in, the same as an eager load */
static void test_lazy_full(void)
{
    QTestState *qts = vm_start(NULL);
    g_autofree char *path = tmp_path("lazy-full.state");
    g_autofree char *status = save_and_wait(qts, path, false);

    g_assert_cmpstr(status, ==, "completed");
    vm_stop(qts);
    write_picture(qts, 8, 0x11);
    g_free(status);
    unlink(path);
    status = save_and_wait(qts, path, false);
    vm_stop(qts);
    scribble(qts);
    qtest_qmp_assert_success(qts, "{'execute': 'x-cow-snapshot-load',"
                             " 'arguments': {'path': %s, 'lazy': true}}",
                             path);
    wait_loaded(qts);
    check_picture(qts, 8, 0x11);
    qtest_qmp_assert_success(qts, "{'execute': 'cont'}");
    qtest_quit(qts);
    unlink(path);
}

static void test_roundtrip(void)
{
    do_roundtrip(NULL, false);
}

static void test_roundtrip_memfd(void)
{
    do_roundtrip("-m 256M -object memory-backend-memfd,id=mem,size=256M "
                 "-machine memory-backend=mem", false);
}

static void test_roundtrip_paused(void)
{
    do_roundtrip(NULL, true);
}

/*
 * A regular file mapped as RAM cannot be write-protected: the save says
 * so, names the block and offers paused-save, which then works.
 */
static void test_no_write_tracking(void)
{
    g_autofree char *ram = tmp_path("ram-file");
    g_autofree char *path = tmp_path("nowp.state");
    g_autofree char *opts = g_strdup_printf(
        "-m 256M -object memory-backend-file,id=mem,size=256M,"
        "mem-path=%s,share=on -machine memory-backend=mem", ram);
    QTestState *qts = vm_start(opts);
    g_autofree char *err = NULL;
    QDict *rsp;

    err = qmp_error(qts, "{'execute': 'x-cow-snapshot-save',"
                    " 'arguments': {'path': %s}}", path);
    g_assert(strstr(err, "Write tracking is not available for RAM block "
                    "'mem'"));
    g_assert(strstr(err, "paused-save"));
    g_assert(!g_file_test(path, G_FILE_TEST_EXISTS));
    /* Nothing changed: the VM runs, no snapshot is left behind */
    rsp = qtest_qmp(qts, "{'execute': 'query-status'}");
    g_assert(qdict_get_bool(qdict_get_qdict(rsp, "return"), "running"));
    qobject_unref(rsp);
    rsp = qtest_qmp(qts, "{'execute': 'x-query-cow-snapshot'}");
    g_assert_cmpstr(qdict_get_str(qdict_get_qdict(rsp, "return"), "status"),
                    ==, "none");
    qobject_unref(rsp);
    qtest_quit(qts);

    do_roundtrip(opts, true);
    unlink(ram);
}

/*
 * F1: an open vhdx disk blocks live migration (and upstream's snapshot
 * paths); a copy-on-write snapshot is not a migration and must work,
 * while migration stays blocked.
 */
static void test_vhdx_blocker(void)
{
    const char *img_prog = g_getenv("QTEST_QEMU_IMG");
    g_autofree char *img = tmp_path("disk.vhdx");
    g_autofree char *path = tmp_path("vhdx.state");
    g_autofree char *mig = tmp_path("migrate.out");
    g_autofree char *uri = g_strdup_printf("file:%s", mig);
    g_autofree char *cmd = NULL;
    g_autofree char *opts = NULL;
    g_autofree char *status = NULL;
    g_autofree char *err = NULL;
    QTestState *qts;
    int exit_status;

    if (!img_prog) {
        g_test_skip("QTEST_QEMU_IMG not set");
        return;
    }
    cmd = g_strdup_printf("%s create -q -f vhdx %s 16M", img_prog, img);
    g_assert(g_spawn_command_line_sync(cmd, NULL, NULL, &exit_status, NULL));
    g_assert_cmpint(exit_status, ==, 0);
    opts = g_strdup_printf("-m 256M -drive if=none,id=d0,format=vhdx,"
                           "file=%s", img);
    qts = vm_start(opts);
    write_picture(qts, 5, 0x55);

    err = qmp_error(qts, "{'execute': 'migrate',"
                    " 'arguments': {'uri': %s}}", uri);
    g_assert(strstr(err, "vhdx"));
    status = save_and_wait(qts, path, false);
    g_assert_cmpstr(status, ==, "completed");
    g_free(err);
    err = qmp_error(qts, "{'execute': 'migrate',"
                    " 'arguments': {'uri': %s}}", uri);
    g_assert(strstr(err, "vhdx"));

    vm_stop(qts);
    scribble(qts);
    load_ok(qts, path);
    check_picture(qts, 5, 0x55);
    qtest_quit(qts);
    unlink(path);
    unlink(img);
    unlink(mig);
}

/*
 * Prepare (RAM armed while "running"), write, then save: the writes
 * between prepare and save are in the snapshot, the later ones are not.
 */
static void test_roundtrip_prepared(void)
{
    QTestState *qts = vm_start(NULL);
    g_autofree char *path = tmp_path("prepared.state");
    g_autofree char *status = NULL;
    QDict *rsp;

    write_picture(qts, 1, 0xa5);
    qtest_qmp_assert_success(qts, "{'execute': 'x-cow-snapshot-prepare',"
                             " 'arguments': {'path': %s}}", path);
    /* A save for another file is refused and drops the prepared one */
    g_free(qmp_error(qts, "{'execute': 'x-cow-snapshot-save',"
                     " 'arguments': {'path': '/nonexistent/other.state'}}"));
    g_assert(!g_file_test(path, G_FILE_TEST_EXISTS));
    qtest_qmp_assert_success(qts, "{'execute': 'x-cow-snapshot-prepare',"
                             " 'arguments': {'path': %s}}", path);
    write_picture(qts, 2, 0xb6);
    status = save_and_wait(qts, path, false);
    g_assert_cmpstr(status, ==, "completed");
    rsp = qtest_qmp(qts, "{'execute': 'x-query-cow-snapshot'}");
    g_assert_cmpint(qdict_get_int(qdict_get_qdict(rsp, "return"),
                                  "rearmed-pages"), >=, FILL_LEN / 4096);
    qobject_unref(rsp);
    vm_stop(qts);
    scribble(qts);
    load_ok(qts, path);
    check_picture(qts, 2, 0xb6);

    /* Prepared, then cancelled: no file is left */
    qtest_qmp_assert_success(qts, "{'execute': 'x-cow-snapshot-prepare',"
                             " 'arguments': {'path': %s}}", path);
    qtest_qmp_assert_success(qts, "{'execute': 'x-cow-snapshot-cancel'}");
    g_assert(!g_file_test(path, G_FILE_TEST_EXISTS));
    qtest_quit(qts);
}

/* Saved once, shared by the refusal tests */
static char *good_file;

static void make_good_file(void)
{
    QTestState *qts;
    g_autofree char *status = NULL;

    if (good_file) {
        return;
    }
    good_file = tmp_path("good.state");
    qts = vm_start(NULL);
    write_picture(qts, 7, 0x77);
    status = save_and_wait(qts, good_file, false);
    g_assert_cmpstr(status, ==, "completed");
    qtest_quit(qts);
}

/*
 * Load @bad into a stopped VM holding another picture: the load must
 * fail with a message containing @expect, and RAM must be untouched.
 */
static void expect_refused(const char *bad, const char *expect,
                           const char *mem_opts)
{
    QTestState *qts = vm_start(mem_opts);
    g_autofree char *err = NULL;

    write_picture(qts, 3, 0x33);
    vm_stop(qts);
    err = load_error(qts, bad);
    if (!strstr(err, expect)) {
        g_test_message("error: %s", err);
    }
    g_assert(strstr(err, expect));
    check_picture(qts, 3, 0x33);
    /* The good file still loads into a VM of the same layout */
    if (!mem_opts) {
        load_ok(qts, good_file);
        check_picture(qts, 7, 0x77);
    }
    qtest_quit(qts);
}

static void test_refuse_incomplete(void)
{
    g_autofree char *bad = tmp_path("incomplete.state");
    CowSnapFileHeader h;

    make_good_file();
    read_header(good_file, &h);
    h.flags &= ~cpu_to_le64(COWSNAP_FLAG_COMPLETE);
    copy_patched(good_file, bad, 0, &h, sizeof(h));
    expect_refused(bad, "incomplete", NULL);
    unlink(bad);
}

static void test_refuse_truncated(void)
{
    g_autofree char *bad = tmp_path("truncated.state");
    CowSnapFileHeader h;

    make_good_file();
    read_header(good_file, &h);
    copy_patched(good_file, bad, 0, NULL, 0);
    g_assert_cmpint(truncate(bad, le64_to_cpu(h.file_size) - 4096), ==, 0);
    expect_refused(bad, "truncated", NULL);
    g_assert_cmpint(truncate(bad, 100), ==, 0);
    expect_refused(bad, "truncated", NULL);
    unlink(bad);
}

static void test_refuse_corrupt(void)
{
    g_autofree char *bad = tmp_path("corrupt.state");
    CowSnapFileHeader h;
    uint8_t junk = 0x42;

    make_good_file();
    read_header(good_file, &h);
    /* One byte of the device state */
    copy_patched(good_file, bad, le64_to_cpu(h.devstate_offset) + 100,
                 &junk, 1);
    expect_refused(bad, "checksum", NULL);
    /* One byte of a page map */
    copy_patched(good_file, bad, le64_to_cpu(h.maps_offset) + 8, &junk, 1);
    expect_refused(bad, "checksum", NULL);
    /* Not a state file at all */
    copy_patched(good_file, bad, 0, "NOTASNAP", 8);
    expect_refused(bad, "not a copy-on-write snapshot", NULL);
    unlink(bad);
}

static void test_refuse_machine(void)
{
    g_autofree char *bad = tmp_path("machine.state");
    CowSnapFileHeader h;

    make_good_file();
    read_header(good_file, &h);
    memset(h.machine_type, 0, sizeof(h.machine_type));
    strcpy(h.machine_type, "pc-q35-9.2");
    copy_patched(good_file, bad, 0, &h, sizeof(h));
    /* A consistent file, from another machine type */
    h.metadata_crc = cpu_to_le32(file_crc(bad, &h));
    copy_patched(bad, bad, 0, &h, sizeof(h));
    expect_refused(bad, "machine type", NULL);
    unlink(bad);
}

static void test_refuse_layout(void)
{
    make_good_file();
    expect_refused(good_file, "does not fit this VM", "-m 128M");
}

static void test_refuse_states(void)
{
    QTestState *qts = vm_start(NULL);
    g_autofree char *path = tmp_path("states.state");
    g_autofree char *status = NULL;

    make_good_file();
    /* A running VM is not loaded into */
    g_free(load_error(qts, good_file));
    /* A missing file */
    vm_stop(qts);
    g_free(load_error(qts, "/nonexistent/file.state"));
    /* An unwritable path fails at once and leaves no snapshot running */
    g_free(qmp_error(qts, "{'execute': 'x-cow-snapshot-save',"
                     " 'arguments': {'path': '/nonexistent/x.state'}}"));
    status = save_and_wait(qts, path, false);
    g_assert_cmpstr(status, ==, "completed");
    qtest_quit(qts);
    unlink(path);
}

static void test_cancel(void)
{
    QTestState *qts = vm_start("-m 2G");
    g_autofree char *path = tmp_path("cancel.state");
    QDict *ev;

    qtest_memset(qts, 16 * MiB, 0x11, 64 * MiB);
    qtest_qmp_assert_success(qts,
        "{'execute': 'x-cow-snapshot-save', 'arguments': {'path': %s}}",
        path);
    /* A second save and a load are refused while one runs */
    g_free(qmp_error(qts, "{'execute': 'x-cow-snapshot-save',"
                     " 'arguments': {'path': %s}}", path));
    qtest_qmp_assert_success(qts, "{'execute': 'x-cow-snapshot-cancel'}");
    ev = qtest_qmp_eventwait_ref(qts, "COW_SNAPSHOT_DONE");
    g_assert_cmpstr(qdict_get_str(qdict_get_qdict(ev, "data"), "status"),
                    ==, "cancelled");
    qobject_unref(ev);
    g_assert(!g_file_test(path, G_FILE_TEST_EXISTS));
    qtest_quit(qts);
}

/* QEMU quits while saving: no incomplete file is left behind */
static void test_quit_during_save(void)
{
    QTestState *qts = vm_start("-m 2G");
    g_autofree char *path = tmp_path("quit.state");

    qtest_memset(qts, 16 * MiB, 0x22, 1024 * MiB);
    qtest_qmp_assert_success(qts,
        "{'execute': 'x-cow-snapshot-save', 'arguments': {'path': %s}}",
        path);
    qtest_quit(qts);
    if (g_file_test(path, G_FILE_TEST_EXISTS)) {
        CowSnapFileHeader h;

        /* Only if the save won the race, and then it is complete */
        read_header(path, &h);
        g_assert_cmpint(le64_to_cpu(h.flags) & COWSNAP_FLAG_COMPLETE, !=, 0);
        unlink(path);
    }
}

int main(int argc, char **argv)
{
    int ret;

    g_test_init(&argc, &argv, NULL);
    if (!qtest_has_machine("microvm")) {
        g_test_skip("microvm machine not available");
        return g_test_run();
    }
    tmpdir = g_dir_make_tmp("cow-snapshot-test-XXXXXX", NULL);
    g_assert(tmpdir);

    qtest_add_func("/cow-snapshot/query-none", test_query_none);
    qtest_add_func("/cow-snapshot/roundtrip/anon", test_roundtrip);
    qtest_add_func("/cow-snapshot/lazy-load/slow", test_lazy_load);
    qtest_add_func("/cow-snapshot/lazy-load/full", test_lazy_full);
    qtest_add_func("/cow-snapshot/roundtrip/memfd", test_roundtrip_memfd);
    qtest_add_func("/cow-snapshot/roundtrip/paused-save",
                   test_roundtrip_paused);
    qtest_add_func("/cow-snapshot/roundtrip/prepared",
                   test_roundtrip_prepared);
    qtest_add_func("/cow-snapshot/no-write-tracking", test_no_write_tracking);
    qtest_add_func("/cow-snapshot/vhdx-migration-blocker", test_vhdx_blocker);
    qtest_add_func("/cow-snapshot/refuse/incomplete", test_refuse_incomplete);
    qtest_add_func("/cow-snapshot/refuse/truncated", test_refuse_truncated);
    qtest_add_func("/cow-snapshot/refuse/corrupt", test_refuse_corrupt);
    qtest_add_func("/cow-snapshot/refuse/machine-type", test_refuse_machine);
    qtest_add_func("/cow-snapshot/refuse/layout", test_refuse_layout);
    qtest_add_func("/cow-snapshot/refuse/states", test_refuse_states);
    qtest_add_func("/cow-snapshot/cancel", test_cancel);
    qtest_add_func("/cow-snapshot/quit-during-save", test_quit_during_save);
    ret = g_test_run();

    if (good_file) {
        unlink(good_file);
    }
    rmdir(tmpdir);
    g_free(tmpdir);
    return ret;
}
