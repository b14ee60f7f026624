/*
 * Copy-on-write RAM snapshot: validate and load a state file
 *
 * Copyright (c) 2026 The Hyper-V checkpoints project
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 *
 * Loading never starts before the whole file has been checked: every
 * refusal (incomplete, truncated, corrupt, other machine type, other
 * RAM layout) happens while the VM is still exactly as it was.
 */

#include "qemu/osdep.h"
#include "qemu/bitops.h"
#include "qemu/cutils.h"
#include "qemu/error-report.h"
#include "qemu/yank.h"
#include "qapi/error.h"
#include "io/channel-buffer.h"
#include "block/block.h"
#include "migration/misc.h"
#include "migration/migration.h"
#include "migration/qemu-file.h"
#include "migration/savevm.h"
#include "system/runstate.h"
#include "cow-snapshot.h"
#include "internal.h"
#include "load.h"

void cowsnap_file_close(CowSnapFile *sf)
{
    if (sf->fd >= 0) {
        close(sf->fd);
    }
    g_free(sf->table);
    g_free(sf->maps);
    g_free(sf->devstate);
    if (sf->vm_blocks) {
        g_array_unref(sf->vm_blocks);
    }
    memset(sf, 0, sizeof(*sf));
    sf->fd = -1;
}

/* Is [off, off + len) inside the file? */
static bool cowsnap_in_file(CowSnapFile *sf, uint64_t off, uint64_t len)
{
    return off <= sf->size && len <= sf->size - off;
}

static bool cowsnap_read_region(CowSnapFile *sf, const char *path,
                                const char *what, uint64_t off, uint64_t len,
                                uint8_t **out, Error **errp)
{
    if (!cowsnap_in_file(sf, off, len)) {
        error_setg(errp, "State file '%s' is truncated: its %s is missing",
                   path, what);
        return false;
    }
    *out = g_malloc(MAX(len, 1));
    if (cowsnap_pread_all(sf->fd, *out, len, off) < 0) {
        error_setg_errno(errp, errno, "Cannot read the %s of '%s'", what,
                         path);
        return false;
    }
    return true;
}

static bool cowsnap_check_header(CowSnapFile *sf, const char *path,
                                 Error **errp)
{
    CowSnapFileHeader *h = &sf->hdr;
    uint64_t flags = le64_to_cpu(h->flags);
    uint32_t nr = le32_to_cpu(h->nr_blocks);

    if (sf->size < sizeof(*h)) {
        error_setg(errp, "State file '%s' is truncated: no header", path);
        return false;
    }
    if (memcmp(h->magic, COWSNAP_MAGIC, sizeof(h->magic))) {
        error_setg(errp, "'%s' is not a copy-on-write snapshot state file",
                   path);
        return false;
    }
    if (le32_to_cpu(h->version) != COWSNAP_VERSION) {
        error_setg(errp, "State file '%s' has version %u; this QEMU reads "
                   "version %u", path, le32_to_cpu(h->version),
                   COWSNAP_VERSION);
        return false;
    }
    if (!(flags & COWSNAP_FLAG_COMPLETE)) {
        error_setg(errp, "State file '%s' is incomplete: its save did not "
                   "finish", path);
        return false;
    }
    if (flags & ~COWSNAP_KNOWN_FLAGS ||
        le32_to_cpu(h->header_size) != sizeof(*h) ||
        le32_to_cpu(h->page_size) != COWSNAP_PAGE_SIZE ||
        nr > COWSNAP_MAX_BLOCKS ||
        le64_to_cpu(h->table_size) != nr * sizeof(CowSnapFileBlock) ||
        le64_to_cpu(h->devstate_size) > COWSNAP_MAX_DEVSTATE ||
        le64_to_cpu(h->maps_size) > sf->size) {
        error_setg(errp, "State file '%s' is corrupt: bad header", path);
        return false;
    }
    if (le64_to_cpu(h->file_size) != sf->size) {
        error_setg(errp, "State file '%s' is %s: %" PRIu64 " bytes instead "
                   "of %" PRIu64, path,
                   sf->size < le64_to_cpu(h->file_size) ? "truncated" :
                   "corrupt", sf->size, (uint64_t)le64_to_cpu(h->file_size));
        return false;
    }
    return true;
}

/* Every block of the file against the VM's, in order */
static bool cowsnap_check_layout(CowSnapFile *sf, const char *path,
                                 Error **errp)
{
    unsigned nr = le32_to_cpu(sf->hdr.nr_blocks);
    uint64_t maps_off = le64_to_cpu(sf->hdr.maps_offset);
    uint64_t maps_size = le64_to_cpu(sf->hdr.maps_size);
    GArray *vm = sf->vm_blocks;

    if (nr != vm->len) {
        error_setg(errp, "State file '%s' has %u RAM blocks, this VM has %u",
                   path, nr, vm->len);
        return false;
    }
    for (unsigned i = 0; i < nr; i++) {
        CowSnapFileBlock *t = &sf->table[i];
        CowSnapBlockRef *r = &g_array_index(vm, CowSnapBlockRef, i);
        uint64_t len = le64_to_cpu(t->used_length);
        uint64_t map_off = le64_to_cpu(t->page_map_offset);
        uint64_t data_off = le64_to_cpu(t->data_offset);

        if (strnlen(t->idstr, sizeof(t->idstr)) == sizeof(t->idstr)) {
            error_setg(errp, "State file '%s' is corrupt: bad block name",
                       path);
            return false;
        }
        if (strcmp(t->idstr, r->idstr)) {
            error_setg(errp, "State file '%s' does not fit this VM: RAM block "
                       "%u is '%s' there and '%s' here", path, i, t->idstr,
                       r->idstr);
            return false;
        }
        if (len != r->used_length) {
            error_setg(errp, "State file '%s' does not fit this VM: RAM block "
                       "'%s' has %" PRIu64 " bytes there and %" PRIu64
                       " here", path, t->idstr, len, r->used_length);
            return false;
        }
        if (le64_to_cpu(t->page_map_size) != cowsnap_map_size(len) ||
            map_off < maps_off ||
            map_off - maps_off > maps_size ||
            cowsnap_map_size(len) > maps_size - (map_off - maps_off) ||
            data_off % COWSNAP_PAGE_SIZE ||
            !cowsnap_in_file(sf, data_off, ROUND_UP(len, COWSNAP_PAGE_SIZE))) {
            error_setg(errp, "State file '%s' is corrupt: bad layout of RAM "
                       "block '%s'", path, t->idstr);
            return false;
        }
    }
    return true;
}

bool cowsnap_open_file(CowSnapFile *sf, const char *path, Error **errp)
{
    struct stat st;
    uint32_t crc;

    memset(sf, 0, sizeof(*sf));
    sf->fd = qemu_open(path, O_RDONLY | O_CLOEXEC, errp);
    if (sf->fd < 0) {
        return false;
    }
    if (fstat(sf->fd, &st) < 0) {
        error_setg_errno(errp, errno, "Cannot stat '%s'", path);
        return false;
    }
    sf->size = st.st_size;
    if (sf->size >= sizeof(sf->hdr) &&
        cowsnap_pread_all(sf->fd, &sf->hdr, sizeof(sf->hdr), 0) < 0) {
        error_setg_errno(errp, errno, "Cannot read '%s'", path);
        return false;
    }
    if (!cowsnap_check_header(sf, path, errp) ||
        !cowsnap_read_region(sf, path, "block table",
                             le64_to_cpu(sf->hdr.table_offset),
                             le64_to_cpu(sf->hdr.table_size),
                             (uint8_t **)&sf->table, errp) ||
        !cowsnap_read_region(sf, path, "page maps",
                             le64_to_cpu(sf->hdr.maps_offset),
                             le64_to_cpu(sf->hdr.maps_size),
                             &sf->maps, errp) ||
        !cowsnap_read_region(sf, path, "device state",
                             le64_to_cpu(sf->hdr.devstate_offset),
                             le64_to_cpu(sf->hdr.devstate_size),
                             &sf->devstate, errp)) {
        return false;
    }
    crc = cowsnap_metadata_crc(&sf->hdr, sf->table, sf->maps, sf->devstate);
    if (crc != le32_to_cpu(sf->hdr.metadata_crc)) {
        error_setg(errp, "State file '%s' is corrupt: metadata checksum "
                   "mismatch", path);
        return false;
    }
    if (strncmp(sf->hdr.machine_type, cowsnap_machine_type(),
                sizeof(sf->hdr.machine_type))) {
        error_setg(errp, "State file '%s' was saved by machine type '%.*s', "
                   "this VM is '%s'", path,
                   (int)sizeof(sf->hdr.machine_type), sf->hdr.machine_type,
                   cowsnap_machine_type());
        return false;
    }
    sf->vm_blocks = cowsnap_vm_blocks();
    return cowsnap_check_layout(sf, path, errp);
}

bool cow_snapshot_validate(const char *path, Error **errp)
{
    CowSnapFile sf;
    bool ok = cowsnap_open_file(&sf, path, errp);

    cowsnap_file_close(&sf);
    return ok;
}

bool cowsnap_page_present(const uint8_t *map, uint64_t page)
{
    uint64_t word = ldq_le_p(map + (page / 64) * 8);

    return word & (1ULL << (page % 64));
}

/* RAM of block @i: present pages from the file, the others zero */
const uint8_t *cowsnap_block_map(CowSnapFile *sf, unsigned i)
{
    return sf->maps + (le64_to_cpu(sf->table[i].page_map_offset) -
                       le64_to_cpu(sf->hdr.maps_offset));
}

int cowsnap_load_block(CowSnapFile *sf, unsigned i)
{
    CowSnapFileBlock *t = &sf->table[i];
    CowSnapBlockRef *r = &g_array_index(sf->vm_blocks, CowSnapBlockRef, i);
    const uint8_t *map = cowsnap_block_map(sf, i);
    uint64_t data_off = le64_to_cpu(t->data_offset);
    uint64_t pages = r->used_length / COWSNAP_PAGE_SIZE;
    uint64_t p = 0;

    while (p < pages) {
        bool present = cowsnap_page_present(map, p);
        uint64_t s = p;
        uint8_t *host;
        size_t len;

        while (p < pages && cowsnap_page_present(map, p) == present) {
            p++;
        }
        host = r->host + s * COWSNAP_PAGE_SIZE;
        len = (p - s) * COWSNAP_PAGE_SIZE;
        if (present) {
            if (cowsnap_pread_all(sf->fd, host, len,
                                  data_off + s * COWSNAP_PAGE_SIZE) < 0) {
                return -errno;
            }
        } else if (!buffer_is_zero(host, len)) {
            /* A hole: only dirty the pages that are not zero already */
            for (uint64_t off = 0; off < len; off += COWSNAP_PAGE_SIZE) {
                if (!buffer_is_zero(host + off, COWSNAP_PAGE_SIZE)) {
                    memset(host + off, 0, COWSNAP_PAGE_SIZE);
                }
            }
        }
    }
    return 0;
}

/* The device state: a migration stream without RAM */
int cowsnap_load_devstate(CowSnapFile *sf, Error **errp)
{
    MigrationIncomingState *mis = migration_incoming_get_current();
    uint64_t size = le64_to_cpu(sf->hdr.devstate_size);
    QIOChannelBuffer *bioc = qio_channel_buffer_new(size);
    QEMUFile *f;
    int ret;

    memcpy(bioc->data, sf->devstate, size);
    bioc->usage = size;
    f = qemu_file_new_input(QIO_CHANNEL(bioc));
    object_unref(OBJECT(bioc));

    if (qemu_get_be32(f) != QEMU_VM_FILE_MAGIC ||
        qemu_get_be32(f) != QEMU_VM_FILE_VERSION) {
        qemu_fclose(f);
        error_setg(errp, "Device state has a bad stream header");
        return -EINVAL;
    }
    /*
     * As load_snapshot() does: the incoming state owns the file and
     * migration_incoming_state_destroy() unregisters the migration yank
     * instance, so it must be registered first (it asserts otherwise).
     */
    if (!yank_register_instance(MIGRATION_YANK_INSTANCE, errp)) {
        qemu_fclose(f);
        return -EINVAL;
    }
    mis->from_src_file = f;
    ret = qemu_load_device_state(f);
    migration_incoming_state_destroy();
    if (ret < 0) {
        error_setg(errp, "Error %d while loading the device state", ret);
    }
    return ret;
}

bool cow_snapshot_load(const char *path, Error **errp)
{
    return cow_snapshot_load_mode(path, false, errp);
}

/* What must hold before a load changes anything */
static bool cowsnap_load_allowed(Error **errp)
{
    assert(bql_locked());
    if (runstate_is_running()) {
        error_setg(errp, "The VM must be stopped to load a snapshot");
        return false;
    }
    if (cow_snapshot_is_active()) {
        error_setg(errp, "A copy-on-write snapshot is prepared or being "
                   "saved");
        return false;
    }
    if (migration_is_running()) {
        error_setg(errp, "Cannot load a snapshot while a migration runs");
        return false;
    }
    return true;
}

static int cowsnap_load_all_blocks(CowSnapFile *sf)
{
    int ret = 0;

    for (unsigned i = 0; i < sf->vm_blocks->len && ret == 0; i++) {
        ret = cowsnap_load_block(sf, i);
    }
    return ret;
}

bool cow_snapshot_load_mode(const char *path, bool lazy, Error **errp)
{
    g_autofree CowSnapFile *sf = g_new0(CowSnapFile, 1);
    CowSnapFile devstate;
    bool ok = false;
    int ret;

    /* A load that is still going on finishes first: it owns the RAM */
    cow_snapshot_wait_loaded();
    if (!cowsnap_load_allowed(errp)) {
        return false;
    }
    if (!cowsnap_open_file(sf, path, errp)) {
        cowsnap_file_close(sf);
        return false;
    }
    lazy = lazy && cowsnap_lazy_possible(sf);

    /*
     * The device state stays with this function: a lazy load's thread
     * may end, and close @sf, before it is loaded
     */
    devstate = *sf;
    sf->devstate = NULL;

    /* From here on the VM changes */
    bdrv_drain_all_begin();
    qemu_system_reset(SHUTDOWN_CAUSE_SNAPSHOT_LOAD);
    if (lazy && cowsnap_lazy_start(sf) < 0) {
        /* Some RAM may have been emptied already: all of it comes in */
        lazy = false;
    }
    ret = lazy ? 0 : cowsnap_load_all_blocks(sf);
    if (ret < 0) {
        error_setg_errno(errp, -ret, "Cannot read RAM from '%s'", path);
    } else {
        ok = cowsnap_load_devstate(&devstate, errp) == 0;
    }
    g_free(devstate.devstate);
    bdrv_drain_all_end();
    if (lazy && ret >= 0) {
        /* The loader owns the file now; a failed device load waits */
        if (!ok) {
            cow_snapshot_wait_loaded();
        }
        g_steal_pointer(&sf);
        return ok;
    }
    cowsnap_file_close(sf);
    return ok;
}
