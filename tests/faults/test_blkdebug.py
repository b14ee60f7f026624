#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-2.0-or-later
"""Fault injection with blkdebug: I/O errors (EIO, ENOSPC) on writes
and flushes of a disk's image during checkpoint operations.

QEMU runs with -accel qtest (no guest code) and two disks, a qcow2
(vd0) and a vhdx (vd1), given as -blockdev chains.  Right before the
operation, a blkdebug node whose rules fail every write or every flush
is put between the format node of one disk (the image the VM writes to
now) and its file node (blockdev-reopen), and taken out after it.

For each operation the outcome must be a clear error (the command
fails, or its job fails, saying why) or a success, and then:
  - the guest's data is intact: what was written before reads back
    through the active images;
  - a failed operation changed nothing: the manifest is the same, no
    file was left (differencing image, state folder), the VM runs;
  - the store is consistent: the manifest parses, every file it names
    exists, no orphan image, no manifest.json.tmp, no operation left;
  - without the fault, the next checkpoint is taken, and a new QEMU on
    the store's active images opens it with the same tree and data.

OPERATIONS maps an operation to its function: add delete, merge and
export there once they exist.

Prints TAP.  By hand:
    HVCP_BUILD=build/qemu PYTHONPATH=qemu/python:tests/faults \\
    python3 tests/faults/test_blkdebug.py [FILTER]
"""

import errno
import os
import shutil
import sys
import tempfile

import faultlib as fl
from faultlib import expect, note

ERRNOS = {'EIO': errno.EIO, 'ENOSPC': errno.ENOSPC}


def fresh(name):
    d = tempfile.mkdtemp(prefix=f'faults-{name}-', dir='/tmp')
    return d, os.path.join(d, 'store')


def check_error(how, what, err):
    """A failure must say why: the errno's text or QEMU's I/O error."""
    expect(what, f'the operation failed ({how}) without saying why')
    want = os.strerror(err)
    expect(want.lower() in what.lower() or 'io error' in what.lower() or
           'i/o error' in what.lower(),
           f'the error does not say what failed ({want}): {what}')


def dirty(vm, ctx):
    """With a fault on flushes only, the guest writes (they succeed):
    the operation has something to flush."""
    # (vhdx flushes while it allocates: its writes fail too)
    if ctx['iotype'] == 'flush' and ctx['fmt'] == 'qcow2':
        vm.write_pattern(0xdd)
        ctx['dirty'] = 0xdd


def op_create(vm, disk, conf, err, ctx):
    """checkpoint-create with the fault on the current images."""
    before_m = fl.manifest_text(ctx['store'])
    before_files = fl.listing(ctx['workdir'], ctx['store'])
    before_tree = vm.checkpoints()
    where = vm.inject(disk, conf)
    dirty(vm, ctx)
    how, what = vm.create('faulty')
    note(f'checkpoint-create: {how}: {what}')
    if how == 'ok':
        ctx['removed'] = True       # the node is a frozen image now
        vm.raw('blockdev-del', **{'node-name': f'dbg{disk}'})
    else:
        check_error(how, what, err)
        # a node with data it cannot flush cannot be reopened: then the
        # fault stays, and the case ends with the checks in this QEMU
        ctx['stuck'] = not vm.uninject(disk, where)
        expect(vm.running(), 'the VM does not run after the failed create')
        tree = vm.checkpoints()
        if how == 'error':
            expect(tree == before_tree, f'the tree changed: {tree}')
            expect(fl.manifest_text(ctx['store']) == before_m,
                   'the failed create changed the manifest')
            now = fl.listing(ctx['workdir'], ctx['store'])
            expect(now == before_files, 'the failed create left or removed'
                   f' files: {sorted(set(now) ^ set(before_files))}')
        else:
            # the save failed after the switch: dropped, disks on children
            expect([c['id'] for c in tree] == [c['id'] for c in before_tree],
                   f'the failed checkpoint is in the tree: {tree}')
    ctx['outcome'] = how


def op_apply(vm, disk, conf, err, ctx):
    """checkpoint-apply A with the fault on the images replaced."""
    before_m = fl.manifest_text(ctx['store'])
    before_files = fl.listing(ctx['workdir'], ctx['store'])
    where = vm.inject(disk, conf)
    dirty(vm, ctx)
    r = vm.raw('checkpoint-apply', checkpoint='A')
    note(f'checkpoint-apply: {r}')
    if 'error' in r:
        what = r['error']['desc']
        check_error('error', what, err)
        ctx['stuck'] = not vm.uninject(disk, where)
        expect(vm.running(), 'the VM does not run after the failed apply')
        expect(fl.manifest_text(ctx['store']) == before_m,
               'the failed apply changed the manifest')
        now = fl.listing(ctx['workdir'], ctx['store'])
        expect(now == before_files, 'the failed apply left or removed'
               f' files: {sorted(set(now) ^ set(before_files))}')
        vm.check_pattern(ctx.get('dirty', 0xbb))   # the data before
        ctx['outcome'] = 'error'
    else:
        ev = vm.event(lambda e: e['event'] == 'CHECKPOINT_APPLIED')
        expect(ev and ev['data']['id'] == ctx['A'], f'CHECKPOINT_APPLIED: {ev}')
        # the replaced node is gone; blkdebug stays until deleted
        vm.raw('blockdev-del', **{'node-name': f'dbg{disk}'})
        expect(vm.running(), 'the VM does not run after the apply')
        vm.check_pattern(0xaa)      # A's data
        cur = [c['id'] for c in vm.checkpoints() if c.get('current')]
        expect(cur == [ctx['A']], f'current is {cur}, expected A')
        ctx['outcome'] = 'ok'
    ctx['removed'] = True


OPERATIONS = {'create': op_create, 'apply': op_apply}


def case(op, disk, iotype, errname):
    workdir, store = fresh(f'{op}-{disk}-{iotype}-{errname}')
    vm = None
    ctx = {'workdir': workdir, 'store': store, 'iotype': iotype,
           'fmt': fl.IMAGES[disk][1]}
    try:
        disks = fl.make_images(workdir)
        conf = fl.blkdebug_conf(os.path.join(workdir, 'rules.conf'), iotype,
                                ERRNOS[errname])
        vm = fl.VM(workdir, disks, store=store).start()
        vm.write_pattern(0xaa)
        expected = 0xaa
        if op != 'create':
            vm.fill_ram(0xaa)
            ctx['A'] = vm.create_ok('A')
            vm.write_pattern(0xbb)
            expected = 0xbb
        # A new QEMU: a vhdx opened and not written yet must first
        # change its DataWriteGuid (a header write) before a child of it
        # can be made
        vm.quit()
        vm = fl.VM(workdir, fl.active_disks(store, disks), store=store,
                   name='vm2').start()
        ctx['vm'] = vm
        OPERATIONS[op](vm, disk, conf, ERRNOS[errname], ctx)
        if op == 'apply' and ctx['outcome'] == 'ok':
            expected = 0xaa
        elif ctx.get('dirty'):
            expected = ctx['dirty']
        # the data written before the fault reads back
        vm.check_pattern(expected)
        fl.expect_store(store, [workdir])
        if ctx.get('stuck'):
            return
        # without the fault, the VM writes and checkpoints go on
        vm.write_pattern(0xcc)
        vm.create_ok('after')
        vm.check_pattern(0xcc)
        fl.expect_store(store, [workdir])
        vm.quit()
        fl.restart_check(workdir, store, disks, 0xcc)
    finally:
        if vm:
            vm.kill()
            if vm.proc and vm.proc.returncode not in (0, None, -9):
                note(f'QEMU exited with {vm.proc.returncode}')
            if 'assert' in vm.output().lower():
                note(vm.output()[-1500:])
        shutil.rmtree(workdir, ignore_errors=True)


def case_filter():
    """A disk with a filter between its format node and its file node
    (blkdebug without rules; QEMU's preallocate filter goes there too)
    can be checkpointed: its image is the file under the filter."""
    workdir, store = fresh('filter')
    vm = None
    try:
        disks = fl.make_images(workdir)
        conf = os.path.join(workdir, 'none.conf')
        open(conf, 'w').close()
        vm = fl.VM(workdir, disks, store=store).start()
        vm.write_pattern(0xaa)
        vm.inject(0, conf)
        how, what = vm.create('A')
        expect(how == 'ok', f'checkpoint-create of a disk with a filter'
               f' under its format node: {how}: {what}')
        fl.expect_store(store, [workdir])
        vm.check_pattern(0xaa)
    finally:
        if vm:
            vm.kill()
        shutil.rmtree(workdir, ignore_errors=True)


def main():
    points = [(f'{op}: {errname} on every {iotype} of the'
               f' {fl.IMAGES[disk][1]} disk', case, op, disk, iotype, errname)
              for op in OPERATIONS for disk in (0, 1)
              for iotype in ('flush', 'write') for errname in ERRNOS]
    points.append(('create: a filter between format and file node is'
                   ' skipped', case_filter))
    return fl.run_points(points)


if __name__ == '__main__':
    sys.exit(main())
