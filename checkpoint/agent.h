/*
 * Hyper-V-style checkpoints: the guest agent client
 *
 * Copyright (c) 2026 The Hyper-V checkpoints project
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 *
 * Two halves: the channel (agent-channel.c) moves bytes between QEMU
 * and the agent, and shares the agent with a management tool; the
 * client (agent.c) speaks the agent's protocol over it.
 */

#ifndef CHECKPOINT_AGENT_H
#define CHECKPOINT_AGENT_H

#include "qobject/qobject.h"

/* The port name of the QEMU guest agent's virtio-serial port */
#define CHECKPOINT_AGENT_PORT_NAME "org.qemu.guest_agent.0"

/* -- the channel (agent-channel.c) -- */

/*
 * Use chardev @id (-checkpoints agent=ID) as the channel: QEMU is its
 * only frontend (an agent reached through a socket)
 */
bool checkpoint_agent_channel_use_chardev(const char *id, Error **errp);

/*
 * Look for the virtio-serial port named CHECKPOINT_AGENT_PORT_NAME and
 * stand between it and its chardev, once; the chardev's other end (a
 * management tool's socket) keeps talking to the agent
 */
void checkpoint_agent_channel_find_port(void);

/* A channel exists and the agent's end of it is open */
bool checkpoint_agent_channel_connected(void);

/* Why checkpoint_agent_channel_connected() is false, for errors */
const char *checkpoint_agent_channel_absent_reason(void);

/* A management tool is connected to the agent (bytes may go to it) */
bool checkpoint_agent_channel_tool_connected(void);

/*
 * Take the agent for QEMU: the tool's input is held from the end of
 * its current request on; checkpoint_agent_claimed() is called then
 * (at once when the tool is between requests)
 */
void checkpoint_agent_channel_claim(void);
bool checkpoint_agent_channel_claimed(void);

/* Give the agent back to the tool: what it sent meanwhile goes on */
void checkpoint_agent_channel_release(void);

/* Bytes to the agent */
void checkpoint_agent_channel_send(const uint8_t *buf, size_t len);

/* The agent's bytes that answer the tool's requests, not QEMU's */
void checkpoint_agent_channel_to_tool(const uint8_t *buf, size_t len);

/* -- what the channel calls (agent.c) -- */

/* Bytes from the agent while QEMU holds the channel */
void checkpoint_agent_input(const uint8_t *buf, size_t len);

/* The agent's end of the channel opened or closed */
void checkpoint_agent_connection(bool connected);

/* The claim asked for took effect */
void checkpoint_agent_claimed(void);

/* -- the client (agent.c) -- */

/*
 * Claim the channel and synchronise with the agent
 * (guest-sync-delimited), within @timeout_ms; on failure the channel
 * is released and @errp says why
 */
bool coroutine_fn checkpoint_agent_co_begin(int64_t timeout_ms,
                                            Error **errp);

/*
 * Send @cmd (with arguments @args, taken; may be NULL) and wait for the
 * answer for at most @timeout_ms: its "return" value (a new
 * reference), or NULL with @errp set (no answer in time, the agent
 * went away, an invalid answer, or the agent's own error)
 */
QObject *coroutine_fn checkpoint_agent_co_call(const char *cmd, QDict *args,
                                               int64_t timeout_ms,
                                               Error **errp);

/* End the session: the channel goes back once the answers are in */
void checkpoint_agent_end(void);

/*
 * Freeze the guest's filesystems (guest-fsfreeze-freeze) within
 * @timeout_ms; from the moment it is sent, a thaw is owed
 */
bool coroutine_fn checkpoint_agent_co_freeze(int64_t timeout_ms,
                                             Error **errp);

/*
 * Thaw (guest-fsfreeze-thaw) and check that the guest says "thawed"
 * (guest-fsfreeze-status).  If that cannot be confirmed, the thaw
 * stays owed and is sent again in the background until it is, also
 * when the agent comes back after going away.  False and @errp set
 * when the guest is not known to be thawed.
 */
bool coroutine_fn checkpoint_agent_co_thaw(int64_t timeout_ms, Error **errp);

#endif
