#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-2.0-or-later
"""qemu-checkpoint without a guest: its documented JSON schemas, the
command line that "start" builds, bad input, and "start" on a store of
a QEMU without a guest (-M none).

  1. the schemas of scripts/qemu-checkpoint.md: one per command, their
     references resolve, the validator tells good from bad output;
  2. start's rewriting of config.json's command line (monitors dropped
     with their chardevs, the images replaced in -drive, -blockdev
     key=value and JSON, plain values; --console, --replace, -S for a
     resumed checkpoint, an image that is not found);
  3. bad input: every case exits non-zero with exactly one line on
     stderr starting with "qemu-checkpoint: " (no store, a folder
     without manifest.json, a file as store, no socket, a stale socket,
     a socket that sends garbage, one that sends nothing, one that
     closes at once, a QEMU that cannot run, a QEMU that fails to start,
     no --qmp/--store, no config.json);
  4. start on a store made by "-M none" with a config.json written by
     the test (the format QEMU writes): --json output, the QMP socket
     answers, the VM runs; a second start is refused; a command line
     QEMU refuses gives QEMU's error.

Prints TAP.  Run by meson (suite hyperv-checkpoints-cli) or by hand:
    HVCP_BUILD=build/qemu PYTHONPATH=tests/pylib:tests/cli \
    python3 tests/cli/test_cli_basic.py
"""

import json
import os
import socket
import subprocess
import sys
import time

import clilib as cl
from clilib import error, ok_json
from hvcptap import Tap, expect, note, scratch_dir

sys.path.insert(0, os.path.join(cl.REPO, 'scripts'))
from qemu_checkpoint import startvm  # noqa: E402

COMMANDS = ['list', 'info', 'create', 'rename', 'apply', 'delete-dry-run',
            'delete', 'merges', 'export', 'start']


# -- 1. schemas ----------------------------------------------------------------

def schemas_documented():
    s = cl.schemas()
    missing = [c for c in COMMANDS + ['definitions'] if c not in s]
    expect(not missing, f'no schema for {missing} in {cl.DOC}')
    refs = []

    def walk(x):
        if isinstance(x, dict):
            if '$ref' in x:
                refs.append(x['$ref'])
            for v in x.values():
                walk(v)
        elif isinstance(x, list):
            for v in x:
                walk(v)
    walk(s)
    bad = [r for r in refs if r not in s['definitions']]
    expect(not bad, f'references to no definition: {bad}')


def validator_works():
    good = {'id': 'x', 'name': 'n', 'type': 'standard',
            'consistency': 'saved-state', 'state': 'ready', 'created': 1,
            'current': False, 'disks': [{'device': 'vda', 'filename': '/a',
                                         'format': 'vhdx'}]}
    cl.validate(good, 'info')
    cl.validate([good], 'list')
    for bad in (dict(good, type='other'), dict(good, extra=1),
                {k: v for k, v in good.items() if k != 'id'},
                dict(good, created=True), dict(good, disks=[{}])):
        try:
            cl.validate(bad, 'info')
        except AssertionError:
            continue
        raise AssertionError(f'the validator accepted {bad}')


# -- 2. start's command line -------------------------------------------------

def rewriting():
    cwd = '/vm'
    images = {'/vm/disk.vhdx': '/vm/disk_1.avhdx',
              '/vm/data,1.qcow2': '/vm/data,1_2.qcow2',
              '/vm/j.vhdx': '/vm/j_3.avhdx',
              '/vm/h.img': '/vm/h_4.qcow2'}
    argv = ['/q', '-name', 'vm1', '-S', '-daemonize', '-pidfile', '/run/p',
            '-chardev', 'socket,id=mon0,path=/old/qmp.sock,server=on,wait=off',
            '-mon', 'chardev=mon0,mode=control',
            '-chardev', 'stdio,id=con,mux=on',
            '-serial', 'chardev:con', '-mon', 'chardev=con,mode=readline',
            '-qmp', 'unix:/old/q2.sock,server=on,wait=off',
            '--qmp-pretty', 'unix:/old/q3.sock,server=on,wait=off',
            '-monitor', 'none', '-incoming', 'defer',
            '-checkpoints', 'dir=/old/store,type=standard,auto=on',
            '-drive', 'if=none,id=d0,file=disk.vhdx,format=vhdx',
            '-blockdev', 'driver=file,filename=/vm/data,,1.qcow2,node-name=f1',
            '-blockdev', 'driver=qcow2,file=f1,node-name=n1',
            '-blockdev', json.dumps({'driver': 'vhdx', 'node-name': 'j',
                                     'file': {'driver': 'file',
                                              'filename': './j.vhdx'}}),
            '-hda', '../vm/h.img',
            '-kernel', 'disk.vhdx.kernel']
    new, missing = startvm.rewrite(argv, cwd, '/st', images, '/st/qmp.sock')
    note(' '.join(new))
    expect(not missing, f'images not found: {missing}')
    for gone in ('-S', '-daemonize', '-pidfile', '-incoming', '-monitor',
                 '--qmp-pretty', '-mon'):
        expect(gone not in new, f'{gone} left in {new}')
    expect(not any('mon0' in w for w in new), f'the QMP chardev is left: {new}')
    expect('stdio,id=con,mux=on' in new,
           'the chardev the serial port shares with a dropped monitor is gone')
    expect(new.count('-qmp') == 1 and
           new[new.index('-qmp') + 1] == 'unix:/st/qmp.sock,server=on,wait=off',
           f'-qmp: {new}')
    expect(new.count('-checkpoints') == 1 and
           new[new.index('-checkpoints') + 1] == 'dir=/st,type=standard,auto=on',
           f'-checkpoints: {new}')
    expect('if=none,id=d0,file=/vm/disk_1.avhdx,format=vhdx' in new,
           f'-drive file= not replaced: {new}')
    expect('driver=file,filename=/vm/data,,1_2.qcow2,node-name=f1' in new,
           f'-blockdev filename= (with ",,") not replaced: {new}')
    expect('driver=qcow2,file=f1,node-name=n1' in new, 'a node name changed')
    js = [json.loads(w) for w in new if w.startswith('{')]
    expect(js and js[0]['file']['filename'] == '/vm/j_3.avhdx',
           f'JSON -blockdev not replaced: {js}')
    expect(new[new.index('-hda') + 1] == '/vm/h_4.qcow2', '-hda not replaced')
    expect('disk.vhdx.kernel' in new, 'a file that is no image changed')
    expect(new[0] == '/q' and new[1:3] == ['-name', 'vm1'], f'{new[:3]}')

    # --console, --replace, resume, extra arguments
    argv = ['/q', '-chardev', 'file,id=console,path=/gone/serial.log',
            '-serial', 'chardev:console',
            '-chardev', 'socket,id=qga,path=/gone/qga.sock,server=on,wait=off',
            '-device', 'virtserialport,chardev=qga,name=org.qemu.guest_agent.0',
            '-checkpoints', 'dir=/old,auto=on', '-drive', 'file=/vm/disk.vhdx']
    new, missing = startvm.rewrite(
        argv, cwd, '/st', {'/vm/disk.vhdx': '/vm/disk_1.avhdx'}, '/s.sock',
        console='file,path=/new/console.log', replace=[('/gone/', '/new/')],
        resume=True, extra=['-m', '512'])
    note(' '.join(new))
    expect(not any('serial.log' in w for w in new), f'the old console is left: {new}')
    expect('socket,id=qga,path=/new/qga.sock,server=on,wait=off' in new,
           f'--replace did not replace: {new}')
    expect(f'file,path=/new/console.log,id={startvm.CONSOLE_ID}' in new and
           new.count('-serial') == 1 and
           new[new.index('-serial') + 1] == f'chardev:{startvm.CONSOLE_ID}',
           f'--console: {new}')
    expect(new[new.index('-checkpoints') + 1] == 'dir=/st',
           f'resume keeps auto=on: {new}')
    expect(new[-3:] == ['-S', '-m', '512'], f'-S and extra arguments: {new[-3:]}')
    expect('file=/vm/disk_1.avhdx' in new, f'{new}')
    # a bare path for --console: a unix socket server
    new, _ = startvm.rewrite(['/q', '-serial', 'stdio'], cwd, '/st', {}, '/s',
                             console='/c.sock')
    expect(f'socket,path=/c.sock,server=on,wait=off,id={startvm.CONSOLE_ID}'
           in new and 'stdio' not in new, f'--console PATH: {new}')
    # an export to another format: the format goes with the image
    fm = {'/vm/disk.vhdx': ('vhdx', 'qcow2')}
    im = {'/vm/disk.vhdx': '/e/disk.qcow2'}
    new, _ = startvm.rewrite(
        ['/q', '-blockdev', 'driver=file,filename=/vm/disk.vhdx,node-name=f0',
         '-blockdev', 'driver=vhdx,file=f0,node-name=d0',
         '-drive', 'if=none,id=x,file=/vm/disk.vhdx,format=vhdx',
         '-blockdev', json.dumps({'driver': 'vhdx', 'node-name': 'j',
                                  'file': {'driver': 'file',
                                           'filename': '/vm/disk.vhdx'}}),
         '-blockdev', json.dumps({'driver': 'file', 'node-name': 'jf',
                                  'filename': '/vm/disk.vhdx'}),
         '-blockdev', json.dumps({'driver': 'vhdx', 'node-name': 'jd',
                                  'file': 'jf'}),
         '-blockdev', 'driver=vhdx,file=other,node-name=o'],
        cwd, '/st', im, '/s', formats=fm)
    note(' '.join(new))
    expect('driver=file,filename=/e/disk.qcow2,node-name=f0' in new and
           'driver=qcow2,file=f0,node-name=d0' in new and
           'if=none,id=x,file=/e/disk.qcow2,format=qcow2' in new and
           'driver=vhdx,file=other,node-name=o' in new, f'formats: {new}')
    js = [json.loads(w) for w in new if w.startswith('{')]
    expect([j['driver'] for j in js] == ['qcow2', 'file', 'qcow2'] and
           js[0]['file']['filename'] == '/e/disk.qcow2', f'JSON formats: {js}')
    # an image that the command line does not name
    _, missing = startvm.rewrite(['/q', '-drive', 'file=/vm/other.vhdx'], cwd,
                                 '/st', {'/vm/disk.vhdx': '/x'}, '/s')
    expect(missing == ['/vm/disk.vhdx'], f'missing: {missing}')


# -- 3. bad input --------------------------------------------------------------

def bad_input(work):
    store = os.path.join(work, 'bad-store')
    os.makedirs(store)
    afile = os.path.join(work, 'afile')
    open(afile, 'w').close()
    lines = []

    def case(*args, expect_in=None):
        line = error(*args, expect_in=expect_in)
        lines.append(f'{" ".join(str(a) for a in args)} -> {line}')

    case('list', expect_in='--qmp')
    case('--store', os.path.join(work, 'nothing'), 'list', expect_in='does not exist')
    case('--store', afile, 'list', expect_in='not a folder')
    case('--store', store, 'list', expect_in='manifest.json')
    case('--store', store, 'info', 'x', expect_in='manifest.json')
    case('--qmp', os.path.join(work, 'none.sock'), 'list', expect_in='no VM')
    case('--qmp', afile, 'list', expect_in='not a socket')
    # a socket whose server is gone
    stale = os.path.join(work, 'stale.sock')
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.bind(stale)
    s.close()
    case('--qmp', stale, 'list', expect_in='refused')
    # servers that do not speak QMP
    for name, send, hold in (('garbage', b'hello, this is not QMP\r\n', 5),
                             ('json', b'{"hello": "world"}\n', 5),
                             ('binary', b'\xff\xfe\x00\x01\n', 5),
                             ('silent', None, 5), ('closing', None, 0)):
        path = os.path.join(work, f'{name}.sock')
        srv = cl.FakeServer(path, send, hold)
        try:
            t0 = time.monotonic()
            case('--qmp', path, '--timeout', '1', 'list',
                 expect_in=['QMP', 'closed'])
            expect(time.monotonic() - t0 < 10, f'{name}: waited too long')
        finally:
            srv.close()
    # a QEMU that cannot run, and one that fails to start
    good = os.path.join(work, 'good-store')
    subprocess.run([cl.qemu(), '-M', 'none', '-display', 'none', '-nodefaults',
                    '-checkpoints', f'dir={good}', '-qmp', 'stdio'],
                   input='{"execute":"qmp_capabilities"}\n{"execute":"quit"}\n',
                   capture_output=True, text=True, check=True, timeout=30)
    case('--store', good, '--qemu', os.path.join(work, 'no-qemu'), 'list',
         expect_in='QEMU not found')
    failing = os.path.join(work, 'failing-qemu')
    with open(failing, 'w') as f:
        f.write('#!/bin/sh\necho "$0: something is wrong" >&2\nexit 1\n')
    os.chmod(failing, 0o755)
    case('--store', good, '--qemu', failing, 'list',
         expect_in='something is wrong')
    # start without config.json (QEMU wrote one: gone), with a broken one
    if os.path.exists(os.path.join(good, 'config.json')):
        os.unlink(os.path.join(good, 'config.json'))
    case('start', '--store', good, expect_in='config.json')
    with open(os.path.join(good, 'config.json'), 'w') as f:
        f.write('{"version": 1, "argv": ')
    case('start', '--store', good, expect_in='config.json')
    os.unlink(os.path.join(good, 'config.json'))
    case('delete', '--qmp', os.path.join(work, 'none.sock'), expect_in='no VM')
    r = cl.cli('list', '--no-such-option')
    expect(r.rc == 2 and 'Traceback' not in r.err, f'a wrong option: {r!r}')
    note('\n'.join(lines))


# -- 4. start on a store without a guest ---------------------------------------

def start_without_guest(work):
    store = os.path.join(work, 'vm-store')
    subprocess.run([cl.qemu(), '-M', 'none', '-display', 'none', '-nodefaults',
                    '-checkpoints', f'dir={store}', '-qmp', 'stdio'],
                   input='{"execute":"qmp_capabilities"}\n{"execute":"quit"}\n',
                   capture_output=True, text=True, check=True, timeout=30)
    config = {'version': 1,
              'argv': [cl.qemu(), '-M', 'none', '-display', 'none',
                       '-nodefaults', '-name', 'cli-test', '-S',
                       '-qmp', f'unix:{work}/gone/old.sock,server=on,wait=off',
                       '-checkpoints', f'dir={store}'],
              'cwd': work, 'name': 'cli-test', 'disks': []}
    with open(os.path.join(store, 'config.json'), 'w') as f:
        json.dump(config, f)
    out = ok_json('start', 'start', '--store', store)
    note(f'start: pid {out["pid"]}, {out["qmp"]}')
    sock = os.path.join(store, 'qmp.sock')
    expect(out['qmp'] == sock, f'the QMP socket: {out["qmp"]}')
    pid = out['pid']
    try:
        os.kill(pid, 0)
        from hvcpvm import QMP
        q = QMP(sock, timeout=10)
        try:
            st = q.cmd('query-status')['status']
            expect(st == 'running', f'the VM is {st} (-S was not dropped?)')
            name = q.cmd('query-name').get('name')
            expect(name == 'cli-test', f'name {name}')
            params = q.cmd('query-checkpoint-parameters')
            expect(os.path.realpath(params.get('dir', '')) == os.path.realpath(store),
                   f'the store: {params}')
            # a second start is refused while it runs
        finally:
            q.close()
        error('start', '--store', store, expect_in='answers')
        error('--store', store, 'list', expect_in='is running')
        # QMP works for the other commands: the same socket
        r = ok_json('list', '--qmp', sock, 'list')
        expect(r == [], f'checkpoints: {r}')
        q = QMP(sock, timeout=10)
        q.raw('quit')
        q.close()
        for _ in range(100):
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                break
            time.sleep(0.1)
    finally:
        try:
            os.kill(pid, 9)
        except ProcessLookupError:
            pass
    log = open(os.path.join(store, 'qemu.log')).read()
    expect('qemu-checkpoint start' in log, f'the log: {log}')
    # QEMU refuses the command line: its error, one line
    config['argv'].insert(1, '-no-such-option')
    with open(os.path.join(store, 'config.json'), 'w') as f:
        json.dump(config, f)
    line = error('start', '--store', store, expect_in='no-such-option')
    note(line)


def main():
    if not os.access(cl.qemu(), os.X_OK):
        print(f'1..1\nnot ok 1 - QEMU is built\n# {cl.qemu()} not found')
        return 1
    tap = Tap()
    tap.check('every command\'s JSON schema is documented', schemas_documented)
    tap.check('the schema validator tells good output from bad', validator_works)
    tap.check('start: the command line of config.json rewritten', rewriting)
    with scratch_dir('hvcp-cli-', lambda: tap.failed) as work:
        tap.check('bad input: one error line, non-zero exit, no traceback',
                  bad_input, work)
        tap.check('start on a store of a QEMU without a guest',
                  start_without_guest, work)
    return tap.done()


if __name__ == '__main__':
    sys.exit(main())
