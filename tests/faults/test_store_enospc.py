#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-2.0-or-later
"""ENOSPC on the checkpoint store's filesystem: the store is a folder on
a small tmpfs that the test mounts (as root; skipped if it cannot) and
fills, the disks are outside it.

  - manifest: the filesystem is full when create, apply or rename
    write the manifest: the command fails saying why, and nothing
    changed (manifest, files of the store and beside the disks, tree,
    the VM runs, the guest's data);
  - state file: room for the manifest but not for the memory (1 MiB of
    guest RAM is filled first): the create fails (command or job, saying
    why), the tree is the same, no state folder or manifest.json.tmp is
    left, the VM runs on with its data;
  - then, with room again, a checkpoint is taken, and a new QEMU on the
    store's active images opens it with the same tree and data.

Prints TAP.  By hand (as root):
    HVCP_BUILD=build/qemu PYTHONPATH=qemu/python:tests/faults \\
    python3 tests/faults/test_store_enospc.py [FILTER]
"""

import os
import shutil
import sys
import tempfile

import faultlib as fl
from faultlib import expect, note

SIZE = '8M'


def setup(name):
    workdir = tempfile.mkdtemp(prefix=f'faults-{name}-', dir='/tmp')
    mnt = fl.Mount(os.path.join(workdir, 'mnt'), SIZE)
    return workdir, mnt, os.path.join(mnt.path, 'store')


def unchanged(vm, workdir, store, before, what):
    m, files, tree = before
    expect(vm.running(), f'the VM does not run after the failed {what}')
    expect(fl.manifest_text(store) == m, f'the failed {what} changed the'
           ' manifest')
    now = fl.listing(workdir)
    now = [f for f in now if not f.endswith('filler')]
    expect(now == files, f'the failed {what} left or removed files:'
           f' {sorted(set(now) ^ set(files))}')
    got = vm.checkpoints()
    expect(got == tree, f'the tree changed: {got}')


def snapshot(vm, workdir, store):
    files = [f for f in fl.listing(workdir) if not f.endswith('filler')]
    return fl.manifest_text(store), files, vm.checkpoints()


def no_space(desc):
    expect('no space' in desc.lower(), f'the error does not say the store'
           f' is full: {desc}')


def op_create(vm, ctx):
    how, what = vm.create('B')
    note(f'checkpoint-create: {how}: {what}')
    expect(how == 'error', f'checkpoint-create on a full store: {how} {what}')
    no_space(what)
    return 0xbb


def op_apply(vm, ctx):
    r = vm.raw('checkpoint-apply', checkpoint='A')
    note(f'checkpoint-apply: {r}')
    expect('error' in r, f'checkpoint-apply on a full store: {r}')
    no_space(r['error']['desc'])
    return 0xbb


def op_rename(vm, ctx):
    r = vm.raw('checkpoint-rename', checkpoint='A', name='renamed')
    note(f'checkpoint-rename: {r}')
    expect('error' in r, f'checkpoint-rename on a full store: {r}')
    no_space(r['error']['desc'])
    return 0xbb


MANIFEST_OPS = {'create': op_create, 'apply': op_apply, 'rename': op_rename}


def start_after_a(workdir, store):
    """A VM on new disks whose checkpoint A holds 0xaa, "Now" 0xbb;
    returns it and its disks."""
    disks = fl.make_images(workdir)
    vm = fl.VM(workdir, disks, store=store).start()
    vm.write_pattern(0xaa)
    vm.create_ok('A')
    vm.write_pattern(0xbb)
    return vm, disks


def case_manifest(op):
    workdir, mnt, store = setup(f'manifest-{op}')
    vm = None
    try:
        with mnt:
            vm, disks = start_after_a(workdir, store)
            before = snapshot(vm, workdir, store)
            mnt.fill(0)
            pattern = MANIFEST_OPS[op](vm, {})
            unchanged(vm, workdir, store, before, op)
            vm.check_pattern(pattern)
            fl.expect_store(store, [workdir])
            os.unlink(os.path.join(mnt.path, 'filler'))
            vm.create_ok('after')
            vm.check_pattern(pattern)
            vm.quit()
            fl.expect_store(store, [workdir])
            fl.restart_check(workdir, store, disks, pattern)
    finally:
        if vm:
            vm.kill()
        shutil.rmtree(workdir, ignore_errors=True)


def case_state_file():
    workdir, mnt, store = setup('state')
    vm = None
    try:
        with mnt:
            vm, disks = start_after_a(workdir, store)
            vm.fill_ram(0x5a, 0x100000)
            before = snapshot(vm, workdir, store)
            # room for manifests, not for 1 MiB of RAM
            mnt.fill(64 * 1024)
            how, what = vm.create('B')
            note(f'checkpoint-create: {how}: {what}')
            expect(how != 'ok', 'the checkpoint was taken without room for'
                   ' its state file')
            # checked at the end, so that the rest is seen too
            silent = not what
            if what:
                no_space(what)
            expect(vm.running(), 'the VM does not run after the failed create')
            tree = vm.checkpoints()
            expect([c['id'] for c in tree] == [c['id'] for c in before[2]],
                   f'the tree changed: {tree}')
            vm.check_pattern(0xbb)
            problems = fl.check_store(store, [workdir])
            expect(not problems, 'store inconsistent after the failed save: '
                   + '; '.join(problems))
            m = fl.manifest(store)
            expect([c['id'] for c in m['checkpoints']] ==
                   [c['id'] for c in before[2]],
                   f'the manifest on disk still lists {m["checkpoints"]}')
            os.unlink(os.path.join(mnt.path, 'filler'))
            vm.create_ok('after')
            vm.check_pattern(0xbb)
            vm.quit()
            fl.expect_store(store, [workdir])
            fl.restart_check(workdir, store, disks, 0xbb)
            expect(not silent, 'the create failed (its memory save) and'
                   ' CHECKPOINT_CREATE_FAILED does not say why')
    finally:
        if vm:
            vm.kill()
        shutil.rmtree(workdir, ignore_errors=True)


def main():
    points = [(f'{op}: the store is full when the manifest is written',
               case_manifest, op) for op in MANIFEST_OPS]
    points.append(('create: the store is full when the state file is'
                   ' written', case_state_file))
    return fl.run_points(points)


if __name__ == '__main__':
    sys.exit(main())
