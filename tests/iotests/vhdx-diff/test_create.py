#!/usr/bin/env python3
# Creating differencing VHDX images and reading through them
#
# Copyright (c) 2026 The Hyper-V checkpoints project authors
#
# SPDX-License-Identifier: GPL-2.0-or-later
#
# Environment: HVCP_BUILD (QEMU build dir).  Prints TAP.

import json
import os
import shutil
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import vhdx_image  # noqa: E402
from vhdx_tools import (Tap, qemu_img, qemu_io, raw_sha256, run,  # noqa: E402
                      sha256_file, need_tools)

t = Tap()


def create_base(path, size='64M'):
    r = qemu_img('create', '-q', '-f', 'vhdx', path, size)
    assert r.returncode == 0, r.stderr
    r = qemu_io('-f', 'vhdx', '-c', 'write -P 0x11 0 4M',
                '-c', 'write -P 0x22 10M 3M', '-c', 'write -P 0x33 60M 4M',
                path)
    assert r.returncode == 0, r.stderr


def test_create(tmp):
    base = os.path.join(tmp, 'base.vhdx')
    child = os.path.join(tmp, 'child.avhdx')
    create_base(base)
    before = sha256_file(base)
    r = qemu_img('create', '-f', 'vhdx', '-b', base, '-F', 'vhdx', child)
    t.ok(r.returncode == 0, 'qemu-img create -b PARENT -F vhdx', r.stderr)
    t.ok(sha256_file(base) == before, 'creating a child leaves the parent '
         'unchanged')

    r = qemu_img('info', child)
    t.ok(r.returncode == 0 and 'backing file: base.vhdx' in r.stdout and
         'backing file format: vhdx' in r.stdout and
         'virtual size: 64 MiB' in r.stdout, 'qemu-img info of the child',
         r.stdout + r.stderr)

    want, _ = raw_sha256(base, tmp)
    got, err = raw_sha256(child, tmp)
    t.ok(got == want, 'child reads as its parent', err)

    r = qemu_img('map', '--output=json', child)
    t.ok(r.returncode == 0 and '"depth": 0' not in r.stdout,
         'map: nothing allocated in the new child', r.stdout + r.stderr)

    r = qemu_img('check', child)
    t.ok(r.returncode == 0, 'qemu-img check of the child', r.stdout + r.stderr)

    hdr = vhdx_image.read_headers(base)
    guid = max(hdr)[2]
    if shutil.which('vhdiinfo'):
        r = run('vhdiinfo', child)
        t.ok(r.returncode == 0 and 'Differential' in r.stdout and
             str(guid) in r.stdout.lower() and 'base.vhdx' in r.stdout,
             'vhdiinfo shows the parent locator', r.stdout + r.stderr)
    else:
        t.ok(True, 'vhdiinfo shows the parent locator # SKIP no vhdiinfo')
    return base, child


def test_vhdimount(tmp, base, child):
    name = 'vhdimount reads the chain like qemu-img'
    if not shutil.which('vhdimount') or not os.path.exists('/dev/fuse'):
        t.ok(True, f'{name} # SKIP no vhdimount or FUSE')
        return
    mnt = os.path.join(tmp, 'mnt')
    os.mkdir(mnt)
    r = run('vhdimount', child, mnt)
    if r.returncode != 0:
        t.ok(True, f'{name} # SKIP vhdimount failed: {r.stderr.strip()}')
        return
    try:
        images = sorted(os.listdir(mnt))
        top = os.path.join(mnt, images[-1])
        got = sha256_file(top)
    finally:
        subprocess.run(['umount', mnt])
    want, _ = raw_sha256(child, tmp)
    t.ok(got == want and len(images) == 2, name, f'{images} {got} {want}')


def test_chain(tmp, base, child):
    grand = os.path.join(tmp, 'sub', 'grandchild.avhdx')
    os.mkdir(os.path.dirname(grand))
    r = qemu_img('create', '-f', 'vhdx', '-b', '../child.avhdx', '-F', 'vhdx',
                 grand)
    t.ok(r.returncode == 0, 'relative -b in another folder', r.stderr)
    r = qemu_img('info', '--backing-chain', grand)
    t.ok(r.returncode == 0 and r.stdout.count('image:') == 3 and
         'backing file: ../child.avhdx' in r.stdout,
         'depth-3 chain opens', r.stdout + r.stderr)
    want, _ = raw_sha256(base, tmp)
    got, err = raw_sha256(grand, tmp)
    t.ok(got == want, 'grandchild reads as the base', err)


def test_blockdev_create(tmp, base):
    name = 'blockdev-create with backing-file'
    qemu = os.path.join(os.environ.get('HVCP_BUILD', ''),
                        'qemu-system-x86_64')
    if not os.access(qemu, os.X_OK):
        t.ok(True, f'{name} # SKIP {qemu} not built')
        return
    child = os.path.join(tmp, 'qmp-child.vhdx')
    open(child, 'w').close()
    cmds = [
        {'execute': 'qmp_capabilities'},
        {'execute': 'blockdev-add', 'arguments': {
            'driver': 'file', 'filename': child, 'node-name': 'f'}},
        {'execute': 'blockdev-create', 'arguments': {
            'job-id': 'j', 'options': {
                'driver': 'vhdx', 'file': 'f', 'size': 64 * 1024 * 1024,
                'backing-file': base, 'backing-fmt': 'vhdx',
                'block-size': 2 * 1024 * 1024}}},
    ]
    p = subprocess.Popen([qemu, '-M', 'none', '-nodefaults', '-display',
                          'none', '-qmp', 'stdio'], stdin=subprocess.PIPE,
                         stdout=subprocess.PIPE, text=True)
    for c in cmds:
        p.stdin.write(json.dumps(c) + '\n')
    p.stdin.flush()
    log = []
    for line in p.stdout:
        log.append(line)
        if '"concluded"' in line:
            break
    p.stdin.write(json.dumps({'execute': 'quit'}) + '\n')
    p.stdin.flush()
    p.communicate(timeout=30)
    r = qemu_img('info', child)
    t.ok('backing file: base.vhdx' in r.stdout and
         'cluster_size: 2097152' in r.stdout, name,
         ''.join(log) + r.stdout + r.stderr)


def test_refusals(tmp, base, child):
    r = qemu_img('create', '-f', 'vhdx', '-b', base, '-F', 'vhdx',
                 os.path.join(tmp, 'bad-size.avhdx'), '128M')
    t.ok(r.returncode != 0 and 'size of its parent' in r.stderr,
         'child of another size is refused', r.stderr)
    r = qemu_img('create', '-f', 'vhdx', '-b', base, '-F', 'raw',
                 os.path.join(tmp, 'bad-fmt.avhdx'))
    t.ok(r.returncode != 0 and 'must be a vhdx image' in r.stderr,
         'non-vhdx parent format is refused', r.stderr)
    r = qemu_img('create', '-f', 'vhdx', '-o', 'subformat=fixed', '-b', base,
                 '-F', 'vhdx', os.path.join(tmp, 'bad-fixed.avhdx'))
    t.ok(r.returncode != 0 and 'cannot be fixed' in r.stderr,
         'fixed differencing image is refused', r.stderr)

    # Writing the parent gives it a new DataWriteGuid: the child is orphaned
    r = qemu_io('-f', 'vhdx', '-c', 'write -P 0x44 0 512', base)
    assert r.returncode == 0, r.stderr
    r = qemu_img('convert', '-O', 'raw', child, os.path.join(tmp, 'x.raw'))
    t.ok(r.returncode != 0 and 'DataWriteGuid' in r.stderr and
         'base.vhdx' in r.stderr and 'child.avhdx' in r.stderr,
         'modified parent is refused, naming both files', r.stderr)
    r = qemu_img('info', child)
    t.ok(r.returncode == 0, 'qemu-img info still works on the orphan',
         r.stderr)

    os.rename(base, base + '.moved')
    r = qemu_img('convert', '-O', 'raw', child, os.path.join(tmp, 'x.raw'))
    t.ok(r.returncode != 0 and 'Could not find the parent' in r.stderr and
         'base.vhdx' in r.stderr, 'missing parent is refused', r.stderr)
    os.rename(base + '.moved', base)


def main():
    need_tools()
    with tempfile.TemporaryDirectory(prefix='vhdx-create-') as tmp:
        base, child = test_create(tmp)
        test_vhdimount(tmp, base, child)
        test_chain(tmp, base, child)
        test_blockdev_create(tmp, base)
        test_refusals(tmp, base, child)
    return t.done()


if __name__ == '__main__':
    sys.exit(main())
