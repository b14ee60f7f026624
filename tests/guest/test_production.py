#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-2.0-or-later
"""Production checkpoints of the default guest (issue 14).

The default guest on a vhdx disk (ext4 at /mnt/disk) with a store of
the default type (production); its agent runs with an fsfreeze hook,
and its workload's unsynced writer appends lines that only a sync or a
freeze puts on the disk (scripts/guest/workload).  The test's own agent
client talks to the same agent all along (QEMU shares it).

  1. "checkpoint_create" (HMP, no option) makes a production checkpoint:
     application-consistent, no state file, the guest thawed (its hook
     ran for the freeze and the thaw);
  2. the checkpoint's frozen image, read offline: the unsynced file
     holds every line the writer had written before the checkpoint
     (read from the guest just before), and e2fsck -fn finds the
     filesystem clean (a frozen filesystem needs no journal replay);
  3. apply it: QEMU says the VM is off; it is stopped; "cont" boots it
     from the checkpoint's disks: a file written after the checkpoint
     is gone, the unsynced file starts with the checkpoint's lines;
  4. the guest's agent stopped: production-only fails and changes
     nothing (manifest and files), production falls back to a standard
     checkpoint, recorded with the reason; its disk, taken without a
     freeze, lacks the unsynced lines (they are in its memory): the
     contrast that shows step 2 tells a frozen disk from another;
  5. QEMU killed between the freeze and the thaw (crash point
     create-before-switch): the store reopens, without the checkpoint,
     and the guest boots.

Prints TAP.  Run by meson (suite hyperv-checkpoints-guest), or by hand:
    HVCP_BUILD=build/qemu HVCP_GUEST_DIR=build/guest \
    PYTHONPATH=qemu/python:tests/pylib:tests/guest \
    python3 tests/guest/test_production.py
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

UNSYNCED = '/mnt/disk/unsynced'


def unsynced_last(g):
    """The unsynced writer's last line, as the guest sees it."""
    return int(g.sh(f'tail -n 1 {UNSYNCED}').strip())


def check_sequence(lines, what):
    """@lines are 1, 2, ..., n; returns n."""
    nums = [int(x) for x in lines if x.strip()]
    expect(nums == list(range(1, len(nums) + 1)),
           f'{what}: not the lines 1..n: {nums[:5]} ... {nums[-5:]}')
    return len(nums)


def read_frozen_ext4(image, fmt, workdir):
    """The unsynced file of ext4 image @image (a chain), and e2fsck -fn's
    verdict, read offline through a raw copy."""
    raw = os.path.join(workdir, 'frozen.raw')
    subprocess.run([guestlib.qemu_binary('qemu-img'), 'convert', '-U',
                    '-f', fmt, '-O', 'raw', image, raw], check=True)
    try:
        cat = subprocess.run(['debugfs', '-R', 'cat /unsynced', raw],
                             capture_output=True, text=True, check=True)
        fsck = subprocess.run(['e2fsck', '-fn', raw], capture_output=True,
                              text=True)
    finally:
        os.unlink(raw)
    return cat.stdout.splitlines(), fsck


class Scenario:
    def __init__(self, workdir):
        self.workdir = workdir
        self.store = os.path.join(workdir, 'store')
        self.disk = os.path.join(workdir, 'sys.vhdx')
        self.g = None
        self.cp = None
        self.frozen = None

    def start(self, env=None):
        active = [(self.disk, 'vhdx')]
        if os.path.exists(os.path.join(self.store, 'manifest.json')):
            active = ck.active_disks(self.store, active)
        self.g = Guest(disks=active, name='production',
                       extra_args=['-checkpoints', f'dir={self.store}'])
        ck.boot(self.g, env=env)

    def production_by_default(self):
        self.g.wait_for_ticks(2)
        before = unsynced_last(self.g)
        out = ck.hmp(self.g, 'checkpoint_create before-update')
        expect('Creating production checkpoint' in out, out)
        ev = ck.wait_event(self.g, 'CHECKPOINT_CREATED', 60)
        self.cp = ev['data']['id']
        expect(ev['data']['type'] == 'production' and
               ev['data']['consistency'] == 'application', ev)
        c = ck.by_id(self.g)[self.cp]
        expect(c['type'] == 'production' and
               c['consistency'] == 'application' and
               'state-file-size' not in c and 'fallback-reason' not in c, c)
        status = self.g.qga('guest-fsfreeze-status')
        expect(status == 'thawed', f'the guest is {status}')
        hook = self.g.sh('cat /run/fsfreeze-hook.log').split('\n')
        kinds = [h.split()[0] for h in hook if h.strip()]
        expect(kinds == ['freeze', 'thaw'], f'fsfreeze hook log: {hook}')
        self.frozen = [d for d in c['disks'] if d['device']][0]['filename']
        info = ck.hmp(self.g, 'info checkpoints')
        expect('production, application, ready' in info, info)
        return before

    def frozen_image_consistent(self, before):
        lines, fsck = read_frozen_ext4(self.frozen, 'vhdx', self.workdir)
        n = check_sequence(lines, 'the frozen image\'s unsynced file')
        expect(n >= before, f'the frozen image has {n} lines; the guest had'
               f' written {before} before the checkpoint')
        expect(fsck.returncode == 0,
               f'e2fsck -fn of the frozen image: {fsck.stdout}{fsck.stderr}')
        note(f'frozen image: {n} unsynced lines (>= {before}), e2fsck clean')
        return n

    def apply_leaves_vm_off(self, n):
        self.g.sh('echo after > /mnt/disk/after-checkpoint; sync')
        r = self.g.qmp('checkpoint-apply', checkpoint=self.cp)
        expect(r.get('powered-off') is True, f'checkpoint-apply: {r}')
        st = ck.status(self.g)
        expect(st in ('paused', 'prelaunch', 'restore-vm'),
               f'the VM is {st} after the apply of a production checkpoint')
        self.g.skip_console()
        self.g.qmp('cont')
        m = self.g.wait_for_line(r'^(GUEST-READY|GUEST-ERROR.*)$', 90)
        expect(m.group(1) == 'GUEST-READY', f'no reboot: {self.g.tail()}')
        self.g.wait_for_ticks(1)
        expect(not ck.file_exists(self.g, '/mnt/disk/after-checkpoint'),
               'a file written after the checkpoint survived its apply')
        lines = self.g.sh(f'head -n {n} {UNSYNCED}').split('\n')
        expect(check_sequence(lines, 'the unsynced file after the apply') == n,
               'the unsynced file does not start with the checkpoint\'s lines')

    def agent_stopped(self):
        written = unsynced_last(self.g)
        # In the background: the agent runs this very command
        self.g.sh('(sleep 0.5; killall qemu-ga) >/dev/null 2>&1 &')
        time.sleep(2)
        before = ck.manifest(self.store)
        files = sorted(os.listdir(self.workdir))
        err = ck.qmp_error(self.g, 'checkpoint-create', type='production-only')
        expect('guest agent is not connected' in err, err)
        expect(ck.manifest(self.store) == before, 'the manifest changed')
        expect(sorted(os.listdir(self.workdir)) == files, 'files changed')
        r = self.g.qmp('checkpoint-create', name='fallback')
        expect('not connected' in r.get('fallback-reason', ''), r)
        ck.wait_event(self.g, 'CHECKPOINT_CREATED', 120, id=r['id'])
        c = ck.by_id(self.g)[r['id']]
        expect(c['type'] == 'standard' and c['consistency'] == 'saved-state'
               and 'not connected' in c.get('fallback-reason', ''), c)
        info = ck.hmp(self.g, 'info checkpoints')
        expect('standard instead of production' in info, info)
        # The contrast: without a freeze, the unsynced lines are in the
        # checkpoint's memory, not on its disk
        image = [d for d in c['disks'] if d['device']][0]['filename']
        lines, _ = read_frozen_ext4(image, 'vhdx', self.workdir)
        expect(len(lines) < written, f'the disk of a checkpoint taken without'
               f' a freeze has {len(lines)} unsynced lines; {written} were'
               ' written: the test could not tell a frozen disk from another')
        note(f'standard checkpoint\'s disk: {len(lines)} unsynced lines'
             f' (< {written} written)')

    def killed_while_frozen(self):
        self.g.shutdown()
        self.start(env={ck.CRASH_ENV: 'create-before-switch'})
        self.g.wait_for_ticks(1)
        ids = set(ck.by_id(self.g))
        self.g.qmp('checkpoint-create', name='killed', type='production-only')
        rc = self.g.proc.wait(60)
        expect(rc == -9, f'QEMU exited with {rc}, not SIGKILL')
        self.g.kill()
        self.start()
        expect(set(ck.by_id(self.g)) == ids,
               f'checkpoints after the kill: {set(ck.by_id(self.g)) ^ ids}')
        self.g.wait_for_ticks(2)
        status = self.g.qga('guest-fsfreeze-status')
        expect(status == 'thawed', f'the rebooted guest is {status}')

    def close(self):
        if self.g:
            self.g.kill()


def run_checks(tap, s):
    tap.check('boot with a store of the default type', s.start)
    before = tap.check('checkpoint_create makes a production checkpoint'
                       ' (frozen, thawed, the agent shared)',
                       s.production_by_default)
    n = tap.check('its image holds the unsynced lines; e2fsck clean',
                  s.frozen_image_consistent, before)
    tap.check('apply leaves the VM off; cont boots the checkpoint\'s disks',
              s.apply_leaves_vm_off, n)
    tap.check('agent stopped: production-only fails, production falls back'
              ' to standard', s.agent_stopped)
    tap.check('killed between freeze and thaw: the store reopens',
              s.killed_while_frozen)


def main():
    if not guestlib.require_built():
        return 1
    for tool in ('debugfs', 'e2fsck'):
        if not shutil.which(tool):
            print(f'1..0 # SKIP {tool} is not installed (e2fsprogs)')
            return 0
    tap = Tap(dependent=True)
    t0 = time.monotonic()
    with scratch_dir('hvcp-production-', lambda: tap.failed) as workdir:
        guestlib.create_disk(os.path.join(workdir, 'sys.vhdx'), '64M', 'vhdx')
        s = Scenario(workdir)
        try:
            run_checks(tap, s)
        finally:
            s.close()
    note(f'{time.monotonic() - t0:.0f}s')
    return tap.done()


if __name__ == '__main__':
    sys.exit(main())
