#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-2.0-or-later
"""Standard checkpoints end to end with the default test guest (TCG).

The guest has two disks: a vhdx disk (its /dev/vda, ext4 with the
workload's counter file and the test's file /mnt/disk/data) and a qcow2
disk (/dev/vdb, written raw: random data at 1 MiB whose md5 we compare).
QEMU runs with -checkpoints dir=STORE,type=standard.

  1. write the file and the pattern ("A"); checkpoint A;
  2. change both ("B"), let the counter run; checkpoint B;
  3. change again ("C"); apply A: A's file and pattern, the counter goes
     on from A's, the images the VM wrote to before are deleted;
  4. change ("D"); apply B with checkpoint-first: B's data; the returned
     checkpoint holds D, is a ready child of A, and the images of D are
     kept; rename it, apply it by its new name with resume false: D's
     data and counter, VM paused until "cont";
  5. HMP info checkpoints: A at the top, B and the renamed one under it,
     Now under the renamed one;
  6. refusals: an unknown checkpoint (QMP and HMP checkpoint_apply), a
     checkpoint still "creating";
  7. quit, start a new QEMU on the manifest's active images: same tree,
     and its freshly booted guest reads D's data from the disks; apply A:
     A's data and counter; no image beside the disks that the manifest
     does not reference, no state file missing.

Prints TAP.  Run by meson (suite hyperv-checkpoints-guest), or by hand:
    HVCP_BUILD=build/qemu HVCP_GUEST_DIR=build/guest \
    PYTHONPATH=qemu/python:tests/guest python3 tests/guest/test_checkpoint.py
"""

import os
import sys

import guestlib
from guestlib import Guest, GuestError
from hvcptap import Tap, scratch_dir
import checkpointlib as ck
from checkpointlib import expect, note

NEW_NAME = 'before B'


class Scenario:
    # pylint: disable=too-many-instance-attributes

    def __init__(self, workdir):
        self.workdir = workdir
        self.store = os.path.join(workdir, 'store')
        self.vhdx = os.path.join(workdir, 'sys.vhdx')
        self.qcow2 = os.path.join(workdir, 'data.qcow2')
        self.guests = []
        self.g = None
        self.ids = {}       # name -> id
        self.data = {}      # tag -> (file, md5)
        self.counter = {}   # checkpoint name -> RAM counter at its pause

    def start(self, disks, name):
        self.g = Guest(disks=disks, extra_args=ck.store_args(self.store), name=name)
        self.guests.append(self.g)
        ck.boot(self.g)

    # -- first QEMU ------------------------------------------------------

    def setup(self):
        guestlib.create_disk(self.vhdx, '64M', 'vhdx')
        guestlib.create_disk(self.qcow2, '64M', 'qcow2')
        self.start([(self.vhdx, 'vhdx'), (self.qcow2, 'qcow2')], 'ckpt1')
        self.g.wait_for_ticks(2)
        params = self.g.qmp('query-checkpoint-parameters')
        expect(params.get('type') == 'standard', f'parameters: {params}')
        expect(ck.checkpoints(self.g) == [], 'the new store is not empty')

    def take(self, name, tag):
        """Write tag's data, let the counter run, checkpoint name."""
        self.data[tag] = ck.write_data(self.g, tag)
        self.g.wait_for_ticks(2)
        self.counter[name] = ck.sync_to_tick(self.g)
        self.ids[name] = ck.create(self.g, name)
        c = ck.by_id(self.g)[self.ids[name]]
        expect(c['state'] == 'ready' and c['current'] and c['type'] == 'standard',
               f'checkpoint {name}: {c}')
        # Its frozen images: the VM's two disks, vhdx first
        formats = [d['format'] for d in c['disks']]
        expect(formats == ['vhdx', 'qcow2'],
               f'checkpoint {name} holds the disks {c["disks"]}, expected the vhdx'
               ' and the qcow2 disk (attached as guestlib does: -blockdev, then'
               ' -device virtio-blk-device,drive=NODE)')
        expect(all(os.path.exists(d['filename']) for d in c['disks']),
               f'checkpoint {name}: missing images {c["disks"]}')
        expect(ck.read_data(self.g) == self.data[tag], 'the data changed by the create')
        note(f'checkpoint {name} = {self.ids[name]} at counter {self.counter[name]}')

    def check_counter(self, name, tick, before=None):
        """tick, the first TICK after applying name, goes on from name's
        counter (+1; +2 if the guest printed one before we looked)."""
        ram, disk = tick
        base = self.counter[name]
        note(f'after applying {name}: TICK ram={ram} disk={disk}'
             f' ({name} was taken at {base}, counter before the apply {before})')
        expect(base + 1 <= ram <= base + 2,
               f'TICK ram={ram} after applying {name}, expected {base + 1}')
        expect(disk == ram, f'TICK ram={ram} disk={disk}: disk and RAM disagree')
        if before is not None:
            expect(ram < before, f'counter {ram} not below {before} before the apply')

    def apply_a(self):
        self.data['C'] = ck.write_data(self.g, 'C')
        self.g.wait_for_ticks(3)
        before = ck.last_tick(self.g)
        active_before = [f for f, _ in ck.active_disks(self.store)]
        ret = self.g.qmp('checkpoint-apply', checkpoint='A')
        expect(ret == {'powered-off': False}, f'checkpoint-apply returned {ret}')
        tick = ck.next_tick(self.g)
        ck.wait_event(self.g, 'CHECKPOINT_APPLIED', 10, id=self.ids['A'])
        expect(ck.status(self.g) == 'running', f'VM {ck.status(self.g)} after the apply')
        self.check_counter('A', tick, before)
        ck.resync(self.g)
        got = ck.read_data(self.g)
        expect(got == self.data['A'], f'after applying A: {got}, expected {self.data["A"]}'
               f' (B {self.data["B"]}, C {self.data["C"]})')
        expect(ck.current(self.g) == self.ids['A'], 'Now is not under A')
        gone = [f for f in active_before if os.path.exists(f)]
        expect(not gone, f'the images the VM wrote to before the apply are still there: {gone}')
        active = [f for f, _ in ck.active_disks(self.store)]
        expect(all(os.path.exists(f) for f in active), f'active images missing: {active}')
        frozen_a = [d['filename'] for d in ck.by_id(self.g)[self.ids['A']]['disks']]
        for f, parent in zip(active, frozen_a):
            chain = ck.backing_chain(f)
            expect(len(chain) > 1 and chain[1] == os.path.realpath(parent),
                   f'{f} is not a child of A\'s image {parent}: chain {chain}')

    def apply_b_first(self):
        self.data['D'] = ck.write_data(self.g, 'D')
        self.g.wait_for_ticks(2)
        self.counter['D'] = ck.sync_to_tick(self.g)
        active_before = [f for f, _ in ck.active_disks(self.store)]
        ret = self.g.qmp('checkpoint-apply', checkpoint=self.ids['B'],
                         **{'checkpoint-first': True})
        expect(set(ret) == {'created', 'powered-off'} and not ret['powered-off'],
               f'checkpoint-apply returned {ret}')
        created = self.ids['D'] = ret['created']
        note(f'checkpoint-first created {created}')
        tick = ck.next_tick(self.g)
        ck.wait_event(self.g, 'CHECKPOINT_CREATED', 10, id=created)
        ck.wait_event(self.g, 'CHECKPOINT_APPLIED', 10, id=self.ids['B'])
        self.check_counter('B', tick)
        ck.resync(self.g)
        got = ck.read_data(self.g)
        expect(got == self.data['B'], f'after applying B: {got}, expected {self.data["B"]}')
        cps = ck.by_id(self.g)
        c = cps.get(created)
        expect(c, f'the created checkpoint {created} is not in query-checkpoints')
        expect(c['state'] == 'ready' and c['type'] == 'standard',
               f'created checkpoint: {c}')
        expect(c.get('parent') == self.ids['A'],
               f'created checkpoint\'s parent {c.get("parent")}, expected A')
        expect(ck.current(self.g) == self.ids['B'], 'Now is not under B')
        frozen = [d['filename'] for d in c['disks']]
        expect(frozen == active_before,
               f'created checkpoint holds {frozen}, the VM wrote to {active_before}')
        expect(all(os.path.exists(f) for f in frozen), f'images of {created} missing')

    def rename(self):
        self.g.qmp('checkpoint-rename', checkpoint=self.ids['D'], name=NEW_NAME)
        c = ck.by_id(self.g)[self.ids['D']]
        expect(c['name'] == NEW_NAME, f'renamed: {c["name"]!r}')
        self.ids[NEW_NAME] = self.ids['D']
        self.counter[NEW_NAME] = self.counter['D']

    def apply_created(self):
        ret = self.g.qmp('checkpoint-apply', checkpoint=NEW_NAME, resume=False)
        expect(ret == {'powered-off': False}, f'checkpoint-apply returned {ret}')
        ck.wait_event(self.g, 'CHECKPOINT_APPLIED', 10, id=self.ids['D'])
        st = ck.status(self.g)
        expect(st == 'paused', f'VM {st} after an apply with resume false')
        self.g.skip_console()
        self.g.qmp('cont')
        (tick,) = self.g.wait_for_ticks(1)
        self.check_counter(NEW_NAME, tick)
        ck.resync(self.g)
        got = ck.read_data(self.g)
        expect(got == self.data['D'], f'after applying {NEW_NAME!r}: {got},'
               f' expected {self.data["D"]}')
        expect(ck.current(self.g) == self.ids['D'], f'Now is not under {NEW_NAME!r}')

    def info(self):
        text = ck.hmp(self.g, 'info checkpoints')
        note('info checkpoints:')
        note(text.rstrip())
        tree = ck.info_tree(text)
        a, b, d = self.ids['A'], self.ids['B'], self.ids['D']
        expect([t[2] for t in tree if t[2]] == [a, b, d] or
               [t[2] for t in tree if t[2]] == [a, d, b],
               f'checkpoints in info checkpoints: {tree}')
        depth = {t[2]: t[0] for t in tree if t[2]}
        names = {t[2]: t[1] for t in tree if t[2]}
        expect(depth[a] == 0 and depth[b] == 1 and depth[d] == 1, f'indentation: {tree}')
        expect(names == {a: 'A', b: 'B', d: NEW_NAME}, f'names: {names}')
        nows = [i for i, t in enumerate(tree) if t[1] == 'Now' and t[2] is None]
        expect(len(nows) == 1, f'{len(nows)} Now lines')
        i = nows[0]
        expect(i > 0 and tree[i - 1][2] == d and tree[i][0] == 2,
               f'Now is not drawn under {NEW_NAME!r}: {tree}')

    def refusals(self):
        err = ck.qmp_error(self.g, 'checkpoint-apply', checkpoint='no such checkpoint')
        note(f'unknown checkpoint: {err}')
        expect('no such checkpoint' in err, f'the error does not name it: {err}')
        out = ck.hmp(self.g, 'checkpoint_apply "no such checkpoint"')
        note(f'HMP checkpoint_apply: {out.strip()}')
        expect('no such checkpoint' in out, f'HMP checkpoint_apply said {out!r}')
        # A checkpoint whose memory is still being saved: give the save
        # something to do (100 MiB of tmpfs), then apply at once.
        self.g.sh('dd if=/dev/urandom of=/tmp/ballast bs=1M count=100 2>/dev/null')
        before = ck.current(self.g)
        cid = self.g.qmp('checkpoint-create', name='E', type='standard')['id']
        resp = ck.qmp_raw(self.g, 'checkpoint-apply', checkpoint=cid)
        state = ck.by_id(self.g)[cid]['state']
        ck.wait_event(self.g, 'CHECKPOINT_CREATED', 120, id=cid)
        note(f'applying a checkpoint in state {state!r}: {resp}')
        self.ids['E'] = cid
        if state != 'creating':
            note('the save was done before the apply: cannot test the refusal')
        else:
            expect('error' in resp, f'applying a creating checkpoint: {resp}')
        expect(ck.status(self.g) == 'running', f'VM {ck.status(self.g)}')
        expect(ck.current(self.g) == cid, f'Now moved: {before} -> {ck.current(self.g)}')
        self.g.sh('rm -f /tmp/ballast')

    # -- second QEMU -----------------------------------------------------

    def restart(self):
        tree = ck.by_id(self.g)
        self.g.shutdown()
        expect(self.g.proc.returncode == 0, f'QEMU exited with {self.g.proc.returncode}')
        m = ck.manifest(self.store)
        active = m.get('active', [])
        note(f'active: {active}')
        expect([d['format'] for d in active] == ['vhdx', 'qcow2'],
               f'the manifest\'s active disks: {active}')
        expect(active[0]['filename'].endswith('.avhdx')
               and active[1]['filename'].endswith('.qcow2'), f'active: {active}')
        self.start(ck.active_disks(self.store), 'ckpt2')
        # A fresh kernel reads the disks: they hold what the VM wrote
        # since it last applied 'before B' (D), not what its RAM cached
        got = ck.read_data(self.g)
        expect(got == self.data['D'], f'the new QEMU\'s guest reads {got} from its disks,'
               f' expected {self.data["D"]}')
        again = ck.by_id(self.g)
        expect(set(again) == set(tree), f'the tree changed: {list(tree)} -> {list(again)}')
        for cid, c in tree.items():
            for key in ('name', 'parent', 'state', 'current', 'disks'):
                was, now = c.get(key), again[cid].get(key)
                if key == 'disks':      # sizes may differ: compare the files
                    was = [(d['device'], d['filename']) for d in was]
                    now = [(d['device'], d['filename']) for d in now]
                expect(now == was, f'{c["name"]}: {key} {was} -> {now}')
        ck.check_store_files(self.g, self.store)

    def apply_a_again(self):
        self.g.wait_for_ticks(1)
        before = ck.last_tick(self.g)
        self.g.qmp('checkpoint-apply', checkpoint=self.ids['A'])
        tick = ck.next_tick(self.g)
        ck.wait_event(self.g, 'CHECKPOINT_APPLIED', 10, id=self.ids['A'])
        self.check_counter('A', tick, None)
        note(f'(the new QEMU had counted to {before})')
        ck.resync(self.g)
        got = ck.read_data(self.g)
        expect(got == self.data['A'], f'after applying A in the new QEMU: {got},'
               f' expected {self.data["A"]}')
        expect(ck.current(self.g) == self.ids['A'], 'Now is not under A')
        stray = ck.stray_children(self.store, [self.workdir])
        expect(not stray, f'images the manifest does not reference: {stray}')
        ck.check_store_files(self.g, self.store)

    def cleanup(self, failed):
        for g in self.guests:
            if failed and g.proc:
                note(f'console of {os.path.basename(g.tmpdir)} (end):')
                note(g.tail(20))
                note('QEMU stderr: ' + g.stderr().strip())
            g.cleanup()


def run_checks(tap, s):
    tap.check('boot with a vhdx and a qcow2 disk and an empty standard store', s.setup)
    tap.check('checkpoint A of file and pattern "A"', lambda: s.take('A', 'A'))
    tap.check('checkpoint B of file and pattern "B"', lambda: s.take('B', 'B'))
    tap.check('apply A: A\'s file, pattern and counter; old active images deleted',
              s.apply_a)
    tap.check('apply B with checkpoint-first: B\'s data; the created checkpoint'
              ' holds the state before', s.apply_b_first)
    tap.check('checkpoint-rename the created checkpoint', s.rename)
    tap.check('apply it by its new name, resume false: data and counter of before',
              s.apply_created)
    tap.check('info checkpoints: the tree, names indented, Now under the applied one',
              s.info)
    tap.check('apply refuses an unknown checkpoint (QMP and HMP) and a creating one',
              s.refusals)
    tap.check('quit; a new QEMU on the manifest\'s active images gets the tree'
              ' back, its guest boots with the data of before',
              s.restart)
    tap.check('apply A in the new QEMU: A\'s file, pattern and counter',
              s.apply_a_again)

    def quit_last():
        s.g.shutdown()
        expect(s.g.proc.returncode == 0, f'QEMU exited with {s.g.proc.returncode}')
    tap.check('quit the new QEMU', quit_last)


def main():
    if not guestlib.require_built():
        return 1

    tap = Tap(dependent=True)
    with scratch_dir('hvcp-ckpt-', lambda: tap.failed) as workdir:
        s = Scenario(workdir)
        try:
            run_checks(tap, s)
        finally:
            s.cleanup(tap.failed)
    return tap.done()


if __name__ == '__main__':
    sys.exit(main())
