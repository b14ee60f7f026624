#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-2.0-or-later
"""Crash safety of checkpoint create and apply, with the default guest.

QEMU kills itself with SIGKILL when it reaches the point named by
QEMU_CHECKPOINT_CRASH_AT.  For each point: boot the guest (a vhdx disk
with ext4 as /dev/vda, a qcow2 disk written raw as /dev/vdb) with a
standard store and the variable set; write data; run the operation; see
QEMU die (SIGKILL).  The manifest left by the crash must record the
operation (or the checkpoint "creating") and know every differencing
image on disk (the tree or "active" references it, or the operation
lists it), so that recovery can decide about it.  Start a new QEMU on
the images the manifest names as active; then:

  - the store opens: query-checkpoints answers, no operation is left
    in the manifest, no checkpoint is "creating";
  - every image query-checkpoints names and every state file exists,
    and no folder in the store belongs to no checkpoint;
  - no differencing child (<disk>_<uuid>.avhdx/.qcow2) lies beside the
    disks that the manifest does not reference (with backing chains),
    and the files the recorded operation listed are gone unless the
    manifest references them;
  - the guest boots on the data it must have:
      create-before-switch, create-after-switch, create-saving: the
        data written before the create, and no checkpoint in the tree;
      apply-after-switch: the apply is rolled back: current checkpoint,
        active images and data as before the apply;
      apply-after-commit: the apply took effect: "current" is the
        applied checkpoint, the disks are new children of its images
        and hold its data, the images the VM wrote to before are gone;
  - a new checkpoint can be taken.

For the apply points, checkpoints A and B are taken first (each with
its own data), the data changed again, then A is applied.  At
create-saving the guest keeps writing to both disks (the VM runs while
its memory is saved), so that the kill cuts guest writes.

Prints TAP.  Run by meson (suite hyperv-checkpoints-guest), or by hand:
    HVCP_BUILD=build/qemu HVCP_GUEST_DIR=build/guest \\
    PYTHONPATH=qemu/python:tests/guest python3 tests/guest/test_checkpoint_crash.py [POINT...]
"""

import os
import signal
import sys

import guestlib
from guestlib import Guest, GuestError
from hvcptap import Tap, scratch_dir
import checkpointlib as ck
from checkpointlib import expect, note

POINTS = ['create-before-switch', 'create-after-switch', 'create-saving',
          'apply-after-switch', 'apply-after-commit']
DEATH_TIMEOUT = 120
# Writes all over a 16 MiB file and over /dev/vdb from 32 to 48 MiB (the
# pattern is at 1 MiB), synced
NOISE = ('i=0; while :; do i=$(((i * 1103515245 + 12345) % 2147483648));'
         ' dd if=/dev/urandom of=/mnt/disk/noise bs=4k count=1 conv=notrunc'
         ' seek=$((i % 4096)) 2>/dev/null;'
         ' dd if=/dev/urandom of=/dev/vdb bs=4k count=1 conv=notrunc'
         ' seek=$((8192 + i % 4096)) 2>/dev/null; sync; done')


def crash(point, workdir, guests):
    store = os.path.join(workdir, 'store')
    vhdx = guestlib.create_disk(os.path.join(workdir, 'sys.vhdx'), '64M', 'vhdx')
    qcow2 = guestlib.create_disk(os.path.join(workdir, 'data.qcow2'), '64M', 'qcow2')
    base = [(vhdx, 'vhdx'), (qcow2, 'qcow2')]

    # -- until the crash -------------------------------------------------
    g = Guest(disks=base, extra_args=ck.store_args(store), name='crash1')
    guests.append(g)
    ck.boot(g, {ck.CRASH_ENV: point})
    g.wait_for_ticks(1)
    data, ids = {}, {}
    if point.startswith('apply'):
        for name in ('A', 'B'):
            data[name] = ck.write_data(g, name)
            ids[name] = ck.create(g, name)
            disks = ck.by_id(g)[ids[name]]['disks']
            expect([d['format'] for d in disks] == ['vhdx', 'qcow2'],
                   f'checkpoint {name} holds the disks {disks}, expected the'
                   ' vhdx and the qcow2 disk')
        data['now'] = ck.write_data(g, 'now')
        before = ck.manifest(store)
        resp = trigger(g, 'checkpoint-apply', checkpoint='A')
    else:
        data['now'] = ck.write_data(g, 'now')
        if point == 'create-saving':
            # The VM runs while its memory is saved: have it write to
            # both disks all the time, so that the kill cuts writes
            g.qga('guest-exec', path='/bin/sh', arg=['-c', NOISE])
        before = ck.manifest(store)
        resp = trigger(g, 'checkpoint-create', name='A', type='standard')
    try:
        g.proc.wait(DEATH_TIMEOUT)
    except Exception as e:      # pylint: disable=broad-except
        raise AssertionError(f'QEMU still runs {DEATH_TIMEOUT}s after the operation'
                             f' ({resp})') from e
    expect(g.proc.returncode == -signal.SIGKILL,
           f'QEMU exited with {g.proc.returncode}, not killed by SIGKILL ({resp});'
           f' stderr: {g.stderr().strip()}')
    expect(point in g.stderr(), f'QEMU did not say where it died: {g.stderr().strip()}')
    g.kill()
    at_crash = ck.manifest(store)
    op = at_crash.get('operation')
    note(f'manifest at the crash: operation {op}; checkpoints '
         f'{[(c["name"], c["state"]) for c in at_crash.get("checkpoints", [])]}')
    op_files = (op or {}).get('new-files', []) + (op or {}).get('stale-files', [])
    # Not fatal at once: what recovery makes of it is worth seeing too
    problems = check_crash_manifest(point, workdir, at_crash)
    for p in problems:
        note(f'problem: {p}')

    # -- after the restart -----------------------------------------------
    disks = ck.active_disks(store, base)
    note(f'restarting on {[os.path.basename(f) for f, _ in disks]}')
    g = Guest(disks=disks, extra_args=ck.store_args(store), name='crash2')
    guests.append(g)
    ck.boot(g)
    cps = ck.checkpoints(g)
    m = ck.manifest(store)
    expect('operation' not in m, f'the manifest still records {m.get("operation")}')
    creating = [c['name'] for c in cps if c['state'] != 'ready']
    expect(not creating, f'checkpoints not ready after the restart: {creating}')
    ck.check_store_files(g, store)
    stray = ck.stray_children(store, [workdir])
    expect(not stray, f'images the manifest does not reference: {stray}')
    refs = ck.referenced_files(store)
    left = [f for f in op_files if os.path.exists(f) and os.path.realpath(f) not in refs]
    expect(not left, f'files of the crashed operation left behind: {left}')

    got = ck.read_data(g)
    if point.startswith('create'):
        expect(cps == [], f'checkpoints after a crashed create: {cps}')
        expect(got == data['now'], f'the guest reads {got}, expected {data["now"]}'
               ' (written before the create)')
    else:
        expect(sorted(c['id'] for c in cps) == sorted(ids.values()),
               f'checkpoints {[(c["name"], c["id"]) for c in cps]}, expected {ids}')
        cur = ck.current(g)
        active = [d['filename'] for d in m['active']]
        old_active = [d['filename'] for d in before['active']]
        if point == 'apply-after-switch':
            expect(cur == ids['B'], f'current is {cur}, expected B ({ids["B"]}) as'
                   ' before the apply')
            expect(active == old_active, f'active images {active}, expected those of'
                   f' before the apply {old_active}')
            expect(got == data['now'], f'the guest reads {got}, expected {data["now"]}'
                   ' (written before the apply)')
        else:
            expect(cur == ids['A'], f'current is {cur}, expected A ({ids["A"]})')
            frozen = [d['filename'] for d in ck.by_id(g)[ids['A']]['disks']]
            for f, parent in zip(active, frozen):
                chain = ck.backing_chain(f)
                expect(len(chain) > 1 and chain[1] == os.path.realpath(parent),
                       f'{f} is not a child of A\'s image {parent}: {chain}')
            gone = [f for f in old_active if os.path.exists(f)]
            expect(not gone, f'images of before the apply left: {gone}')
            expect(got == data['A'], f'the guest reads {got}, expected A\'s {data["A"]}')

    # The store works on
    cid = ck.create(g, 'after')
    after = ck.by_id(g)[cid]
    expect([d['format'] for d in after['disks']] == ['vhdx', 'qcow2'],
           f'a checkpoint after the restart holds the disks {after["disks"]}')
    g.shutdown()
    expect(g.proc.returncode == 0, f'QEMU exited with {g.proc.returncode}')
    expect(not problems, '; '.join(problems))


def check_crash_manifest(point, workdir, m):
    """The manifest at the crash records what the point says, and knows
    every differencing image on disk: the tree or "active" references
    it, or the recorded operation lists it (as made, or as replaced), so
    that recovery can keep or remove it."""
    op = m.get('operation') or {}
    known = set(op.get('new-files', []) + op.get('stale-files', []))
    known |= {d['filename'] for d in m.get('active', [])}
    known |= {d['filename'] for c in m.get('checkpoints', []) for d in c['disks']}
    images = [f for f in sorted(os.listdir(workdir)) if ck.CHILD_RE.search(f)]
    unknown = [f for f in images if os.path.join(workdir, f) not in known]
    problems = []
    if unknown:
        problems.append(f'at {point} the manifest knows nothing of {unknown}'
                        f' (operation {op or None}, active {m.get("active")})')
    if point in ('create-after-switch', 'create-saving') and len(images) != 2:
        problems.append(f'at {point} the disks are switched, but the differencing'
                        f' images on disk are {images}, expected two new children')
    if point.startswith('create'):
        creating = [c for c in m.get('checkpoints', []) if c['state'] == 'creating']
        if op.get('op') != 'create' and len(creating) != 1:
            problems.append(f'at {point} the manifest records neither a create'
                            f' (operation {op or None}) nor a checkpoint "creating"')
    elif op.get('op') != 'apply':
        problems.append(f'at {point} the manifest records the operation {op or None},'
                        ' expected an apply')
    return problems


def trigger(g, cmd, **args):
    """Run the command that is to crash QEMU; returns its response, or
    what the QMP client raised when the connection died."""
    try:
        return ck.qmp_raw(g, cmd, **args)
    except Exception as e:      # pylint: disable=broad-except
        return f'{type(e).__name__}: {e}'


def main():
    if not guestlib.require_built():
        return 1

    points = sys.argv[1:] or POINTS
    tap = Tap()
    for point in points:
        failures = tap.failures

        def failed(before=failures):
            return tap.failures > before
        with scratch_dir('hvcp-crash-', failed) as workdir:
            guests = []
            try:
                tap.check(f'crash at {point}: the store recovers, no data lost,'
                          ' no stray file',
                          lambda: crash(point, workdir, guests))  # pylint: disable=cell-var-from-loop
            finally:
                for g in guests:
                    if failed() and g.proc:
                        note(f'console of {os.path.basename(g.tmpdir)} (end):')
                        note(g.tail(12))
                        note('QEMU stderr: ' + g.stderr().strip())
                    g.cleanup()
    return tap.done()


if __name__ == '__main__':
    sys.exit(main())
