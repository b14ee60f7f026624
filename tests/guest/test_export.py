#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-2.0-or-later
"""Export of checkpoints of the running default guest (issue 12).

The default guest on a vhdx disk (ext4 at /mnt/disk, 16 MiB of data on
it so that an export copies something), a standard store, a second QMP
socket for the CLI.  A standard checkpoint S and a production
checkpoint P are taken; marker files written between them tell them
apart.

  1. checkpoint-export of S (QMP) while the VM runs: the job is held
     half-way (job-pause right after the command returned; the copy of
     the disk takes far longer than that round trip); meanwhile the VM
     runs and its counter goes on, and checkpoint-delete is refused
     ("being exported") with the manifest unchanged; resumed, the export
     completes (CHECKPOINT_EXPORTED) and the guest never stopped;
  2. export of P through "qemu-checkpoint export";
  3. each export is a standalone store: names relative to the folder,
     the flattened image without a parent, an empty child of it (linked
     by a relative name) as the active image, config.json resuming the
     checkpoint, S's state file; qemu-img compare: the flattened image
     and the child read the same as the checkpoint's frozen image (its
     chain) in the VM's store;
  4. refusals: an export into a non-empty folder (the folder unchanged),
     of an unknown checkpoint (no folder created);
  5. a full filesystem (tmpfs of 8 MiB: the copy runs out of space; of
     1 MiB: the images cannot even be created): CHECKPOINT_EXPORT_FAILED
     mentions the space, a folder the export created is removed, an
     existing one left empty (skipped when tmpfs cannot be mounted);
  6. the VM's own images: the frozen ones are byte-for-byte, size,
     mtime and DataWriteGuid what they were before the exports; the VM
     still runs on its active image, which the guest still writes;
  7. the VM quits; both export folders are moved elsewhere and the VM's
     folder (its images and store) is renamed away;
  8. "qemu-checkpoint start --store" of the moved S export: a new VM on
     the moved export's images, going on from S's counter (+1..+3), the
     guest's file of before S there, the markers written after S absent;
  9. the same of the moved P export: left off by the apply, "cont" boots
     it from P's disks: the counter goes on from the value on P's disk,
     the file written before P is there, the one after P absent.

Prints TAP.  Run by meson (suite hyperv-checkpoints-guest), or by hand:
    HVCP_BUILD=build/qemu HVCP_GUEST_DIR=build/guest \
    PYTHONPATH=qemu/python:tests/pylib:tests/guest \
    python3 tests/guest/test_export.py
"""

import hashlib
import json
import os
import shutil
import subprocess
import sys
import time

import guestlib
from guestlib import Guest, GuestError, QGA
from hvcptap import Tap, Skip, scratch_dir
from hvcpvm import QMP
import checkpointlib as ck
from checkpointlib import expect, note

sys.path.insert(0, os.path.join(guestlib.REPO, 'tests', 'cli'))
# pylint: disable=wrong-import-position
from clilib import ok_json                           # noqa: E402
from test_cli_guest import TICK_RE, wait_console, stop  # noqa: E402

AFTER_S = '/mnt/disk/after-standard'
AFTER_P = '/mnt/disk/after-production'


def qemu_img(*args, check=True):
    return subprocess.run([guestlib.qemu_binary('qemu-img'), *args],
                          capture_output=True, text=True, check=check)


def img_info(path):
    return json.loads(qemu_img('info', '-U', '--output=json', path).stdout)


def compare(a, b):
    """qemu-img compare of two images (with their chains)."""
    r = qemu_img('compare', '-U', '-f', 'vhdx', '-F', 'vhdx', a, b,
                 check=False)
    expect(r.returncode == 0, f'qemu-img compare {a} {b}: exit'
           f' {r.returncode}: {r.stdout}{r.stderr}')


def fingerprint(path):
    """(size, mtime_ns, sha256, DataWriteGuid) of an image file."""
    st = os.stat(path)
    h = hashlib.sha256()
    with open(path, 'rb') as f:
        for block in iter(lambda: f.read(1 << 20), b''):
            h.update(block)
    guid = img_info(path)['format-specific']['data']['data-write-guid']
    return (st.st_size, st.st_mtime_ns, h.hexdigest(), guid)


class Agent:
    """The guest agent of a VM that "qemu-checkpoint start" started, at
    the socket --replace moved; sh() as Guest's."""

    sh = Guest.sh

    def __init__(self, path, timeout=60):
        self._qga = QGA(path)
        deadline = time.monotonic() + timeout
        while True:
            try:
                self._qga.connect(5)
                self._qga.sync()
                return
            except (OSError, GuestError) as e:
                if time.monotonic() > deadline:
                    raise GuestError(f'no guest agent at {path}: {e}') \
                        from None
                time.sleep(0.5)

    def qga(self, cmd, timeout=30, **args):
        return self._qga.cmd(cmd, timeout=timeout, **args)

    def close(self):
        self._qga.close()


class Scenario:
    # pylint: disable=too-many-instance-attributes

    def __init__(self, work):
        self.work = work
        self.vmdir = os.path.join(work, 'vm')
        self.store = os.path.join(self.vmdir, 'store')
        self.disk = os.path.join(self.vmdir, 'sys.vhdx')
        self.cli_sock = os.path.join(work, 'cli.sock')
        self.exports = {'S': os.path.join(work, 'exports', 'standard'),
                        'P': os.path.join(work, 'exports', 'production')}
        self.moved = {'S': os.path.join(work, 'elsewhere', 'vm-standard'),
                      'P': os.path.join(work, 'elsewhere', 'vm-production')}
        self.g = None
        self.ids = {}
        self.frozen = {}        # checkpoint -> its frozen image
        self.data = {}          # checkpoint -> read_data() before it
        self.counter = {}       # checkpoint -> the counter before it
        self.after_p = None     # the first TICK after P was taken
        self.prints = None      # fingerprints of the frozen images
        self.active = None      # (file, mtime_ns) of the active image
        self.started = []       # (QMP, pid) of the QEMUs start started

    # -- the VM -----------------------------------------------------------

    def boot(self):
        os.makedirs(self.vmdir)
        guestlib.create_disk(self.disk, '64M', 'vhdx')
        self.g = Guest(disks=[(self.disk, 'vhdx')], name='export',
                       extra_args=ck.store_args(self.store) +
                       ['-qmp', f'unix:{self.cli_sock},server=on,wait=off'])
        ck.boot(self.g)
        self.g.sh('dd if=/dev/urandom of=/mnt/disk/bulk bs=1M count=16'
                  ' 2>/dev/null && sync')

    def checkpoints(self):
        self.data['S'] = ck.write_data(self.g, 'before-standard', vdb=False)
        self.counter['S'] = ck.sync_to_tick(self.g)
        self.ids['S'] = ck.create(self.g, 'S')
        self.g.sh(f'echo after > {AFTER_S} && sync')
        self.data['P'] = ck.write_data(self.g, 'before-production', vdb=False)
        self.counter['P'] = ck.sync_to_tick(self.g)
        r = self.g.qmp('checkpoint-create', name='P', type='production')
        ck.wait_event(self.g, 'CHECKPOINT_CREATED', 120, id=r['id'])
        self.ids['P'] = r['id']
        self.after_p = ck.next_tick(self.g)[0]
        self.g.sh(f'echo after > {AFTER_P} && sync')
        cps = ck.by_id(self.g)
        for k in ('S', 'P'):
            c = cps[self.ids[k]]
            expect(c['state'] == 'ready', c)
            self.frozen[k] = c['disks'][0]['filename']
            note(f'{k} = {self.ids[k]}: {c["type"]}, {c["consistency"]},'
                 f' counter {self.counter[k]}, frozen image {self.frozen[k]}')
        expect(cps[self.ids['P']]['type'] == 'production' and
               cps[self.ids['P']]['consistency'] == 'application',
               f'P: {cps[self.ids["P"]]}')
        expect(self.frozen['S'] == self.disk, f'S froze {self.frozen["S"]}')
        self.prints = {k: fingerprint(f) for k, f in self.frozen.items()}
        self.active = self.active_image()

    def active_image(self):
        """The active image of vda: the manifest's, which QEMU runs on."""
        active = ck.manifest(self.store)['active'][0]['filename']
        blocks = [b for b in self.g.qmp('query-block') if b.get('inserted')]
        files = [os.path.realpath(b['inserted']['file']) for b in blocks]
        expect(files == [active], f'QEMU runs on {files}, the manifest'
               f' names {active}')
        return active, os.stat(active).st_mtime_ns

    # -- 1, 2: the exports ------------------------------------------------

    def export_standard_held(self):
        """Start the export of S and hold it half-way (job-pause)."""
        self.g.skip_console()
        job = self.g.qmp('checkpoint-export', checkpoint=self.ids['S'],
                         dir=self.exports['S'])['job-id']
        pause = self.g.raw('job-pause', id=job)
        expect('return' in pause, f'job-pause right after checkpoint-export:'
               f' {pause} (the export ended first?)')
        deadline = time.monotonic() + 10
        while True:
            jobs = {j['id']: j for j in self.g.qmp('query-jobs')}
            expect(job in jobs, f'the export job is gone: {jobs}')
            if jobs[job]['status'] == 'paused':
                break
            expect(time.monotonic() < deadline, f'not paused: {jobs[job]}')
            time.sleep(0.05)
        j = jobs[job]
        expect(j['type'] == 'checkpoint-export' and
               j['current-progress'] < j['total-progress'], f'job: {j}')
        note(f'export held at {j["current-progress"]} of'
             f' {j["total-progress"]} bytes')
        return job

    def runs_during_export(self, job):
        ticks = self.g.wait_for_ticks(2)
        note(f'ticks while the export is in progress: {ticks}')
        expect(ticks[1][0] == ticks[0][0] + 1 and
               all(r == d for r, d in ticks), f'ticks {ticks}')
        expect(ck.status(self.g) == 'running', 'the VM is not running')
        jobs = [j['id'] for j in self.g.qmp('query-jobs')]
        expect(job in jobs, f'the export is no longer in progress: {jobs}')
        return ticks[-1][0]

    def delete_refused(self, job):
        before = ck.manifest(self.store)
        err = ck.qmp_error(self.g, 'checkpoint-delete',
                           checkpoint=self.ids['P'])
        note(f'checkpoint-delete: {err}')
        expect('being exported' in err, err)
        expect(ck.manifest(self.store) == before, 'the manifest changed')
        expect(set(ck.by_id(self.g)) == set(self.ids.values()),
               'checkpoints changed')
        expect(job in [j['id'] for j in self.g.qmp('query-jobs')],
               'the export is no longer in progress')

    def export_standard_done(self, job, last):
        self.g.qmp('job-resume', id=job)
        ev = ck.wait_event(self.g, 'CHECKPOINT_EXPORTED', 120,
                           id=self.ids['S'])
        expect(ev['data']['dir'] == self.exports['S'], f'{ev}')
        (ram, disk), = self.g.wait_for_ticks(1)
        expect(last is None or ram == last + 1, f'TICK ram={ram} after'
               f' {last}: the guest stopped during the export?')
        expect(ram == disk and ck.status(self.g) == 'running',
               f'TICK ram={ram} disk={disk}, {ck.status(self.g)}')
        expect(not self.g.qmp('query-jobs'), 'a job is left')

    def export_production(self):
        out = ok_json('export', '--qmp', self.cli_sock, 'export', 'P',
                      self.exports['P'])
        expect(out == {'id': self.ids['P'], 'dir': self.exports['P']},
               f'export: {out}')
        self.g.wait_for_ticks(1)

    # -- 3: what an export holds ------------------------------------------

    def layout(self, k):
        d = self.exports[k]
        cid = self.ids[k]
        m = ck.manifest(d)
        note(f'export of {k}: {sorted(os.listdir(d))}')
        expect(m.get('current') == cid and
               [c['id'] for c in m['checkpoints']] == [cid] and
               'parent' not in m['checkpoints'][0], f'manifest: {m}')
        c = m['checkpoints'][0]
        names = [x['filename'] for x in c['disks'] + m['active']]
        names += [c[f] for f in ('state-file', 'config-file') if f in c]
        expect(all(not os.path.isabs(n) and os.path.exists(os.path.join(d, n))
                   for n in names), f'names not relative, or missing: {names}')
        expect(('state-file' in c) == (k == 'S'), f'state file: {c}')
        image = os.path.join(d, c['disks'][0]['filename'])
        child = os.path.join(d, m['active'][0]['filename'])
        info = img_info(image)
        expect('backing-filename' not in info, f'{image} has a parent: {info}')
        cinfo = img_info(child)
        expect(cinfo.get('backing-filename') == os.path.basename(image),
               f'{child}: backing {cinfo.get("backing-filename")!r}')
        expect(c['disks'][0].get('identity') ==
               'vhdx-data-write-guid:' +
               info['format-specific']['data']['data-write-guid'],
               f'identity {c["disks"][0]}')
        with open(os.path.join(d, 'config.json'), encoding='utf-8') as f:
            cfg = json.load(f)
        expect(cfg.get('resume-checkpoint') == cid, f'config.json: {cfg}')
        return image, child

    def same_content(self, k):
        image, child = self.layout(k)
        compare(image, self.frozen[k])
        compare(child, self.frozen[k])

    # -- 4: refusals ------------------------------------------------------

    def non_empty(self):
        d = os.path.join(self.work, 'not-empty')
        os.mkdir(d)
        with open(os.path.join(d, 'keep'), 'w') as f:
            f.write('mine\n')
        before = (sorted(os.listdir(d)), os.stat(d).st_mtime_ns)
        err = ck.qmp_error(self.g, 'checkpoint-export',
                           checkpoint=self.ids['S'], dir=d)
        note(err)
        expect('not empty' in err, err)
        expect((sorted(os.listdir(d)), os.stat(d).st_mtime_ns) == before,
               f'the folder changed: {os.listdir(d)}')
        with open(os.path.join(d, 'keep')) as f:
            expect(f.read() == 'mine\n', 'the file in it changed')
        expect(not self.g.qmp('query-jobs'), 'a job was started')

    def unknown(self):
        d = os.path.join(self.work, 'unknown')
        err = ck.qmp_error(self.g, 'checkpoint-export',
                           checkpoint='no-such-checkpoint', dir=d)
        note(err)
        expect('no-such-checkpoint' in err, err)
        expect(not os.path.exists(d), 'the folder was created')
        expect(not self.g.qmp('query-jobs'), 'a job was started')

    # -- 5: a full filesystem ---------------------------------------------

    def failed_export(self, d):
        """An export of S into @d that must fail for want of space."""
        self.g.qmp('checkpoint-export', checkpoint=self.ids['S'], dir=d)
        ev = self.g.event(lambda e: e['event'] in ('CHECKPOINT_EXPORTED',
                                                   'CHECKPOINT_EXPORT_FAILED')
                          and e['data']['dir'] == d, 60)
        expect(ev is not None, 'no CHECKPOINT_EXPORT* event')
        expect(ev['event'] == 'CHECKPOINT_EXPORT_FAILED',
               f'the export into a full filesystem succeeded: {ev}')
        err = ev['data']['error']
        note(f'{d}: {err}')
        expect('space' in err.lower(), f'the error does not say space: {err}')
        expect(not self.g.qmp('query-jobs'), 'a job is left')

    def full_filesystem(self, size):
        mnt = os.path.join(self.work, f'full-{size}')
        os.mkdir(mnt)
        r = subprocess.run(['mount', '-t', 'tmpfs', '-o', f'size={size}',
                            'tmpfs', mnt], capture_output=True, text=True)
        if r.returncode != 0:
            os.rmdir(mnt)
            raise Skip(f'cannot mount a tmpfs here: {r.stderr.strip()}')
        problems = []
        try:
            # a folder the export creates: removed
            new = os.path.join(mnt, 'new')
            self.failed_export(new)
            if os.path.exists(new):
                problems.append(f'the folder it created is left, with'
                                f' {os.listdir(new)}')
                shutil.rmtree(new)
            # the folder exists already: left empty
            self.failed_export(mnt)
            left = os.listdir(mnt)
            if left:
                problems.append(f'the existing folder is left with {left}')
        finally:
            subprocess.run(['umount', mnt], check=True)
            os.rmdir(mnt)
        expect(not problems, '; '.join(problems))

    # -- 6: the VM's own images -------------------------------------------

    def vm_images_untouched(self):
        now = {k: fingerprint(f) for k, f in self.frozen.items()}
        for k in self.frozen:
            expect(now[k] == self.prints[k], f'the frozen image of {k}'
                   f' changed: {self.prints[k]} -> {now[k]}')
        m = ck.manifest(self.store)
        for c in m['checkpoints']:
            k = 'S' if c['id'] == self.ids['S'] else 'P'
            expect(c['disks'][0]['identity'] ==
                   'vhdx-data-write-guid:' + now[k][3],
                   f'{k}: identity {c["disks"][0]}, image {now[k][3]}')
        self.g.wait_for_ticks(1)
        active, mtime = self.active_image()
        expect(active == self.active[0], f'the VM moved from {self.active[0]}'
               f' to {active}')
        expect(mtime > self.active[1], 'the guest no longer writes the'
               ' active image')

    # -- 7..9: move, start ------------------------------------------------

    def quit_and_move(self):
        self.g.shutdown()
        expect(self.g.proc.returncode == 0,
               f'QEMU exited with {self.g.proc.returncode}')
        os.makedirs(os.path.join(self.work, 'elsewhere'))
        for k in ('S', 'P'):
            os.rename(self.exports[k], self.moved[k])
        os.rename(self.vmdir, self.vmdir + '-away')
        for k in ('S', 'P'):
            m = ck.manifest(self.moved[k])
            child = os.path.join(self.moved[k], m['active'][0]['filename'])
            chain = ck.backing_chain(child)
            expect(len(chain) == 2 and
                   os.path.dirname(chain[1]) == self.moved[k],
                   f'the moved export\'s chain: {chain}')

    def start_new(self, k):
        """start --store of the moved export of k: (start's JSON, console
        file, QMP, Agent)"""
        sock = os.path.join(self.work, f'{k}.sock')
        console = os.path.join(self.work, f'{k}-console.log')
        run = os.path.join(self.work, f'{k}-run')
        os.makedirs(run)
        out = ok_json('start', 'start', '--store', self.moved[k],
                      '--qmp', sock, '--console', f'file,path={console}',
                      '--replace', f'{self.g.tmpdir}={run}')
        self.started.append([None, out['pid']])
        q = QMP(sock, timeout=10)
        self.started[-1][0] = q
        expect(out.get('applied', {}).get('id') == self.ids[k], f'{out}')
        blocks = [b for b in q.cmd('query-block') if b.get('inserted')]
        files = [os.path.realpath(b['inserted']['file']) for b in blocks]
        active = os.path.join(self.moved[k],
                              ck.manifest(self.moved[k])['active'][0]
                              ['filename'])
        expect(files == [active], f'the VM runs on {files}, not on the'
               f' moved export\'s {active}')
        return out, console, q, os.path.join(run, 'qga.sock')

    def check_files(self, agent, k, present, absent):
        got = ck.read_data(agent, vdb=False)
        expect(got == self.data[k], f'the guest reads {got}, before {k} it'
               f' wrote {self.data[k]}')
        for f in present:
            expect(ck.file_exists(agent, f), f'{f} is missing')
        for f in absent:
            expect(not ck.file_exists(agent, f), f'{f} was written after'
                   f' {k}, and is there')

    def start_standard(self):
        out, console, q, qga = self.start_new('S')
        expect(out['applied']['powered-off'] is False, f'{out}')
        m = wait_console(console, TICK_RE.pattern, 60)
        ram, disk = int(m.group(1)), int(m.group(2))
        base = self.counter['S']
        note(f'the started export of S: {m.group(0)} (S at {base})')
        expect(base + 1 <= ram <= base + 3 and disk == ram,
               f'TICK ram={ram} disk={disk}; S was at {base}')
        expect(q.cmd('query-status')['status'] == 'running', 'not running')
        agent = Agent(qga)
        try:
            self.check_files(agent, 'S', [], [AFTER_S, AFTER_P])
        finally:
            agent.close()
        stop(self.started.pop())

    def start_production(self):
        out, console, q, qga = self.start_new('P')
        expect(out['applied']['powered-off'] is True, f'{out}')
        m = wait_console(console, r'^(GUEST-READY|GUEST-ERROR.*)$',
                         ck.BOOT_TIMEOUT)
        expect(m.group(1) == 'GUEST-READY', f'the export boots: {m.group(1)}')
        m = wait_console(console, TICK_RE.pattern, 30, after=m.end())
        ram, disk = int(m.group(1)), int(m.group(2))
        base = self.counter['P']
        note(f'the booted export of P: {m.group(0)} (P at {base}, the'
             f' first TICK after it {self.after_p})')
        # The counter on P's disk: at least the one of the TICK before P;
        # at most the first TICK read after CHECKPOINT_CREATED (a value
        # stored before the freeze may be printed only after the thaw)
        expect(base + 1 <= ram <= self.after_p + 1 and disk == ram,
               f'TICK ram={ram} disk={disk}; P\'s disk between {base} and'
               f' {self.after_p}')
        expect(q.cmd('query-status')['status'] == 'running', 'not running')
        agent = Agent(qga)
        try:
            self.check_files(agent, 'P', [AFTER_S], [AFTER_P])
        finally:
            agent.close()
        stop(self.started.pop())

    def cleanup(self, failed):
        while self.started:
            stop(self.started.pop())
        if self.g:
            if failed and self.g.proc:
                note('console (end):')
                note(self.g.tail(20))
                note('QEMU stderr: ' + self.g.stderr().strip())
            self.g.cleanup()


class Steps:
    """TAP points, each run only when the points it needs passed."""

    def __init__(self, tap):
        self.tap = tap
        self.passed = set()

    def run(self, key, desc, func, *args, needs=()):
        missing = [n for n in needs if n not in self.passed]
        if missing:
            def not_run():
                raise AssertionError(f'not run: {", ".join(missing)} failed')
            return self.tap.check(desc, not_run)
        failures = self.tap.failures
        result = self.tap.check(desc, func, *args)
        if self.tap.failures == failures:
            self.passed.add(key)
        return result


def run_checks(tap, s):
    st = Steps(tap)
    st.run('boot', 'boot the default guest with a store', s.boot)
    st.run('cps', 'a standard checkpoint S, a production checkpoint P',
           s.checkpoints, needs=['boot'])
    job = st.run('held', 'checkpoint-export of S starts; held half-way'
                 ' (job-pause)', s.export_standard_held, needs=['cps'])
    last = st.run('runs', 'during the export the VM runs, its counter goes'
                  ' on', s.runs_during_export, job, needs=['held'])
    st.run('refused', 'checkpoint-delete during the export: refused'
           ' ("being exported"), nothing changed', s.delete_refused, job,
           needs=['held'])
    st.run('S', 'the export of S completes; the guest never stopped',
           s.export_standard_done, job, last, needs=['held'])
    st.run('P', 'qemu-checkpoint export of P', s.export_production,
           needs=['cps'])
    for k in ('S', 'P'):
        st.run(f'{k}-content', f'the export of {k}: a store of its own; its'
               ' image and its active child read as the frozen image',
               s.same_content, k, needs=[k])
    st.run('non-empty', 'export into a non-empty folder: refused, the folder'
           ' unchanged', s.non_empty, needs=['cps'])
    st.run('unknown', 'export of an unknown checkpoint: refused, no folder',
           s.unknown, needs=['cps'])
    st.run('full-8M', 'full filesystem (8 MiB tmpfs, the copy fails): the'
           ' error says space, nothing left', s.full_filesystem, '8M',
           needs=['cps'])
    st.run('full-1M', 'full filesystem (1 MiB tmpfs, the image cannot be'
           ' created): the error says space, nothing left',
           s.full_filesystem, '1M', needs=['cps'])
    st.run('untouched', 'the VM\'s frozen images untouched (bytes, size,'
           ' mtime, DataWriteGuid); the active image still used',
           s.vm_images_untouched, needs=['cps'])
    st.run('moved', 'quit; the exports moved elsewhere, the VM\'s folder'
           ' renamed away', s.quit_and_move, needs=['S', 'P'])
    st.run('start-S', 'start --store of the moved export of S: goes on from'
           ' S\'s counter, S\'s files', s.start_standard, needs=['moved'])
    st.run('start-P', 'start --store of the moved export of P: boots from'
           ' P\'s disks, P\'s files', s.start_production, needs=['moved'])


def main():
    if not guestlib.require_built():
        return 1
    tap = Tap()
    t0 = time.monotonic()
    with scratch_dir('hvcp-export-', lambda: tap.failed) as work:
        s = Scenario(work)
        try:
            run_checks(tap, s)
        finally:
            s.cleanup(tap.failed)
    note(f'{time.monotonic() - t0:.0f}s')
    return tap.done()


if __name__ == '__main__':
    sys.exit(main())
