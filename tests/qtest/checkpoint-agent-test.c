/*
 * QTest for production checkpoints: QEMU's guest agent client against
 * a scripted fake agent
 *
 * Copyright (c) 2026 The Hyper-V checkpoints project
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 *
 * The fake agent listens on a unix socket; QEMU reaches it through
 * "-chardev socket,...,reconnect-ms=100 -checkpoints ...,agent=ID".  A
 * thread plays the agent: it answers guest-sync-delimited (0xFF, then
 * the id), guest-fsfreeze-freeze, -thaw and -status as the test's
 * script says (an answer, garbage, silence, a closed connection, an
 * error), and records what it was sent.  Each test ends with the
 * fake guest thawed or the failure reported, and checks the fallback
 * and production-only rules on the store.
 */

#include "qemu/osdep.h"
#include <sys/socket.h>
#include <sys/un.h>
#include <poll.h>
#include "libqtest.h"
#include "hvcp-qtest-util.h"
#include "qemu/atomic.h"
#include "qapi/error.h"
#include "qobject/qdict.h"
#include "qobject/qjson.h"
#include "qobject/qlist.h"
#include "qobject/qstring.h"

static char *tmpdir;

/* What the fake agent does with a request */
typedef enum Action {
    ANSWER,             /* the right answer */
    GARBAGE,            /* bytes that are no JSON */
    SILENCE,            /* nothing */
    HANG_UP,            /* close the connection (QEMU reconnects) */
    FAIL,               /* an error answer, as qemu-ga gives */
} Action;

typedef struct FakeAgent {
    char *path;
    char *manifest;             /* the store's, read at thaw */
    int listen_fd;
    GThread *thread;
    GMutex lock;
    bool stop;

    /* the script */
    Action on_sync, on_freeze, on_thaw, on_thaw_again;

    /* what it saw (under lock) */
    int connections, syncs, freezes, thaws, statuses;
    bool frozen;
    int checkpoints_at_freeze, checkpoints_at_thaw;
} FakeAgent;

static int count_checkpoints(const char *manifest)
{
    g_autofree char *text = NULL;
    QDict *m;
    int n;

    if (!g_file_get_contents(manifest, &text, NULL, NULL)) {
        return 0;
    }
    m = qobject_to(QDict, qobject_from_json(text, &error_abort));
    n = qlist_size(qdict_get_qlist(m, "checkpoints"));
    qobject_unref(m);
    return n;
}

/*
 * An answer to QEMU; QEMU may have closed the connection already (it
 * quit, or gave up on the agent): then the answer is lost, as with a
 * real agent, and no SIGPIPE kills the test
 */
static void send_text(int fd, const char *text)
{
    size_t len = strlen(text);

    if (send(fd, text, len, MSG_NOSIGNAL) != len) {
        g_test_message("fake agent: an answer was not sent: %s",
                       strerror(errno));
    }
}

/* Answer @action to request @req on @fd; false: hang up */
static bool answer(FakeAgent *a, int fd, QDict *req, Action action,
                   const char *ret)
{
    g_autofree char *text = NULL;
    int64_t id = qdict_haskey(req, "id") ? qdict_get_int(req, "id") : -1;

    switch (action) {
    case ANSWER:
        text = g_strdup_printf("{\"return\": %s, \"id\": %" PRId64 "}\n",
                               ret, id);
        break;
    case GARBAGE:
        text = g_strdup("}}not json at all{{\n");
        break;
    case SILENCE:
        return true;
    case HANG_UP:
        return false;
    case FAIL:
        text = g_strdup_printf("{\"error\": {\"class\": \"GenericError\","
                               " \"desc\": \"fsfreeze hook failed\"},"
                               " \"id\": %" PRId64 "}\n", id);
        break;
    }
    send_text(fd, text);
    return true;
}

/* One request; false: the connection is to be closed */
static bool handle(FakeAgent *a, int fd, QDict *req)
{
    const char *cmd = qdict_get_str(req, "execute");
    QDict *args = qdict_get_qdict(req, "arguments");
    g_autoptr(GMutexLocker) locker = g_mutex_locker_new(&a->lock);
    Action act;

    if (!strcmp(cmd, "guest-sync-delimited")) {
        g_autofree char *text = NULL;

        a->syncs++;
        if (a->on_sync != ANSWER) {
            return answer(a, fd, req, a->on_sync, NULL);
        }
        text = g_strdup_printf("\xff{\"return\": %" PRId64 "}\n",
                               qdict_get_int(args, "id"));
        send_text(fd, text);
        return true;
    }
    if (!strcmp(cmd, "guest-fsfreeze-freeze")) {
        a->freezes++;
        a->checkpoints_at_freeze = count_checkpoints(a->manifest);
        if (a->on_freeze == ANSWER || a->on_freeze == SILENCE ||
            a->on_freeze == HANG_UP) {
            /* A late answer or none: the guest froze all the same */
            a->frozen = true;
        }
        return answer(a, fd, req, a->on_freeze, "2");
    }
    if (!strcmp(cmd, "guest-fsfreeze-thaw")) {
        act = a->thaws++ ? a->on_thaw_again : a->on_thaw;
        a->checkpoints_at_thaw = count_checkpoints(a->manifest);
        if (act == ANSWER) {
            a->frozen = false;
        }
        return answer(a, fd, req, act, "2");
    }
    if (!strcmp(cmd, "guest-fsfreeze-status")) {
        a->statuses++;
        return answer(a, fd, req, ANSWER,
                      a->frozen ? "\"frozen\"" : "\"thawed\"");
    }
    return answer(a, fd, req, FAIL, NULL);
}

/* Serve one connection until it closes or the script hangs up */
static void serve(FakeAgent *a, int fd)
{
    g_autoptr(GString) buf = g_string_new("");
    char chunk[4096];

    for (;;) {
        struct pollfd p = { .fd = fd, .events = POLLIN };
        char *nl;
        ssize_t n;

        if (qatomic_read(&a->stop)) {
            return;
        }
        if (poll(&p, 1, 50) <= 0) {
            continue;
        }
        n = read(fd, chunk, sizeof(chunk));
        if (n <= 0) {
            return;
        }
        g_string_append_len(buf, chunk, n);
        while ((nl = memchr(buf->str, '\n', buf->len))) {
            g_autofree char *line = g_strndup(buf->str, nl - buf->str);
            char *json = line;
            QDict *req;
            bool go_on;

            g_string_erase(buf, 0, nl - buf->str + 1);
            /* QEMU resets the agent's parser with 0xFF first */
            while (*json == '\xff') {
                json++;
            }
            req = qobject_to(QDict, qobject_from_json(json, &error_abort));
            go_on = handle(a, fd, req);
            qobject_unref(req);
            if (!go_on) {
                return;
            }
        }
    }
}

static gpointer fake_agent_thread(gpointer opaque)
{
    FakeAgent *a = opaque;

    while (!qatomic_read(&a->stop)) {
        struct pollfd p = { .fd = a->listen_fd, .events = POLLIN };
        int fd;

        if (poll(&p, 1, 50) <= 0) {
            continue;
        }
        fd = accept(a->listen_fd, NULL, NULL);
        if (fd < 0) {
            continue;
        }
        g_mutex_lock(&a->lock);
        a->connections++;
        g_mutex_unlock(&a->lock);
        serve(a, fd);
        close(fd);
    }
    return NULL;
}

static FakeAgent *fake_agent_new(const char *name, const char *store)
{
    FakeAgent *a = g_new0(FakeAgent, 1);
    struct sockaddr_un addr = { .sun_family = AF_UNIX };

    a->path = g_strdup_printf("%s/%s.sock", tmpdir, name);
    a->manifest = g_strdup_printf("%s/manifest.json", store);
    g_strlcpy(addr.sun_path, a->path, sizeof(addr.sun_path));
    a->listen_fd = socket(AF_UNIX, SOCK_STREAM, 0);
    g_assert(a->listen_fd >= 0);
    g_assert(bind(a->listen_fd, (struct sockaddr *)&addr,
                  sizeof(addr)) == 0);
    g_assert(listen(a->listen_fd, 1) == 0);
    g_mutex_init(&a->lock);
    a->on_sync = a->on_freeze = a->on_thaw = a->on_thaw_again = ANSWER;
    return a;
}

static void fake_agent_start(FakeAgent *a)
{
    a->thread = g_thread_new("fake-agent", fake_agent_thread, a);
}

static void fake_agent_free(FakeAgent *a)
{
    qatomic_set(&a->stop, true);
    g_thread_join(a->thread);
    close(a->listen_fd);
    unlink(a->path);
    g_mutex_clear(&a->lock);
    g_free(a->path);
    g_free(a->manifest);
    g_free(a);
}

/* Wait (at most 20 s) until *@counter reaches @n */
static void wait_count(FakeAgent *a, int *counter, int n)
{
    for (int i = 0; i < 2000; i++) {
        int v;

        g_mutex_lock(&a->lock);
        v = *counter;
        g_mutex_unlock(&a->lock);
        if (v >= n) {
            return;
        }
        g_usleep(10 * 1000);
    }
    g_assert_not_reached();
}

static bool fake_frozen(FakeAgent *a)
{
    g_autoptr(GMutexLocker) locker = g_mutex_locker_new(&a->lock);

    return a->frozen;
}

/* -- QEMU -- */

typedef struct Vm {
    QTestState *qts;
    char *store;
    FakeAgent *agent;
    GPtrArray *ends;            /* CHECKPOINT_CREATED and _FAILED events */
} Vm;

static bool keep_end(QTestState *s, const char *name, QDict *event,
                     void *opaque)
{
    Vm *vm = opaque;

    if (!strcmp(name, "CHECKPOINT_CREATED") ||
        !strcmp(name, "CHECKPOINT_CREATE_FAILED")) {
        g_ptr_array_add(vm->ends, qobject_ref(event));
        return true;
    }
    return false;
}

/* QEMU with two disks, a store and the fake agent (or none) */
static Vm *vm_new(const char *name, bool with_agent)
{
    Vm *vm = g_new0(Vm, 1);
    g_autofree char *qcow2 = g_strdup_printf("%s/%s.qcow2", tmpdir, name);
    g_autofree char *vhdx = g_strdup_printf("%s/%s.vhdx", tmpdir, name);
    g_autofree char *agent = NULL;

    vm->store = g_strdup_printf("%s/%s-store", tmpdir, name);
    g_assert(mkimg(qcow2, "qcow2", 4));
    g_assert(mkimg(vhdx, "vhdx", 4));
    if (with_agent) {
        vm->agent = fake_agent_new(name, vm->store);
        fake_agent_start(vm->agent);
        agent = g_strdup_printf("-chardev socket,id=agent,path=%s,"
                                "reconnect-ms=100 ", vm->agent->path);
    }
    vm->qts = qtest_initf(
        "-M microvm -display none -nodefaults -m 64M"
        " -drive if=none,id=d0,file=%s,format=qcow2"
        " -device virtio-blk-device,drive=d0"
        " -drive if=none,id=d1,file=%s,format=vhdx"
        " -device virtio-blk-device,drive=d1"
        " %s -checkpoints dir=%s,freeze-timeout=1%s",
        qcow2, vhdx, agent ? agent : "", vm->store,
        agent ? ",agent=agent" : "");
    vm->ends = g_ptr_array_new_with_free_func((GDestroyNotify)qdict_unref);
    qtest_qmp_set_event_callback(vm->qts, keep_end, vm);
    if (vm->agent) {
        wait_count(vm->agent, &vm->agent->connections, 1);
    }
    return vm;
}

static void vm_free(Vm *vm)
{
    if (vm->qts) {
        qtest_quit(vm->qts);
    }
    if (vm->agent) {
        fake_agent_free(vm->agent);
    }
    g_ptr_array_unref(vm->ends);
    g_free(vm->store);
    g_free(vm);
}

/* checkpoint-create of @type; its id */
static char *create(Vm *vm, const char *type)
{
    QDict *rsp = qtest_qmp_assert_success_ref(vm->qts,
                     "{'execute': 'checkpoint-create',"
                     " 'arguments': {'type': %s}}", type);
    char *id = g_strdup(qdict_get_str(rsp, "id"));

    qobject_unref(rsp);
    return id;
}

/* The event that ends checkpoint @id: CHECKPOINT_CREATED or _FAILED */
static QDict *wait_end(Vm *vm, const char *id)
{
    for (int i = 0; i < 3000; i++) {
        for (int n = 0; n < vm->ends->len; n++) {
            QDict *ev = g_ptr_array_index(vm->ends, n);

            if (!strcmp(qdict_get_str(qdict_get_qdict(ev, "data"), "id"),
                        id)) {
                return qobject_ref(ev);
            }
        }
        /* A command's answer comes after the events before it */
        qobject_unref(qtest_qmp(vm->qts, "{'execute': 'query-status'}"));
        g_usleep(10 * 1000);
    }
    g_assert_not_reached();
}

/* Checkpoint @id as query-checkpoints shows it (NULL: not there) */
static QDict *query(Vm *vm, const char *id)
{
    QDict *rsp = qtest_qmp(vm->qts, "{'execute': 'query-checkpoints'}");
    QList *list = qdict_get_qlist(rsp, "return");
    const QListEntry *e;
    QDict *found = NULL;

    QLIST_FOREACH_ENTRY(list, e) {
        QDict *c = qobject_to(QDict, qlist_entry_obj(e));

        if (!strcmp(qdict_get_str(c, "id"), id)) {
            found = c;
            qobject_ref(found);
        }
    }
    qobject_unref(rsp);
    return found;
}

/* Checkpoint @id is ready, of @type and @consistency */
static QDict *assert_ready(Vm *vm, const char *id, const char *type,
                           const char *consistency)
{
    QDict *c = query(vm, id);

    g_assert(c);
    g_assert_cmpstr(qdict_get_str(c, "state"), ==, "ready");
    g_assert_cmpstr(qdict_get_str(c, "type"), ==, type);
    g_assert_cmpstr(qdict_get_str(c, "consistency"), ==, consistency);
    return c;
}

/* A standard checkpoint fell back from production, for @why */
static void assert_fell_back(Vm *vm, const char *id, const char *why)
{
    QDict *ev = wait_end(vm, id);
    QDict *data = qdict_get_qdict(ev, "data");
    QDict *c;

    g_assert_cmpstr(qdict_get_str(ev, "event"), ==, "CHECKPOINT_CREATED");
    g_assert_cmpstr(qdict_get_str(data, "type"), ==, "standard");
    assert_contains(qdict_get_str(data, "fallback-reason"), why);
    qobject_unref(ev);
    c = assert_ready(vm, id, "standard", "saved-state");
    assert_contains(qdict_get_str(c, "fallback-reason"), why);
    g_assert(qdict_get_int(c, "state-file-size") > 0);
    qobject_unref(c);
}

/* production-only failed for @why and left no checkpoint */
static void assert_failed(Vm *vm, const char *id, const char *why)
{
    QDict *ev = wait_end(vm, id);
    QDict *rsp;

    g_assert_cmpstr(qdict_get_str(ev, "event"), ==,
                    "CHECKPOINT_CREATE_FAILED");
    assert_contains(qdict_get_str(qdict_get_qdict(ev, "data"), "error"),
                    why);
    qobject_unref(ev);
    rsp = qtest_qmp(vm->qts, "{'execute': 'query-checkpoints'}");
    g_assert(qlist_empty(qdict_get_qlist(rsp, "return")));
    qobject_unref(rsp);
}

/* -- the tests -- */

/* The sequence, with the disks switched between freeze and thaw */
static void test_production(void)
{
    Vm *vm = vm_new("ok", true);
    g_autofree char *id = create(vm, "production");
    QDict *ev = wait_end(vm, id);
    QDict *c;
    g_autofree char *out = NULL;

    g_assert_cmpstr(qdict_get_str(ev, "event"), ==, "CHECKPOINT_CREATED");
    g_assert_cmpstr(qdict_get_str(qdict_get_qdict(ev, "data"), "consistency"),
                    ==, "application");
    qobject_unref(ev);
    c = assert_ready(vm, id, "production", "application");
    g_assert(!qdict_haskey(c, "state-file-size"));
    g_assert(!qdict_haskey(c, "fallback-reason"));
    qobject_unref(c);
    wait_count(vm->agent, &vm->agent->statuses, 1);
    g_assert_cmpint(vm->agent->syncs, ==, 1);
    g_assert_cmpint(vm->agent->freezes, ==, 1);
    g_assert_cmpint(vm->agent->thaws, ==, 1);
    /* The checkpoint was recorded while the guest was frozen */
    g_assert_cmpint(vm->agent->checkpoints_at_freeze, ==, 0);
    g_assert_cmpint(vm->agent->checkpoints_at_thaw, ==, 1);
    g_assert(!fake_frozen(vm->agent));
    out = qtest_hmp(vm->qts, "info checkpoints");
    assert_contains(out, "production, application, ready");
    vm_free(vm);
}

/* Garbage for the freeze: production falls back; thawed */
static void test_garbage(void)
{
    Vm *vm = vm_new("garbage", true);
    g_autofree char *id = NULL;

    vm->agent->on_freeze = GARBAGE;
    id = create(vm, "production");
    assert_fell_back(vm, id, "invalid answer");
    wait_count(vm->agent, &vm->agent->thaws, 1);
    wait_count(vm->agent, &vm->agent->statuses, 1);
    g_assert(!fake_frozen(vm->agent));
    vm_free(vm);
}

/* Silence for the freeze: production-only fails; the thaw follows */
static void test_silence(void)
{
    Vm *vm = vm_new("silence", true);
    g_autofree char *id = NULL;

    vm->agent->on_freeze = SILENCE;
    id = create(vm, "production-only");
    assert_failed(vm, id, "did not answer guest-fsfreeze-freeze within 1 s");
    /* The guest froze without saying so: the thaw still comes */
    wait_count(vm->agent, &vm->agent->thaws, 1);
    wait_count(vm->agent, &vm->agent->statuses, 1);
    g_assert(!fake_frozen(vm->agent));
    vm_free(vm);
}

/* Silence for the sync: production falls back at once it times out */
static void test_sync_silence(void)
{
    Vm *vm = vm_new("sync-silence", true);
    g_autofree char *id = NULL;

    vm->agent->on_sync = SILENCE;
    id = create(vm, "production");
    assert_fell_back(vm, id, "did not answer guest-sync-delimited within");
    g_assert_cmpint(vm->agent->freezes, ==, 0);
    vm_free(vm);
}

/*
 * The agent goes away in the middle of the freeze (the guest froze):
 * production falls back, and the thaw is sent when it comes back
 */
static void test_disconnect(void)
{
    Vm *vm = vm_new("disconnect", true);
    g_autofree char *id = NULL;

    vm->agent->on_freeze = HANG_UP;
    id = create(vm, "production");
    assert_fell_back(vm, id, "went away");
    wait_count(vm->agent, &vm->agent->connections, 2);
    wait_count(vm->agent, &vm->agent->thaws, 1);
    wait_count(vm->agent, &vm->agent->statuses, 1);
    g_assert(!fake_frozen(vm->agent));
    vm_free(vm);
}

/* The guest's freeze fails: production-only says the guest's words */
static void test_freeze_error(void)
{
    Vm *vm = vm_new("freeze-error", true);
    g_autofree char *id = NULL;

    vm->agent->on_freeze = FAIL;
    id = create(vm, "production-only");
    assert_failed(vm, id, "fsfreeze hook failed");
    wait_count(vm->agent, &vm->agent->thaws, 1);
    g_assert(!fake_frozen(vm->agent));
    vm_free(vm);
}

/*
 * The thaw fails: the checkpoint exists (the disks switched while
 * frozen), and QEMU sends the thaw again until the guest is thawed
 */
static void test_thaw_error(void)
{
    Vm *vm = vm_new("thaw-error", true);
    g_autofree char *id = NULL;
    QDict *ev, *c;

    vm->agent->on_thaw = FAIL;
    id = create(vm, "production-only");
    ev = wait_end(vm, id);
    g_assert_cmpstr(qdict_get_str(ev, "event"), ==, "CHECKPOINT_CREATED");
    qobject_unref(ev);
    c = assert_ready(vm, id, "production", "application");
    qobject_unref(c);
    wait_count(vm->agent, &vm->agent->thaws, 2);
    wait_count(vm->agent, &vm->agent->statuses, 1);
    g_assert(!fake_frozen(vm->agent));
    vm_free(vm);
}

/*
 * QEMU quits while the job waits for a silent agent: the wait ends with
 * its timeout inside QEMU's exit (job_cancel_sync_all() polls only the
 * main AioContext, whose timers the client uses), and the thaw is sent
 */
static void test_quit_while_waiting(void)
{
    Vm *vm = vm_new("quit-waiting", true);
    g_autofree char *id = NULL;
    gint64 t0;

    vm->agent->on_freeze = SILENCE;
    id = create(vm, "production-only");
    wait_count(vm->agent, &vm->agent->freezes, 1);
    t0 = g_get_monotonic_time();
    qtest_quit(vm->qts);
    vm->qts = NULL;
    /* A hang is the failure; the bound is far above the 1 s timeouts */
    g_assert_cmpint(g_get_monotonic_time() - t0, <, 30 * G_USEC_PER_SEC);
    wait_count(vm->agent, &vm->agent->thaws, 1);
    vm_free(vm);
}

/* No agent at all: production falls back at once, production-only fails */
static void test_no_agent(void)
{
    Vm *vm = vm_new("no-agent", false);
    g_autofree char *err = NULL;
    QDict *rsp, *ev;
    const char *id;

    err = qmp_error(vm->qts, "{'execute': 'checkpoint-create',"
                    " 'arguments': {'type': 'production-only'}}");
    assert_contains(err, "No production checkpoint (type production-only)");
    assert_contains(err, "no guest agent port");
    rsp = qtest_qmp_assert_success_ref(vm->qts,
              "{'execute': 'checkpoint-create'}");
    assert_contains(qdict_get_str(rsp, "fallback-reason"),
                    "no guest agent port");
    id = qdict_get_str(rsp, "id");
    ev = wait_end(vm, id);
    g_assert_cmpstr(qdict_get_str(ev, "event"), ==, "CHECKPOINT_CREATED");
    qobject_unref(ev);
    qobject_unref(assert_ready(vm, id, "standard", "saved-state"));
    qobject_unref(rsp);
    vm_free(vm);
}

/* An automatic checkpoint when QEMU starts the VM */
static void test_auto(void)
{
    g_autofree char *qcow2 = g_strdup_printf("%s/auto.qcow2", tmpdir);
    g_autofree char *store = g_strdup_printf("%s/auto-store", tmpdir);
    QTestState *qts;
    QDict *rsp, *c;
    QList *list;

    g_assert(mkimg(qcow2, "qcow2", 4));
    qts = qtest_initf("-M microvm -display none -nodefaults -m 64M"
                      " -name autovm"
                      " -drive if=none,id=d0,file=%s,format=qcow2"
                      " -device virtio-blk-device,drive=d0"
                      " -checkpoints dir=%s,auto=on", qcow2, store);
    rsp = qtest_qmp(qts, "{'execute': 'query-checkpoints'}");
    list = qdict_get_qlist(rsp, "return");
    g_assert_cmpint(qlist_size(list), ==, 1);
    c = qobject_to(QDict, qlist_peek(list));
    assert_contains(qdict_get_str(c, "name"),
                    "Automatic Checkpoint - autovm - (20");
    g_assert_cmpstr(qdict_get_str(c, "type"), ==, "production");
    g_assert_cmpstr(qdict_get_str(c, "consistency"), ==, "powered-off");
    g_assert_cmpstr(qdict_get_str(c, "state"), ==, "ready");
    g_assert(qdict_get_bool(c, "current"));
    qobject_unref(rsp);
    rsp = qtest_qmp_assert_success_ref(qts,
              "{'execute': 'query-checkpoint-parameters'}");
    g_assert(qdict_get_bool(rsp, "auto"));
    g_assert_cmpint(qdict_get_int(rsp, "freeze-timeout"), ==, 10);
    qobject_unref(rsp);
    qtest_quit(qts);
}

int main(int argc, char **argv)
{
    g_test_init(&argc, &argv, NULL);
    tmpdir = hvcp_make_tmpdir("checkpoint-agent-test-XXXXXX");

    qtest_add_func("/checkpoint-agent/production", test_production);
    qtest_add_func("/checkpoint-agent/garbage", test_garbage);
    qtest_add_func("/checkpoint-agent/silence", test_silence);
    qtest_add_func("/checkpoint-agent/sync-silence", test_sync_silence);
    qtest_add_func("/checkpoint-agent/disconnect", test_disconnect);
    qtest_add_func("/checkpoint-agent/freeze-error", test_freeze_error);
    qtest_add_func("/checkpoint-agent/thaw-error", test_thaw_error);
    qtest_add_func("/checkpoint-agent/quit-while-waiting",
                   test_quit_while_waiting);
    qtest_add_func("/checkpoint-agent/no-agent", test_no_agent);
    qtest_add_func("/checkpoint-agent/auto", test_auto);
    return hvcp_run_and_remove(tmpdir);
}
