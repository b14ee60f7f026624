#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-2.0-or-later
"""An online merge of the active image under a running guest (issue 11).

The default guest on a vhdx disk (ext4 at /mnt/disk, its counter file)
with a standard store:

  1. checkpoint A; the guest writes 8 MiB of random data to a file;
  2. delete A: its image is the disk's original file, with one image
     built on it, the active one: an active commit into the original
     file, slowed down (QEMU_CHECKPOINT_MERGE_SPEED) so that the guest
     writes all through it (its counter, another 4 MiB file);
  3. the merge completes: CHECKPOINT_MERGE_COMPLETED, the disk on its
     original file, the differencing image deleted; the guest's counter
     went on through it, RAM and disk counters equal, both files read
     back with their md5;
  4. quit; the image passes qemu-img check and its ext4 filesystem
     e2fsck (after the journal replay a reboot would do: -fy, then -fn
     must find nothing).

Prints TAP.  Run by meson (suite hyperv-checkpoints-guest), or by hand:
    HVCP_BUILD=build/qemu HVCP_GUEST_DIR=build/guest \
    PYTHONPATH=qemu/python:tests/pylib:tests/guest \
    python3 tests/guest/test_merge.py
"""

import os
import shutil
import subprocess
import sys
import time

import guestlib
from guestlib import Guest
from hvcptap import Tap, scratch_dir
import checkpointlib as ck
from checkpointlib import expect, note

SPEED = 2 * 1024 * 1024


def md5_of(g, path):
    out = g.sh(f'sync; echo 3 > /proc/sys/vm/drop_caches; md5sum {path}')
    return out.split()[0]


def write_random(g, path, mib):
    g.sh(f'dd if=/dev/urandom of={path} bs=1M count={mib} 2>/dev/null'
         ' && sync', timeout=120)
    return md5_of(g, path)


class Scenario:
    def __init__(self, workdir):
        self.workdir = workdir
        self.store = os.path.join(workdir, 'store')
        self.disk = os.path.join(workdir, 'sys.vhdx')
        self.g = None
        self.a = None
        self.md5 = {}
        self.child = None

    def setup(self):
        guestlib.create_disk(self.disk, '64M', 'vhdx')
        self.g = Guest(disks=[(self.disk, 'vhdx')],
                       extra_args=ck.store_args(self.store), name='merge')
        ck.boot(self.g, env={'QEMU_CHECKPOINT_MERGE_SPEED': str(SPEED)})
        self.g.wait_for_ticks(2)
        self.a = ck.create(self.g, 'A')
        self.md5['/mnt/disk/before'] = write_random(self.g, '/mnt/disk/before',
                                                    8)
        self.child = ck.manifest(self.store)['active'][0]['filename']
        expect(self.child != self.disk, f'the guest writes to {self.child}')

    def merge(self):
        plan = self.g.qmp('checkpoint-delete', checkpoint=self.a)
        merges = plan['disks'][0]['merges']
        expect(len(merges) == 1 and merges[0]['online'] and
               merges[0]['direction'] == 'commit' and
               merges[0]['target'] == self.disk, f'the plan: {plan}')
        before = self.g.ticks()[-1]
        # The guest writes while the merge runs
        self.md5['/mnt/disk/during'] = write_random(self.g,
                                                    '/mnt/disk/during', 4)
        running = self.g.qmp('query-checkpoint-merges')
        note(f'while the guest wrote: {running}')
        ck.wait_event(self.g, 'CHECKPOINT_MERGE_COMPLETED', 300,
                      device='vda')
        self.g.skip_console()
        after = self.g.wait_for_ticks(2)[-1]
        note(f'counter {before} before the merge, {after} after it')
        expect(after[0] > before[0] + 2, 'the counter went on')
        expect(after[0] == after[1], f'RAM and disk counters differ: {after}')

    def after_merge(self):
        g = self.g
        expect(not g.qmp('query-checkpoint-merges'), 'no merge left')
        active = ck.manifest(self.store)['active'][0]['filename']
        expect(active == self.disk, f'the manifest names {active}')
        expect(not os.path.exists(self.child), f'{self.child} is left')
        for path, md5 in self.md5.items():
            got = md5_of(g, path)
            expect(got == md5, f'{path}: md5 {got}, written {md5}')
        g.shutdown()
        expect(g.proc.returncode == 0, f'QEMU exited {g.proc.returncode}')

    def fsck(self):
        r = subprocess.run([guestlib.qemu_binary('qemu-img'), 'check',
                            self.disk], capture_output=True, text=True)
        expect(r.returncode == 0, f'qemu-img check: {r.stdout}{r.stderr}')
        raw = os.path.join(self.workdir, 'sys.raw')
        subprocess.run([guestlib.qemu_binary('qemu-img'), 'convert', '-O',
                        'raw', self.disk, raw], check=True)
        first = subprocess.run(['e2fsck', '-fy', raw], capture_output=True,
                               text=True)
        note(f'e2fsck -fy: {first.returncode}')
        expect(first.returncode in (0, 1), first.stdout + first.stderr)
        second = subprocess.run(['e2fsck', '-fn', raw], capture_output=True,
                                text=True)
        expect(second.returncode == 0,
               f'e2fsck -fn after the replay: {second.stdout}{second.stderr}')

    def cleanup(self):
        if self.g:
            self.g.close()


def main():
    if not guestlib.require_built():
        return 1
    if not shutil.which('e2fsck'):
        print('1..0 # SKIP e2fsck is not installed')
        return 0
    tap = Tap(dependent=True)
    t0 = time.monotonic()
    with scratch_dir('hvcp-merge-', lambda: tap.failed) as workdir:
        s = Scenario(workdir)
        try:
            tap.check('boot on a vhdx disk, checkpoint A, 8 MiB written'
                      ' after', s.setup)
            tap.check('delete A: an active commit while the guest writes;'
                      ' its counter goes on', s.merge)
            tap.check('after the merge: the disk on its original file, the'
                      ' data read back', s.after_merge)
            tap.check('qemu-img check and e2fsck are clean', s.fsck)
        finally:
            s.cleanup()
    note(f'{time.monotonic() - t0:.0f}s')
    return tap.done()


if __name__ == '__main__':
    sys.exit(main())
