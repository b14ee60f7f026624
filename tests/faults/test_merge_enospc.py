#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-2.0-or-later
"""A merge into a filesystem that is too small (issue 11): the disk is a
vhdx on a small tmpfs that the test mounts (as root; skipped if it
cannot).

  - the free-space check: the filesystem is filled until the bytes to
    copy do not fit: the checkpoint is deleted from the tree, the merge
    stays pending with a reason that names the folder, the bytes needed
    and the bytes free; with room again, checkpoint-merge-resume runs
    it and the content is intact;
  - ENOSPC during the copy: the check passes, then (the copy slowed
    down by QEMU_CHECKPOINT_MERGE_SPEED) the filesystem fills: the merge
    pauses (state paused, the reason), the VM runs on with its data;
    space is freed, job-resume, and the merge completes
    with the content intact and the disk back on its original file.
"""

import os
import shutil
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [os.path.join(HERE, '..', 'pylib'),
                os.path.join(HERE, '..', 'store')]
from hvcptap import Tap, expect, note, skip_all  # noqa: E402
import faultlib as fl  # noqa: E402
import storelib as sl  # noqa: E402
import deletelib as dl  # noqa: E402

BLOCK = 8 * 1024 * 1024
SLOTS = [0, 3, 5, 7]          # 64 KiB writes, each in its own 8 MiB block
BIG = 8 * 1024 * 1024         # what the slowed-down merge copies


def make_disk(folder):
    path = os.path.join(folder, 'disk.vhdx')
    sl.run(sl.QEMU_IMG, 'create', '-q', '-f', 'vhdx', '-o',
           f'block_size={BLOCK}', path, '64M', check=True)
    return [('d0', path, 'vhdx')]


def write_blocks(vm, pattern):
    for b in SLOTS:
        vm.write('d0', pattern, b * BLOCK, 65536)


def content_is(vm, pattern):
    return all(vm.pattern_is('d0', pattern, b * BLOCK, 65536) for b in SLOTS)


def merges_of(vm, state):
    return [m for m in vm.cmd('query-checkpoint-merges')
            if m['state'] == state]


def wait_state(vm, state, what):
    vm.wait_until(lambda: merges_of(vm, state), what, 60)
    return merges_of(vm, state)[0]


def free_space_check(tmp):
    work = tempfile.mkdtemp(dir=tmp)
    with fl.Mount(os.path.join(work, 'mnt'), '48M') as mnt:
        disks = make_disk(mnt.path)
        vm = sl.VM(tmp, disks, os.path.join(work, 'store'))
        try:
            a = vm.create('A')
            write_blocks(vm, 0x61)
            mnt.fill(64 * 1024)       # less than the 256 KiB to copy
            r = vm.cmd('checkpoint-delete', checkpoint=a)
            note(f'plan: {r}')
            pend = r['disks'][0]['pending']
            expect(not r['disks'][0]['merges'] and len(pend) == 1, r)
            why = pend[0]['reason']
            expect('not enough free space' in why and mnt.path in why and
                   'needs up to 262144 bytes' in why, why)
            expect(not vm.checkpoints(), 'the checkpoint left the tree')
            m = merges_of(vm, 'pending')
            expect(m and 'not enough free space' in m[0]['reason'], m)
            expect(content_is(vm, 0x61), 'the data before any merge')
            os.unlink(os.path.join(mnt.path, 'filler'))
            vm.cmd('checkpoint-merge-resume')
            dl.wait_merges(vm)
            expect(not vm.cmd('query-checkpoint-merges'), 'merged')
            expect(content_is(vm, 0x61), 'the data after the merge')
            expect(sl.manifest(vm_store(work))['active'][0]['filename'] ==
                   disks[0][1], 'the disk is back on its original file')
            vm.shutdown()
        finally:
            vm.kill()


def vm_store(work):
    return os.path.join(work, 'store')


def enospc_pauses(tmp):
    """The copy is slowed down (QEMU_CHECKPOINT_MERGE_SPEED) so that the
    filesystem fills after the check passed and before the copy ends."""
    work = tempfile.mkdtemp(dir=tmp)
    with fl.Mount(os.path.join(work, 'mnt'), '40M') as mnt:
        disks = make_disk(mnt.path)
        vm = sl.VM(tmp, disks, vm_store(work),
                   env={'QEMU_CHECKPOINT_MERGE_SPEED': str(4 * 1024 * 1024)})
        try:
            a = vm.create('A')
            vm.write('d0', 0x62, 0, BIG)
            r = vm.cmd('checkpoint-delete', checkpoint=a)
            expect(r['disks'][0]['merges'], f'the check passes: {r}')
            mnt.fill(1024 * 1024)
            m = wait_state(vm, 'paused', 'the merge to pause')
            note(f'paused: {m}')
            expect('no space left' in m['reason'], m)
            ev = [e['data'] for e in vm.qmp_conn.get_events()
                  if e['event'] == 'CHECKPOINT_MERGE_PAUSED']
            expect(ev and ev[0]['state'] == 'paused' and
                   'no space left' in ev[0]['reason'],
                   f'CHECKPOINT_MERGE_PAUSED: {ev}')
            expect(vm.cmd('query-status')['status'] == 'running',
                   'the VM runs on')
            expect(vm.pattern_is('d0', 0x62, 0, BIG), 'the data while paused')
            os.unlink(os.path.join(mnt.path, 'filler'))
            # job-resume on the merge job does what checkpoint-merge-resume
            # does (the first test uses that)
            vm.cmd('job-resume', id=r['job-id'])
            dl.wait_merges(vm)
            left = vm.cmd('query-checkpoint-merges')
            expect(not left, f'the merge completed: {left}')
            ev = [e['data'] for e in vm.qmp_conn.get_events()
                  if e['event'] == 'CHECKPOINT_MERGE_COMPLETED']
            expect(ev and ev[0]['target'] == disks[0][1],
                   f'CHECKPOINT_MERGE_COMPLETED: {ev}')
            expect(vm.pattern_is('d0', 0x62, 0, BIG), 'the data after it')
            node = vm.node_of('d0')
            files = [b['inserted']['file'] for b in vm.cmd('query-block')
                     if b['inserted']['node-name'] == node]
            expect(files == [disks[0][1]], f'on the original file: {files}')
            vm.shutdown()
        finally:
            vm.kill()
        r = sl.run(sl.QEMU_IMG, 'check', disks[0][1])
        expect(r.returncode == 0, f'qemu-img check: {r.stdout}{r.stderr}')


def main():
    tmp = tempfile.mkdtemp(prefix='hvcp-merge-enospc-')
    tap = Tap()
    try:
        tap.check('a merge that does not fit stays pending with the reason',
                  free_space_check, tmp)
        tap.check('ENOSPC during a merge pauses it; it resumes and completes',
                  enospc_pauses, tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return tap.done()


if __name__ == '__main__':
    if not os.path.exists(sl.QEMU):
        sys.exit(skip_all('no QEMU build (HVCP_BUILD)'))
    sys.exit(main())
