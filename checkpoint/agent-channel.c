/*
 * Hyper-V-style checkpoints: the channel to the guest agent
 *
 * Copyright (c) 2026 The Hyper-V checkpoints project
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 *
 * A chardev has one frontend, and the agent's virtio-serial port is
 * that of the chardev a management tool talks through (a socket).  So
 * QEMU stands between the two: an internal chardev becomes the port's
 * backend (the swap chardev-change does), and QEMU becomes the
 * frontend of the user's chardev.  Bytes pass through both ways while
 * QEMU does not need the agent.  When it does (a production
 * checkpoint), it claims the channel between two of the tool's
 * requests: the tool's input is held, the agent's answers to the
 * tool's earlier requests still reach the tool (they come before the
 * 0xFF sentinel of QEMU's guest-sync-delimited, see agent.c), and
 * when QEMU is done the held input goes on.  The tool sees a slower
 * agent, never a foreign answer.
 *
 * For an agent reached another way (a socket, and the fake agents of
 * the tests), "-checkpoints agent=ID" names a chardev that QEMU uses
 * alone.
 */

#include "qemu/osdep.h"
#include "qemu/error-report.h"
#include "qemu/units.h"
#include "qapi/error.h"
#include "qom/object.h"
#include "chardev/char.h"
#include "chardev/char-fe.h"
#include "qobject/json-parser.h"
#include "hw/virtio/virtio-serial.h"
#include "agent.h"

#define TYPE_CHARDEV_CHECKPOINT_AGENT "chardev-checkpoint-agent"

/* Bytes of the tool's input held while QEMU has the agent */
#define HELD_MAX (64 * KiB)

static struct {
    /* The port's own chardev stands behind this one (NULL: none) */
    Chardev *proxy;
    /* QEMU as the frontend of the port's former chardev (the tool's) */
    CharBackend tool;
    /* The tool's requests, parsed only to know where they end */
    JSONMessageParser tool_parser;
    /* Bytes for the guest, in order, while it cannot take them */
    GByteArray *to_guest;
    /* The tool's bytes while QEMU has the agent */
    GByteArray *held;

    /* -checkpoints agent=ID: a chardev QEMU uses alone */
    CharBackend direct;
    bool direct_set;
    bool direct_open;

    bool claim_wanted;
    bool claimed;
} chan;

/* -- moving bytes -- */

static void flush_to_guest(void)
{
    while (chan.to_guest && chan.to_guest->len) {
        int n = MIN(qemu_chr_be_can_write(chan.proxy), chan.to_guest->len);

        if (n <= 0) {
            return;     /* the guest asks for more (chr_accept_input) */
        }
        qemu_chr_be_write(chan.proxy, chan.to_guest->data, n);
        g_byte_array_remove_range(chan.to_guest, 0, n);
    }
}

/* Between two of the tool's requests (none half sent)? */
static bool tool_at_boundary(void)
{
    JSONMessageParser *p = &chan.tool_parser;

    return !p->brace_count && !p->bracket_count &&
           g_queue_is_empty(&p->tokens) && !p->lexer.token->len;
}

static void try_claim(void)
{
    if (chan.claim_wanted && !chan.claimed &&
        (!chan.proxy || tool_at_boundary())) {
        chan.claim_wanted = false;
        chan.claimed = true;
        checkpoint_agent_claimed();
    }
}

void checkpoint_agent_channel_send(const uint8_t *buf, size_t len)
{
    if (chan.direct_set) {
        qemu_chr_fe_write_all(&chan.direct, buf, len);
        return;
    }
    if (chan.proxy) {
        g_byte_array_append(chan.to_guest, buf, len);
        flush_to_guest();
    }
}

void checkpoint_agent_channel_to_tool(const uint8_t *buf, size_t len)
{
    if (chan.proxy && len) {
        qemu_chr_fe_write_all(&chan.tool, buf, len);
    }
}

/* -- the tool's side: QEMU as the frontend of the user's chardev -- */

static void tool_parser_emit(void *opaque, QObject *json, Error *err)
{
    /* Only the boundaries matter; the agent answers the requests */
    qobject_unref(json);
    error_free(err);
}

static int tool_can_read(void *opaque)
{
    if (chan.claimed || chan.held->len) {
        return HELD_MAX - chan.held->len;
    }
    return HELD_MAX - MIN(chan.to_guest->len, HELD_MAX);
}

static void tool_read(void *opaque, const uint8_t *buf, int size)
{
    json_message_parser_feed(&chan.tool_parser, (const char *)buf, size);
    if (chan.claimed || chan.held->len) {
        g_byte_array_append(chan.held, buf, size);
        return;
    }
    g_byte_array_append(chan.to_guest, buf, size);
    flush_to_guest();
    try_claim();
}

static void tool_event(void *opaque, QEMUChrEvent event)
{
    if (event == CHR_EVENT_CLOSED) {
        /* A request the tool left half sent never ends: forget it */
        json_message_parser_destroy(&chan.tool_parser);
        json_message_parser_init(&chan.tool_parser, tool_parser_emit,
                                 NULL, NULL);
        try_claim();
    }
}

bool checkpoint_agent_channel_tool_connected(void)
{
    return chan.proxy && qemu_chr_fe_backend_open(&chan.tool);
}

/* -- the port's side: the internal chardev -- */

/* The agent wrote (the guest, or a vCPU thread with the BQL held) */
static int proxy_write(Chardev *chr, const uint8_t *buf, int len)
{
    if (chan.claimed) {
        checkpoint_agent_input(buf, len);
        return len;
    }
    return qemu_chr_fe_write(&chan.tool, buf, len);
}

static GSource *proxy_add_watch(Chardev *chr, GIOCondition cond)
{
    Chardev *tool = qemu_chr_fe_get_driver(&chan.tool);
    ChardevClass *cc = tool ? CHARDEV_GET_CLASS(tool) : NULL;

    return cc && cc->chr_add_watch ? cc->chr_add_watch(tool, cond) : NULL;
}

/* The guest can take more */
static void proxy_accept_input(Chardev *chr)
{
    flush_to_guest();
    qemu_chr_fe_accept_input(&chan.tool);
}

/* The agent opened or closed its port */
static void proxy_set_fe_open(Chardev *chr, int fe_open)
{
    checkpoint_agent_connection(fe_open);
}

static void proxy_open(Chardev *chr, ChardevBackend *backend,
                       bool *be_opened, Error **errp)
{
    /* Opened once it stands in front of the port */
    *be_opened = false;
}

static void proxy_class_init(ObjectClass *oc, void *data)
{
    ChardevClass *cc = CHARDEV_CLASS(oc);

    cc->internal = true;
    cc->open = proxy_open;
    cc->chr_write = proxy_write;
    cc->chr_add_watch = proxy_add_watch;
    cc->chr_accept_input = proxy_accept_input;
    cc->chr_set_fe_open = proxy_set_fe_open;
}

static const TypeInfo proxy_type_info = {
    .name = TYPE_CHARDEV_CHECKPOINT_AGENT,
    .parent = TYPE_CHARDEV,
    .class_init = proxy_class_init,
};

static void proxy_register_types(void)
{
    type_register_static(&proxy_type_info);
}

type_init(proxy_register_types);

/* -- standing between the port and its chardev -- */

static int find_agent_port(Object *obj, void *opaque)
{
    VirtIOSerialPort *port = (VirtIOSerialPort *)
        object_dynamic_cast(obj, TYPE_VIRTIO_SERIAL_PORT);
    Object **found = opaque;

    if (port && port->name && !strcmp(port->name, CHECKPOINT_AGENT_PORT_NAME)) {
        *found = obj;
        return 1;
    }
    return 0;
}

/*
 * Move the port's frontend @be from @user to the proxy, as
 * chardev-change does, and become @user's frontend.  The port's
 * handlers move with it; there are none while virtio-serial keeps its
 * backend disabled (the VM not running yet), and the port sets them on
 * the proxy when it enables it.
 */
static bool interpose(Chardev *user, Error **errp)
{
    CharBackend *be = user->be;
    bool fe_open = be->fe_is_open;
    g_autofree char *label = g_strdup_printf("%s.checkpoint-agent",
                                             user->label);
    Chardev *proxy;

    proxy = qemu_chardev_new(label, TYPE_CHARDEV_CHECKPOINT_AGENT, NULL,
                             NULL, errp);
    if (!proxy) {
        return false;
    }
    user->be = NULL;
    qemu_chr_fe_init(be, proxy, &error_abort);
    be->fe_is_open = fe_open;
    qemu_chr_fe_set_handlers(be, be->chr_can_read, be->chr_read,
                             be->chr_event, be->chr_be_change, be->opaque,
                             NULL, false);
    chan.proxy = proxy;
    chan.to_guest = g_byte_array_new();
    chan.held = g_byte_array_new();
    json_message_parser_init(&chan.tool_parser, tool_parser_emit, NULL,
                             NULL);
    qemu_chr_fe_init(&chan.tool, user, &error_abort);
    qemu_chr_fe_set_handlers(&chan.tool, tool_can_read, tool_read,
                             tool_event, NULL, NULL, NULL, true);
    /* The agent can talk to QEMU whether or not a tool is connected */
    qemu_chr_be_event(proxy, CHR_EVENT_OPENED);
    return true;
}

void checkpoint_agent_channel_find_port(void)
{
    Object *port = NULL;
    g_autofree char *id = NULL;
    Chardev *user;
    Error *local_err = NULL;

    if (chan.proxy || chan.direct_set) {
        return;
    }
    object_child_foreach_recursive(object_get_root(), find_agent_port, &port);
    if (!port) {
        return;
    }
    id = object_property_get_str(port, "chardev", NULL);
    user = id ? qemu_chr_find(id) : NULL;
    /* (A mux chardev has no single frontend: user->be is NULL) */
    if (!user || !user->be) {
        return;
    }
    if (!interpose(user, &local_err)) {
        warn_reportf_err(local_err, "Checkpoints cannot reach the guest"
                         " agent on chardev '%s': ", id);
    }
}

/* -- -checkpoints agent=ID -- */

static int direct_can_read(void *opaque)
{
    return 4096;
}

static void direct_read(void *opaque, const uint8_t *buf, int size)
{
    if (chan.claimed) {
        checkpoint_agent_input(buf, size);
    }
}

static void direct_event(void *opaque, QEMUChrEvent event)
{
    if (event == CHR_EVENT_OPENED || event == CHR_EVENT_CLOSED) {
        chan.direct_open = event == CHR_EVENT_OPENED;
        checkpoint_agent_connection(chan.direct_open);
    }
}

bool checkpoint_agent_channel_use_chardev(const char *id, Error **errp)
{
    Chardev *chr = qemu_chr_find(id);

    if (!chr) {
        error_setg(errp, "-checkpoints agent: chardev '%s' not found", id);
        return false;
    }
    if (!qemu_chr_fe_init(&chan.direct, chr, errp)) {
        error_prepend(errp, "-checkpoints agent: ");
        return false;
    }
    chan.direct_set = true;
    chan.direct_open = chr->be_open;
    qemu_chr_fe_set_handlers(&chan.direct, direct_can_read, direct_read,
                             direct_event, NULL, NULL, NULL, true);
    return true;
}

/* -- state -- */

bool checkpoint_agent_channel_connected(void)
{
    if (chan.direct_set) {
        return chan.direct_open;
    }
    return chan.proxy && chan.proxy->be && chan.proxy->be->fe_is_open;
}

const char *checkpoint_agent_channel_absent_reason(void)
{
    if (chan.direct_set || chan.proxy) {
        return "the guest agent is not connected";
    }
    return "the VM has no guest agent port (a virtserialport named "
           CHECKPOINT_AGENT_PORT_NAME ", or -checkpoints agent=CHARDEV)";
}

void checkpoint_agent_channel_claim(void)
{
    chan.claim_wanted = true;
    try_claim();
}

bool checkpoint_agent_channel_claimed(void)
{
    return chan.claimed;
}

void checkpoint_agent_channel_release(void)
{
    chan.claim_wanted = false;
    chan.claimed = false;
    if (chan.proxy && chan.held->len) {
        g_byte_array_append(chan.to_guest, chan.held->data, chan.held->len);
        g_byte_array_set_size(chan.held, 0);
        flush_to_guest();
        qemu_chr_fe_accept_input(&chan.tool);
    }
}
