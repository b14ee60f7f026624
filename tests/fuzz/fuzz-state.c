/*
 * libFuzzer target: the memory state file loader of the copy-on-write
 * snapshot engine (migration/cow-snapshot/FORMAT.md)
 *
 * Copyright (c) 2026 The Hyper-V checkpoints project authors
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 *
 * The loader's file handling (cowsnap_open_file(): header, block table,
 * page maps, device state region, checksum, machine type, RAM layout;
 * then cowsnap_load_block(): the page maps and the pages into RAM) is
 * static in load.c and asks the VM for its RAM blocks and machine type
 * (common.c).  This file includes load.c and common.c unchanged and
 * answers those two questions with a fake VM whose RAM blocks are
 * g_malloc'ed buffers, so AddressSanitizer sees any access outside them.
 * The rest of QEMU that load.c refers to (migration, block layer,
 * runstate: cow_snapshot_load() and the device state) is not linked:
 * the build drops the unused functions (-ffunction-sections,
 * --gc-sections).  The device state itself (QEMU's migration stream
 * loader) is fuzzed through a real QEMU by tests/fuzz/fuzz-state-qemu.
 *
 * Input: a state file, usually "compact": cut after its metadata (the
 * data regions are holes, pages of zeroes, anyway).  Each input runs
 * three or four times:
 *   1. as it is, against a fake VM of microvm -m 2M (the seeds' VM);
 *   2. with its size set to the header's file_size (at most 64 MiB, the
 *      rest a hole), against the same VM: first as it is if its
 *      metadata checksum is wrong, then with the checksum recomputed
 *      (so that mutations get past it);
 *   3. as 2, against a fake VM made of the file's own block table and
 *      machine type (at most 32 MiB of RAM), so that the layout checks
 *      and the page loading see any block size and count.
 * When a file is accepted, its RAM is loaded into the fake VM and
 * checked: present pages equal the file's, absent pages are zero.
 */

#include "qemu/osdep.h"

/* common.c with its two questions to the VM renamed away (unused) */
#define cowsnap_vm_blocks hvcp_fuzz_unused_vm_blocks
#define cowsnap_machine_type hvcp_fuzz_unused_machine_type
#include "migration/cow-snapshot/common.c"
#undef cowsnap_vm_blocks
#undef cowsnap_machine_type

GArray *cowsnap_vm_blocks(void);
const char *cowsnap_machine_type(void);

#include "migration/cow-snapshot/load.c"

#include "fuzz.h"

/*
 * What load.c and the renamed part of common.c use of the rest of QEMU:
 * only cow_snapshot_load(), cowsnap_load_devstate() and the real VM
 * queries reach these, and this harness calls none of them.
 */
#define HVCP_NOT_LINKED { abort(); }
void bdrv_drain_all_begin(void) HVCP_NOT_LINKED
void bdrv_drain_all_end(void) HVCP_NOT_LINKED
bool cow_snapshot_is_active(void) HVCP_NOT_LINKED
MigrationIncomingState *migration_incoming_get_current(void) HVCP_NOT_LINKED
void migration_incoming_state_destroy(void) HVCP_NOT_LINKED
bool migration_is_running(void) HVCP_NOT_LINKED
int qemu_fclose(QEMUFile *f) HVCP_NOT_LINKED
QEMUFile *qemu_file_new_input(QIOChannel *ioc) HVCP_NOT_LINKED
unsigned int qemu_get_be32(QEMUFile *f) HVCP_NOT_LINKED
int qemu_load_device_state(QEMUFile *f) HVCP_NOT_LINKED
bool qemu_ram_is_migratable(RAMBlock *rb) HVCP_NOT_LINKED
void qemu_system_reset(ShutdownCause reason) HVCP_NOT_LINKED
QIOChannelBuffer *qio_channel_buffer_new(size_t size) HVCP_NOT_LINKED
bool runstate_is_running(void) HVCP_NOT_LINKED
void cow_snapshot_wait_loaded(void) HVCP_NOT_LINKED
bool cowsnap_lazy_possible(CowSnapFile *sf) HVCP_NOT_LINKED
int cowsnap_lazy_start(CowSnapFile *sf) HVCP_NOT_LINKED
MachineState *current_machine;
RAMList ram_list;

#define MAX_FILE_SIZE   (64 * 1024 * 1024)
#define MAX_FAKE_RAM    (32 * 1024 * 1024)

/* The seeds' VM: microvm -m 2M (make-corpus-checkpoint) */
static const struct {
    const char *idstr;
    uint64_t used_length;
} seed_vm[] = {
    { "microvm.ram", 2 * 1024 * 1024 },
    { "/rom@etc/acpi/tables", 4096 },
    { "pc.bios", 128 * 1024 },
    { "/rom@etc/table-loader", 4096 },
    { "/rom@etc/acpi/rsdp", 4096 },
};

/* The fake VM of the current run */
static const char *vm_machine;
static GArray *vm_blocks;       /* CowSnapBlockRef */

static GArray *seed_blocks;
static int state_fd = -1;
static char *state_path;

GArray *cowsnap_vm_blocks(void)
{
    GArray *copy = g_array_new(false, true, sizeof(CowSnapBlockRef));

    g_array_append_vals(copy, vm_blocks->data, vm_blocks->len);
    return copy;
}

const char *cowsnap_machine_type(void)
{
    return vm_machine;
}

static void setup(void)
{
    if (state_fd >= 0) {
        return;
    }
    state_fd = memfd_create("hvcp-fuzz-state", MFD_CLOEXEC);
    if (state_fd < 0) {
        perror("fuzz-state: memfd_create");
        abort();
    }
    state_path = g_strdup_printf("/proc/self/fd/%d", state_fd);
    seed_blocks = g_array_new(false, true, sizeof(CowSnapBlockRef));
    for (size_t i = 0; i < ARRAY_SIZE(seed_vm); i++) {
        CowSnapBlockRef r = {
            .idstr = seed_vm[i].idstr,
            .host = g_malloc(seed_vm[i].used_length),
            .used_length = seed_vm[i].used_length,
            .host_page_size = 4096,
            .writable = i == 0,
        };
        g_array_append_val(seed_blocks, r);
    }
}

static void put_file(const uint8_t *data, size_t size, uint64_t file_size)
{
    if (ftruncate(state_fd, 0) < 0 ||
        (size && cowsnap_pwrite_all(state_fd, data, size, 0) < 0) ||
        (file_size > size && ftruncate(state_fd, file_size) < 0)) {
        perror("fuzz-state: cannot write the state file");
        abort();
    }
}

/* The byte at @off of the file (the input, then a hole) */
static void file_bytes(const uint8_t *data, size_t size, uint64_t off,
                       uint8_t *out, size_t len)
{
    memset(out, 0, len);
    if (off < size) {
        memcpy(out, data + off, MIN(len, size - off));
    }
}

/* After a load: present pages as in the file, absent pages zero */
static void check_ram(CowSnapFile *sf, const uint8_t *data, size_t size)
{
    g_autofree uint8_t *page = g_malloc(COWSNAP_PAGE_SIZE);

    for (unsigned i = 0; i < sf->vm_blocks->len; i++) {
        CowSnapFileBlock *t = &sf->table[i];
        CowSnapBlockRef *r = &g_array_index(sf->vm_blocks,
                                            CowSnapBlockRef, i);
        const uint8_t *map = sf->maps + (le64_to_cpu(t->page_map_offset) -
                                         le64_to_cpu(sf->hdr.maps_offset));
        uint64_t data_off = le64_to_cpu(t->data_offset);

        for (uint64_t p = 0; p < r->used_length / COWSNAP_PAGE_SIZE; p++) {
            if (cowsnap_page_present(map, p)) {
                file_bytes(data, size, data_off + p * COWSNAP_PAGE_SIZE,
                           page, COWSNAP_PAGE_SIZE);
            } else {
                memset(page, 0, COWSNAP_PAGE_SIZE);
            }
            if (memcmp(page, r->host + p * COWSNAP_PAGE_SIZE,
                       COWSNAP_PAGE_SIZE)) {
                fprintf(stderr, "fuzz-state: block '%s' page %" PRIu64
                        " is not what the file says after the load\n",
                        r->idstr, p);
                abort();
            }
        }
    }
}

/* Validate, and load into the fake VM what validates */
static void run(const uint8_t *data, size_t size, bool load)
{
    CowSnapFile sf;
    Error *err = NULL;
    bool ok;

    /* What cow_snapshot_validate() does, keeping the file open */
    ok = cowsnap_open_file(&sf, state_path, &err);
    if (!ok) {
        /* Refused: the message must name the file */
        if (!err || !strstr(error_get_pretty(err), state_path)) {
            fprintf(stderr, "fuzz-state: refused without naming the file:"
                    " %s\n", err ? error_get_pretty(err) : "(none)");
            abort();
        }
        if (getenv("HVCP_FUZZ_VERBOSE")) {
            fprintf(stderr, "  refused: %s\n", error_get_pretty(err));
        }
        error_free(err);
    } else if (load) {
        if (getenv("HVCP_FUZZ_VERBOSE")) {
            fprintf(stderr, "  accepted and loaded\n");
        }
        for (unsigned i = 0; i < sf.vm_blocks->len; i++) {
            CowSnapBlockRef *r = &g_array_index(sf.vm_blocks,
                                                CowSnapBlockRef, i);

            memset(r->host, 0xa5, r->used_length);
            if (cowsnap_load_block(&sf, i) < 0) {
                fprintf(stderr, "fuzz-state: validated, but block %u does"
                        " not load\n", i);
                abort();
            }
        }
        check_ram(&sf, data, size);
    }
    cowsnap_file_close(&sf);
}

/* Recompute the metadata checksum of @data if its regions are in it */
static void fix_crc(uint8_t *data, size_t size)
{
    CowSnapFileHeader h;
    uint64_t off[3], len[3];

    memcpy(&h, data, sizeof(h));
    off[0] = le64_to_cpu(h.table_offset);
    len[0] = le64_to_cpu(h.table_size);
    off[1] = le64_to_cpu(h.maps_offset);
    len[1] = le64_to_cpu(h.maps_size);
    off[2] = le64_to_cpu(h.devstate_offset);
    len[2] = le64_to_cpu(h.devstate_size);
    for (int i = 0; i < 3; i++) {
        if (off[i] > size || len[i] > size - off[i]) {
            return;
        }
    }
    h.metadata_crc = cpu_to_le32(cowsnap_metadata_crc(&h, data + off[0],
                                                      data + off[1],
                                                      data + off[2]));
    memcpy(data, &h, sizeof(h));
}

/*
 * A fake VM with the blocks of the file's table, or NULL if the table is
 * not in the input or asks for too much RAM
 */
static GArray *blocks_of_file(const uint8_t *data, size_t size,
                              GPtrArray *names)
{
    const CowSnapFileHeader *h = (const CowSnapFileHeader *)data;
    uint32_t nr = le32_to_cpu(h->nr_blocks);
    uint64_t table = le64_to_cpu(h->table_offset);
    uint64_t total = 0;
    GArray *blocks;

    if (nr > COWSNAP_MAX_BLOCKS || table > size ||
        (uint64_t)nr * sizeof(CowSnapFileBlock) > size - table) {
        return NULL;
    }
    for (uint32_t i = 0; i < nr; i++) {
        CowSnapFileBlock t;

        memcpy(&t, data + table + i * sizeof(t), sizeof(t));
        total += MIN(le64_to_cpu(t.used_length), (uint64_t)MAX_FAKE_RAM + 1);
        if (total > MAX_FAKE_RAM) {
            return NULL;
        }
    }
    blocks = g_array_new(false, true, sizeof(CowSnapBlockRef));
    for (uint32_t i = 0; i < nr; i++) {
        CowSnapFileBlock t;
        char *name;

        memcpy(&t, data + table + i * sizeof(t), sizeof(t));
        name = g_strndup(t.idstr, sizeof(t.idstr));
        g_ptr_array_add(names, name);
        CowSnapBlockRef r = {
            .idstr = name,
            .host = g_malloc(MAX(le64_to_cpu(t.used_length), 1)),
            .used_length = le64_to_cpu(t.used_length),
            .host_page_size = le64_to_cpu(t.host_page_size),
            .writable = true,
        };
        g_array_append_val(blocks, r);
    }
    return blocks;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    g_autofree uint8_t *fixed = NULL;
    g_autoptr(GPtrArray) names = NULL;
    GArray *own;
    uint64_t file_size;

    setup();

    /* 1. As it is, against the seeds' VM */
    vm_machine = "microvm";
    vm_blocks = seed_blocks;
    put_file(data, size, 0);
    run(data, size, true);
    if (size < sizeof(CowSnapFileHeader)) {
        return 0;
    }

    /* 2. Full size; checksum as it is, then recomputed */
    fixed = g_memdup2(data, size);
    fix_crc(fixed, size);
    file_size = le64_to_cpu(((CowSnapFileHeader *)fixed)->file_size);
    file_size = file_size <= MAX_FILE_SIZE ? file_size : 0;
    if (memcmp(fixed, data, sizeof(CowSnapFileHeader))) {
        put_file(data, size, file_size);
        run(data, size, true);
    }
    put_file(fixed, size, file_size);
    run(fixed, size, true);

    /* 3. Against a VM that has the file's RAM blocks */
    names = g_ptr_array_new_with_free_func(g_free);
    own = blocks_of_file(fixed, size, names);
    if (own) {
        char machine[COWSNAP_MACHINE_LEN + 1] = "";

        memcpy(machine, ((CowSnapFileHeader *)fixed)->machine_type,
               COWSNAP_MACHINE_LEN);
        vm_machine = machine;
        vm_blocks = own;
        run(fixed, size, true);
        for (unsigned i = 0; i < own->len; i++) {
            g_free(g_array_index(own, CowSnapBlockRef, i).host);
        }
        g_array_unref(own);
        vm_machine = "microvm";
        vm_blocks = seed_blocks;
    }
    return 0;
}
