# SPDX-License-Identifier: GPL-2.0-or-later
"""What the delete tests share: a model of the checkpoint tree and of
each disk's content, and the checks that compare QEMU with it.

Content is a few 64 KiB slots per disk, each holding one byte pattern
(0: never written).  Checkpoints' content is read from their frozen
images with qemu-io (read-only, shared); "Now" through an NBD export of
the guest device's node.
"""

import os
import time

import storelib as sl
from hvcptap import expect

SLOT = 65536
SLOTS = 6
DISK_SIZE = '16M'


def two_disks(d):
    """A vhdx and a qcow2 disk in folder d."""
    return [('d0', sl.mkimg(os.path.join(d, 'v.vhdx'), 'vhdx', DISK_SIZE),
             'vhdx'),
            ('d1', sl.mkimg(os.path.join(d, 'q.qcow2'), 'qcow2', DISK_SIZE),
             'qcow2')]


def read_commands(slots):
    cmds = []
    for i, pat in enumerate(slots):
        cmds += ['-c', f'read -P {pat} {i * SLOT} {SLOT}']
    return cmds


def verified(out, slots):
    """Did every read of read_commands(slots) match?"""
    return out.count(f'read {SLOT}/{SLOT}') == len(slots) and \
        'verification failed' not in out


def image_has(path, fmt, slots):
    r = sl.run(sl.QEMU_IO, '-r', '-U', '-f', fmt, path,
               *read_commands(slots))
    return verified(r.stdout + r.stderr, slots), r.stdout + r.stderr


def now_has(vm, dev, slots):
    """Does what the guest sees on disk dev hold slots?"""
    out = vm.io(dev, read_commands(slots)[1::2], False)
    return verified(out, slots), out


def wait_merges(vm, timeout=120):
    """Until no merge runs or is about to start; the merges left."""
    def settled():
        merges = vm.cmd('query-checkpoint-merges')
        busy = [m for m in merges if m['state'] == 'running' or
                (m['state'] == 'pending' and
                 m.get('reason') in ('about to start',
                                     'another merge runs first'))]
        return not busy and not any(j['type'] == 'checkpoint-merge'
                                    for j in vm.cmd('query-jobs'))

    vm.wait_until(settled, 'the merges to end', timeout)
    return vm.cmd('query-checkpoint-merges')


class Model:
    """The tree and the content QEMU must show."""

    def __init__(self, devs):
        self.devs = list(devs)
        self.now = {d: [0] * SLOTS for d in self.devs}
        self.tree = {}          # id -> {'parent', 'name', 'content'}
        self.current = None

    def snapshot(self):
        return {d: list(s) for d, s in self.now.items()}

    def write(self, dev, slot, pattern):
        self.now[dev][slot] = pattern

    def create(self, cid, name):
        self.tree[cid] = {'parent': self.current, 'name': name,
                          'content': self.snapshot()}
        self.current = cid

    def apply(self, cid):
        self.now = {d: list(s) for d, s in self.tree[cid]['content'].items()}
        self.current = cid

    def children(self, cid):
        return [k for k, v in self.tree.items() if v['parent'] == cid]

    def subtree(self, cid):
        out = [cid]
        for c in self.children(cid):
            out += self.subtree(c)
        return out

    def delete(self, cid, subtree=False):
        parent = self.tree[cid]['parent']
        gone = self.subtree(cid) if subtree else [cid]
        for c in self.children(cid):
            if not subtree:
                self.tree[c]['parent'] = parent
        if self.current in gone:
            self.current = parent
        for g in gone:
            del self.tree[g]
        return gone

    def delete_all(self):
        gone = list(self.tree)
        self.tree = {}
        self.current = None
        return gone


def check_tree(vm, model, what):
    got = {c['id']: (c.get('parent'), c['name']) for c in vm.checkpoints()}
    want = {k: (v['parent'], v['name']) for k, v in model.tree.items()}
    expect(got == want, f'{what}: tree {got} != model {want}')
    cur = [c['id'] for c in vm.checkpoints() if c['current']]
    want_cur = [model.current] if model.current else []
    expect(cur == want_cur, f'{what}: current {cur} != model {want_cur}')


def chains_of(folder):
    """Each image of folder with its backing chain, for diagnostics."""
    out = []
    for f in sorted(os.listdir(folder)):
        p = os.path.join(folder, f)
        if os.path.isfile(p):
            out.append(' <- '.join(reversed([os.path.basename(x) for x in
                                              sl.backing_chain(p)])))
    return '\n'.join(out)


def check_content(vm, model, disks, what):
    """Every checkpoint's images and "Now" hold the model's content."""
    try:
        check_content_of(vm, model, disks, what)
    except AssertionError as e:
        folder = os.path.dirname(disks[0][1])
        raise AssertionError(f'{e}\nimages:\n{chains_of(folder)}\n'
                             f'checkpoints: {vm.checkpoints()}\n'
                             f'QEMU: {vm.output()}') from None


def check_content_of(vm, model, disks, what):
    fmt = {dev: f for dev, _, f in disks}
    for c in vm.checkpoints():
        for d in c['disks']:
            slots = model.tree[c['id']]['content'][d['device']]
            ok, out = image_has(d['filename'], fmt[d['device']], slots)
            expect(ok, f'{what}: checkpoint {c["name"]} disk {d["device"]}'
                   f' ({os.path.basename(d["filename"])}) should hold'
                   f' {slots}: {out}')
    for dev in model.devs:
        ok, out = now_has(vm, dev, model.now[dev])
        expect(ok, f'{what}: "Now" of disk {dev} should hold'
               f' {model.now[dev]}: {out}')


def check_files(store, folder, what):
    left = sl.unreferenced_files(store, [folder])
    expect(not left, f'{what}: files nothing references: {left}')
    missing = sl.missing_files(store)
    expect(not missing, f'{what}: missing files: {missing}')


def snapshot_files(folder):
    """Every file under folder with its bytes and mtime."""
    out = {}
    for root, _, files in os.walk(folder):
        for f in files:
            p = os.path.join(root, f)
            with open(p, 'rb') as fh:
                out[p] = (os.stat(p).st_mtime_ns, fh.read())
    return out


def poll(fn, timeout=30, step=0.1):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        r = fn()
        if r:
            return r
        time.sleep(step)
    return fn()
