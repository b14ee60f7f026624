#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-2.0-or-later
"""The seven reliability defects of issue 10, each reproduced as it was
found; every check fails on the code before its fix.

1. a child of a zero-size vhdx (qemu-img, blockdev-create, checkpoint)
2. a forged manifest must not have QEMU delete files it did not make
3. frozen images refuse writers; create/apply refuse beside a block
   job; apply refuses an image whose identity changed
4. two disks whose names differ only in their extension
5. new children are durable before the manifest names them
6. a stale, longer manifest.json.tmp
7. killed creates and applies leave no orphan image
"""

import os
import random
import shutil
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                '..', 'pylib'))
from hvcptap import Tap, expect, skip_all  # noqa: E402
import storelib as sl  # noqa: E402

UUID_A = '0d4c7a3e-6f0e-4a43-9b5f-2a4ef1a7c2d1'
UUID_B = '5b0e2f7c-1a6d-4c52-8e3b-9f1d2c3b4a50'


def fresh(tmp, name):
    d = os.path.join(tmp, name)
    os.makedirs(d)
    return d


def two_disks(d):
    """A vhdx and a qcow2 disk in folder d."""
    return [('d0', sl.mkimg(os.path.join(d, 'v.vhdx'), 'vhdx'), 'vhdx'),
            ('d1', sl.mkimg(os.path.join(d, 'q.qcow2'), 'qcow2'), 'qcow2')]


# 1 -------------------------------------------------------------------

def zero_size_qemu_img(tmp):
    d = fresh(tmp, 'zero-img')
    z = sl.mkimg(os.path.join(d, 'z.vhdx'), 'vhdx', '0')
    r = sl.run(sl.QEMU_IMG, 'create', '-f', 'vhdx', '-b', z, '-F', 'vhdx',
               os.path.join(d, 'c.avhdx'))
    expect(r.returncode == 0, f'child of a zero-size vhdx: {r.stderr}')
    r = sl.run(sl.QEMU_IMG, 'check', os.path.join(d, 'c.avhdx'))
    expect(r.returncode == 0, f'qemu-img check: {r.stdout}{r.stderr}')
    r = sl.run(sl.QEMU_IMG, 'info', os.path.join(d, 'c.avhdx'))
    expect('virtual size: 0 B' in r.stdout and 'backing file: ' in r.stdout,
           r.stdout + r.stderr)


def zero_size_blockdev_create(tmp):
    d = fresh(tmp, 'zero-qmp')
    z = sl.mkimg(os.path.join(d, 'z.vhdx'), 'vhdx', '0')
    child = os.path.join(d, 'c.avhdx')
    open(child, 'wb').close()
    vm = sl.VM(tmp, [])
    try:
        vm.cmd('blockdev-add', driver='file', filename=child,
               **{'node-name': 'cfile'})
        vm.cmd('blockdev-create', **{'job-id': 'mk'},
               options={'driver': 'vhdx', 'file': 'cfile', 'size': 0,
                        'backing-file': z, 'backing-fmt': 'vhdx'})
        vm.wait_until(lambda: vm.cmd('query-jobs')[0]['status'] ==
                      'concluded', 'the blockdev-create job')
        jobs = vm.cmd('query-jobs')
        expect(not jobs[0].get('error'), f'job failed: {jobs}')
        vm.cmd('job-dismiss', id='mk')
        vm.shutdown()
    finally:
        vm.kill()
    r = sl.run(sl.QEMU_IMG, 'check', child)
    expect(r.returncode == 0, f'qemu-img check: {r.stdout}{r.stderr}')


def zero_size_checkpoint(tmp):
    d = fresh(tmp, 'zero-ckpt')
    store = os.path.join(d, 'store')
    disks = [('d0', sl.mkimg(os.path.join(d, 'z.vhdx'), 'vhdx', '0'),
              'vhdx'),
             ('d1', sl.mkimg(os.path.join(d, 'q.qcow2'), 'qcow2'), 'qcow2')]
    vm = sl.VM(tmp, disks, store)
    try:
        vm.write('d1', '0x11', 0, 65536)
        a = vm.create('A')
        vm.write('d1', '0x22', 0, 65536)
        vm.apply(a)
        expect(vm.pattern_is('d1', '0x11', 0, 65536), 'apply of A')
        vm.shutdown()
    finally:
        vm.kill()


# 2 -------------------------------------------------------------------

def forged_manifest(tmp):
    d = fresh(tmp, 'forged')
    store = fresh(d, 'store')
    other = fresh(d, 'other')
    othervm = fresh(d, 'othervm')
    victims = [os.path.join(other, 'state'),
               os.path.join(othervm, f'disk_{UUID_B}.avhdx'),
               os.path.join(othervm, UUID_B)]
    for v in victims:
        with open(v, 'w', encoding='utf-8') as f:
            f.write('precious')
    # The store's own checkpoint folder, as a link to another folder
    linked = fresh(d, 'linked')
    with open(os.path.join(linked, 'state'), 'w', encoding='utf-8') as f:
        f.write('precious')
    os.symlink(linked, os.path.join(store, UUID_A))
    files = victims + [os.path.join(store, UUID_A, 'state')]
    with open(os.path.join(store, 'manifest.json'), 'w',
              encoding='utf-8') as f:
        f.write('{"version": 1, "checkpoints": [], "active": [],'
                ' "operation": {"op": "create", "checkpoint": "%s",'
                ' "new-files": [%s]}}' %
                (UUID_A, ', '.join(f'"{x}"' for x in files)))
    vm = sl.VM(tmp, [], store)
    log = vm.shutdown()
    for v in victims + [os.path.join(linked, 'state')]:
        expect(os.path.exists(v), f'{v} was deleted\n{log}')
    expect('not removing' in log, f'no warning: {log}')
    expect('operation' not in sl.manifest(store), 'operation not ended')


def forged_stale_referenced(tmp):
    """An apply's stale files never include an image the tree holds."""
    d = fresh(tmp, 'forged-ref')
    store = fresh(d, 'store')
    base = sl.mkimg(os.path.join(d, 'disk.qcow2'), 'qcow2')
    child = sl.mkimg(os.path.join(d, f'disk_{UUID_A}.qcow2'), 'qcow2',
                     backing=base)
    disk = ('{"device": "d0", "filename": "%s", "format": "qcow2"}')
    with open(os.path.join(store, 'manifest.json'), 'w',
              encoding='utf-8') as f:
        f.write('{"version": 1, "current": "%s", "checkpoints": [{"id":'
                ' "%s", "name": "a", "type": "production", "state": "ready",'
                ' "created": 1, "disks": [%s]}], "active": [%s],'
                ' "operation": {"op": "apply", "checkpoint": "%s",'
                ' "new-files": [], "stale-files": ["%s"]}}' %
                (UUID_A, UUID_A, disk % base, disk % child, UUID_A, child))
    vm = sl.VM(tmp, [('d0', child, 'qcow2')], store)
    log = vm.shutdown()
    expect(os.path.exists(child), f'the active image was deleted\n{log}')


# 3 -------------------------------------------------------------------

def commit_into_frozen_refused(tmp):
    d = fresh(tmp, 'frozen')
    store = os.path.join(d, 'store')
    disks = two_disks(d)
    vm = sl.VM(tmp, disks, store)
    try:
        vm.write('d0', '0x11', 0, 65536)
        a = vm.create('A')
        frozen_a = {x['device']: x['filename']
                    for x in vm.checkpoints()[0]['disks']}
        vm.write('d0', '0x22', 0, 65536)
        vm.create('B')
        nodes = {n['file']: n['node-name']
                 for n in vm.cmd('query-named-block-nodes')
                 if n['drv'] in ('vhdx', 'qcow2')}
        for dev in ('d0', 'd1'):
            m = sl.manifest(store)
            top = m['checkpoints'][1]['disks']
            top = [x['filename'] for x in top if x['device'] == dev][0]
            err = vm.error('block-commit', device=dev, **{'job-id': 'c'},
                           top=top, base=frozen_a[dev])
            expect('ermission' in err or 'frozen' in err or
                   'write' in err, f'commit into A refused: {err}')
        # a writer through the monitor is refused as well
        node = nodes.get(frozen_a['d0'])
        if node:
            out = vm.hmp(f'qemu-io -d {node} "write -P 0x33 0 4096"')
            expect('wrote' not in out, f'qemu-io wrote to A: {out}')
        vm.apply(a)
        expect(vm.pattern_is('d0', '0x11', 0, 65536), 'A as it was')
        vm.shutdown()
    finally:
        vm.kill()


def job_refuses_create(tmp):
    d = fresh(tmp, 'job')
    store = os.path.join(d, 'store')
    disks = two_disks(d)
    vm = sl.VM(tmp, disks, store)
    try:
        vm.write('d1', '0x11', 0, 1 << 20)
        a = vm.create('A')
        vm.write('d1', '0x22', 0, 1 << 20)
        vm.create('B')
        # a stream into the active image, slowed so that it runs on
        vm.cmd('block-stream', device='d1', **{'job-id': 'st'}, speed=1)
        err = vm.error('checkpoint-create', name='C', type='standard')
        expect("block job 'st'" in err and "'d1'" in err, err)
        err = vm.error('checkpoint-apply', checkpoint=a)
        expect("block job 'st'" in err, err)
        vm.cmd('block-job-cancel', device='st', force=True)
        vm.wait_until(lambda: not vm.cmd('query-block-jobs'),
                      'the stream to end')
        vm.create('C')
        vm.shutdown()
    finally:
        vm.kill()


def identity_checked(tmp, fmt):
    """B's frozen images are off the active chain once A is applied;
    one of them is written while QEMU is down."""
    d = fresh(tmp, f'identity-{fmt}')
    store = os.path.join(d, 'store')
    disks = two_disks(d)
    vm = sl.VM(tmp, disks, store)
    try:
        vm.write('d0', '0x11', 0, 65536)
        vm.write('d1', '0x11', 0, 65536)
        a = vm.create('A')
        vm.write('d0', '0x22', 0, 65536)
        vm.write('d1', '0x22', 0, 65536)
        b = vm.create('B')
        vm.apply(a)
        vm.shutdown()
    finally:
        vm.kill()
    entry = sl.manifest(store)['checkpoints'][1]
    expect(all(x.get('identity') for x in entry['disks']),
           f'no identity recorded: {entry}')
    # unchanged across restarts: apply works
    vm = sl.VM(tmp, sl.active_disks(store, disks), store)
    try:
        vm.apply(b)
        expect(vm.pattern_is(f'd{0 if fmt == "vhdx" else 1}', '0x22', 0,
                             65536), 'B as it was')
        vm.apply(a)
        vm.shutdown()
    finally:
        vm.kill()
    frozen = [x['filename'] for x in entry['disks'] if x['format'] == fmt][0]
    r = sl.run(sl.QEMU_IO, '-f', fmt, '-c', 'write -P 0x77 0 4096', frozen)
    expect(r.returncode == 0, r.stderr)
    vm = sl.VM(tmp, sl.active_disks(store, disks), store)
    try:
        err = vm.error('checkpoint-apply', checkpoint=b)
        expect('changed since the checkpoint was taken' in err and
               frozen in err, err)
        expect(vm.checkpoints()[0]['current'], 'Now moved')
        vm.shutdown()
    finally:
        vm.kill()


# 4 -------------------------------------------------------------------

def names_differ_in_extension(tmp, names):
    d = fresh(tmp, 'ext-' + '-'.join(n.replace('.', '_') for n in names))
    store = os.path.join(d, 'store')
    disks = [(f'd{i}', sl.mkimg(os.path.join(d, n), 'qcow2'), 'qcow2')
             for i, n in enumerate(names)]
    vm = sl.VM(tmp, disks, store)
    try:
        vm.write('d0', '0x11', 0, 65536)
        vm.write('d1', '0x12', 0, 65536)
        a = vm.create('A')
        vm.write('d0', '0x21', 0, 65536)
        vm.write('d1', '0x22', 0, 65536)
        vm.create('B')
        vm.apply(a)
        expect(vm.pattern_is('d0', '0x11', 0, 65536) and
               vm.pattern_is('d1', '0x12', 0, 65536), 'apply of A')
        active = [x['filename'] for x in sl.manifest(store)['active']]
        expect(len(set(active)) == 2, f'children share a name: {active}')
        vm.shutdown()
    finally:
        vm.kill()


# 5 -------------------------------------------------------------------

def children_durable(tmp):
    d = fresh(tmp, 'durable')
    store = os.path.join(d, 'store')
    disks = two_disks(d)
    trace = os.path.join(tmp, 'strace.log')
    vm = sl.VM(tmp, disks, store,
               wrapper=['strace', '-f', '-y', '-qq', '-o', trace,
                        '-e', 'trace=openat,fdatasync,fsync,rename'])
    try:
        vm.create('A')
        vm.shutdown()
    finally:
        vm.kill()
    with open(trace, encoding='utf-8', errors='replace') as f:
        lines = f.read().splitlines()
    for child in [x['filename'] for x in sl.manifest(store)['active']]:
        made = [i for i, l in enumerate(lines)
                if 'openat(' in l and f'"{child}"' in l and 'O_CREAT' in l]
        expect(made, f'no creation of {child} in the trace')
        after = lines[made[0]:]
        commit = [i for i, l in enumerate(after)
                  if 'rename(' in l and 'manifest.json.tmp' in l]
        synced = [i for i, l in enumerate(after)
                  if ('fdatasync(' in l or 'fsync(' in l) and
                  f'<{child}>' in l]
        dir_synced = [i for i, l in enumerate(after)
                      if ('fdatasync(' in l or 'fsync(' in l) and
                      f'<{d}>' in l]
        expect(commit, 'no manifest written after the child was made')
        expect(synced and synced[0] < commit[0],
               f'{child} not synced before the manifest names it')
        expect(dir_synced and dir_synced[0] < commit[0],
               f'{d} not synced before the manifest names {child}')


# 6 -------------------------------------------------------------------

def stale_manifest_tmp(tmp):
    d = fresh(tmp, 'stale-tmp')
    store = os.path.join(d, 'store')
    disks = two_disks(d)
    vm = sl.VM(tmp, disks, store)
    try:
        a = vm.create('A')
        with open(os.path.join(store, 'manifest.json.tmp'), 'wb') as f:
            f.write(b'x' * 20000)
        vm.cmd('checkpoint-rename', checkpoint=a, name='renamed')
        m = sl.manifest(store)
        expect(m['checkpoints'][0]['name'] == 'renamed', str(m))
        vm.shutdown()
    finally:
        vm.kill()
    vm = sl.VM(tmp, sl.active_disks(store, disks), store)
    expect(vm.checkpoints()[0]['name'] == 'renamed', 'store reopened')
    vm.shutdown()


# 7 -------------------------------------------------------------------

def killed_at(tmp, point, op):
    d = fresh(tmp, f'kill-{point}')
    store = os.path.join(d, 'store')
    disks = two_disks(d)
    vm = sl.VM(tmp, disks, store, env={sl.CRASH_ENV: point})
    try:
        a = vm.create('A') if op == 'apply' else None
        vm.write('d0', '0x44', 0, 65536)
        vm.qmp('checkpoint-create', name='K', type='standard') \
            if op == 'create' else vm.qmp('checkpoint-apply', checkpoint=a)
        vm.wait(timeout=30)
    except Exception:       # pylint: disable=broad-except
        pass                # QMP went away with QEMU
    finally:
        vm.kill()
    vm = sl.VM(tmp, sl.active_disks(store, disks), store)
    vm.shutdown()
    left = sl.unreferenced_files(store, [d])
    expect(not left, f'files nothing references: {left}')
    expect(not sl.missing_files(store), sl.missing_files(store))


def dropped_create_then_apply(tmp):
    """A create killed while saving memory is dropped on recovery; its
    frozen image stays as the backing file of the active image, and the
    next apply, which replaces that image, removes it too."""
    d = fresh(tmp, 'dropped')
    store = os.path.join(d, 'store')
    disks = two_disks(d)
    vm = sl.VM(tmp, disks, store)
    try:
        a = vm.create('A')
        vm.shutdown()
    finally:
        vm.kill()
    vm = sl.VM(tmp, sl.active_disks(store, disks), store,
               env={sl.CRASH_ENV: 'create-saving'})
    try:
        vm.write('d0', '0x55', 0, 65536)
        vm.qmp('checkpoint-create', name='B', type='standard')
        vm.wait(timeout=30)
    except Exception:       # pylint: disable=broad-except
        pass
    finally:
        vm.kill()
    vm = sl.VM(tmp, sl.active_disks(store, disks), store)
    try:
        expect([c['id'] for c in vm.checkpoints()] == [a], 'B dropped')
        vm.apply(a)
        vm.shutdown()
    finally:
        vm.kill()
    left = sl.unreferenced_files(store, [d])
    expect(not left, f'files nothing references: {left}')


def random_kills(tmp, seed, count):
    rng = random.Random(seed)
    d = fresh(tmp, f'random-{seed}')
    store = os.path.join(d, 'store')
    disks = two_disks(d)
    ids = []
    for i in range(count):
        vm = sl.VM(tmp, sl.active_disks(store, disks), store)
        timer = threading.Timer(rng.uniform(0.0, 0.25), vm.sigkill)
        try:
            vm.write('d0', hex(i % 250 + 1), 0, 65536)
            timer.start()
            for _ in range(3):
                if ids and rng.random() < 0.4:
                    vm.apply(rng.choice(ids),
                             **{'checkpoint-first': rng.random() < 0.5})
                else:
                    ids.append(vm.create(f'r{i}', timeout=10))
        except Exception:   # pylint: disable=broad-except
            pass
        finally:
            timer.cancel()
            vm.kill()
        vm = sl.VM(tmp, sl.active_disks(store, disks), store)
        ids = [c['id'] for c in vm.checkpoints()]
        vm.shutdown()
        left = sl.unreferenced_files(store, [d])
        expect(not left, f'seed {seed}, kill {i}: unreferenced {left}')
        expect(not sl.missing_files(store),
               f'seed {seed}, kill {i}: missing {sl.missing_files(store)}')


def main():
    tmp = tempfile.mkdtemp(prefix='hvcp-store-')
    checks = [
        ('1: qemu-img makes a child of a zero-size vhdx',
         zero_size_qemu_img),
        ('1: blockdev-create makes a child of a zero-size vhdx',
         zero_size_blockdev_create),
        ('1: a VM with a zero-size vhdx disk takes and applies checkpoints',
         zero_size_checkpoint),
        ('2: a forged operation deletes nothing outside what it made',
         forged_manifest),
        ('2: a forged operation never deletes an image the tree holds',
         forged_stale_referenced),
        ('3: block-commit into a frozen image is refused',
         commit_into_frozen_refused),
        ('3: create and apply refuse while a block job uses a disk',
         job_refuses_create),
        ('3: apply refuses a vhdx frozen image written while QEMU was down',
         lambda t: identity_checked(t, 'vhdx')),
        ('3: apply refuses a qcow2 frozen image written while QEMU was down',
         lambda t: identity_checked(t, 'qcow2')),
        ('4: disk.qcow2 and disk.img have children of their own',
         lambda t: names_differ_in_extension(t, ['disk.qcow2', 'disk.img'])),
        ('4: disk and disk.qcow2 have children of their own',
         lambda t: names_differ_in_extension(t, ['disk', 'disk.qcow2'])),
        ('5: children and their folder are synced before the manifest '
         'names them', children_durable),
        ('6: a stale, longer manifest.json.tmp does not corrupt the next',
         stale_manifest_tmp),
        ('7: a create killed after making its children leaves none',
         lambda t: killed_at(t, 'create-after-children', 'create')),
        ('7: an apply killed after making its children leaves none',
         lambda t: killed_at(t, 'apply-after-children', 'apply')),
        ('7: the next apply removes the image of a dropped create',
         dropped_create_then_apply),
        ('7: random kills during creates and applies leave no orphan',
         lambda t: random_kills(t, 7, 12)),
    ]
    tap = Tap()
    try:
        for desc, func in checks:
            tap.check(desc, func, tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return tap.done()


if __name__ == '__main__':
    if not os.path.exists(sl.QEMU):
        sys.exit(skip_all('no QEMU build (HVCP_BUILD)'))
    sys.exit(main())
