# SPDX-License-Identifier: GPL-2.0-or-later
"""Where the QMP commands go: a running VM's QMP socket, or a QEMU that
qemu-checkpoint starts itself on a stopped VM's store (offline), and the
wait for the jobs the commands start."""

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time

from .qmp import QMP, CLIError, QMPGone

PROJECT = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.realpath(__file__))))
QEMU_ENV = 'QEMU_CHECKPOINT_QEMU'


def default_qemu(path=None):
    """The QEMU binary: path (--qemu), $QEMU_CHECKPOINT_QEMU, else the
    project's build/qemu/qemu-system-x86_64."""
    qemu = path or os.environ.get(QEMU_ENV) or \
        os.path.join(PROJECT, 'build', 'qemu', 'qemu-system-x86_64')
    if not os.path.isfile(qemu) or not os.access(qemu, os.X_OK):
        raise CLIError(f'QEMU not found at {qemu} (give --qemu PATH or set'
                       f' {QEMU_ENV})')
    return qemu


def check_store(store):
    """store is a checkpoint store folder: its absolute path."""
    if not os.path.exists(store):
        raise CLIError(f'no store at {store}: the folder does not exist')
    if not os.path.isdir(store):
        raise CLIError(f'{store} is not a folder (--store takes the folder'
                       ' of a checkpoint store)')
    if not os.path.isfile(os.path.join(store, 'manifest.json')):
        raise CLIError(f'{store} is not a checkpoint store: it has no'
                       ' manifest.json')
    return os.path.realpath(store)


def answers(sock):
    """Does something accept connections on the unix socket sock?"""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        s.connect(sock)
        return True
    except OSError:
        return False
    finally:
        s.close()


def qemu_error(log_text, binary):
    """QEMU's error message in what it printed: its last line that says
    something, the program's path shortened to its name."""
    lines = [ln.strip() for ln in log_text.splitlines() if ln.strip()]
    if not lines:
        return 'it printed nothing'
    errors = [ln for ln in lines if ln.startswith(binary + ':')
              or ln.startswith(os.path.basename(binary) + ':')]
    line = (errors or lines)[-1]
    if line.startswith(binary + ':'):
        line = os.path.basename(binary) + line[len(binary):]
    return line


class Session:
    """A QMP connection; offline: the QEMU started for it, quit on close."""

    def __init__(self, qmp, proc=None, tmpdir=None, binary=None, store=None):
        self.qmp = qmp
        self.proc = proc
        self.tmpdir = tmpdir
        self.binary = binary
        self.store = store

    @property
    def offline(self):
        return self.proc is not None

    @classmethod
    def online(cls, path, timeout):
        return cls(QMP(path, timeout))

    @classmethod
    def open_store(cls, store, qemu=None, timeout=30.0):
        """Start QEMU without a guest on the stopped VM's store."""
        store = check_store(store)
        sock = os.path.join(store, 'qmp.sock')
        if os.path.exists(sock) and answers(sock):
            raise CLIError(f'the VM of {store} is running (QMP at {sock}):'
                           f' use --qmp {sock}')
        binary = default_qemu(qemu)
        # unix socket paths must stay short: a folder of our own in /tmp
        tmpdir = tempfile.mkdtemp(prefix='qemu-checkpoint-')
        sock = os.path.join(tmpdir, 'qmp.sock')
        log_path = os.path.join(tmpdir, 'qemu.log')
        dir_opt = store.replace(',', ',,')
        argv = [binary, '-M', 'none', '-nodefaults', '-no-user-config',
                '-display', 'none',
                '-checkpoints', f'dir={dir_opt},offline=on',
                '-qmp', f'unix:{sock},server=on,wait=off']
        try:
            with open(log_path, 'w') as log:
                proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL,
                                        stdout=log, stderr=log,
                                        cwd=tmpdir)
        except OSError as e:
            shutil.rmtree(tmpdir, ignore_errors=True)
            raise CLIError(f'cannot run {binary}: {e.strerror}') from None
        self = cls(None, proc, tmpdir, binary, store)
        try:
            self.qmp = wait_for_qmp(proc, sock, log_path, binary, timeout,
                                    'QEMU cannot open the store')
        except BaseException:
            self.close()
            raise
        return self

    def close(self, quit_timeout=60):
        """Offline: quit QEMU (SIGKILL if it does not end)."""
        if self.proc is not None and self.proc.poll() is None:
            try:
                if self.qmp:
                    self.qmp.raw('quit', timeout=quit_timeout)
            except CLIError:
                pass
            try:
                self.proc.wait(quit_timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.qmp:
            self.qmp.close()
        if self.tmpdir:
            shutil.rmtree(self.tmpdir, ignore_errors=True)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def wait_for_qmp(proc, sock, log_path, binary, timeout, what):
    """Connect to the QMP socket of QEMU proc once it listens; CLIError
    with QEMU's message if it exits first."""
    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            with open(log_path, errors='replace') as f:
                text = f.read()
            raise CLIError(f'{what} (QEMU exited with status'
                           f' {proc.returncode}): {qemu_error(text, binary)}')
        if os.path.exists(sock):
            try:
                return QMP(sock, timeout=max(1.0, deadline - time.monotonic()))
            except QMPGone:
                pass
            except CLIError:
                if proc.poll() is None and time.monotonic() > deadline:
                    raise
        if time.monotonic() > deadline:
            raise CLIError(f'{what}: QEMU does not answer on {sock} after'
                           f' {timeout:g}s')
        time.sleep(0.05)


# -- progress and jobs -----------------------------------------------------

class Progress:
    """A progress bar on stderr, only when stderr is a terminal."""

    def __init__(self, enabled=None):
        self.enabled = sys.stderr.isatty() if enabled is None else enabled
        self.shown = False

    def update(self, label, cur, total):
        if not self.enabled:
            return
        width = 30
        frac = (cur / total) if total else 0.0
        frac = max(0.0, min(1.0, frac))
        fill = int(frac * width)
        line = f'{label} [{"#" * fill}{"." * (width - fill)}] {frac * 100:3.0f}%'
        sys.stderr.write('\r' + line + '\033[K')
        sys.stderr.flush()
        self.shown = True

    def done(self):
        if self.shown:
            sys.stderr.write('\r\033[K')
            sys.stderr.flush()
            self.shown = False


def query_jobs(qmp):
    return qmp.cmd('query-jobs') or []


def wait(qmp, finished, progress_job=None, progress=None, label='',
         interval=0.2):
    """Poll until finished(jobs) returns a value other than None (it
    looks at qmp.events and the list of query-jobs); meanwhile show the
    progress of the job progress_job() names (if any)."""
    progress = progress or Progress(False)
    try:
        while True:
            jobs = query_jobs(qmp)
            result = finished(jobs)
            if result is not None:
                return result
            job_id = progress_job(jobs) if progress_job else None
            for j in jobs:
                if j['id'] == job_id:
                    progress.update(label or j['type'], j['current-progress'],
                                    j['total-progress'])
            qmp.poll_events(interval)
    finally:
        progress.done()
