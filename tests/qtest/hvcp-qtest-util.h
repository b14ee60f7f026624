/*
 * Helpers shared by the project's qtests
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */

#ifndef HVCP_QTEST_UTIL_H
#define HVCP_QTEST_UTIL_H

#include "libqtest.h"
#include "qobject/qdict.h"

/*
 * Run a QMP command expected to fail (libqtest asserts it and prints
 * the response when it succeeds); returns its error description
 */
static inline char * G_GNUC_PRINTF(2, 3)
qmp_error(QTestState *qts, const char *fmt, ...)
{
    va_list ap;
    QDict *err;
    char *desc;

    va_start(ap, fmt);
    err = qtest_vqmp_assert_failure_ref(qts, fmt, ap);
    va_end(ap);
    desc = g_strdup(qdict_get_str(err, "desc"));
    qobject_unref(err);
    return desc;
}

/* A fresh folder for one test program's files */
static inline char *hvcp_make_tmpdir(const char *template)
{
    char *dir = g_dir_make_tmp(template, NULL);

    g_assert(dir);
    return dir;
}

/* Run the registered tests, then remove @tmpdir (taken over) */
static inline int hvcp_run_and_remove(char *tmpdir)
{
    g_autofree char *rm = g_strdup_printf("rm -rf %s", tmpdir);
    int ret = g_test_run();

    g_assert(g_spawn_command_line_sync(rm, NULL, NULL, NULL, NULL));
    g_free(tmpdir);
    return ret;
}

#endif
