#!/usr/bin/env python3
"""Boot the default test guest on a blank vhdx disk and check what later
tests rely on: GUEST-READY once, TICK lines counting in RAM and on disk,
the guest agent answering (ping, fsfreeze), and the count resuming from
the disk after a reboot.  Prints TAP.

Run by meson (suite hyperv-checkpoints-guest), or by hand:
    PYTHONPATH=qemu/python:tests/guest python3 tests/guest/test_guest_boot.py
"""

import os
import sys
import tempfile
import time

import guestlib
from guestlib import Guest, GuestError
from hvcptap import Tap, expect

BOOT_TIMEOUT = 90      # seconds; about 7 s is usual, TCG on a busy host is slower
COUNTER_PATH = '/mnt/disk/counter'


def check_ticks(ticks, first):
    """ram counts up by exactly one from first; the disk agrees."""
    expect(ticks, 'no TICK lines')
    expect(ticks[0][0] == first, f'first TICK ram={ticks[0][0]}, expected {first}')
    for (ram, _), (next_ram, _) in zip(ticks, ticks[1:]):
        expect(next_ram == ram + 1, f'ram went {ram} -> {next_ram}: {ticks}')
    for ram, disk in ticks:
        expect(disk == ram, f'TICK ram={ram} disk={disk}: {ticks}')


def check_console_clean(guest):
    """GUEST-READY once; every line mentioning TICK is a whole TICK line."""
    lines = guest.console_lines()
    ready = [l for l in lines if l == 'GUEST-READY']
    expect(len(ready) == 1, f'GUEST-READY printed {len(ready)} times')
    garbled = [l for l in lines if 'TICK' in l and not guestlib.TICK_RE.match(l)]
    expect(not garbled, f'garbled TICK lines: {garbled}')


def boot(guest):
    t0 = time.monotonic()
    guest.start()
    guest.wait_ready(BOOT_TIMEOUT)
    print(f'# GUEST-READY after {time.monotonic() - t0:.1f}s', flush=True)


def freeze(guest):
    """Freeze the disk's filesystem through the guest agent and return the
    value then stored on disk.  The workload blocks on its next write, so
    no TICK follows after a TICK that had already stored its value and
    was still printing; the last TICK's disk value is what the disk holds.
    (While frozen the agent refuses guest-file-*, so it cannot read it.)"""
    frozen = guest.qga('guest-fsfreeze-freeze')
    expect(frozen >= 1, f'guest-fsfreeze-freeze froze {frozen} filesystems')
    status = guest.qga('guest-fsfreeze-status')
    expect(status == 'frozen', f'guest-fsfreeze-status is {status!r}')
    time.sleep(1.5)
    before = guest.ticks()
    time.sleep(2.5)     # more than two ticks' time
    after = guest.ticks()
    expect(after == before, f'TICKs went on while frozen: {after[len(before):]}')
    return before[-1][1]


def thaw(guest):
    """Thaw, and check that the workload goes on counting."""
    last = guest.ticks()[-1][0]
    thawed = guest.qga('guest-fsfreeze-thaw')
    expect(thawed >= 1, f'guest-fsfreeze-thaw thawed {thawed} filesystems')
    # The workload had already counted one more tick in RAM and waited to
    # store it: that tick prints now.
    check_ticks(guest.wait_for_ticks(2), last + 1)


def main():
    if not guestlib.require_built():
        return 1

    tap = Tap(dependent=True)
    workdir = tempfile.mkdtemp(prefix='hvcp-boot-', dir='/tmp')
    disk = os.path.join(workdir, 'disk.vhdx')
    state = {}
    first = Guest(disks=[(disk, 'vhdx')], name='boot1')
    second = Guest(disks=[(disk, 'vhdx')], name='boot2')
    try:
        tap.check('create a blank 64 MiB vhdx disk',
                  lambda: guestlib.create_disk(disk, '64M', 'vhdx'))
        tap.check('first boot prints GUEST-READY', lambda: boot(first))
        tap.check('TICK ram counts from 1 by one, disk == ram',
                  lambda: check_ticks(first.wait_for_ticks(3), 1))
        tap.check('guest-ping through the guest agent returns {}',
                  lambda: expect(first.qga('guest-ping') == {}, 'guest-ping did not return {}'))

        tap.check('guest-fsfreeze-freeze stops the disk writes', lambda: freeze(first))
        tap.check('guest-fsfreeze-thaw lets the counter go on', lambda: thaw(first))

        def freeze_for_quit():
            state['stored'] = freeze(first)
        tap.check('freeze again: the disk holds the last TICK value', freeze_for_quit)
        tap.check('console: GUEST-READY once, whole TICK lines',
                  lambda: check_console_clean(first))

        # Quit while frozen: freezing flushed the filesystem, and QEMU
        # flushes the image when it quits.
        def quit_first():
            first.shutdown()
            expect(first.proc.returncode == 0, f'QEMU exited with {first.proc.returncode}')
        tap.check('QMP quit stops QEMU', quit_first)

        tap.check('second boot on the same disk prints GUEST-READY', lambda: boot(second))

        def resumed():
            ticks = second.wait_for_ticks(3)
            check_ticks(ticks, state['stored'] + 1)
            check_console_clean(second)
        tap.check('counter resumes from the stored value + 1', resumed)
    finally:
        for g in (first, second):
            if tap.failed and g.proc:
                print(f'# console of {os.path.basename(g.tmpdir)}:', flush=True)
                for line in g.tail(30).splitlines():
                    print(f'#   {line}', flush=True)
            g.cleanup()
        for f in os.listdir(workdir):
            os.unlink(os.path.join(workdir, f))
        os.rmdir(workdir)
    return tap.done()


if __name__ == '__main__':
    sys.exit(main())
