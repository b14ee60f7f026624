/*
 * QTest for the lazy apply of standard checkpoints (apply-load=lazy)
 *
 * Copyright (c) 2026 The Hyper-V checkpoints project
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 *
 * No guest code runs: RAM is written and read through qtest and the
 * monitor.  A lazy apply empties the guest RAM and a loader thread
 * brings it back from the checkpoint's state file, serving the
 * userfaultfd faults of whoever touches a missing page first.  The
 * environment variable QEMU_COW_SNAPSHOT_LOAD_SPEED (bytes/s, read at
 * the start of each lazy load) slows the loader's background down, so
 * that what a case does while "loading" is true really meets missing
 * pages: the background walks RAM upwards from address 0, and the
 * reads are near the end of RAM, at the end of a 32 MiB pattern.  The
 * faults the loader serves do not count against the limit, so the
 * 27 MiB of data at 1 MiB/s keep it loading for about half a minute;
 * "loading" is checked after the reads that must meet missing pages.
 *
 * Every case compares the RAM with the pattern written before the
 * checkpoint was taken, and with what an eager apply of the same
 * checkpoint gives (a checksum of all of RAM).
 */

#include "qemu/osdep.h"
#include "qemu/cutils.h"
#include "qemu/units.h"
#include "elf.h"
#include "libqtest.h"
#include "hvcp-qtest-util.h"
#include "qapi/error.h"
#include "qobject/qdict.h"
#include "qobject/qlist.h"
#include "qobject/qjson.h"

#define PAGE        4096
#define RAM_SIZE    (64 * MiB)          /* -m 64M, as disk_args() sets */
#define PAT_ADDR    (32 * MiB)          /* the pattern: the top half */
#define PAT_LEN     (32 * MiB)
#define CHUNK       (16 * KiB)          /* bytes per qtest read or write */
#define SLOW        "1048576"           /* 1 MiB/s: about 30 s of loading */
#define XP_LEN      128
#define PMEM_LEN    (256 * KiB)         /* pmemsave while loading */

/* Written after a lazy apply, before a create (create-during-load) */
#define MARK        "written while loading"
#define MARK_DATA   (RAM_SIZE - 9 * PAGE + 100)     /* a page of data */
#define MARK_ZERO   (RAM_SIZE - 15 * PAGE + 200)    /* a zero page */

static char *tmpdir;

static char *tmp_path(const char *name)
{
    return g_strdup_printf("%s/%s", tmpdir, name);
}

/*
 * A VM on new disks, store "<name>-store", standard checkpoints; the
 * lazy loads of its QEMU run at @speed bytes/s (NULL: full speed), and
 * @lazy sets apply-load=lazy on the command line
 */
static QTestState *vm_start(const char *name, const char *speed, bool lazy)
{
    g_autofree char *d0 = g_strdup_printf("%s/%s-0.qcow2", tmpdir, name);
    g_autofree char *d1 = g_strdup_printf("%s/%s-1.vhdx", tmpdir, name);
    g_autofree char *store = g_strdup_printf("%s/%s-store", tmpdir, name);
    g_autofree char *disks = NULL;
    QTestState *qts;

    g_assert(mkimg(d0, "qcow2", 16));
    g_assert(mkimg(d1, "vhdx", 16));
    disks = disk_args(d0, d1);
    if (speed) {
        g_setenv("QEMU_COW_SNAPSHOT_LOAD_SPEED", speed, true);
    }
    qts = qtest_initf("-M microvm -display none -nodefaults %s"
                      " -checkpoints dir=%s,type=standard%s", disks, store,
                      lazy ? ",apply-load=lazy" : "");
    g_unsetenv("QEMU_COW_SNAPSHOT_LOAD_SPEED");
    return qts;
}

static uint64_t mix(uint64_t x)
{
    x += 0x9e3779b97f4a7c15ULL;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
    return x ^ (x >> 31);
}

/* Every seventh page of a pattern is zero (a hole in the state file) */
static bool zero_page(uint64_t addr)
{
    return addr / PAGE % 7 == 3;
}

/*
 * Pattern @seed as it is at guest addresses [@addr, @addr + @len): each
 * page different, from its address (both multiples of 8)
 */
static void make_pattern(uint8_t *buf, uint32_t seed, uint64_t addr,
                         size_t len)
{
    size_t off;

    for (off = 0; off < len; off += 8) {
        uint64_t a = addr + off;
        uint64_t v = zero_page(a) ? 0 : mix(((uint64_t)seed << 32) ^ a);

        memcpy(buf + off, &v, 8);
    }
}

static void write_pattern(QTestState *qts, uint32_t seed)
{
    g_autofree uint8_t *buf = g_malloc(PAT_LEN);
    size_t off;

    make_pattern(buf, seed, PAT_ADDR, PAT_LEN);
    for (off = 0; off < PAT_LEN; off += CHUNK) {
        qtest_memwrite(qts, PAT_ADDR + off, buf + off, CHUNK);
    }
}

/* RAM [@addr, @addr + @len) through qtest, in chunks */
static void read_ram(QTestState *qts, uint64_t addr, uint8_t *buf,
                     size_t len)
{
    size_t off;

    for (off = 0; off < len; off += CHUNK) {
        qtest_memread(qts, addr + off, buf + off, MIN(CHUNK, len - off));
    }
}

/* @got is @want, or the first difference is reported */
static void assert_same(const uint8_t *got, const uint8_t *want,
                        uint64_t addr, size_t len)
{
    size_t i;

    for (i = 0; i < len && got[i] == want[i]; i++) {
        /* find the first difference */
    }
    if (i < len) {
        g_test_message("RAM at 0x%" PRIx64 " is 0x%02x, not 0x%02x",
                       addr + i, got[i], want[i]);
        g_assert_not_reached();
    }
}

/* All of pattern @seed, read through qtest */
static void check_pattern(QTestState *qts, uint32_t seed)
{
    g_autofree uint8_t *want = g_malloc(PAT_LEN);
    g_autofree uint8_t *got = g_malloc(PAT_LEN);

    make_pattern(want, seed, PAT_ADDR, PAT_LEN);
    read_ram(qts, PAT_ADDR, got, PAT_LEN);
    assert_same(got, want, PAT_ADDR, PAT_LEN);
}

/*
 * 64 pages of the last 3.3 MiB of RAM (zero pages among them), one
 * qtest read each
 */
static void check_pages_near_end(QTestState *qts, uint32_t seed)
{
    uint8_t want[PAGE], got[PAGE];
    int i;

    for (i = 0; i < 64; i++) {
        uint64_t addr = RAM_SIZE - (i * 13 + 1) * PAGE;

        make_pattern(want, seed, addr, PAGE);
        qtest_memread(qts, addr, got, PAGE);
        assert_same(got, want, addr, PAGE);
    }
}

/* A checksum of all of RAM, read through qtest */
static char *ram_sum(QTestState *qts)
{
    g_autoptr(GChecksum) sum = g_checksum_new(G_CHECKSUM_SHA256);
    g_autofree uint8_t *buf = g_malloc(4 * MiB);
    uint64_t addr;

    for (addr = 0; addr < RAM_SIZE; addr += 4 * MiB) {
        read_ram(qts, addr, buf, 4 * MiB);
        g_checksum_update(sum, buf, 4 * MiB);
    }
    return g_strdup(g_checksum_get_string(sum));
}

/* Another content everywhere but in the first MiB (the BIOS's) */
static void scribble(QTestState *qts)
{
    qtest_memset(qts, MiB, 0xee, RAM_SIZE - MiB);
}

static void set_load(QTestState *qts, const char *mode)
{
    QDict *rsp;

    qtest_qmp_assert_success(qts,
        "{'execute': 'checkpoint-set-parameters',"
        " 'arguments': {'apply-load': %s}}", mode);
    rsp = qtest_qmp_assert_success_ref(qts,
              "{'execute': 'query-checkpoint-parameters'}");
    g_assert_cmpstr(qdict_get_str(rsp, "apply-load"), ==, mode);
    qobject_unref(rsp);
}

/* Apply checkpoint @id; the VM runs again */
static void apply_and_wait(QTestState *qts, const char *id)
{
    QDict *rsp;

    rsp = qtest_qmp_assert_success_ref(qts,
              "{'execute': 'checkpoint-apply',"
              " 'arguments': {'checkpoint': %s}}", id);
    g_assert(!qdict_get_bool(rsp, "powered-off"));
    qobject_unref(rsp);
    wait_event_of(qts, "CHECKPOINT_APPLIED", id);
    rsp = qtest_qmp_assert_success_ref(qts, "{'execute': 'query-status'}");
    g_assert(qdict_get_bool(rsp, "running"));
    qobject_unref(rsp);
}

/*
 * Scribble, apply @id eagerly and check pattern @seed; the checksum of
 * RAM then.  apply-load is left at @after.
 */
static char *eager_sum(QTestState *qts, const char *id, uint32_t seed,
                       const char *after)
{
    char *sum;

    scribble(qts);
    set_load(qts, "eager");
    apply_and_wait(qts, id);
    g_assert(!loading(qts));
    check_pattern(qts, seed);
    sum = ram_sum(qts);
    set_load(qts, after);
    return sum;
}

/* Scribble, then apply @id lazily: it returns with RAM still loading */
static void lazy_apply(QTestState *qts, const char *id)
{
    scribble(qts);
    apply_and_wait(qts, id);
    g_assert(loading(qts));
}

/*
 * 1. Pages read through qtest while the loader runs are the
 * checkpoint's, zero pages included; then all of RAM, the same as after
 * the eager apply.
 */
static void test_qtest_read(void)
{
    QTestState *qts = vm_start("qread", SLOW, true);
    g_autofree char *a = NULL, *eager = NULL, *lazy = NULL;
    QDict *rsp;

    rsp = qtest_qmp_assert_success_ref(qts,
              "{'execute': 'query-checkpoint-parameters'}");
    g_assert_cmpstr(qdict_get_str(rsp, "apply-load"), ==, "lazy");
    qobject_unref(rsp);
    write_pattern(qts, 1);
    a = create_and_wait(qts, "A");
    eager = eager_sum(qts, a, 1, "lazy");

    lazy_apply(qts, a);
    check_pages_near_end(qts, 1);
    /* The background has not reached them: the reads faulted them in */
    g_assert(loading(qts));
    lazy = ram_sum(qts);
    g_assert_cmpstr(lazy, ==, eager);
    check_pattern(qts, 1);
    qtest_quit(qts);
}

/* HMP "xp" of @addr shows pattern @seed */
static void check_xp(QTestState *qts, uint32_t seed, uint64_t addr)
{
    g_autofree char *out = qtest_hmp(qts, "xp /%dxb 0x%" PRIx64, XP_LEN,
                                     addr);
    g_autofree char *first = g_strdup_printf("%016" PRIx64 ":", addr);
    uint8_t want[XP_LEN];
    const char *p = out;
    unsigned long byte;
    int n = 0;

    make_pattern(want, seed, addr, XP_LEN);
    assert_contains(out, first);
    while ((p = strstr(p, " 0x"))) {
        g_assert_cmpint(n, <, XP_LEN);
        g_assert_cmpint(qemu_strtoul(p + 1, &p, 16, &byte), ==, 0);
        g_assert_cmphex(byte, ==, want[n]);
        n++;
    }
    g_assert_cmpint(n, ==, XP_LEN);
}

/* pmemsave of [@addr, @addr + @len): what the monitor read */
static uint8_t *pmemsave(QTestState *qts, uint64_t addr, size_t len)
{
    g_autofree char *path = tmp_path("pmemsave.bin");
    char *data;
    gsize size;

    qtest_qmp_assert_success(qts,
        "{'execute': 'pmemsave', 'arguments':"
        " {'val': %" PRIu64 ", 'size': %" PRIu64 ", 'filename': %s}}",
        addr, (uint64_t)len, path);
    g_assert(g_file_get_contents(path, &data, &size, NULL));
    g_assert_cmpint(size, ==, len);
    unlink(path);
    return (uint8_t *)data;
}

static char *pmemsave_sum(QTestState *qts)
{
    g_autofree uint8_t *data = pmemsave(qts, 0, RAM_SIZE);

    return g_compute_checksum_for_data(G_CHECKSUM_SHA256, data, RAM_SIZE);
}

/*
 * 2. The same through the monitor: HMP xp and QMP pmemsave while the
 * loader runs, then pmemsave of all of RAM against the eager apply
 */
static void test_monitor_read(void)
{
    QTestState *qts = vm_start("mread", SLOW, false);
    g_autofree char *a = NULL, *eager = NULL, *lazy = NULL, *mon = NULL;
    g_autofree uint8_t *want = g_malloc(PMEM_LEN);
    g_autofree uint8_t *got = NULL;
    int i;

    write_pattern(qts, 2);
    a = create_and_wait(qts, "A");
    eager = eager_sum(qts, a, 2, "lazy");
    mon = pmemsave_sum(qts);
    g_assert_cmpstr(mon, ==, eager);

    lazy_apply(qts, a);
    for (i = 1; i <= 8; i++) {
        check_xp(qts, 2, RAM_SIZE - i * PAGE + 64);
    }
    got = pmemsave(qts, RAM_SIZE - MiB, PMEM_LEN);
    make_pattern(want, 2, RAM_SIZE - MiB, PMEM_LEN);
    assert_same(got, want, RAM_SIZE - MiB, PMEM_LEN);
    g_assert(loading(qts));
    lazy = pmemsave_sum(qts);
    g_assert_cmpstr(lazy, ==, eager);
    qtest_quit(qts);
}

/*
 * The guest RAM [0, RAM_SIZE) as dump-guest-memory wrote it into an ELF
 * core file: the PT_LOAD segments placed at their physical addresses
 */
static uint8_t *ram_from_dump(const char *path)
{
    g_autofree char *core = NULL;
    uint8_t *ram = g_malloc0(RAM_SIZE);
    const Elf64_Ehdr *eh;
    uint64_t covered = 0;
    gsize size;
    int i;

    g_assert(g_file_get_contents(path, &core, &size, NULL));
    g_assert_cmpint(size, >=, sizeof(*eh));
    eh = (const Elf64_Ehdr *)core;
    g_assert(!memcmp(eh->e_ident, ELFMAG, SELFMAG));
    g_assert_cmpint(eh->e_ident[EI_CLASS], ==, ELFCLASS64);
    g_assert_cmpint(eh->e_phoff + (uint64_t)eh->e_phnum * sizeof(Elf64_Phdr),
                    <=, size);
    for (i = 0; i < eh->e_phnum; i++) {
        const Elf64_Phdr *ph = (const Elf64_Phdr *)(core + eh->e_phoff) + i;

        if (ph->p_type != PT_LOAD || ph->p_paddr >= RAM_SIZE) {
            continue;
        }
        g_assert_cmpint(ph->p_paddr + ph->p_filesz, <=, RAM_SIZE);
        g_assert_cmpint(ph->p_offset + ph->p_filesz, <=, size);
        memcpy(ram + ph->p_paddr, core + ph->p_offset, ph->p_filesz);
        covered += ph->p_filesz;
    }
    g_assert_cmpint(covered, ==, RAM_SIZE);
    return ram;
}

/* dump-guest-memory of the VM; the checksum of its RAM */
static char *dump_sum(QTestState *qts)
{
    g_autofree char *path = tmp_path("dump.elf");
    g_autofree char *protocol = g_strdup_printf("file:%s", path);
    g_autofree uint8_t *ram = NULL;

    qtest_qmp_assert_success(qts,
        "{'execute': 'dump-guest-memory',"
        " 'arguments': {'paging': false, 'protocol': %s}}", protocol);
    ram = ram_from_dump(path);
    unlink(path);
    return g_compute_checksum_for_data(G_CHECKSUM_SHA256, ram, RAM_SIZE);
}

/*
 * 3. dump-guest-memory while the loader runs writes the checkpoint's RAM:
 * its checksum is that of the eager apply (and of a dump after it)
 */
static void test_dump_during_load(void)
{
    QTestState *qts = vm_start("dump", SLOW, true);
    g_autofree char *a = NULL, *eager = NULL, *dump = NULL;
    g_autofree char *lazy = NULL;

    write_pattern(qts, 8);
    a = create_and_wait(qts, "A");
    eager = eager_sum(qts, a, 8, "lazy");
    dump = dump_sum(qts);
    g_assert_cmpstr(dump, ==, eager);

    lazy_apply(qts, a);
    check_pages_near_end(qts, 8);
    g_assert(loading(qts));
    lazy = dump_sum(qts);
    g_assert_cmpstr(lazy, ==, eager);
    check_pattern(qts, 8);
    qtest_quit(qts);
}

/* Pattern @seed with the writes of create-during-load */
static void check_marked(QTestState *qts, uint32_t seed)
{
    g_autofree uint8_t *want = g_malloc(PAT_LEN);
    g_autofree uint8_t *got = g_malloc(PAT_LEN);

    make_pattern(want, seed, PAT_ADDR, PAT_LEN);
    memcpy(want + MARK_DATA - PAT_ADDR, MARK, sizeof(MARK));
    memcpy(want + MARK_ZERO - PAT_ADDR, MARK, sizeof(MARK));
    read_ram(qts, PAT_ADDR, got, PAT_LEN);
    assert_same(got, want, PAT_ADDR, PAT_LEN);
}

/*
 * 4. A checkpoint taken while a lazy apply loads: it waits for the
 * loader and holds the applied RAM with the writes made since
 */
static void test_create_during_load(void)
{
    QTestState *qts = vm_start("create", SLOW, true);
    g_autofree char *a = NULL, *b = NULL, *now = NULL, *after = NULL;
    g_autofree char *cur = NULL;

    g_assert(zero_page(MARK_ZERO) && !zero_page(MARK_DATA));
    write_pattern(qts, 3);
    a = create_and_wait(qts, "A");
    g_free(eager_sum(qts, a, 3, "lazy"));

    lazy_apply(qts, a);
    /* Into missing pages: the rest of each comes from the file */
    qtest_memwrite(qts, MARK_DATA, MARK, sizeof(MARK));
    qtest_memwrite(qts, MARK_ZERO, MARK, sizeof(MARK));
    g_assert(loading(qts));
    b = create_and_wait(qts, "B");
    g_assert(!loading(qts));
    cur = current_of(qts);
    g_assert_cmpstr(cur, ==, b);
    check_marked(qts, 3);
    now = ram_sum(qts);

    scribble(qts);
    set_load(qts, "eager");
    apply_and_wait(qts, b);
    check_marked(qts, 3);
    after = ram_sum(qts);
    g_assert_cmpstr(after, ==, now);
    qtest_quit(qts);
}

/*
 * 5. An apply while a lazy apply loads: the first load ends, and RAM
 * is the second checkpoint's (itself loaded lazily)
 */
static void test_apply_during_load(void)
{
    QTestState *qts = vm_start("apply", SLOW, false);
    g_autofree char *a = NULL, *b = NULL, *eager = NULL, *lazy = NULL;

    write_pattern(qts, 4);
    a = create_and_wait(qts, "A");
    write_pattern(qts, 5);
    b = create_and_wait(qts, "B");
    eager = eager_sum(qts, b, 5, "lazy");

    lazy_apply(qts, a);
    check_pages_near_end(qts, 4);
    g_assert(loading(qts));
    apply_and_wait(qts, b);
    g_assert(loading(qts));
    check_pages_near_end(qts, 5);
    g_assert(loading(qts));
    check_pattern(qts, 5);
    lazy = ram_sum(qts);
    g_assert_cmpstr(lazy, ==, eager);
    qtest_quit(qts);
}

/* The state file of checkpoint @id, from the store's manifest */
static char *state_file(const char *store, const char *id)
{
    g_autofree char *path = g_build_filename(store, "manifest.json", NULL);
    g_autofree char *text = NULL;
    const QListEntry *e;
    char *file = NULL;
    QDict *m;

    g_assert(g_file_get_contents(path, &text, NULL, NULL));
    m = qobject_to(QDict, qobject_from_json(text, &error_abort));
    QLIST_FOREACH_ENTRY(qdict_get_qlist(m, "checkpoints"), e) {
        QDict *c = qobject_to(QDict, qlist_entry_obj(e));

        if (!strcmp(qdict_get_str(c, "id"), id)) {
            file = g_build_filename(store, qdict_get_str(c, "state-file"),
                                    NULL);
        }
    }
    qobject_unref(m);
    g_assert(file && g_file_test(file, G_FILE_TEST_IS_REGULAR));
    return file;
}

/* Delete @id, the only checkpoint, and wait for its merges */
static void delete_only(QTestState *qts, const char *id)
{
    QDict *rsp;

    rsp = qtest_qmp_assert_success_ref(qts,
              "{'execute': 'checkpoint-delete',"
              " 'arguments': {'checkpoint': %s}}", id);
    wait_event_of(qts, "CHECKPOINT_DELETED", id);
    /* The memory still comes from the state file */
    g_assert(loading(qts));
    if (qdict_haskey(rsp, "job-id")) {
        wait_job_concluded(qts, qdict_get_str(rsp, "job-id"));
    }
    qobject_unref(rsp);
    rsp = qtest_qmp(qts, "{'execute': 'query-checkpoints'}");
    g_assert(qlist_empty(qdict_get_qlist(rsp, "return")));
    qobject_unref(rsp);
    rsp = qtest_qmp(qts, "{'execute': 'query-checkpoint-merges'}");
    g_assert(qlist_empty(qdict_get_qlist(rsp, "return")));
    qobject_unref(rsp);
}

/*
 * 6. The applied checkpoint deleted while its state file loads: "Now"
 * moves up, the disks merge, the loader finishes from the deleted file
 * and the file is gone from the store
 */
static void test_delete_loading(void)
{
    g_autofree char *store = tmp_path("delete-store");
    QTestState *qts = vm_start("delete", "8388608", true);
    g_autofree char *a = NULL, *eager = NULL, *lazy = NULL;
    g_autofree char *state = NULL, *folder = NULL;

    write_pattern(qts, 6);
    a = create_and_wait(qts, "A");
    state = state_file(store, a);
    folder = g_path_get_dirname(state);
    eager = eager_sum(qts, a, 6, "lazy");

    lazy_apply(qts, a);
    delete_only(qts, a);
    wait_loaded(qts);
    g_assert(!g_file_test(state, G_FILE_TEST_EXISTS));
    g_assert(!g_file_test(folder, G_FILE_TEST_EXISTS));
    check_pattern(qts, 6);
    lazy = ram_sum(qts);
    g_assert_cmpstr(lazy, ==, eager);
    qtest_quit(qts);
}

/*
 * 7. A lazy apply at full speed, left to end, gives all of RAM as the
 * eager apply of the same checkpoint does
 */
static void test_eager_equal(void)
{
    QTestState *qts = vm_start("equal", NULL, false);
    g_autofree char *a = NULL, *eager = NULL, *lazy = NULL;

    write_pattern(qts, 7);
    a = create_and_wait(qts, "A");
    eager = eager_sum(qts, a, 7, "lazy");
    scribble(qts);
    apply_and_wait(qts, a);
    wait_loaded(qts);
    lazy = ram_sum(qts);
    g_assert_cmpstr(lazy, ==, eager);
    check_pattern(qts, 7);
    qtest_quit(qts);
}

int main(int argc, char **argv)
{
    g_test_init(&argc, &argv, NULL);
    if (!qtest_has_machine("microvm")) {
        g_test_skip("microvm machine not available");
        return g_test_run();
    }
    tmpdir = hvcp_make_tmpdir("checkpoint-lazy-test-XXXXXX");

    qtest_add_func("/checkpoint/lazy/qtest-read", test_qtest_read);
    qtest_add_func("/checkpoint/lazy/monitor-read", test_monitor_read);
    qtest_add_func("/checkpoint/lazy/dump-during-load",
                   test_dump_during_load);
    qtest_add_func("/checkpoint/lazy/create-during-load",
                   test_create_during_load);
    qtest_add_func("/checkpoint/lazy/apply-during-load",
                   test_apply_during_load);
    qtest_add_func("/checkpoint/lazy/delete-loading", test_delete_loading);
    qtest_add_func("/checkpoint/lazy/eager-equal", test_eager_equal);
    return hvcp_run_and_remove(tmpdir);
}
