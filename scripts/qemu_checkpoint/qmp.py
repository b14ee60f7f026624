# SPDX-License-Identifier: GPL-2.0-or-later
"""A small synchronous QMP client on a unix socket (standard library only).

Unlike QEMU's asyncio qemu.qmp, it never waits without a limit for a
peer that does not speak QMP: the greeting must arrive within the
connect timeout, and a QEMU that goes away shows at once as QMPGone.
Events that arrive while a command waits for its reply are kept in
self.events, oldest first.
"""

import errno
import json
import os
import socket
import stat
import time


class CLIError(Exception):
    """An error for the user: one line, printed as 'qemu-checkpoint: MSG'."""


class QMPGone(CLIError):
    """QEMU closed the QMP connection."""


class QMPCommandError(CLIError):
    """A QMP command failed; the message is QEMU's error description."""

    def __init__(self, name, response):
        err = response.get('error') or {}
        self.name = name
        self.cls = err.get('class')
        super().__init__(err.get('desc') or f'{name} failed: {response}')


class QMP:
    """Connect to the QMP socket path, read the greeting and negotiate
    capabilities within timeout seconds; CLIError with a message for
    people when that is not possible."""

    def __init__(self, path, timeout=10.0):
        self.path = path
        self.buf = b''
        self.events = []
        self.sock = None
        self._connect(timeout)

    # -- connection -----------------------------------------------------

    def _connect(self, timeout):
        path = self.path
        try:
            st = os.stat(path)
        except FileNotFoundError:
            raise CLIError(f'no VM at {path}: the QMP socket does not exist'
                           ' (is the VM running?)') from None
        except OSError as e:
            raise CLIError(f'cannot use {path}: {e.strerror}') from None
        if not stat.S_ISSOCK(st.st_mode):
            raise CLIError(f'{path} is not a socket (give the QMP socket of'
                           ' a running VM with --qmp, or a store with'
                           ' --store)')
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(timeout)
        try:
            self.sock.connect(path)
        except OSError as e:
            self.close()
            if e.errno == errno.ECONNREFUSED:
                raise CLIError(f'no VM at {path}: connection refused (the'
                               ' QEMU that made the socket is gone)') from None
            raise CLIError(f'cannot connect to {path}: {e.strerror}') from None
        deadline = time.monotonic() + timeout
        try:
            greeting = self._recv(deadline)
        except QMPGone:
            self.close()
            raise CLIError(f'{path} closed the connection without a QMP'
                           ' greeting: not a QMP socket') from None
        if greeting is None:
            self.close()
            raise CLIError(f'no QMP greeting from {path} in {timeout:g}s:'
                           ' not a QMP socket, or another client holds'
                           ' the monitor') from None
        if not isinstance(greeting, dict) or 'QMP' not in greeting:
            self.close()
            raise CLIError(f'{path} does not speak QMP (it sent'
                           f' {json.dumps(greeting)[:60]})')
        r = self.raw('qmp_capabilities', timeout=timeout)
        if 'error' in r:
            self.close()
            raise QMPCommandError('qmp_capabilities', r)

    def close(self):
        if self.sock:
            try:
                self.sock.close()
            except OSError:
                pass
            self.sock = None

    # -- messages -------------------------------------------------------

    def _gone(self):
        raise QMPGone(f'the VM closed its QMP connection ({self.path}):'
                      ' QEMU has quit or crashed')

    def _recv(self, deadline):
        """The next message; None once deadline (monotonic; None: no
        limit) has passed."""
        while b'\n' not in self.buf:
            if deadline is None:
                wait = 1.0
            else:
                wait = deadline - time.monotonic()
                if wait <= 0:
                    return None
            self.sock.settimeout(min(wait, 1.0))
            try:
                data = self.sock.recv(65536)
            except socket.timeout:
                continue
            except OSError:
                self._gone()
            if not data:
                self._gone()
            self.buf += data
        line, self.buf = self.buf.split(b'\n', 1)
        if not line.strip():
            return self._recv(deadline)
        try:
            return json.loads(line)
        except ValueError:
            raise CLIError(f'{self.path} does not speak QMP (it sent'
                           f' {line[:60]!r})') from None

    def raw(self, name, args=None, /, timeout=None):
        """The whole response {'return': ...} or {'error': ...};
        timeout: seconds (None: wait as long as QEMU runs)."""
        msg = {'execute': name}
        if args:
            msg['arguments'] = args
        try:
            self.sock.sendall(json.dumps(msg).encode() + b'\n')
        except OSError:
            self._gone()
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            r = self._recv(deadline)
            if r is None:
                raise CLIError(f'QEMU did not answer {name} in {timeout:g}s')
            if not isinstance(r, dict):
                raise CLIError(f'{self.path} does not speak QMP')
            if 'event' in r:
                self.events.append(r)
            else:
                return r

    def cmd(self, name, args=None, /, *, timeout=None, **kwargs):
        """A command's return value; QMPCommandError if it fails.
        Arguments: the dict args and keyword arguments."""
        args = dict(args or {}, **kwargs)
        r = self.raw(name, args, timeout)
        if 'error' in r:
            raise QMPCommandError(name, r)
        return r.get('return')

    def has_command(self, name):
        return any(c['name'] == name for c in self.cmd('query-commands'))

    def poll_events(self, wait):
        """Receive for up to wait seconds: the events that arrive are
        added to self.events.  Returns after the first message (and
        those already buffered) or at the end of the wait."""
        msg = self._recv(time.monotonic() + wait)
        while msg is not None:
            if 'event' in msg:
                self.events.append(msg)
            if b'\n' not in self.buf:
                break
            msg = self._recv(time.monotonic() + 1)

    def take_event(self, match):
        """The first kept event for which match(event) holds, taken off
        the list; None if there is none."""
        for i, ev in enumerate(self.events):
            if match(ev):
                del self.events[i]
                return ev
        return None
