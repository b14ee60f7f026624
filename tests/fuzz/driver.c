/*
 * Plain driver for a libFuzzer target: run every file of a corpus once
 *
 * Copyright (c) 2026 The Hyper-V checkpoints project authors
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 *
 * Usage: DRIVER FILE_OR_FOLDER...   Prints TAP, one line per file; a bug
 * the target finds (or AddressSanitizer, which this is built with)
 * aborts the run.
 */

#include "qemu/osdep.h"

#include "fuzz.h"

static void run_one(const char *path, int *n)
{
    g_autofree char *data = NULL;
    g_autoptr(GError) err = NULL;
    gsize len;

    if (!g_file_get_contents(path, &data, &len, &err)) {
        printf("not ok %d - %s: %s\n", ++*n, path, err->message);
        return;
    }
    /* An exact-size copy, so that ASan sees reads past the input */
    {
        g_autofree uint8_t *copy = g_memdup2(data, len);

        LLVMFuzzerTestOneInput(copy, len);
    }
    printf("ok %d - %s (%zu bytes)\n", ++*n, path, (size_t)len);
    fflush(stdout);
}

static gint cmp_str(gconstpointer a, gconstpointer b)
{
    return strcmp(*(char * const *)a, *(char * const *)b);
}

int main(int argc, char **argv)
{
    g_autoptr(GPtrArray) files = g_ptr_array_new_with_free_func(g_free);
    int i, n = 0;
    guint j;

    for (i = 1; i < argc; i++) {
        if (g_file_test(argv[i], G_FILE_TEST_IS_DIR)) {
            g_autoptr(GDir) dir = g_dir_open(argv[i], 0, NULL);
            const char *name;

            while (dir && (name = g_dir_read_name(dir))) {
                g_ptr_array_add(files, g_build_filename(argv[i], name, NULL));
            }
        } else {
            g_ptr_array_add(files, g_strdup(argv[i]));
        }
    }
    g_ptr_array_sort(files, cmp_str);
    printf("1..%u\n", files->len);
    for (j = 0; j < files->len; j++) {
        run_one(g_ptr_array_index(files, j), &n);
    }
    return 0;
}
