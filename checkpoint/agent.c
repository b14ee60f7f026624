/*
 * Hyper-V-style checkpoints: the guest agent client
 *
 * Copyright (c) 2026 The Hyper-V checkpoints project
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 *
 * The QEMU guest agent protocol (qga/qapi-schema.json): JSON requests,
 * one JSON answer each, no greeting.  A session claims the channel,
 * then sends guest-sync-delimited with a fresh id: the agent puts a
 * 0xFF byte before that answer, so everything before the 0xFF answers
 * somebody else's requests (the management tool's: it goes to the
 * tool), and from the 0xFF on the answers are QEMU's.  Each request
 * carries an "id" that the agent echoes, so that an answer that comes
 * after its timeout is recognised and dropped.
 *
 * Never blocking the main loop: a call yields its coroutine and is
 * woken by the answer, a timer, or the agent going away.  A thaw that
 * could not be confirmed stays owed, and a background coroutine sends
 * it again (each second, and when the agent comes back) until the
 * guest says it is thawed: a Linux guest never thaws by itself.
 */

#include "qemu/osdep.h"
#include "block/aio.h"
#include "qemu/coroutine.h"
#include "qemu/error-report.h"
#include "qemu/main-loop.h"
#include "qemu/timer.h"
#include "qapi/error.h"
#include "qobject/json-parser.h"
#include "qobject/qdict.h"
#include "qobject/qjson.h"
#include "qobject/qnum.h"
#include "qobject/qstring.h"
#include "agent.h"

#define QGA_SENTINEL 0xff

/* How long the background thaw waits for each answer, and between */
#define THAW_RETRY_TIMEOUT_MS 5000
#define THAW_RETRY_INTERVAL_NS (1000 * SCALE_MS)

static struct {
    CoMutex lock;               /* one session at a time */
    bool session;               /* between begin and end */
    bool ending;                /* ended, answers still to come */
    /* No sentinel since the claim: the bytes before it answer the tool */
    bool fresh;
    bool sync_answer_next;      /* a sentinel came: a sync answer next */
    bool need_resync;           /* an invalid answer: sync before more */
    JSONMessageParser parser;
    int64_t next_id;
    unsigned outstanding;       /* requests sent, not answered */

    /* The call that waits */
    Coroutine *co;
    int64_t want_id;
    bool want_sync;             /* the answer is {"return": want_id} */
    bool want_claim;            /* waits for the channel claim */
    QObject *reply;
    char *error;
    QEMUTimer *timer;

    bool thaw_owed;
    bool thawer_running;
} ag;

/*
 * Resume the waiting call from the main loop, never from here: the
 * JSON parser may emit more (the rest of a garbage answer) before it
 * returns, and must not find the next call waiting already
 */
static void wake(void)
{
    Coroutine *co = ag.co;

    if (co) {
        ag.co = NULL;
        timer_del(ag.timer);
        aio_co_schedule(qemu_get_aio_context(), co);
    }
}

static void fail_waiting(const char *fmt, const char *arg)
{
    if (ag.co && !ag.error) {
        ag.error = g_strdup_printf(fmt, arg);
        wake();
    }
}

static void timeout_cb(void *opaque)
{
    if (ag.co) {
        ag.error = g_strdup("timeout");
        wake();
    }
}

static void maybe_release(void)
{
    if (ag.ending &&
        (!ag.outstanding || !checkpoint_agent_channel_connected())) {
        ag.ending = false;
        checkpoint_agent_channel_release();
    }
}

/* An answer that is not the one waited for: an earlier call's, late */
static bool is_ours(QDict *d, int64_t *id)
{
    QObject *o = qdict_get(d, "id");
    QNum *n = o ? qobject_to(QNum, o) : NULL;

    return n && qnum_get_try_int(n, id) && *id < ag.next_id;
}

static void parser_emit(void *opaque, QObject *json, Error *err)
{
    QDict *d = json ? qobject_to(QDict, json) : NULL;
    int64_t id = -1;

    if (err || !d) {
        error_free(err);
        qobject_unref(json);
        /* What follows may be parsed as part of it: sync again first */
        ag.need_resync = true;
        fail_waiting("the guest agent sent an invalid answer%s", "");
        return;
    }
    if (ag.sync_answer_next) {
        /* Every request before the sync is answered: the agent is in order */
        ag.sync_answer_next = false;
        ag.outstanding = 0;
        if (ag.want_sync && ag.co &&
            qdict_get_try_int(d, "return", -1) == ag.want_id) {
            ag.reply = json;
            wake();
            return;
        }
        qobject_unref(json);
        maybe_release();
        return;
    }
    if (is_ours(d, &id)) {
        ag.outstanding--;
        if (ag.co && !ag.want_sync && id == ag.want_id) {
            ag.reply = json;
            wake();
            maybe_release();
            return;
        }
    }
    qobject_unref(json);
    maybe_release();
}

static void reset_parser(void)
{
    json_message_parser_destroy(&ag.parser);
    json_message_parser_init(&ag.parser, parser_emit, NULL, NULL);
}

void checkpoint_agent_input(const uint8_t *buf, size_t len)
{
    while (len) {
        const uint8_t *s = memchr(buf, QGA_SENTINEL, len);
        size_t before = s ? s - buf : len;

        if (ag.fresh) {
            checkpoint_agent_channel_to_tool(buf, before);
        } else {
            json_message_parser_feed(&ag.parser, (const char *)buf, before);
        }
        if (!s) {
            return;
        }
        /* What comes next is the answer to a guest-sync-delimited */
        ag.fresh = false;
        ag.sync_answer_next = true;
        reset_parser();
        buf += before + 1;
        len -= before + 1;
    }
}

void checkpoint_agent_claimed(void)
{
    if (ag.want_claim) {
        wake();
    }
}

static void coroutine_fn thawer(void *opaque);

/* Send the owed thaw in the background (main loop; any thread) */
static void start_thawer(void)
{
    if (!ag.thawer_running) {
        ag.thawer_running = true;
        aio_co_schedule(qemu_get_aio_context(),
                        qemu_coroutine_create(thawer, NULL));
    }
}

void checkpoint_agent_connection(bool connected)
{
    if (!connected) {
        ag.outstanding = 0;
        ag.sync_answer_next = false;
        fail_waiting("the guest agent went away%s", "");
        maybe_release();
    } else if (ag.thaw_owed) {
        start_thawer();
    }
}

/*
 * Wait until wake(), at most @timeout_ms; false with @errp set on a
 * timeout or failure (@what names what was waited for)
 */
static bool coroutine_fn wait_answer(const char *what, int64_t timeout_ms,
                                     Error **errp)
{
    g_free(ag.error);
    ag.error = NULL;
    ag.co = qemu_coroutine_self();
    timer_mod(ag.timer, qemu_clock_get_ms(QEMU_CLOCK_REALTIME) + timeout_ms);
    qemu_coroutine_yield();
    if (!ag.error) {
        return true;
    }
    if (!strcmp(ag.error, "timeout")) {
        error_setg(errp, "The guest agent did not answer %s within %" PRId64
                   " s", what, DIV_ROUND_UP(timeout_ms, 1000));
    } else {
        error_setg(errp, "%s (waiting for %s)", ag.error, what);
    }
    g_clear_pointer(&ag.error, g_free);
    return false;
}

static void send_request(const char *cmd, QDict *args, int64_t id)
{
    QDict *req = qdict_new();
    g_autoptr(GString) json = NULL;

    qdict_put_str(req, "execute", cmd);
    if (args) {
        qdict_put(req, "arguments", args);
    }
    if (id >= 0) {
        qdict_put_int(req, "id", id);
    }
    json = qobject_to_json(QOBJECT(req));
    g_string_append_c(json, '\n');
    qobject_unref(req);
    ag.outstanding++;
    checkpoint_agent_channel_send((const uint8_t *)json->str, json->len);
}

static void init_once(void)
{
    if (!ag.timer) {
        qemu_co_mutex_init(&ag.lock);
        json_message_parser_init(&ag.parser, parser_emit, NULL, NULL);
        /*
         * On the main AioContext, not the main loop's timer list: a wait
         * for the agent must also end inside AIO_WAIT_WHILE() (QEMU's
         * job_cancel_sync_all() at exit polls only the AioContext)
         */
        ag.timer = aio_timer_new(qemu_get_aio_context(), QEMU_CLOCK_REALTIME,
                                 SCALE_MS, timeout_cb, NULL);
    }
}

static bool coroutine_fn claim(int64_t timeout_ms, Error **errp)
{
    if (ag.ending) {
        /* The last session's answers are still due: it goes on */
        ag.ending = false;
        return true;
    }
    ag.fresh = true;
    checkpoint_agent_channel_claim();
    if (checkpoint_agent_channel_claimed()) {
        return true;
    }
    ag.want_claim = true;
    if (!wait_answer("(the management tool's request is still being sent)",
                     timeout_ms, errp)) {
        ag.want_claim = false;
        checkpoint_agent_channel_release();
        return false;
    }
    ag.want_claim = false;
    return true;
}

/*
 * guest-sync-delimited; with @reset, a 0xFF before it resets the
 * agent's parser (it answers that with an error, which is dropped)
 */
static bool coroutine_fn agent_sync(bool reset, int64_t timeout_ms,
                                    Error **errp)
{
    int64_t id = ag.next_id++;
    bool ok;

    if (reset) {
        static const uint8_t sentinel = QGA_SENTINEL;

        checkpoint_agent_channel_send(&sentinel, 1);
    }
    ag.need_resync = false;
    ag.want_sync = true;
    ag.want_id = id;
    send_request("guest-sync-delimited",
                 qdict_from_jsonf_nofail("{'id': %" PRId64 "}", id), -1);
    ok = wait_answer("guest-sync-delimited", timeout_ms, errp);
    ag.want_sync = false;
    qobject_unref(ag.reply);
    ag.reply = NULL;
    return ok;
}

bool coroutine_fn checkpoint_agent_co_begin(int64_t timeout_ms, Error **errp)
{

    init_once();
    qemu_co_mutex_lock(&ag.lock);
    if (!checkpoint_agent_channel_connected()) {
        error_setg(errp, "%s", checkpoint_agent_channel_absent_reason());
        goto fail;
    }
    if (!claim(timeout_ms, errp)) {
        goto fail;
    }
    ag.session = true;
    /* With no tool, a 0xFF first resets whatever half request remains */
    if (!agent_sync(!checkpoint_agent_channel_tool_connected(), timeout_ms,
                    errp)) {
        checkpoint_agent_end();
        return false;
    }
    return true;

fail:
    qemu_co_mutex_unlock(&ag.lock);
    return false;
}

void checkpoint_agent_end(void)
{
    if (!ag.session) {
        qemu_co_mutex_unlock(&ag.lock);
        return;
    }
    ag.session = false;
    ag.ending = true;
    maybe_release();
    qemu_co_mutex_unlock(&ag.lock);
}

/* The agent's error answer as one line: its class and description */
static void set_agent_error(QDict *err, const char *cmd, Error **errp)
{
    const char *desc = qdict_get_try_str(err, "desc");

    error_setg(errp, "The guest agent failed %s: %s", cmd,
               desc ? desc : "(no description)");
}

QObject *coroutine_fn checkpoint_agent_co_call(const char *cmd, QDict *args,
                                               int64_t timeout_ms,
                                               Error **errp)
{
    QDict *d;
    QObject *ret;

    assert(ag.session);
    if (!checkpoint_agent_channel_connected()) {
        error_setg(errp, "The guest agent went away (before %s)", cmd);
        qobject_unref(args);
        return NULL;
    }
    /* Mid-session the agent's output is all QEMU's: a reset is safe */
    if (ag.need_resync && !agent_sync(true, timeout_ms, errp)) {
        qobject_unref(args);
        return NULL;
    }
    ag.want_id = ag.next_id++;
    send_request(cmd, args, ag.want_id);
    if (!wait_answer(cmd, timeout_ms, errp)) {
        return NULL;
    }
    d = qobject_to(QDict, ag.reply);
    ag.reply = NULL;
    if (qdict_haskey(d, "error")) {
        set_agent_error(qdict_get_qdict(d, "error"), cmd, errp);
        qobject_unref(d);
        return NULL;
    }
    ret = qdict_get(d, "return");
    if (!ret) {
        error_setg(errp, "The guest agent sent an answer to %s without"
                   " a return value", cmd);
        qobject_unref(d);
        return NULL;
    }
    qobject_ref(ret);
    qobject_unref(d);
    return ret;
}

bool coroutine_fn checkpoint_agent_co_freeze(int64_t timeout_ms,
                                             Error **errp)
{
    QObject *ret;

    ag.thaw_owed = true;
    ret = checkpoint_agent_co_call("guest-fsfreeze-freeze", NULL, timeout_ms,
                                   errp);
    qobject_unref(ret);
    return ret != NULL;
}

/* One thaw and status check, in a session */
static bool coroutine_fn thaw_once(int64_t timeout_ms, Error **errp)
{
    QObject *ret;
    QString *status;
    bool thawed;

    ret = checkpoint_agent_co_call("guest-fsfreeze-thaw", NULL, timeout_ms,
                                   errp);
    if (!ret) {
        return false;
    }
    qobject_unref(ret);
    ret = checkpoint_agent_co_call("guest-fsfreeze-status", NULL, timeout_ms,
                                   errp);
    if (!ret) {
        return false;
    }
    status = qobject_to(QString, ret);
    thawed = status && !strcmp(qstring_get_str(status), "thawed");
    if (!thawed) {
        error_setg(errp, "The guest agent says the guest is still '%s'"
                   " after guest-fsfreeze-thaw",
                   status ? qstring_get_str(status) : "?");
    }
    qobject_unref(ret);
    return thawed;
}

static void coroutine_fn thawer(void *opaque)
{
    while (ag.thaw_owed) {
        Error *local_err = NULL;

        if (checkpoint_agent_channel_connected() &&
            checkpoint_agent_co_begin(THAW_RETRY_TIMEOUT_MS, &local_err)) {
            if (thaw_once(THAW_RETRY_TIMEOUT_MS, &local_err)) {
                ag.thaw_owed = false;
                info_report("The guest agent thawed the guest's"
                            " filesystems");
            }
            checkpoint_agent_end();
        }
        error_free(local_err);
        if (ag.thaw_owed) {
            if (!checkpoint_agent_channel_connected()) {
                break;      /* checkpoint_agent_connection() restarts it */
            }
            qemu_co_sleep_ns(QEMU_CLOCK_REALTIME, THAW_RETRY_INTERVAL_NS);
        }
    }
    ag.thawer_running = false;
}

bool coroutine_fn checkpoint_agent_co_thaw(int64_t timeout_ms, Error **errp)
{
    assert(ag.session);
    if (thaw_once(timeout_ms, errp)) {
        ag.thaw_owed = false;
        return true;
    }
    /* It waits for the session lock, held until the caller ends */
    start_thawer();
    return false;
}
