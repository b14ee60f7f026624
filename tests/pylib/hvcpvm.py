# SPDX-License-Identifier: GPL-2.0-or-later
"""QEMU driven over QMP (and the qtest protocol), for the project's tests
and benchmarks: the programs of the build, a small synchronous QMP
client, and a QEMU process that the tests' VM classes build on.

The QMP client reads the socket itself: a QEMU that dies shows at once
as QMPGone, where an event wait of QEMU's asyncio qemu.qmp library never
ends.  It needs nothing but the standard library, so that scripts run
by a plain python3 can use it too.

    vm = QemuVM(['-M', 'microvm', '-accel', 'qtest', ...], qtest=True)
    vm.start()
    vm.cmd('query-status')              # 'return', QMPError on error
    vm.raw('checkpoint-create', ...)    # the whole response
    vm.event(lambda e: e['event'] == 'STOP', timeout=10)
    vm.wait_until(lambda: ..., 'what we wait for')
    vm.memset(0x100000, 4096, 0x5a)     # qtest
    vm.quit()                           # or kill(), sigkill()

Environment: HVCP_BUILD, the QEMU build folder (default build/qemu of
this repository).
"""

import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time

REPO = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))


def build_dir():
    return os.environ.get('HVCP_BUILD') or os.path.join(REPO, 'build', 'qemu')


# A folder tool() takes the programs from instead of the build (None: the
# build): a long run sets it to copies of them, so that a rebuild in the
# tree meanwhile does not change the QEMU under test.  QEMU, QEMU_IMG and
# QEMU_IO below were fixed at import and do not follow it.
tool_dir = None


def tool(name):
    """A program of the QEMU build (qemu-system-x86_64, qemu-img, ...)."""
    return os.path.join(tool_dir or build_dir(), name)


QEMU = tool('qemu-system-x86_64')
QEMU_IMG = tool('qemu-img')
QEMU_IO = tool('qemu-io')


def run(*args, check=False):
    """Run a program; its CompletedProcess (text).  check: an
    AssertionError when it fails."""
    r = subprocess.run([str(a) for a in args], capture_output=True,
                       text=True, check=False)
    if check and r.returncode != 0:
        raise AssertionError(f'{args} failed ({r.returncode}):'
                             f' {r.stdout}{r.stderr}')
    return r


class QemuError(AssertionError):
    """QEMU did not start, or died; output: what it printed."""

    def __init__(self, msg, output=''):
        super().__init__(msg + (f': {output}' if output else ''))
        self.output = output


class QMPError(AssertionError):
    """A QMP command answered with an error (desc: its text)."""

    def __init__(self, name, args, response):
        self.desc = response['error'].get('desc')
        self.response = response
        super().__init__(f'{name} {args or ""}: {self.desc}'.replace(' : ', ': '))


class QMPGone(Exception):
    """QEMU closed its QMP socket (it quit, crashed or was killed)."""


class QMPTimeout(Exception):
    """QEMU runs but did not answer in time."""


# -- QMP -------------------------------------------------------------------

class QMP:
    """A synchronous QMP client on a unix socket.

    alive(): whether QEMU still runs (a timeout then means a hang, else
    QMPGone); timeout: seconds a command may take (None: no limit).
    Events that arrive while a command waits for its reply are kept in
    self.events, oldest first."""

    def __init__(self, path, alive=lambda: True, timeout=None):
        self.alive = alive
        self.timeout = timeout
        self.buf = b''
        self.events = []
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            self.sock.connect(path)
            self._reply()                           # the greeting
            self.cmd('qmp_capabilities')
        except BaseException:
            self.close()
            raise

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass

    # What a lost connection and a timeout raise (subclasses may raise
    # their own exceptions)
    def gone(self):
        raise QMPGone()

    def hang(self, seconds):
        raise QMPTimeout(f'QEMU did not answer in {seconds}s')

    def _recv(self, deadline):
        """The next message; None once deadline (monotonic) passed."""
        while b'\n' not in self.buf:
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            self.sock.settimeout(min(left, 1.0))
            try:
                data = self.sock.recv(65536)
            except socket.timeout:
                continue
            except OSError:
                self.gone()
            if not data:
                self.gone()
            self.buf += data
        line, self.buf = self.buf.split(b'\n', 1)
        return json.loads(line)

    def _reply(self):
        """The next message that is not an event."""
        start = time.monotonic()
        while True:
            if self.timeout is None:
                deadline = time.monotonic() + 1.0
            else:
                deadline = start + self.timeout
            msg = self._recv(deadline)
            if msg is None:
                if self.timeout is None:
                    continue
                if not self.alive():
                    self.gone()
                self.hang(self.timeout)
            if 'event' in msg:
                self.events.append(msg)
            else:
                return msg

    def raw(self, name, /, **args):
        """The whole response: {'return': ...} or {'error': ...}."""
        msg = {'execute': name}
        if args:
            msg['arguments'] = args
        try:
            self.sock.sendall(json.dumps(msg).encode() + b'\n')
        except OSError:
            self.gone()
        return self._reply()

    def cmd(self, name, /, **args):
        """The command's return value; QMPError if it fails."""
        r = self.raw(name, **args)
        if 'error' in r:
            raise QMPError(name, args, r)
        return r['return']

    def read_event(self, wait=0.0):
        """The next event to arrive within wait seconds, or None; it
        is not added to (and the kept ones are not looked at)."""
        deadline = time.monotonic() + wait
        while True:
            msg = self._recv(deadline)
            if msg is None or 'event' in msg:
                return msg

    def get_events(self):
        """Every event kept or already received (not waiting); taken."""
        while True:
            msg = self._recv(time.monotonic() + 0.001) if self._readable() \
                else None
            if msg is None:
                break
            if 'event' in msg:
                self.events.append(msg)
        out, self.events = self.events, []
        return out

    def _readable(self):
        if b'\n' in self.buf:
            return True
        self.sock.setblocking(False)
        try:
            data = self.sock.recv(65536)
        except BlockingIOError:
            return False
        except OSError:
            self.gone()
        finally:
            self.sock.setblocking(True)
        if not data:
            self.gone()
        self.buf += data
        return b'\n' in self.buf


# -- a QEMU process --------------------------------------------------------

class QemuVM:
    """QEMU with a QMP socket (and a qtest socket if qtest), its stdout
    and stderr in a log file.

    args: QEMU's options but -qmp/-qtest; sockdir: the folder of the
    sockets (default: a new short one under /tmp, removed by cleanup());
    log: the log file (default NAME.log in sockdir), log_mode 'a' to
    append; env: variables to set (None: unset) for QEMU; wrapper: a
    command QEMU runs under (strace, stdbuf); qmp_timeout: seconds a
    QMP command may take (None: no limit)."""

    qmp_class = QMP
    connect_interval = 0.05

    def __init__(self, args=(), binary=None, sockdir=None, log=None,
                 log_mode='w', cwd=None, env=None, wrapper=(), qtest=False,
                 name='qemu', qmp_timeout=None):
        self.args = list(args)
        self.binary = binary or tool('qemu-system-x86_64')
        self.own_sockdir = sockdir is None
        # unix socket paths must stay short (< 108 bytes)
        self.sockdir = sockdir or tempfile.mkdtemp(prefix=f'hvcp-{name}-',
                                                   dir='/tmp')
        self.qmp_path = os.path.join(self.sockdir, 'qmp.sock')
        self.qtest_path = os.path.join(self.sockdir, 'qtest.sock') \
            if qtest else None
        self.log_path = log or os.path.join(self.sockdir, f'{name}.log')
        self.log_mode = log_mode
        self.cwd = cwd
        self.env = dict(env or {})
        self.wrapper = list(wrapper)
        self.qmp_timeout = qmp_timeout
        self.proc = None
        self.qmp_conn = None
        self._qtest = None
        self._qtest_buf = b''
        self._qtest_lock = threading.Lock()

    # -- lifecycle ---------------------------------------------------------

    def qmp_args(self):
        return ['-qmp', f'unix:{self.qmp_path},server=on,wait=off']

    def qtest_args(self):
        if not self.qtest_path:
            return []
        return ['-qtest', f'unix:{self.qtest_path},server=on,wait=off']

    def command_line(self):
        return [*self.wrapper, self.binary, *self.args, *self.qtest_args(),
                *self.qmp_args()]

    def environment(self):
        env = dict(os.environ)
        for k, v in self.env.items():
            if v is None:
                env.pop(k, None)
            else:
                env[k] = v
        return env

    def start_error(self, msg):
        """The exception start() raises (QEMU exited, or no QMP)."""
        return QemuError(msg, self.output())

    def start(self, timeout=15):
        """Start QEMU; returns self once QMP answers."""
        for p in (self.qmp_path, self.qtest_path):
            if p and os.path.exists(p):
                os.unlink(p)
        with open(self.log_path, self.log_mode) as log:
            self.proc = subprocess.Popen(self.command_line(), cwd=self.cwd,
                                         env=self.environment(),
                                         stdin=subprocess.DEVNULL,
                                         stdout=log, stderr=log)
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise self.start_error(f'QEMU exited with'
                                       f' {self.proc.returncode} on start')
            try:
                self.qmp_conn = self.qmp_class(self.qmp_path, self.alive,
                                               self.qmp_timeout)
                return self
            except (OSError, QMPGone):
                pass        # no socket yet, or not listening yet
            if time.monotonic() > deadline:
                raise self.start_error(f'QEMU does not listen on QMP'
                                       f' after {timeout}s')
            time.sleep(self.connect_interval)

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def output(self):
        """What QEMU printed (stdout and stderr)."""
        try:
            with open(self.log_path, errors='replace') as f:
                return f.read()
        except OSError:
            return ''

    def wait(self, timeout=None):
        """Wait until QEMU ends (subprocess.TimeoutExpired if it does not
        in timeout s); its exit status."""
        rc = self.proc.wait(timeout)
        self.close()
        return rc

    def quit(self, timeout=15):
        """QMP quit, then SIGKILL if QEMU has not ended after timeout s.
        True if it ended by itself."""
        ended = True
        if self.alive():
            try:
                self.qmp_conn.raw('quit')
            except Exception:       # pylint: disable=broad-except
                pass                # QEMU may be going away already
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                ended = False
                self.kill()
        self.close()
        return ended

    def kill(self):
        """SIGKILL (if QEMU still runs), wait, close the connections."""
        if self.alive():
            self.proc.kill()
            self.proc.wait()
        self.close()

    def sigkill(self):
        """SIGKILL now, from any thread; kill() or wait() clean up."""
        if self.proc and self.proc.poll() is None:
            try:
                os.kill(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

    def close(self):
        """Close the QMP and qtest connections."""
        for c in (self.qmp_conn, self._qtest):
            try:
                if c:
                    c.close()
            except Exception:       # pylint: disable=broad-except
                pass
        self.qmp_conn = self._qtest = None

    def cleanup(self):
        """kill() and remove the socket folder if it is ours."""
        self.kill()
        if self.own_sockdir:
            shutil.rmtree(self.sockdir, ignore_errors=True)

    # -- QMP ---------------------------------------------------------------

    def _conn(self):
        if not self.qmp_conn:
            raise QemuError('QMP is not connected')
        return self.qmp_conn

    def raw(self, cmd, /, **args):
        """The whole response of a QMP command."""
        return self._conn().raw(cmd, **args)

    def cmd(self, cmd, /, **args):
        """A QMP command's return value; QMPError when it fails."""
        return self._conn().cmd(cmd, **args)

    def error(self, cmd, /, **args):
        """The error text of a command that must fail."""
        r = self.raw(cmd, **args)
        if 'error' not in r:
            raise AssertionError(f'{cmd} {args} succeeded: {r}')
        return r['error']['desc']

    def hmp(self, line):
        return self.cmd('human-monitor-command', **{'command-line': line})

    @property
    def events(self):
        """The events received and not taken yet, oldest first."""
        return self._conn().events

    def died(self):
        """The QemuError of a QEMU that went away."""
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            pass
        return QemuError(f'QEMU died ({self.proc.returncode})',
                         self.output()[-2000:])

    def event(self, match, timeout=30, take='through'):
        """The first event (kept or new) for which match(event) is true,
        or None after timeout s; QemuError if QEMU dies meanwhile.
        take: 'through' takes it and the ones before it off the kept
        events, 'one' takes only it, 'none' leaves them."""
        conn = self._conn()
        deadline = time.monotonic() + timeout
        while True:
            for i, ev in enumerate(conn.events):
                if match(ev):
                    if take == 'through':
                        del conn.events[:i + 1]
                    elif take == 'one':
                        del conn.events[i]
                    return ev
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            try:
                ev = conn.read_event(wait=min(left, 0.5))
            except QMPGone:
                raise self.died() from None
            if ev:
                conn.events.append(ev)
            elif self.proc.poll() is not None:
                raise self.died()

    def wait_until(self, cond, what, timeout=30, interval=0.02):
        """Poll cond() until it is true (by polling: nothing waits on an
        event that a dying QEMU never sends)."""
        end = time.monotonic() + timeout
        while not cond():
            if time.monotonic() > end:
                raise AssertionError(f'waited {timeout} s for {what}')
            time.sleep(interval)

    # -- qtest -------------------------------------------------------------

    def qtest(self, line, timeout=None):
        """A qtest protocol command; its reply line (IRQ lines skipped)."""
        with self._qtest_lock:
            if not self._qtest:
                s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                s.connect(self.qtest_path)
                self._qtest, self._qtest_buf = s, b''
            self._qtest.settimeout(timeout)
            self._qtest.sendall(line.encode() + b'\n')
            while True:
                while b'\n' not in self._qtest_buf:
                    data = self._qtest.recv(65536)
                    if not data:
                        raise QemuError('the qtest socket closed')
                    self._qtest_buf += data
                reply, self._qtest_buf = self._qtest_buf.split(b'\n', 1)
                if not reply.startswith(b'IRQ'):
                    return reply.decode().strip()

    def memset(self, addr, size, val):
        reply = self.qtest(f'memset 0x{addr:x} 0x{size:x} 0x{val:x}')
        if not reply.startswith('OK'):
            raise QemuError(f'qtest memset: {reply}')
        return reply

    def readb(self, addr):
        return int(self.qtest(f'readb 0x{addr:x}').split()[1], 16)

    # x86 machines (microvm, q35) put RAM beyond 3 GiB above 4 GiB
    LOWMEM = 3 << 30
    HOLE = 1 << 30

    def fill(self, ram_mib, val=0x5a, base=16 << 20):
        """Fill RAM above base (below: the firmware area) but its last
        10 %, so that about 90 % is non-zero; the bytes filled.  Offsets
        into RAM past LOWMEM are written above the PCI hole."""
        end = base + int(((ram_mib << 20) - base) * 0.9)
        a = base
        while a < end:
            size = min(64 << 20, end - a)
            if a < self.LOWMEM:
                size = min(size, self.LOWMEM - a)
                self.memset(a, size, val)
            else:
                self.memset(a + self.HOLE, size, val)
            a += size
        return end - base
