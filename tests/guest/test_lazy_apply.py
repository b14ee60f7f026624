#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-2.0-or-later
"""Lazy and eager apply of a standard checkpoint, with the default guest.

The guest (TCG, microvm) has a vhdx disk (/dev/vda, ext4, the workload's
counter) and a read-only raw disk (/dev/vdb, not in the checkpoints)
holding two regions of BUF_MIB of random data made by the test, so that
the md5 of each region and of each chunk is known without the guest.
The guest copies a region into BUF, a tmpfs file (guest RAM).  QEMU
runs with -checkpoints dir=STORE,type=standard,apply-load=lazy and
QEMU_COW_SNAPSHOT_LOAD_SPEED set, so that the background loader of a
lazy apply brings RAM in slowly and the test can act while pages are
still missing.

  1. BUF := region 0; checkpoint A at a known counter; BUF := region 1,
     the counter runs on;
  2. apply A lazily: x-query-cow-snapshot says "loading"; while it
     loads the guest reads BUF (its md5 is region 0's) and rewrites one
     chunk from region 1; the counter goes on from A's (ram == disk) and
     ticks on while the loader runs; once loaded, every other chunk is
     region 0's and the rewritten one region 1's;
  3. checkpoint-set-parameters apply-load=eager; BUF := region 1; apply
     A again: not loading after the command, region 0's md5, the same
     first counter as after the lazy apply;
  4. a new QEMU on the store with a very slow loader applies A lazily;
     the manifest is saved when the command returns, the guest starts
     reading BUF, and QEMU is killed (SIGKILL) while the loader runs;
     A's state file and frozen image did not change;
  5. a new QEMU on the same store: the manifest is the one of after the
     apply (current checkpoint, checkpoints, active images; no operation
     left), no file missing or stray; an eager apply of A gives region
     0's md5 and A's counter again.

Prints TAP.  Run by meson (suite hyperv-checkpoints-guest), or by hand:
    HVCP_BUILD=build/qemu HVCP_GUEST_DIR=build/guest \\
    PYTHONPATH=qemu/python:tests/pylib:tests/guest \\
    python3 tests/guest/test_lazy_apply.py
"""

import hashlib
import os
import signal
import sys
import time

import guestlib
from guestlib import Guest
from hvcptap import Tap, scratch_dir
import checkpointlib as ck
from checkpointlib import expect, note

BUF = '/tmp/lazy-buf'
BUF_MIB = 64
CHUNK_MIB = 8
CHUNKS = BUF_MIB // CHUNK_MIB
PATCH_CHUNK = 5             # the chunk the guest rewrites while loading
SRC_DEV = '/dev/vdb'
SPEED_ENV = 'QEMU_COW_SNAPSHOT_LOAD_SPEED'
LOAD_SPEED = 8 << 20        # bytes/s of the background loader
SLOW_SPEED = 256 << 10      # ... of the one killed
LOAD_TIMEOUT = 120          # s a lazy load may take to end


# -- the data -------------------------------------------------------------

def make_source(path):
    """The read-only disk: two regions of BUF_MIB of random data; returns
    per region (md5, [md5 of each chunk])."""
    sums = []
    with open(path, 'wb') as f:
        for _ in range(2):
            whole, chunks = hashlib.md5(), []
            for _ in range(CHUNKS):
                data = os.urandom(CHUNK_MIB << 20)
                whole.update(data)
                chunks.append(hashlib.md5(data).hexdigest())
                f.write(data)
            sums.append((whole.hexdigest(), chunks))
    return sums


def source_args(path):
    """The read-only disk after the vhdx disk: the guest's /dev/vdb."""
    return ['-blockdev', f'driver=file,filename={path},node-name=srcfile,read-only=on',
            '-blockdev', 'driver=raw,file=srcfile,node-name=src,read-only=on',
            '-device', 'virtio-blk-device,drive=src,id=vdb']


def copy_cmd(region, first=0, count=CHUNKS):
    """The guest command copying chunks [first, first + count) of a
    region into the same chunks of BUF."""
    mib, skip = CHUNK_MIB, region * CHUNKS + first
    return (f'dd if={SRC_DEV} of={BUF} bs={mib}M skip={skip} seek={first}'
            f' count={count} iflag=direct conv=notrunc 2>/dev/null')


def md5(g):
    return g.sh(f'md5sum {BUF}').split()[0]


def chunk_md5s(g):
    """The md5 of each chunk of BUF, in order."""
    out = g.sh(f'for i in $(seq 0 {CHUNKS - 1}); do'
               f' dd if={BUF} bs={CHUNK_MIB}M skip=$i count=1 2>/dev/null | md5sum;'
               ' done')
    return [line.split()[0] for line in out.splitlines() if line.strip()]


def sha256(path):
    h = hashlib.sha256()
    with open(path, 'rb') as f:
        for block in iter(lambda: f.read(1 << 20), b''):
            h.update(block)
    return h.hexdigest()


# -- the counter ----------------------------------------------------------

def ticks_from(g, nlines):
    """The TICK lines after the first nlines console lines, as (ram, disk)."""
    out = []
    for line in g.console_lines()[nlines:]:
        m = guestlib.TICK_RE.match(line)
        if m:
            out.append((int(m.group(1)), int(m.group(2))))
    return out


def after_apply(ticks, before):
    """The ticks of the applied state: from the first below the counter
    before the apply (those printed before the VM stopped are not)."""
    for i, (ram, _) in enumerate(ticks):
        if ram < before:
            return ticks[i:]
    return []


def check_run(ticks, what):
    """ticks count on by one, and RAM and disk agree on each."""
    expect(ticks[0][0] == ticks[0][1], f'{what}: first TICK {ticks[0]}')
    for (r0, _), (r1, d1) in zip(ticks, ticks[1:]):
        expect(r1 == r0 + 1, f'{what}: the counter went {r0} -> {r1}: {ticks}')
        expect(d1 == r1, f'{what}: TICK ram={r1} disk={d1}')


def without_operation(m):
    return {k: v for k, v in m.items() if k != 'operation'}


class Scenario:
    # pylint: disable=too-many-instance-attributes

    def __init__(self, workdir):
        self.workdir = workdir
        self.store = os.path.join(workdir, 'store')
        self.vhdx = os.path.join(workdir, 'sys.vhdx')
        self.src = os.path.join(workdir, 'source.raw')
        self.sums = None        # per region (md5, chunk md5s)
        self.guests = []
        self.g = None
        self.cid = None
        self.base = None        # the counter at A's pause
        self.state_file = None
        self.state_hash = None
        self.first = {}         # mode -> first TICK after applying A
        self.t_apply = None     # when the last apply returned
        self.seen = None        # (last time loading, first time not)
        self.at_apply = None    # the manifest when the killed apply returned

    def start(self, name, speed=None, load='lazy'):
        disks = [(self.vhdx, 'vhdx')]
        if os.path.exists(os.path.join(self.store, 'manifest.json')):
            disks = ck.active_disks(self.store, disks)
        self.g = Guest(disks=disks, name=name, extra_args=[
            '-checkpoints', f'dir={self.store},type=standard,apply-load={load}',
            *source_args(self.src)])
        self.guests.append(self.g)
        ck.boot(self.g, {SPEED_ENV: str(speed) if speed else None})
        params = self.g.qmp('query-checkpoint-parameters')
        expect(params.get('apply-load') == load, f'parameters: {params}')

    def loading(self):
        """x-query-cow-snapshot's loading, noting when it was last true
        and first false since the last apply."""
        now = time.monotonic() - self.t_apply
        flag = self.g.qmp('x-query-cow-snapshot')['loading']
        last, done = self.seen
        self.seen = (now, done) if flag else (last, done if done is not None else now)
        return flag

    def load_report(self):
        """When the load ended, and how long the speed limit says it takes."""
        last, done = self.seen
        present = os.stat(self.state_file).st_blocks * 512
        when = ('is still running' if done is None else
                f'ended between {last:.1f}s and {done:.1f}s after the apply')
        return (f'the lazy load {when}; at {SPEED_ENV}={LOAD_SPEED} the'
                f' {present >> 20} MiB of the state file take'
                f' {present / LOAD_SPEED:.0f}s')

    # -- 1. the checkpoint -----------------------------------------------

    def setup(self):
        self.sums = make_source(self.src)
        guestlib.create_disk(self.vhdx, '64M', 'vhdx')
        self.start('lazy1', LOAD_SPEED)
        self.g.sh(copy_cmd(0))
        got = md5(self.g)
        expect(got == self.sums[0][0], f'BUF has md5 {got}, region 0 {self.sums[0][0]}')

    def take(self):
        self.g.wait_for_ticks(1)
        self.base = ck.sync_to_tick(self.g)
        self.cid = ck.create(self.g, 'A')
        c = ck.by_id(self.g)[self.cid]
        expect(c['state'] == 'ready' and c['current'], f'checkpoint A: {c}')
        expect([d['device'] for d in c['disks']] == ['vda'],
               f'A holds the disks {c["disks"]}, expected vda only')
        rel = ck.manifest(self.store)['checkpoints'][0]['state-file']
        self.state_file = os.path.join(self.store, rel)
        self.state_hash = sha256(self.state_file)
        note(f'checkpoint A = {self.cid} at counter {self.base}, state file'
             f' {os.stat(self.state_file).st_blocks >> 11} MiB allocated')
        self.g.sh(copy_cmd(1))
        self.g.wait_for_ticks(3)

    # -- 2. and 3. lazy and eager ----------------------------------------

    def apply(self, mode):
        """Apply A; returns (console lines before, counter before,
        loading right after the command)."""
        self.g.wait_for_ticks(1)
        before = ck.last_tick(self.g)
        expect(before > self.base + 2, f'counter {before}, A was taken at {self.base}')
        nlines = len(self.g.console_lines())
        t0 = time.monotonic()
        ret = self.g.qmp('checkpoint-apply', checkpoint=self.cid)
        self.t_apply, self.seen = time.monotonic(), (0.0, None)
        was_loading = self.loading()
        note(f'{mode} apply returned {ret} in {self.t_apply - t0:.2f}s;'
             f' loading: {was_loading}')
        expect(ret == {'powered-off': False}, f'checkpoint-apply returned {ret}')
        ck.wait_event(self.g, 'CHECKPOINT_APPLIED', 10, id=self.cid)
        expect(ck.status(self.g) == 'running', f'VM {ck.status(self.g)} after the apply')
        expect(ck.current(self.g) == self.cid, 'Now is not under A')
        ck.resync(self.g)
        return nlines, before, was_loading

    def check_counter(self, mode, nlines, before, count=1):
        """The ticks after applying A go on from A's counter; returns them."""
        deadline = time.monotonic() + 30
        while len(after_apply(ticks_from(self.g, nlines), before)) < count:
            expect(time.monotonic() < deadline, f'{mode}: not {count} TICK after the'
                   f' apply in 30s; console ends:\n{self.g.tail()}')
            time.sleep(0.2)
        ticks = after_apply(ticks_from(self.g, nlines), before)
        ram = ticks[0][0]
        expect(self.base + 1 <= ram <= self.base + 2,
               f'{mode}: TICK ram={ram} after applying A, expected {self.base + 1}')
        check_run(ticks, mode)
        self.first.setdefault(mode, ticks[0])
        return ticks

    def read_while_loading(self):
        """md5 of BUF and a chunk rewritten, each started while loading."""
        at_read = self.loading()
        t0 = time.monotonic()
        got = md5(self.g)
        note(f'md5 read in {time.monotonic() - t0:.1f}s; loading at its start'
             f' {at_read}, at its end {self.loading()}')
        if not at_read:
            raise AssertionError('the lazy load had ended before the guest read'
                                 ' the buffer: ' + self.load_report())
        expect(got == self.sums[0][0], f'md5 {got} right after the lazy apply,'
               f' A has {self.sums[0][0]}')
        at_write = self.loading()
        self.g.sh(copy_cmd(1, PATCH_CHUNK, 1))
        note(f'chunk {PATCH_CHUNK} rewritten; loading at the start {at_write},'
             f' at the end {self.loading()}')
        if not at_write:
            raise AssertionError('the lazy load had ended before the guest rewrote'
                                 ' the buffer: ' + self.load_report())

    def wait_loaded(self):
        while self.loading():
            expect(time.monotonic() - self.t_apply < LOAD_TIMEOUT,
                   f'still loading {LOAD_TIMEOUT}s after the apply')
            time.sleep(0.2)
        note(self.load_report())

    def apply_lazy(self):
        nlines, before, was_loading = self.apply('lazy')
        expect(was_loading, 'x-query-cow-snapshot: not loading after a lazy apply')
        first = self.check_counter('lazy', nlines, before)[0]
        note(f'lazy: first TICK ram={first[0]} (A taken at {self.base},'
             f' {before} before)')
        self.read_while_loading()
        self.wait_loaded()
        ticks = self.check_counter('lazy', nlines, before)
        note(f'{len(ticks)} ticks from the apply to the end of the load')
        expect(len(ticks) >= 3, f'the guest ticked {len(ticks)} times while loading')
        want = list(self.sums[0][1])
        want[PATCH_CHUNK] = self.sums[1][1][PATCH_CHUNK]
        got = chunk_md5s(self.g)
        bad = [i for i, (a, b) in enumerate(zip(got, want)) if a != b]
        expect(len(got) == CHUNKS and not bad,
               f'chunks {bad} of BUF are wrong after the lazy load (chunk'
               f' {PATCH_CHUNK} rewritten from region 1): {got}, expected {want}')

    def apply_eager(self):
        self.g.qmp('checkpoint-set-parameters', **{'apply-load': 'eager'})
        params = self.g.qmp('query-checkpoint-parameters')
        expect(params['apply-load'] == 'eager', f'parameters: {params}')
        self.g.sh(copy_cmd(1))
        nlines, before, was_loading = self.apply('eager')
        expect(not was_loading, 'x-query-cow-snapshot: loading after an eager apply')
        got = md5(self.g)
        expect(got == self.sums[0][0], f'md5 {got} after the eager apply, A has'
               f' {self.sums[0][0]}')
        self.check_counter('eager', nlines, before, count=2)
        expect(self.first['eager'] == self.first['lazy'],
               f'first TICK {self.first["eager"]} after the eager apply,'
               f' {self.first["lazy"]} after the lazy one')
        self.g.wait_for_ticks(3)

    # -- 4. and 5. a kill while loading ----------------------------------

    def crash(self):
        self.g.shutdown()
        expect(self.g.proc.returncode == 0, f'QEMU exited with {self.g.proc.returncode}')
        expect(sha256(self.state_file) == self.state_hash,
               'the state file changed in the first QEMU')
        frozen = self.frozen_image()
        frozen_hash = sha256(frozen)
        self.start('lazy2', SLOW_SPEED)
        self.g.wait_for_ticks(1)
        nlines, before, was_loading = self.apply('slow lazy')
        self.at_apply = ck.manifest(self.store)
        expect(was_loading, 'x-query-cow-snapshot: not loading after a lazy apply')
        # The guest reads its buffer (page faults pending) when the kill comes
        self.g.qga('guest-exec', path='/bin/sh', arg=['-c', f'md5sum {BUF}'])
        self.check_counter('slow lazy', nlines, before, count=2)
        expect(self.first['slow lazy'] == self.first['lazy'],
               f'first TICK {self.first["slow lazy"]}, {self.first["lazy"]} after'
               ' the first lazy apply')
        expect(self.loading(), 'the slow load ended before the kill')
        os.kill(self.g.proc.pid, signal.SIGKILL)
        rc = self.g.proc.wait(30)
        self.g.kill()
        expect(rc == -signal.SIGKILL, f'QEMU exited with {rc}')
        expect(sha256(self.state_file) == self.state_hash,
               'the state file changed in the killed QEMU')
        expect(sha256(frozen) == frozen_hash, f'the frozen image {frozen} changed')
        note(f'manifest when the apply returned: operation'
             f' {self.at_apply.get("operation")}')

    def frozen_image(self):
        disks = ck.manifest(self.store)['checkpoints'][0]['disks']
        expect(len(disks) == 1, f'A holds the disks {disks}')
        return disks[0]['filename']

    def restart(self):
        self.start('lazy3', load='eager')
        m = ck.manifest(self.store)
        expect('operation' not in m, f'the manifest still records {m.get("operation")}')
        expect(m.get('current') == self.cid, f'current {m.get("current")}, expected A')
        expect(without_operation(m) == without_operation(self.at_apply),
               f'the manifest after the restart:\n{m}\nwhen the apply returned:\n'
               f'{self.at_apply}')
        expect(ck.current(self.g) == self.cid, 'Now is not under A')
        ck.check_store_files(self.g, self.store)
        stray = ck.stray_children(self.store, [self.workdir])
        expect(not stray, f'images the manifest does not reference: {stray}')
        expect(sha256(self.state_file) == self.state_hash,
               'the state file changed in the restarted QEMU')

    def apply_again(self):
        self.g.wait_for_ticks(3)
        nlines, before, was_loading = self.apply('eager after the kill')
        expect(not was_loading, 'x-query-cow-snapshot: loading after an eager apply')
        got = md5(self.g)
        expect(got == self.sums[0][0], f'md5 {got} after applying A again, A has'
               f' {self.sums[0][0]}')
        ticks = self.check_counter('eager after the kill', nlines, before, count=2)
        expect(ticks[0] == self.first['lazy'],
               f'first TICK {ticks[0]}, {self.first["lazy"]} after the lazy apply')
        self.g.shutdown()
        expect(self.g.proc.returncode == 0, f'QEMU exited with {self.g.proc.returncode}')

    def cleanup(self, failed):
        for g in self.guests:
            if failed and g.proc:
                note(f'console of {os.path.basename(g.tmpdir)} (end):')
                note(g.tail(20))
                note('QEMU stderr: ' + g.stderr().strip())
            g.cleanup()


def run_checks(tap, s):
    tap.check(f'boot with apply-load=lazy, {BUF_MIB} MiB of known data in tmpfs',
              s.setup)
    tap.check('checkpoint A; then the buffer rewritten, the counter on', s.take)
    tap.check('lazy apply of A: md5 read and a chunk rewritten while loading,'
              ' counter from A\'s, ticks go on, every chunk right once loaded',
              s.apply_lazy)
    tap.check('eager apply of A: same md5 and counter as the lazy apply',
              s.apply_eager)
    tap.check('SIGKILL during a slow lazy apply: state file and frozen image'
              ' unchanged', s.crash)
    tap.check('restart on the store: the manifest of after the apply, no stray file',
              s.restart)
    tap.check('eager apply of A after the restart: A\'s md5 and counter', s.apply_again)


def main():
    if not guestlib.require_built():
        return 1

    tap = Tap(dependent=True)
    with scratch_dir('hvcp-lazy-', lambda: tap.failed) as workdir:
        s = Scenario(workdir)
        try:
            run_checks(tap, s)
        finally:
            s.cleanup(tap.failed)
    return tap.done()


if __name__ == '__main__':
    sys.exit(main())
