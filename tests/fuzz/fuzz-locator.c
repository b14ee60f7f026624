/*
 * Fuzzing target: the Parent Locator parser of differencing VHDX
 *
 * Copyright (c) 2026 The Hyper-V checkpoints project authors
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 *
 * The input is a Parent Locator metadata item (untrusted bytes from an
 * image).  Besides not crashing, a locator that parses must survive the
 * helpers that use its values, and building a locator from the parsed
 * values and parsing that again must give the same values.  The input
 * as text also goes to the GUID parser.
 *
 * Built as a libFuzzer target (tests/fuzz/build-fuzzer) and, with
 * driver.c, as a plain program that runs a corpus under AddressSanitizer
 * (meson test fuzz-corpus-locator).
 */

#include "qemu/osdep.h"
#include "qapi/error.h"
#include "block/vhdx-diff/vhdx-diff.h"

#include "fuzz.h"

static void check_same(const char *a, const char *b)
{
    if (g_strcmp0(a, b)) {
        fprintf(stderr, "round trip changed '%s' into '%s'\n", a ?: "(none)",
                b ?: "(none)");
        abort();
    }
}

static void use_path(const char *path)
{
    g_autofree char *rel = NULL;
    g_autofree char *abs = NULL;

    if (!path) {
        return;
    }
    rel = vhdx_relative_path_to_posix(path, NULL);
    abs = vhdx_win32_path_to_posix(path);
    (void)vhdx_win32_basename(path);
    (void)vhdx_locator_value_ok(path);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    g_autoptr(VHDXParentLocator) loc = NULL;
    g_autoptr(VHDXParentLocator) again = NULL;
    g_autofree uint8_t *item = NULL;
    g_autofree char *text = g_malloc0(size + 1);
    g_autofree char *guid = NULL;
    Error *err = NULL;
    MSGUID g;
    size_t len;

    if (size) {
        memcpy(text, data, size);
    }
    if (vhdx_guid_parse(text, &g)) {
        g_autofree char *back = vhdx_guid_format(&g);
        MSGUID g2;

        if (!vhdx_guid_parse(back, &g2) || memcmp(&g, &g2, sizeof(g))) {
            abort();
        }
    }

    loc = vhdx_parent_locator_parse(data, size, &err);
    if (!loc) {
        /* A refusal must say why */
        if (!err || !*error_get_pretty(err)) {
            abort();
        }
        error_free(err);
        return 0;
    }
    guid = vhdx_guid_format(&loc->linkage);
    use_path(loc->relative_path);
    use_path(loc->volume_path);
    use_path(loc->absolute_win32_path);

    item = vhdx_parent_locator_build(loc, &len);
    again = vhdx_parent_locator_parse(item, len, &error_abort);
    check_same(loc->parent_linkage, again->parent_linkage);
    check_same(loc->parent_linkage2, again->parent_linkage2);
    check_same(loc->relative_path, again->relative_path);
    check_same(loc->volume_path, again->volume_path);
    check_same(loc->absolute_win32_path, again->absolute_win32_path);
    return 0;
}
