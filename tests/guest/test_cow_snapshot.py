#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-2.0-or-later
"""Copy-on-write RAM snapshot with the default test guest (TCG, microvm).

For anonymous RAM and for memory-backend-memfd:
  1. boot the guest; its workload prints "TICK ram=<n> disk=<m>" each
     second; through the guest agent, fill a 48 MiB tmpfs file with
     random data and take its md5 (tmpfs lives in guest RAM);
  2. prepare the snapshot (RAM armed while the guest runs), stop, copy
     the disk image (the engine saves RAM and devices only: the disk
     switch is the checkpoint manager's job), begin the snapshot,
     resume; note the counter at begin;
  3. while the save runs, rewrite the tmpfs file over and over, and a
     second buffer all the time (heavy guest writes to RAM, i.e. many
     copy-on-write faults);
  4. after COW_SNAPSHOT_DONE let the counter run on, stop, put the
     disk copy back, load the state file, resume;
  5. the next TICK is the counter at begin plus one, and the tmpfs
     file's md5 is the one from before the snapshot.

Prints TAP.  Run by meson (suite hyperv-checkpoints-guest), or by hand:
    PYTHONPATH=qemu/python:tests/guest python3 tests/guest/test_cow_snapshot.py
"""

import os
import shutil
import sys
import tempfile
import time

import guestlib
from guestlib import Guest
from hvcptap import Tap, expect

BUF = '/tmp/cowsnap-buf'
BUF_MIB = 48
BOOT_TIMEOUT = 90


def md5(g):
    return g.sh(f'md5sum {BUF}').split()[0]


def last_tick_before(g, nlines):
    """The RAM counter of the last TICK among the first nlines lines."""
    for line in reversed(g.console_lines()[:nlines]):
        m = guestlib.TICK_RE.match(line)
        if m:
            return int(m.group(1))
    raise AssertionError('no tick before the snapshot')


def snapshot_round_trip(tmp, extra_args):
    disk = os.path.join(tmp, 'disk.img')
    guestlib.create_disk(disk, '64M', 'raw')
    with Guest(disks=[(disk, 'raw')], extra_args=extra_args, name='cow') as g:
        g.wait_ready(BOOT_TIMEOUT)
        g.sh(f'dd if=/dev/urandom of={BUF} bs=1M count={BUF_MIB} 2>/dev/null')
        sum_begin = md5(g)
        # Background noise: another buffer rewritten without pause, from
        # before the snapshot until after it (restored along with RAM).
        g.qga('guest-exec', path='/bin/sh', arg=[
            '-c', 'while :; do dd if=/dev/urandom of=/tmp/noise bs=1M '
            'count=16 conv=notrunc 2>/dev/null; done'])
        state = os.path.join(tmp, 'snap.state')
        disk_at_begin = os.path.join(tmp, 'disk-at-begin.img')

        # Arm write protection while the guest runs (and writes), then
        # begin inside a pause, as the checkpoint manager will do it.
        g.qmp('x-cow-snapshot-prepare', path=state)
        time.sleep(1)
        g.qmp('stop')
        nlines = len(g.console_lines())
        shutil.copyfile(disk, disk_at_begin)
        g.qmp('x-cow-snapshot-save', path=state)
        g.qmp('cont')
        info = g.qmp('x-query-cow-snapshot')
        print(f"# pause {info['pause-us']} us ({info['rearmed-pages']} pages "
              'written between prepare and begin)', flush=True)
        n_begin = last_tick_before(g, nlines)

        # Heavy RAM writes while the save runs.
        rounds = 0
        while g.qmp('x-query-cow-snapshot')['status'] == 'active':
            g.sh(f'dd if=/dev/urandom of={BUF} bs=1M count={BUF_MIB} '
                 'conv=notrunc 2>/dev/null')
            rounds += 1
        event = g.qmp_event('COW_SNAPSHOT_DONE', timeout=300)
        expect(event['data']['status'] == 'completed', f'save ended: {event}')
        info = g.qmp('x-query-cow-snapshot')
        print(f"# save: {info['elapsed-ms']} ms, {info['written-bytes'] >> 20} MiB "
              f"written, {info['faulted-pages']} pages saved ahead of guest writes, "
              f'{rounds} rewrite rounds during the save', flush=True)
        expect(md5(g) != sum_begin, 'the buffer was not rewritten during the save')

        # Run on, then go back.
        g.skip_console()
        (n_later, _), = g.wait_for_ticks(1)
        expect(n_later > n_begin, f'counter did not run on: {n_begin} -> {n_later}')
        g.qmp('stop')
        shutil.copyfile(disk_at_begin, disk)
        g.qmp('x-cow-snapshot-load', path=state)
        g.skip_console()        # only ticks printed after the load count
        g.qmp('cont')
        (n_after, disk_after), = g.wait_for_ticks(1)
        print(f'# counter: {n_begin} at begin, {n_later} later, {n_after} after the load',
              flush=True)
        expect(n_after == n_begin + 1, f'after the load TICK ram={n_after}, '
               f'expected {n_begin + 1}')
        expect(disk_after == n_after, f'TICK ram={n_after} disk={disk_after}')
        expect(md5(g) == sum_begin, 'the tmpfs buffer differs from its state at begin')


def main():
    cases = [
        ('anonymous RAM', []),
        ('memory-backend-memfd', [
            '-object', 'memory-backend-memfd,id=mem,size=256M',
            '-machine', 'memory-backend=mem']),
    ]
    tap = Tap()
    for name, extra_args in cases:
        tmp = tempfile.mkdtemp(prefix='hvcp-cow-')
        try:
            tap.check(f'snapshot and load with {name}: counter and RAM as at begin',
                      lambda: snapshot_round_trip(tmp, extra_args))
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return tap.done()


if __name__ == '__main__':
    sys.exit(main())
