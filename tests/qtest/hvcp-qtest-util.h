/*
 * Helpers shared by the project's qtests
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */

#ifndef HVCP_QTEST_UTIL_H
#define HVCP_QTEST_UTIL_H

#include "libqtest.h"
#include "qobject/qdict.h"
#include "qobject/qlist.h"

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

static inline void assert_contains(const char *s, const char *sub)
{
    if (!strstr(s, sub)) {
        g_test_message("'%s' does not contain '%s'", s, sub);
        g_assert_not_reached();
    }
}

static inline void write_file(const char *path, const char *text)
{
    g_assert(g_file_set_contents(path, text, -1, NULL));
}

static inline char *disk_args(const char *qcow2, const char *vhdx)
{
    return g_strdup_printf(
        "-m 64M"
        " -drive if=none,id=d0,file=%s,format=qcow2"
        " -device virtio-blk-device,drive=d0,share-rw=on"
        " -drive if=none,id=d1,file=%s,format=vhdx"
        " -device virtio-blk-device,drive=d1,share-rw=on", qcow2, vhdx);
}

static inline QDict *find_checkpoint(QList *list, const char *id)
{
    const QListEntry *e;

    QLIST_FOREACH_ENTRY(list, e) {
        QDict *c = qobject_to(QDict, qlist_entry_obj(e));

        if (!strcmp(qdict_get_str(c, "id"), id)) {
            return c;
        }
    }
    return NULL;
}

static inline char *current_of(QTestState *qts)
{
    QDict *rsp = qtest_qmp(qts, "{'execute': 'query-checkpoints'}");
    const QListEntry *e;
    char *id = NULL;

    QLIST_FOREACH_ENTRY(qdict_get_qlist(rsp, "return"), e) {
        QDict *c = qobject_to(QDict, qlist_entry_obj(e));

        if (qdict_get_bool(c, "current")) {
            g_assert(!id);
            id = g_strdup(qdict_get_str(c, "id"));
        }
    }
    qobject_unref(rsp);
    return id;
}

/* Wait until job @id has concluded */
static inline void wait_job_concluded(QTestState *qts, const char *id)
{
    for (;;) {
        QDict *ev = qtest_qmp_eventwait_ref(qts, "JOB_STATUS_CHANGE");
        QDict *data = qdict_get_qdict(ev, "data");
        bool done = !strcmp(qdict_get_str(data, "id"), id) &&
                    !strcmp(qdict_get_str(data, "status"), "concluded");

        qobject_unref(ev);
        if (done) {
            return;
        }
    }
}

/* Wait for the next event @name and check that it is about @id */
static inline void wait_event_of(QTestState *qts, const char *name,
                                 const char *id)
{
    QDict *ev = qtest_qmp_eventwait_ref(qts, name);

    g_assert_cmpstr(qdict_get_str(qdict_get_qdict(ev, "data"), "id"), ==,
                    id);
    qobject_unref(ev);
}

/* Create a checkpoint and wait until it is ready; returns its id */
static inline char *create_and_wait(QTestState *qts, const char *name)
{
    QDict *rsp;
    char *id;

    if (name) {
        rsp = qtest_qmp_assert_success_ref(qts,
                  "{'execute': 'checkpoint-create',"
                  " 'arguments': {'name': %s, 'type': 'standard'}}", name);
    } else {
        rsp = qtest_qmp_assert_success_ref(qts,
                  "{'execute': 'checkpoint-create'}");
    }
    id = g_strdup(qdict_get_str(rsp, "id"));
    qobject_unref(rsp);
    wait_event_of(qts, "CHECKPOINT_CREATED", id);
    return id;
}

/* Is a lazy load still bringing RAM in? */
static inline bool loading(QTestState *qts)
{
    QDict *rsp = qtest_qmp(qts, "{'execute': 'x-query-cow-snapshot'}");
    bool l = qdict_get_bool(qdict_get_qdict(rsp, "return"), "loading");

    qobject_unref(rsp);
    return l;
}

/* Wait (up to 2 minutes) until a lazy load has brought every page in */
static inline void wait_loaded(QTestState *qts)
{
    for (int i = 0; i < 1200 && loading(qts); i++) {
        g_usleep(100 * 1000);
    }
    g_assert(!loading(qts));
}

#endif
