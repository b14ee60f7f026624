/*
 * Helpers shared by the project's qtests
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */

#ifndef HVCP_QTEST_UTIL_H
#define HVCP_QTEST_UTIL_H

#include "libqtest.h"
#include "qobject/qdict.h"

/* Run a QMP command expected to fail; returns its error description */
static inline char * G_GNUC_PRINTF(2, 3)
qmp_error(QTestState *qts, const char *fmt, ...)
{
    va_list ap;
    QDict *rsp, *err;
    char *desc;

    va_start(ap, fmt);
    rsp = qtest_vqmp(qts, fmt, ap);
    va_end(ap);
    g_assert(qdict_haskey(rsp, "error"));
    err = qdict_get_qdict(rsp, "error");
    desc = g_strdup(qdict_get_str(err, "desc"));
    qobject_unref(rsp);
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
