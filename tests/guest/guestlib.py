"""Run the default test guest (scripts/build-guest) under QEMU.

The guest boots on -M microvm under TCG, prints GUEST-READY once and then
"TICK ram=<n> disk=<m>" every second on its serial console (see
scripts/guest/init and scripts/guest/workload).  Guest() starts QEMU with
the serial console in a file, a QMP socket and a guest agent (QGA)
socket, and offers:

    with Guest(disks=[(path, 'vhdx')]) as g:
        g.wait_for_line(r'^GUEST-READY$')
        g.qga('guest-ping')
        g.qmp('query-status')
        g.ticks()

Environment: HVCP_BUILD is the QEMU build directory that holds
qemu-system-x86_64 and qemu-img (default build/qemu of this repository),
HVCP_GUEST_DIR holds vmlinuz and initramfs.cpio.gz (default build/guest).
"""

import base64
import json
import os
import random
import re
import socket
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(REPO, 'tests', 'pylib'))
from hvcpvm import QemuVM  # noqa: E402

QGA_PORT_NAME = 'org.qemu.guest_agent.0'
TICK_RE = re.compile(r'^TICK ram=(\d+) disk=(\d+)$')

# "quiet loglevel=3" keeps kernel messages off the console, so that the
# TICK lines stay whole.
KERNEL_APPEND = 'console=ttyS0 quiet loglevel=3'

# TCG only: KVM hangs in nested guests here.  icount makes guest time
# count instructions: microvm has no HPET or ACPI PM timer, so Linux
# calibrates the TSC against the PIT, and under TCG on a busy host that
# calibration fails about half of the time -- the kernel then waits for
# PIT interrupts that never come (microvm's ACPI tables lack the IRQ0 ->
# GSI2 override) and hangs.  In instruction time the calibration cannot
# fail.  shift=5 (32 ns per instruction) boots faster than shift=0 or
# auto: kernel delay loops cost fewer instructions.  While the guest
# idles (sleep=on, the default) its clock follows real time, so the
# workload still ticks about once a second.
ACCEL_ARGS = ['-accel', 'tcg', '-icount', 'shift=5']

# RDRAND lets the kernel seed its random generator at once (it trusts the
# CPU): without it, the first getrandom() -- mke2fs's UUIDs -- blocks for
# seconds.  Otherwise the default CPU model, which is stable across QEMU
# versions, unlike "max".
CPU_ARGS = ['-cpu', 'qemu64,+rdrand']


class GuestError(Exception):
    """The guest or QEMU did not behave as expected."""


def build_dir():
    return os.environ.get('HVCP_BUILD') or os.path.join(REPO, 'build', 'qemu')


def guest_dir():
    return os.environ.get('HVCP_GUEST_DIR') or os.path.join(REPO, 'build', 'guest')


def qemu_binary(name):
    """Path of a QEMU program (qemu-system-x86_64, qemu-img) in the build."""
    path = os.path.join(build_dir(), name)
    if not os.access(path, os.X_OK):
        raise GuestError(f'{path} not found: build QEMU first (scripts/build-qemu)'
                         ' or set HVCP_BUILD')
    return path


def guest_files():
    """(kernel, initrd) of the default guest; a clear error when missing."""
    d = guest_dir()
    files = (os.path.join(d, 'vmlinuz'), os.path.join(d, 'initramfs.cpio.gz'))
    for f in files:
        if not os.path.isfile(f):
            raise GuestError(f'{f} not found: build the guest first'
                             ' (scripts/build-guest) or set HVCP_GUEST_DIR')
    return files


def require_built():
    """For a TAP test: True when the guest and QEMU are built; otherwise
    prints a failing plan that says what is missing and returns False."""
    try:
        guest_files()
        qemu_binary('qemu-system-x86_64')
    except GuestError as e:
        print('1..1\nnot ok 1 - guest and QEMU are built\n# ' + str(e))
        return False
    return True


def create_disk(path, size='64M', fmt='vhdx'):
    """Create a blank disk image with the build's qemu-img."""
    subprocess.run([qemu_binary('qemu-img'), 'create', '-q', '-f', fmt, path, size],
                   check=True)
    return path


def qemu_args(disks=(), memory=256, serial=None, qmp=None, qga=None, extra=()):
    """The QEMU command line for the default guest (without the program).

    disks: (path, format) pairs, attached in order as virtio-blk-device
    (the first is the guest's /dev/vda).  serial: a chardev spec for the
    console, e.g. 'file,path=X' or 'stdio,mux=on' (None: no console).
    qmp, qga: unix socket paths QEMU listens on (None: left out).
    scripts/run-vm uses this too, so that the command line lives here.
    """
    kernel, initrd = guest_files()
    args = ['-M', 'microvm', *ACCEL_ARGS, *CPU_ARGS, '-m', str(memory),
            '-nodefaults', '-no-user-config', '-display', 'none',
            '-kernel', kernel, '-initrd', initrd, '-append', KERNEL_APPEND]
    if serial:
        args += ['-chardev', f'{serial},id=console', '-serial', 'chardev:console']
    if qmp:
        args += ['-chardev', f'socket,id=qmp,path={qmp},server=on,wait=off',
                 '-mon', 'chardev=qmp,mode=control']
    if qga:
        args += ['-device', 'virtio-serial-device',
                 '-chardev', f'socket,id=qga,path={qga},server=on,wait=off',
                 '-device', f'virtserialport,chardev=qga,name={QGA_PORT_NAME}']
    # Device ids vda, vdb, ... (the guest's names): checkpoints name the
    # disks after them
    for i, (path, fmt) in enumerate(disks):
        args += ['-blockdev', f'driver=file,filename={path},node-name=file{i}',
                 '-blockdev', f'driver={fmt},file=file{i},node-name=disk{i}',
                 '-device', f'virtio-blk-device,drive=disk{i},id=vd{chr(97 + i)}']
    return args + list(extra)


class QGA:
    """A guest agent client speaking QGA's wire protocol on a unix socket.

    QGA has no greeting and no framing: after a reconnect the agent may
    still have half a command or a stale reply in flight.  Each exchange
    therefore starts with guest-sync-delimited: the 0xFF byte we send
    makes the agent drop any partial input, and its reply is preceded by
    a 0xFF byte, after which everything stale has gone; the random id
    proves the reply is ours.  Replies are JSON objects ending in a
    newline.
    """

    def __init__(self, path):
        self.path = path
        self.sock = None
        self.buf = b''

    def connect(self, timeout):
        self.close()
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(timeout)
        self.sock.connect(self.path)
        self.buf = b''

    def close(self):
        if self.sock:
            self.sock.close()
            self.sock = None

    def _recv_more(self):
        data = self.sock.recv(65536)
        if not data:
            raise GuestError('guest agent socket closed')
        self.buf += data

    def _read_line(self):
        while b'\n' not in self.buf:
            self._recv_more()
        line, self.buf = self.buf.split(b'\n', 1)
        return line

    def _read_reply(self):
        while True:
            line = self._read_line().strip()
            if line:
                return json.loads(line)

    def _send(self, obj):
        self.sock.sendall(json.dumps(obj).encode() + b'\n')

    def sync(self):
        sync_id = random.randint(1, 2**31 - 1)
        self.sock.sendall(b'\xff')
        self._send({'execute': 'guest-sync-delimited', 'arguments': {'id': sync_id}})
        # A reply to an earlier, abandoned sync may come first: skip
        # sentinel-delimited replies until ours (the socket timeout ends
        # a wait that never succeeds).
        while True:
            self._skip_to_sentinel()
            reply = self._read_reply()
            if reply.get('return') == sync_id:
                return
            if 'error' in reply:
                raise GuestError(f'guest-sync-delimited: {reply["error"]}')

    def _skip_to_sentinel(self):
        """Discard input up to and including the next 0xFF byte (which
        never occurs in the agent's UTF-8 JSON)."""
        while b'\xff' not in self.buf:
            self.buf = b''
            self._recv_more()
        self.buf = self.buf.split(b'\xff', 1)[1]

    def cmd(self, name, timeout=30, **args):
        """Run a command after a sync; returns its 'return' value."""
        if not self.sock:
            self.connect(timeout)
        self.sock.settimeout(timeout)
        self.sync()
        msg = {'execute': name}
        if args:
            msg['arguments'] = args
        self._send(msg)
        reply = self._read_reply()
        if 'error' in reply:
            raise GuestError(f'{name}: {reply["error"]}')
        return reply.get('return')


class Guest(QemuVM):
    """The default test guest running in QEMU; a context manager."""

    def __init__(self, disks=(), memory=256, extra_args=(), name='guest'):
        self.disks = list(disks)
        self.memory = memory
        self.extra_args = list(extra_args)
        # A short folder under /tmp: unix socket paths must stay < 108 bytes.
        super().__init__(name=name)
        self.tmpdir = self.sockdir
        self.serial_path = os.path.join(self.tmpdir, 'serial.log')
        self.qga_path = os.path.join(self.tmpdir, 'qga.sock')
        self.log_path = self.stderr_path = os.path.join(self.tmpdir, 'qemu.stderr')
        self._qga = QGA(self.qga_path)
        self._read_pos = 0    # how far wait_for_line has consumed the console

    # -- lifecycle ---------------------------------------------------------

    def qmp_args(self):
        return []           # qemu_args() has the QMP socket

    def command_line(self):
        return [qemu_binary('qemu-system-x86_64'),
                *qemu_args(self.disks, self.memory,
                           serial=f'file,path={self.serial_path}',
                           qmp=self.qmp_path, qga=self.qga_path,
                           extra=self.extra_args)]

    def start(self, timeout=10):
        open(self.serial_path, 'w').close()
        self._read_pos = 0
        return super().start(timeout)

    def start_error(self, msg):
        return GuestError(f'{msg}: {self.stderr().strip()}')

    def died(self):
        err = super().died()
        return GuestError(str(err))

    def _check_alive(self):
        if self.proc.poll() is not None:
            raise GuestError(f'QEMU exited with {self.proc.returncode}: '
                             f'{self.stderr().strip()}')

    def stderr(self):
        return self.output()

    def shutdown(self, timeout=10):
        """Stop QEMU: QMP quit, then kill if it does not go; idempotent."""
        self.quit(timeout)

    def close(self):
        super().close()
        self._qga.close()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        try:
            self.shutdown()
        finally:
            self.cleanup()

    # -- console -----------------------------------------------------------

    def console(self):
        """Everything the guest printed on its serial console so far."""
        with open(self.serial_path, errors='replace') as f:
            return f.read()

    def console_lines(self):
        return self.console().replace('\r', '').split('\n')

    def wait_for_line(self, regex, timeout=60):
        """Wait for a console line, after those matched before, that
        matches regex; returns the re.Match.  Lines are whole lines only
        (a line still being printed is not looked at yet)."""
        pattern = re.compile(regex)
        deadline = time.monotonic() + timeout
        while True:
            text = self.console()
            end = text.rfind('\n') + 1
            for line in text[self._read_pos:end].split('\n')[:-1]:
                self._read_pos += len(line) + 1
                m = pattern.search(line.rstrip('\r'))
                if m:
                    return m
            if self.proc.poll() is not None:
                raise GuestError(f'QEMU exited while waiting for {regex!r}: '
                                 f'{self.stderr().strip()}\n{self.tail()}')
            if time.monotonic() > deadline:
                raise GuestError(f'no console line matching {regex!r} in {timeout}s;'
                                 f' console ends:\n{self.tail()}')
            time.sleep(0.1)

    def skip_console(self):
        """Let wait_for_line and wait_for_ticks see only what the guest
        prints from now on."""
        text = self.console()
        self._read_pos = text.rfind('\n') + 1

    def tail(self, n=15):
        return '\n'.join(self.console_lines()[-n:])

    def ticks(self):
        """All TICK lines so far as (ram, disk) integer pairs."""
        out = []
        for line in self.console_lines():
            m = TICK_RE.match(line)
            if m:
                out.append((int(m.group(1)), int(m.group(2))))
        return out

    def wait_for_ticks(self, count, timeout=30):
        """Wait for count more TICK lines; returns them as (ram, disk)."""
        got = []
        deadline = time.monotonic() + timeout
        while len(got) < count:
            m = self.wait_for_line(TICK_RE.pattern,
                                   max(0.1, deadline - time.monotonic()))
            got.append((int(m.group(1)), int(m.group(2))))
        return got

    def wait_ready(self, timeout=60):
        self.wait_for_line(r'^GUEST-READY$', timeout)

    # -- monitors ----------------------------------------------------------

    def qmp(self, cmd, /, **args):
        """Run a QMP command; returns its 'return' value, raises on error."""
        if not self.qmp_conn:
            raise GuestError('QMP is not connected')
        return self.cmd(cmd, **args)

    def qga(self, cmd, timeout=30, **args):
        """Run a guest agent command; returns its 'return' value."""
        return self._qga.cmd(cmd, timeout=timeout, **args)

    def qmp_event(self, name, timeout=60):
        """Wait for the QMP event name; returns it."""
        ev = self.event(lambda e: e['event'] == name, timeout)
        if ev is None:
            raise GuestError(f'no QMP event {name} in {timeout}s')
        return ev

    def sh(self, script, timeout=120):
        """Run a shell command in the guest through the agent (guest-exec);
        returns its stdout, raises if it exits non-zero."""
        pid = self.qga('guest-exec', path='/bin/sh', arg=['-c', script],
                       **{'capture-output': True})['pid']
        deadline = time.monotonic() + timeout
        while True:
            status = self.qga('guest-exec-status', pid=pid)
            if status['exited']:
                break
            if time.monotonic() > deadline:
                raise GuestError(f'guest command {script!r} still running after {timeout}s')
            time.sleep(0.2)
        out = base64.b64decode(status.get('out-data', '')).decode(errors='replace')
        if status.get('exitcode', 0) != 0:
            err = base64.b64decode(status.get('err-data', '')).decode(errors='replace')
            raise GuestError(f'guest command {script!r} exited with '
                             f'{status.get("exitcode")}: {out}{err}')
        return out
