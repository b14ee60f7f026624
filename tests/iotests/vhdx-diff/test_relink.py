#!/usr/bin/env python3
# Relinking differencing VHDX images: qemu-img rebase (safe and unsafe),
# qemu-img commit with make_empty, and the linkage after both
#
# Copyright (c) 2026 The Hyper-V checkpoints project authors
#
# SPDX-License-Identifier: GPL-2.0-or-later
#
# Environment: HVCP_BUILD.  Prints TAP.

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import vhdx_image  # noqa: E402
from vhdx_tools import (Tap, QEMU_IMG, qemu_img, qemu_io,  # noqa: E402
                      raw_sha256, run, need_tools)

t = Tap()


def guid(path):
    return max(vhdx_image.read_headers(path))[2]


def make_chain(d):
    base, mid, top = (os.path.join(d, n)
                      for n in ('base.vhdx', 'mid.avhdx', 'top.avhdx'))
    layers = (
        (['create', '-q', '-f', 'vhdx', '-o', 'size=64M', base],
         ['write -P 0x11 0 64M']),
        (['create', '-q', '-f', 'vhdx', '-b', 'base.vhdx', '-F', 'vhdx', mid],
         ['write -P 0x22 1M 1M', 'write -P 0x23 5M 4k']),
        (['create', '-q', '-f', 'vhdx', '-b', 'mid.avhdx', '-F', 'vhdx',
          '-o', 'block_size=1M', top],
         ['write -P 0x33 3M 1M', 'write -P 0x34 1M 512']),
    )
    # Each layer is written before its child exists: writing a parent
    # later would orphan the child
    for create, cmds in layers:
        r = qemu_img(*create)
        assert r.returncode == 0, r.stderr
        args = []
        for c in cmds:
            args += ['-c', c]
        r = qemu_io('-f', 'vhdx', *args, create[-1])
        assert r.returncode == 0, r.stderr
    return base, mid, top


def test_rebase(tmp):
    d = os.path.join(tmp, 'rebase')
    os.mkdir(d)
    base, mid, top = make_chain(d)
    want, _ = raw_sha256(top, tmp)

    r = qemu_img('rebase', '-f', 'vhdx', '-b', 'base.vhdx', '-F', 'vhdx', top)
    got, err = raw_sha256(top, tmp)
    t.ok(r.returncode == 0 and got == want,
         'safe rebase onto the grandparent keeps the contents',
         r.stderr + err)
    r = qemu_img('info', top)
    t.ok('backing file: base.vhdx' in r.stdout, 'the locator names the new '
         'parent', r.stdout + r.stderr)
    r = run('vhdiinfo', top) if shutil.which('vhdiinfo') else None
    t.ok(r is None or (str(guid(base)) in r.stdout.lower() and
                       'base.vhdx' in r.stdout),
         'vhdiinfo sees the new linkage', r.stdout if r else 'no vhdiinfo')

    copy = os.path.join(d, 'base-copy.vhdx')
    shutil.copy(base, copy)
    # (the safe rebase copied data into top, which changed its GUID)
    top_guid = guid(top)
    r = qemu_img('rebase', '-u', '-f', 'vhdx', '-b', 'base-copy.vhdx',
                 '-F', 'vhdx', top)
    got, err = raw_sha256(top, tmp)
    t.ok(r.returncode == 0 and got == want, 'unsafe rebase onto a copy',
         r.stderr + err)
    t.ok(guid(top) == top_guid, 'relinking keeps the child\'s DataWriteGuid',
         f'{guid(top)} {top_guid}')

    r = qemu_img('rebase', '-u', '-f', 'vhdx', '-b', 'base-copy.vhdx',
                 '-F', 'qcow2', top)
    t.ok(r.returncode != 0, 'rebase onto a non-vhdx format is refused',
         r.stderr)


def test_commit(tmp):
    d = os.path.join(tmp, 'commit')
    os.mkdir(d)
    base, mid, top = make_chain(d)
    want, _ = raw_sha256(top, tmp)
    mid_guid = guid(mid)

    r = qemu_img('commit', mid)
    t.ok(r.returncode == 0, 'qemu-img commit of the intermediate layer',
         r.stdout + r.stderr)
    r = qemu_img('map', '--output=json', mid)
    t.ok('"depth": 0' not in r.stdout, 'the committed layer is empty',
         r.stdout + r.stderr)
    t.ok(guid(mid) == mid_guid, 'emptying keeps its DataWriteGuid')
    got, err = raw_sha256(top, tmp)
    t.ok(got == want, 'the chain above still opens and reads the same', err)
    r = qemu_img('check', mid)
    t.ok(r.returncode == 0, 'check of the emptied layer', r.stdout + r.stderr)

    # Committing the top into the base past mid changes the base under
    # mid: mid no longer matches it and must be refused (a qcow2 chain
    # would silently read inconsistent data here)
    r = qemu_img('commit', '-b', base, top)
    t.ok(r.returncode == 0, 'qemu-img commit -b past an intermediate',
         r.stderr)
    got, err = raw_sha256(base, tmp)
    t.ok(got == want, 'the base holds the whole chain', err)
    r = qemu_img('info', '--backing-chain', top)
    r2 = qemu_img('convert', '-O', 'raw', top, os.path.join(d, 'x.raw'))
    t.ok(r2.returncode != 0 and 'mid.avhdx' in r2.stderr and
         'DataWriteGuid' in r2.stderr,
         'the orphaned intermediate is refused', r2.stderr)


def linkage(path, key):
    v = vhdx_image.locator_entries(path).get(key)
    return uuid.UUID(v) if v else None


def test_commit_killed(tmp):
    """MS-VHDX footnote 12: a commit killed after it changed the parent's
    DataWriteGuid leaves the child linked to it, through parent_linkage2"""
    d = os.path.join(tmp, 'killed')
    os.mkdir(d)
    base = os.path.join(d, 'kbase.vhdx')
    child = os.path.join(d, 'kchild.avhdx')
    r = qemu_img('create', '-q', '-f', 'vhdx', '-o', 'block_size=1M', base,
                 '64M')
    assert r.returncode == 0, r.stderr
    r = qemu_io('-f', 'vhdx', '-c', 'write -P 0x11 0 64M', base)
    assert r.returncode == 0, r.stderr
    r = qemu_img('create', '-q', '-f', 'vhdx', '-o', 'block_size=1M', '-b',
                 'kbase.vhdx', '-F', 'vhdx', child)
    assert r.returncode == 0, r.stderr
    r = qemu_io('-f', 'vhdx', '-c', 'write -P 0x22 0 32M', child)
    assert r.returncode == 0, r.stderr
    want, _ = raw_sha256(child, tmp)
    old = guid(base)

    # 32 MiB at 4 MiB/s: killed once the base has its new identity, in
    # the middle of the copy
    p = subprocess.Popen([QEMU_IMG, 'commit', '-q', '-r', '4M', '-f', 'vhdx',
                          child], stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 30
    while guid(base) == old and p.poll() is None and \
            time.monotonic() < deadline:
        time.sleep(0.05)
    p.send_signal(signal.SIGKILL)
    p.wait()
    new = guid(base)
    t.ok(new != old and linkage(child, 'parent_linkage') == old and
         linkage(child, 'parent_linkage2') == new,
         'the child learnt the parent\'s new DataWriteGuid first',
         f'base {old} -> {new}, child {vhdx_image.locator_entries(child)}')
    got, err = raw_sha256(child, tmp)
    t.ok(got == want, 'after the kill the child opens and reads the same',
         err)

    r = qemu_img('commit', '-q', '-f', 'vhdx', child)
    got, err = raw_sha256(base, tmp)
    t.ok(r.returncode == 0 and got == want and
         linkage(child, 'parent_linkage') == guid(base) and
         linkage(child, 'parent_linkage2') == uuid.UUID(int=0),
         'the commit run again completes and relinks through '
         'parent_linkage alone', r.stderr + (err or '') +
         str(vhdx_image.locator_entries(child)))


def test_remove_parent(tmp):
    d = os.path.join(tmp, 'noparent')
    os.mkdir(d)
    base, mid, top = make_chain(d)
    want, _ = raw_sha256(top, tmp)
    r = qemu_img('rebase', '-f', 'vhdx', '-b', '', top)
    got, err = raw_sha256(top, tmp)
    t.ok(r.returncode == 0 and got == want,
         'safe rebase onto no parent keeps the contents', r.stderr + err)
    r = qemu_img('info', '--output=json', top)
    t.ok(r.returncode == 0 and 'backing-filename' not in r.stdout,
         'the image has no parent any more',
         r.stdout + r.stderr)
    os.rename(base, base + '.away')
    os.rename(mid, mid + '.away')
    got, err = raw_sha256(top, tmp)
    r = qemu_img('check', top)
    t.ok(got == want and r.returncode == 0,
         'it reads alone and checks clean', err + r.stdout + r.stderr)
    r = run('vhdiinfo', top) if shutil.which('vhdiinfo') else None
    t.ok(r is None or ('Parent' not in r.stdout and r.returncode == 0),
         'vhdiinfo sees no parent', r.stdout + r.stderr if r else
         'no vhdiinfo')
    os.rename(base + '.away', base)
    os.rename(mid + '.away', mid)

    # Unsafe: the parent's data is dropped, the sectors of partially
    # present blocks that came from the parent read as zeros
    d = os.path.join(tmp, 'noparent-u')
    os.mkdir(d)
    base, mid, top = make_chain(d)
    r = qemu_img('rebase', '-u', '-f', 'vhdx', '-b', '', top)
    r2 = qemu_io('-f', 'vhdx', '-c', 'read -P 0x34 1M 512',
                 '-c', 'read -P 0 1049088 523776', '-c', 'read -P 0 0 1M',
                 '-c', 'read -P 0x33 3M 1M', top)
    t.ok(r.returncode == 0 and r2.returncode == 0 and
         'Pattern verification failed' not in r2.stdout,
         'unsafe rebase onto no parent: only this layer\'s data is left',
         r.stderr + r2.stdout + r2.stderr)


def main():
    need_tools()
    with tempfile.TemporaryDirectory(prefix='vhdx-relink-') as tmp:
        test_rebase(tmp)
        test_commit(tmp)
        test_commit_killed(tmp)
        test_remove_parent(tmp)
    return t.done()


if __name__ == '__main__':
    sys.exit(main())
