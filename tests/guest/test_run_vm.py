#!/usr/bin/env python3
"""The main job, "make run" (scripts/run-vm), without a terminal: it
boots the default guest to GUEST-READY, with QMP, the HMP monitor and the
guest agent reachable on their sockets, and quits cleanly through QMP.
Its VM has a checkpoint store: a checkpoint taken through HMP is there,
with the disk on the checkpoint's child, when run-vm starts again.
Prints TAP.

Run by meson (suite hyperv-checkpoints-guest), or by hand:
    PYTHONPATH=qemu/python:tests/guest python3 tests/guest/test_run_vm.py
"""

import json
import os
import socket
import subprocess
import sys
import tempfile
import time

import guestlib
from hvcptap import Tap, expect
from qemu.qmp.legacy import QEMUMonitorProtocol

RUN_VM = os.path.join(guestlib.REPO, 'scripts', 'run-vm')
BOOT_TIMEOUT = 90


def wait_for_output(path, text, proc, timeout):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with open(path, encoding='utf-8', errors='replace') as f:
            if text in f.read():
                return
        expect(proc.poll() is None, f'run-vm exited with {proc.returncode}')
        time.sleep(0.2)
    raise AssertionError(f'no "{text}" within {timeout}s')


def hmp_command(path, command):
    """One command on the HMP socket; returns what the monitor printed
    (up to the answer of an "info status" sent after it)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(10)
        s.connect(path)
        s.sendall(command.encode() + b'\ninfo status\n')
        out = b''
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and b'VM status' not in out:
            out += s.recv(4096)
        return out.decode(errors='replace')


def checkpoint_first(hmp_path):
    """HMP checkpoint_create (no option: a production checkpoint, the
    guest frozen through its agent), then wait until info checkpoints
    says ready"""
    out = hmp_command(hmp_path, 'checkpoint_create first')
    expect('Creating production checkpoint' in out,
           f'checkpoint_create said: {out}')
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        out = hmp_command(hmp_path, 'info checkpoints')
        if 'first  (id ' in out and ', production, application, ready, ' in out:
            expect('\n  Now' in out, f'no Now under the checkpoint: {out}')
            return
        time.sleep(0.5)
    raise AssertionError(f'checkpoint "first" not ready: {out}')


def run_again(run_dir, env, out_path):
    """A second run-vm on the same folder: the disk is the checkpoint's
    child and the tree is there"""
    with open(out_path, 'w') as out:
        proc = subprocess.Popen([sys.executable, RUN_VM], stdin=subprocess.DEVNULL,
                                stdout=out, stderr=subprocess.STDOUT, env=env)
    try:
        wait_for_output(out_path, 'GUEST-READY', proc, BOOT_TIMEOUT)
        with open(out_path, encoding='utf-8', errors='replace') as f:
            log = f.read()
        expect('disk_' in log.split('GUEST-READY')[0] and '.avhdx' in log,
               'run-vm did not use the child image')
        out = hmp_command(os.path.join(run_dir, 'hmp.sock'), 'info checkpoints')
        expect('first  (id ' in out and '\n  Now' in out,
               f'tree not found again: {out}')
        try:
            hmp_command(os.path.join(run_dir, 'hmp.sock'), 'quit')
        except OSError:
            pass    # QEMU closes the socket as it quits
        expect(proc.wait(timeout=30) == 0, f'run-vm exited with {proc.returncode}')
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def main():
    tap = Tap(dependent=True)
    with tempfile.TemporaryDirectory(prefix='hvcp-run-') as run_dir:
        env = dict(os.environ, HVCP_RUN_DIR=run_dir)
        out_path = os.path.join(run_dir, 'out.log')
        with open(out_path, 'w') as out:
            proc = subprocess.Popen([sys.executable, RUN_VM], stdin=subprocess.DEVNULL,
                                    stdout=out, stderr=subprocess.STDOUT, env=env)
        try:
            tap.check('run-vm boots the guest to GUEST-READY',
                      lambda: wait_for_output(out_path, 'GUEST-READY', proc, BOOT_TIMEOUT))
            tap.check('run-vm created its vhdx disk',
                      lambda: expect(json.loads(subprocess.run(
                          [guestlib.qemu_binary('qemu-img'), 'info', '-U', '--output=json',
                           os.path.join(run_dir, 'disk.vhdx')],
                          capture_output=True, text=True).stdout or '{}').get('format') == 'vhdx',
                          'disk.vhdx is not a vhdx image'))
            qmp = QEMUMonitorProtocol(os.path.join(run_dir, 'qmp.sock'))
            tap.check('QMP is reachable and the VM runs',
                      lambda: (qmp.connect(),
                               expect(qmp.cmd('query-status')['status'] == 'running',
                                      'VM not running')))
            tap.check('the HMP monitor answers on its socket',
                      lambda: expect('VM status: running' in
                                     hmp_command(os.path.join(run_dir, 'hmp.sock'), 'info status'),
                                     'no "VM status: running" from HMP'))
            tap.check('the VM has a checkpoint store: HMP checkpoint_create,'
                      ' info checkpoints shows it ready with Now under it',
                      lambda: checkpoint_first(os.path.join(run_dir, 'hmp.sock')))
            qga = guestlib.QGA(os.path.join(run_dir, 'qga.sock'))
            tap.check('the guest agent answers guest-ping',
                      lambda: (qga.connect(30), expect(qga.cmd('guest-ping') == {}, 'bad reply')))
            qga.close()

            def quit_cleanly():
                # QEMU may close the socket before its reply, or before the
                # client's disconnect, is read: the exit status below is
                # what counts.
                try:
                    qmp.cmd('quit')
                    qmp.close()
                except EOFError:
                    pass
                expect(proc.wait(timeout=30) == 0, f'run-vm exited with {proc.returncode}')
            tap.check('QMP quit ends run-vm with status 0', quit_cleanly)
            tap.check('run-vm again: the disk is the checkpoint\'s child,'
                      ' the tree is back', lambda: run_again(run_dir, env, out_path))
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            if tap.failed:
                with open(out_path, encoding='utf-8', errors='replace') as f:
                    for line in f.read().splitlines()[-20:]:
                        print(f'# {line}')
    return tap.done()


if __name__ == '__main__':
    sys.exit(main())
