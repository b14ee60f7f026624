/*
 * Differencing VHDX: the Parent Locator metadata item
 *
 * Copyright (c) 2026 The Hyper-V checkpoints project authors
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 *
 * The locator is untrusted input: every offset and length is checked
 * against the item before it is used, and this file does no I/O so that
 * the fuzzing harness can drive it directly.
 *
 * Layout (MS-VHDX 2.6.2.6): a 20-byte header (locator type GUID, 2 bytes
 * reserved, 2 bytes key/value count), then count entries of 12 bytes
 * (key offset, value offset, key length, value length; offsets relative
 * to the start of the item), the strings being UTF-16LE without NUL.
 */

#include "qemu/osdep.h"
#include "qapi/error.h"
#include "qemu/bswap.h"
#include "qemu/ctype.h"
#include "qemu/cutils.h"
#include "vhdx-diff.h"

const MSGUID vhdx_parent_locator_type_vhdx = {
    .data1 = 0xb04aefb7,
    .data2 = 0xd19e,
    .data3 = 0x4a81,
    .data4 = { 0xb7, 0x89, 0x25, 0xb8, 0xe9, 0x44, 0x59, 0x13 }
};

/* Metadata item id of the Parent Locator */
const MSGUID vhdx_parent_locator_item = {
    .data1 = 0xa8d35f2d,
    .data2 = 0xb30b,
    .data3 = 0x454d,
    .data4 = { 0xab, 0xf7, 0xd3, 0xd8, 0x48, 0x34, 0xab, 0x0c }
};

#define VHDX_LOCATOR_HEADER_SIZE  20
#define VHDX_LOCATOR_ENTRY_SIZE   12

void vhdx_parent_locator_free(VHDXParentLocator *loc)
{
    if (!loc) {
        return;
    }
    g_free(loc->parent_linkage);
    g_free(loc->parent_linkage2);
    g_free(loc->relative_path);
    g_free(loc->volume_path);
    g_free(loc->absolute_win32_path);
    g_free(loc);
}

/*
 * Decode @len bytes of UTF-16LE at @p.  Embedded NULs and unpaired
 * surrogates are refused: no Windows path or GUID contains them, and
 * they would make the key comparison and the path handling ambiguous.
 */
static char *vhdx_utf16le_decode(const uint8_t *p, size_t len,
                                 const char *what, Error **errp)
{
    g_autofree gunichar2 *units = NULL;
    g_autoptr(GError) gerr = NULL;
    size_t n = len / 2;
    size_t i;
    char *str;

    units = g_new(gunichar2, n);
    for (i = 0; i < n; i++) {
        units[i] = lduw_le_p(p + 2 * i);
        if (units[i] == 0) {
            error_setg(errp, "parent locator %s contains a NUL character",
                       what);
            return NULL;
        }
    }
    str = g_utf16_to_utf8(units, n, NULL, NULL, &gerr);
    if (!str) {
        error_setg(errp, "parent locator %s is not valid UTF-16: %s",
                   what, gerr->message);
        return NULL;
    }
    return str;
}

/*
 * Check that [offset, offset + length) is a non-empty, even-sized string
 * inside the item and after the entry table.
 */
static bool vhdx_locator_range_ok(uint32_t offset, uint16_t length,
                                  size_t table_end, size_t item_len)
{
    return length > 0 && length % 2 == 0 && offset >= table_end &&
           offset <= item_len && length <= item_len - offset;
}

static char **vhdx_locator_slot(VHDXParentLocator *loc, const char *key)
{
    if (!strcmp(key, "parent_linkage")) {
        return &loc->parent_linkage;
    } else if (!strcmp(key, "parent_linkage2")) {
        return &loc->parent_linkage2;
    } else if (!strcmp(key, "relative_path")) {
        return &loc->relative_path;
    } else if (!strcmp(key, "volume_path")) {
        return &loc->volume_path;
    } else if (!strcmp(key, "absolute_win32_path")) {
        return &loc->absolute_win32_path;
    }
    return NULL;
}

static bool vhdx_locator_parse_entry(VHDXParentLocator *loc,
                                     const uint8_t *buf, size_t len,
                                     unsigned int i, size_t table_end,
                                     Error **errp)
{
    const uint8_t *e = buf + VHDX_LOCATOR_HEADER_SIZE +
                       i * VHDX_LOCATOR_ENTRY_SIZE;
    uint32_t key_offset = ldl_le_p(e);
    uint32_t value_offset = ldl_le_p(e + 4);
    uint16_t key_length = lduw_le_p(e + 8);
    uint16_t value_length = lduw_le_p(e + 10);
    g_autofree char *key = NULL;
    char **slot;

    if (!vhdx_locator_range_ok(key_offset, key_length, table_end, len)) {
        error_setg(errp, "parent locator entry %u: key (offset %" PRIu32
                   ", length %u) is empty, odd-sized or outside the locator (%zu bytes)",
                   i, key_offset, key_length, len);
        return false;
    }
    if (!vhdx_locator_range_ok(value_offset, value_length, table_end, len)) {
        error_setg(errp, "parent locator entry %u: value (offset %" PRIu32
                   ", length %u) is empty, odd-sized or outside the locator (%zu bytes)",
                   i, value_offset, value_length, len);
        return false;
    }

    key = vhdx_utf16le_decode(buf + key_offset, key_length, "key", errp);
    if (!key) {
        return false;
    }
    slot = vhdx_locator_slot(loc, key);
    if (!slot) {
        /* Keys of later specification versions: not ours to judge */
        return true;
    }
    if (*slot) {
        error_setg(errp, "parent locator key '%s' appears twice", key);
        return false;
    }
    *slot = vhdx_utf16le_decode(buf + value_offset, value_length, key, errp);
    return *slot != NULL;
}

/* Check the keys that give the parent's identity and location */
static bool vhdx_locator_check_keys(VHDXParentLocator *loc, Error **errp)
{
    if (!loc->parent_linkage) {
        error_setg(errp, "parent locator has no parent_linkage key");
        return false;
    }
    if (!vhdx_guid_parse(loc->parent_linkage, &loc->linkage)) {
        error_setg(errp, "parent locator parent_linkage '%s' is not a GUID",
                   loc->parent_linkage);
        return false;
    }
    if (loc->parent_linkage2) {
        static const MSGUID zero_guid;

        if (!vhdx_guid_parse(loc->parent_linkage2, &loc->linkage2)) {
            error_setg(errp, "parent locator parent_linkage2 '%s' is not a "
                       "GUID", loc->parent_linkage2);
            return false;
        }
        /* Hyper-V writes the zero GUID; it never identifies a parent */
        loc->has_linkage2 = !guid_eq(loc->linkage2, zero_guid);
    }
    if (!loc->relative_path && !loc->volume_path &&
        !loc->absolute_win32_path) {
        error_setg(errp, "parent locator has none of relative_path, "
                   "volume_path and absolute_win32_path");
        return false;
    }
    return true;
}

VHDXParentLocator *vhdx_parent_locator_parse(const uint8_t *buf, size_t len,
                                             Error **errp)
{
    g_autoptr(VHDXParentLocator) loc = g_new0(VHDXParentLocator, 1);
    MSGUID type;
    uint16_t count;
    size_t table_end;
    unsigned int i;

    if (len < VHDX_LOCATOR_HEADER_SIZE) {
        error_setg(errp, "parent locator is too short (%zu bytes)", len);
        return NULL;
    }
    memcpy(&type, buf, sizeof(type));
    leguid_to_cpus(&type);
    if (!guid_eq(type, vhdx_parent_locator_type_vhdx)) {
        error_setg(errp, "parent locator type is not VHDX; only VHDX "
                   "parents are supported");
        return NULL;
    }
    count = lduw_le_p(buf + 18);
    table_end = VHDX_LOCATOR_HEADER_SIZE +
                (size_t)count * VHDX_LOCATOR_ENTRY_SIZE;
    if (table_end > len) {
        error_setg(errp, "parent locator claims %u entries, more than its "
                   "%zu bytes hold", count, len);
        return NULL;
    }
    for (i = 0; i < count; i++) {
        if (!vhdx_locator_parse_entry(loc, buf, len, i, table_end, errp)) {
            return NULL;
        }
    }
    if (!vhdx_locator_check_keys(loc, errp)) {
        return NULL;
    }
    return g_steal_pointer(&loc);
}

static int vhdx_hex_value(char c)
{
    if (c >= '0' && c <= '9') {
        return c - '0';
    }
    c = qemu_tolower(c);
    if (c >= 'a' && c <= 'f') {
        return c - 'a' + 10;
    }
    return -1;
}

/*
 * Parse "{xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx}" (braces optional, any
 * case) into a GUID in host order: the text shows Data1, Data2, Data3 as
 * numbers and Data4 bytewise, as Windows prints an MSGUID.
 */
bool vhdx_guid_parse(const char *str, MSGUID *guid)
{
    static const char pattern[] = "xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx";
    uint8_t bytes[16];
    size_t len = strlen(str);
    int nibble = 0;
    size_t i;

    if (len == sizeof(pattern) + 1 && str[0] == '{' && str[len - 1] == '}') {
        str++;
        len -= 2;
    }
    if (len != sizeof(pattern) - 1) {
        return false;
    }
    memset(bytes, 0, sizeof(bytes));
    for (i = 0; i < len; i++) {
        int v;

        if (pattern[i] == '-') {
            if (str[i] != '-') {
                return false;
            }
            continue;
        }
        v = vhdx_hex_value(str[i]);
        if (v < 0) {
            return false;
        }
        bytes[nibble / 2] |= v << (nibble % 2 ? 0 : 4);
        nibble++;
    }
    guid->data1 = ldl_be_p(bytes);
    guid->data2 = lduw_be_p(bytes + 4);
    guid->data3 = lduw_be_p(bytes + 6);
    memcpy(guid->data4, bytes + 8, 8);
    return true;
}

/* The inverse of vhdx_guid_parse(), lower case with braces as Hyper-V */
char *vhdx_guid_format(const MSGUID *g)
{
    return g_strdup_printf("{%08x-%04x-%04x-%02x%02x-"
                           "%02x%02x%02x%02x%02x%02x}",
                           g->data1, g->data2, g->data3,
                           g->data4[0], g->data4[1], g->data4[2],
                           g->data4[3], g->data4[4], g->data4[5],
                           g->data4[6], g->data4[7]);
}

/*
 * relative_path is a Windows path relative to the child's folder, such
 * as ".\parent.avhdx" or "..\base\disk.vhdx".  Turn it into a relative
 * POSIX path.  A drive or root would make it absolute: refuse that, as
 * it would no longer be relative to the child.
 */
char *vhdx_relative_path_to_posix(const char *rel, Error **errp)
{
    g_autofree char *path = g_strdup(rel);
    char *p = path;
    char *c;

    for (c = path; *c; c++) {
        if (*c == '\\') {
            *c = '/';
        }
    }
    while (p[0] == '.' && p[1] == '/') {
        p += 2;
        while (*p == '/') {
            p++;
        }
    }
    if (!*p || p[0] == '/' || (g_ascii_isalpha(p[0]) && p[1] == ':')) {
        error_setg(errp, "relative_path '%s' is not a relative path", rel);
        return NULL;
    }
    return g_strdup(p);
}

/*
 * Map an absolute Win32 path onto this host: drop a "\\?\" prefix and a
 * drive letter, use '/' separators.  "C:\dir\x.vhdx" -> "/dir/x.vhdx".
 * Returns NULL for paths that cannot be local (UNC, volume GUID paths).
 */
char *vhdx_win32_path_to_posix(const char *win32)
{
    g_autofree char *path = NULL;
    const char *p = win32;
    char *c;

    if (g_str_has_prefix(p, "\\\\?\\")) {
        p += 4;
    }
    if (g_str_has_prefix(p, "\\\\") || g_str_has_prefix(p, "UNC\\") ||
        g_str_has_prefix(p, "Volume{")) {
        return NULL;
    }
    if (g_ascii_isalpha(p[0]) && p[1] == ':') {
        p += 2;
    }
    if (p[0] != '\\' && p[0] != '/') {
        return NULL;
    }
    path = g_strdup(p);
    for (c = path; *c; c++) {
        if (*c == '\\') {
            *c = '/';
        }
    }
    return g_steal_pointer(&path);
}

/* The file name part of a Windows path, NULL if it has none */
const char *vhdx_win32_basename(const char *win32)
{
    const char *p = strrchr(win32, '\\');
    const char *q = strrchr(win32, '/');

    if (q > p) {
        p = q;
    }
    p = p ? p + 1 : win32;
    if (!*p || !strcmp(p, ".") || !strcmp(p, "..")) {
        return NULL;
    }
    return p;
}

/* Append @str to @buf as UTF-16LE, return its length in bytes */
static uint16_t vhdx_locator_put_string(GByteArray *buf, const char *str)
{
    g_autofree gunichar2 *units = NULL;
    glong n = 0;
    glong i;

    units = g_utf8_to_utf16(str, -1, NULL, &n, NULL);
    assert(units && n * 2 <= UINT16_MAX);
    for (i = 0; i < n; i++) {
        uint8_t le[2];

        stw_le_p(le, units[i]);
        g_byte_array_append(buf, le, 2);
    }
    return n * 2;
}

/*
 * Serialise a VHDX parent locator with the keys of @loc that are set,
 * in the order Hyper-V writes them, strings packed after the entry
 * table.  The strings must be valid UTF-8 without NUL and short enough
 * for 16-bit lengths: callers check paths with vhdx_locator_value_ok().
 */
uint8_t *vhdx_parent_locator_build(const VHDXParentLocator *loc,
                                   size_t *len)
{
    const char *keys[] = {
        "parent_linkage", "absolute_win32_path", "relative_path",
        "volume_path", "parent_linkage2",
    };
    const char *values[] = {
        loc->parent_linkage, loc->absolute_win32_path, loc->relative_path,
        loc->volume_path, loc->parent_linkage2,
    };
    GByteArray *buf = g_byte_array_new();
    uint8_t header[VHDX_LOCATOR_HEADER_SIZE];
    MSGUID type = vhdx_parent_locator_type_vhdx;
    uint16_t count = 0;
    size_t i;
    size_t entry;

    for (i = 0; i < ARRAY_SIZE(keys); i++) {
        count += values[i] != NULL;
    }
    cpu_to_leguids(&type);
    memcpy(header, &type, sizeof(type));
    stw_le_p(header + 16, 0);
    stw_le_p(header + 18, count);
    g_byte_array_append(buf, header, sizeof(header));
    g_byte_array_set_size(buf, VHDX_LOCATOR_HEADER_SIZE +
                          count * VHDX_LOCATOR_ENTRY_SIZE);

    entry = VHDX_LOCATOR_HEADER_SIZE;
    for (i = 0; i < ARRAY_SIZE(keys); i++) {
        uint32_t key_offset, value_offset;
        uint16_t key_length, value_length;

        if (!values[i]) {
            continue;
        }
        key_offset = buf->len;
        key_length = vhdx_locator_put_string(buf, keys[i]);
        value_offset = buf->len;
        value_length = vhdx_locator_put_string(buf, values[i]);
        stl_le_p(buf->data + entry, key_offset);
        stl_le_p(buf->data + entry + 4, value_offset);
        stw_le_p(buf->data + entry + 8, key_length);
        stw_le_p(buf->data + entry + 10, value_length);
        entry += VHDX_LOCATOR_ENTRY_SIZE;
    }
    *len = buf->len;
    return g_byte_array_free(buf, false);
}

/* Can @str be a locator value: UTF-8, not empty, fits a 16-bit length? */
bool vhdx_locator_value_ok(const char *str)
{
    glong n;

    if (!str || !*str || !g_utf8_validate(str, -1, NULL)) {
        return false;
    }
    n = g_utf8_strlen(str, -1);
    /* Characters outside the BMP take two UTF-16 units */
    return n * 4 <= UINT16_MAX;
}

/* "dir/sub/x.vhdx" -> ".\dir\sub\x.vhdx", "../x.vhdx" -> "..\x.vhdx" */
char *vhdx_posix_to_relative_path(const char *rel)
{
    g_autofree char *path = NULL;
    char *c;

    path = g_str_has_prefix(rel, "../") ? g_strdup(rel)
                                        : g_strconcat("./", rel, NULL);
    for (c = path; *c; c++) {
        if (*c == '/') {
            *c = '\\';
        }
    }
    return g_steal_pointer(&path);
}

/*
 * "/srv/vm/x.vhdx" -> "\srv\vm\x.vhdx".  A host path has no drive
 * letter; a rootless Win32 path names no invented drive, readers that
 * only use the file name (libvhdi, 7-Zip) find the parent beside the
 * child, and vhdx_win32_path_to_posix() maps it back.
 */
char *vhdx_posix_to_win32_path(const char *abs)
{
    char *path = g_strdup(abs);
    char *c;

    for (c = path; *c; c++) {
        if (*c == '/') {
            *c = '\\';
        }
    }
    return path;
}
