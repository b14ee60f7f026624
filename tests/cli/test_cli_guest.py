#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-2.0-or-later
"""qemu-checkpoint against the default test guest (TCG, microvm, a vhdx
disk, a standard store; the CLI on a QMP socket of its own).

  1. list of an empty store, in both output modes;
  2. create: a standard checkpoint A (lines for people), B (--json, the
     documented schema), a production checkpoint P (frozen through the
     guest agent);
  3. list, list --tree, info, rename, both output modes;
  4. apply P: the VM is left off, "cont" boots it from P's disk; apply
     A: the guest's file and counter are A's, the VM runs; apply B with
     --checkpoint-first (--json): the checkpoint of the state before is
     returned, B's data and counter;
  5. export of B while the VM runs (skipped while QEMU has no
     checkpoint-export);
  6. delete --dry-run (both modes) changes nothing; delete the
     checkpoint of the state before and P (images deleted), B (its
     image merged with the active one, online, under the guest);
     merges (both modes); an unknown checkpoint;
  7. quit the VM; start --store: a new QEMU on the manifest's active
     image (query-block), its guest boots and reads the file it had
     written through its agent; the console through --console, the
     agent socket moved with --replace; config.json is QEMU's (or,
     while QEMU does not write one, the test's);
  8. start --store of the export (skipped as 5): the guest goes on from
     B's counter.

Prints TAP.  Run by meson (suite hyperv-checkpoints-cli) or by hand:
    HVCP_BUILD=build/qemu HVCP_GUEST_DIR=build/guest \
    PYTHONPATH=qemu/python:tests/pylib:tests/guest:tests/cli \
    python3 tests/cli/test_cli_guest.py
"""

import base64
import json
import os
import re
import sys
import time

import guestlib
from guestlib import Guest, GuestError
from hvcptap import Tap, Skip, scratch_dir
import checkpointlib as ck
from checkpointlib import expect, note
from clilib import error, ok, ok_json
from hvcpvm import QMP

TICK_RE = re.compile(r'^TICK ram=(\d+) disk=(\d+)$', re.M)


def wait_console(path, regex, timeout=90, after=0):
    """The first match of regex (multi-line) in the file path after
    offset `after`."""
    pat = re.compile(regex, re.M)
    deadline = time.monotonic() + timeout
    while True:
        try:
            with open(path, errors='replace') as f:
                f.seek(after)
                text = f.read().replace('\r', '')
        except FileNotFoundError:
            text = ''
        m = pat.search(text)
        if m:
            return m
        if time.monotonic() > deadline:
            raise GuestError(f'no {regex!r} on the console in {timeout}s:'
                             f' {text[-500:]}')
        time.sleep(0.2)


class Scenario:
    # pylint: disable=too-many-instance-attributes

    def __init__(self, work):
        self.work = work
        self.store = os.path.join(work, 'store')
        self.disk = os.path.join(work, 'sys.vhdx')
        self.sock = os.path.join(work, 'cli.sock')
        self.g = None
        self.ids = {}
        self.data = {}
        self.counter = {}
        self.export_dir = os.path.join(work, 'export-b')
        self.has_export = False
        self.started = []           # (QMP or None, pid) of QEMUs start made

    def q(self, *args):
        return ['--qmp', self.sock, *args]

    # -- 1 --------------------------------------------------------------

    def boot(self):
        guestlib.create_disk(self.disk, '64M', 'vhdx')
        self.g = Guest(disks=[(self.disk, 'vhdx')], name='cli',
                       extra_args=ck.store_args(self.store) +
                       ['-qmp', f'unix:{self.sock},server=on,wait=off'])
        ck.boot(self.g)
        self.has_export = any(c['name'] == 'checkpoint-export'
                              for c in self.g.qmp('query-commands'))
        expect(ok_json('list', *self.q('list')) == [], 'the store is not empty')
        out = ok(*self.q('list')).out
        expect('No checkpoints' in out, out)
        tree = ok(*self.q('list', '--tree')).out
        expect(tree.split() == ['No', 'checkpoints', 'Now'], tree)

    # -- 2 --------------------------------------------------------------

    def take(self, name, as_json):
        self.data[name] = ck.write_data(self.g, name, vdb=False)
        self.counter[name] = ck.sync_to_tick(self.g)
        if as_json:
            c = ok_json('create', *self.q('create', name, '--type', 'standard'))
            cid = c['id']
        else:
            out = ok(*self.q('create', name, '--type', 'standard')).out
            m = re.match(r"Created checkpoint '(.*)' \((" + ck.UUID +
                         r")\): standard, saved-state$", out.strip())
            expect(m and m.group(1) == name, f'create said {out!r}')
            cid = m.group(2)
            c = ck.by_id(self.g)[cid]
        expect(c['state'] == 'ready' and c['type'] == 'standard' and
               c['current'] and c['name'] == name, f'checkpoint {name}: {c}')
        self.ids[name] = cid
        note(f'{name} = {cid} at counter {self.counter[name]}')

    def production(self):
        self.g.wait_for_ticks(2)
        c = ok_json('create', *self.q('create', 'P', '--type', 'production'))
        expect(c['type'] == 'production' and c['consistency'] == 'application'
               and 'fallback-reason' not in c, f'production checkpoint: {c}')
        self.ids['P'] = c['id']
        st = self.g.qga('guest-fsfreeze-status')
        expect(st == 'thawed', f'the guest is {st}')

    # -- 3 --------------------------------------------------------------

    def read_commands(self):
        cps = ok_json('list', *self.q('list'))
        expect([c['name'] for c in cps] == ['A', 'B', 'P'], f'list {cps}')
        expect(ok_json('list', *self.q('list', '--tree')) == cps,
               'list --tree --json differs from list --json')
        table = ok(*self.q('list')).out
        note(table)
        rows = [ln for ln in table.splitlines() if re.search(ck.UUID, ln)]
        expect(len(rows) == 3 and rows[2].startswith('*'),
               f'the table (P current): {table}')
        tree = ok(*self.q('list', '--tree')).out
        note(tree)
        expect(re.search(r'^A  \(.*\n`- B  \(.*\n   `- P  \(.*\n      `- Now$',
                         tree, re.M), f'the tree: {tree}')
        info = ok_json('info', *self.q('info', 'B'))
        expect(info['id'] == self.ids['B'] and
               info['parent'] == self.ids['A'] and
               info['disks'][0]['device'] == 'vda' and
               info.get('state-file-size', 0) > 0, f'info B: {info}')
        out = ok(*self.q('info', self.ids['P'])).out
        expect('Type:        production' in out and
               'Consistency: application' in out and 'Current:     yes' in out,
               out)

    def rename(self):
        c = ok_json('rename', *self.q('rename', 'P', 'prod'))
        expect(c['name'] == 'prod' and c['id'] == self.ids['P'], f'{c}')
        out = ok(*self.q('rename', self.ids['P'][:8], 'production one')).out
        expect(out.strip() == f"Renamed checkpoint 'prod' ({self.ids['P']}) to"
               " 'production one'", out)
        expect(ck.by_id(self.g)[self.ids['P']]['name'] == 'production one',
               'not renamed in QEMU')

    # -- 4 --------------------------------------------------------------

    def applied(self, name):
        """The guest runs on from name's counter, with name's data.  The
        CLI has returned: the first TICK from now on is one of the
        checkpoint's timeline, a few seconds after its instant (the
        CLI's own queries take a while on a busy host)."""
        self.g.skip_console()
        (ram, disk), = self.g.wait_for_ticks(1)
        base = self.counter[name]
        note(f'after applying {name}: TICK ram={ram} disk={disk} ({name} at {base})')
        expect(base + 1 <= ram <= base + 5 and disk == ram,
               f'TICK ram={ram} disk={disk}, expected {base + 1} (or a little more)')
        ck.resync(self.g)
        got = ck.read_data(self.g, vdb=False)
        expect(got == self.data[name], f'data {got}, expected {self.data[name]}')

    def apply_production(self):
        ck.sync_to_tick(self.g)
        self.g.skip_console()
        out = ok(*self.q('apply', 'production one')).out
        note(out)
        lines = out.splitlines()
        expect(lines[0] == f"Applied checkpoint 'production one' ({self.ids['P']})"
               and 'The VM is off' in lines[-1], out)
        st = ck.status(self.g)
        expect(st != 'running', f'the VM is {st} after a production apply')
        self.g.qmp('cont')
        m = self.g.wait_for_line(r'^(GUEST-READY|GUEST-ERROR.*)$', ck.BOOT_TIMEOUT)
        expect(m.group(1) == 'GUEST-READY', f'no reboot: {self.g.tail()}')
        ck.resync(self.g)
        got = ck.read_data(self.g, vdb=False)
        expect(got == self.data['B'], f'after the production apply: {got}')

    def apply_a(self):
        ck.write_data(self.g, 'changed', vdb=False)
        out = ok(*self.q('apply', 'A')).out
        expect(out.splitlines() == [f"Applied checkpoint 'A' ({self.ids['A']})",
                                    'VM status: running'], out)
        self.applied('A')
        expect(ck.current(self.g) == self.ids['A'], 'Now is not under A')

    def apply_b_first(self):
        r = ok_json('apply', *self.q('apply', 'B', '--checkpoint-first'))
        expect(r['id'] == self.ids['B'] and r['powered-off'] is False and
               r['status'] == 'running' and r.get('created'), f'apply: {r}')
        self.ids['before'] = r['created']
        c = ck.by_id(self.g)[r['created']]
        expect(c['state'] == 'ready' and c['parent'] == self.ids['A'], f'{c}')
        self.applied('B')

    # -- 5 --------------------------------------------------------------

    def delete(self):
        m0 = ck.manifest(self.store)
        before = self.ids['before']
        plan = ok_json('delete-dry-run', *self.q('delete', before, '--dry-run'))
        expect(plan['deleted'] == [before], f'plan: {plan}')
        out = ok(*self.q('delete', '--all', '--dry-run')).out
        expect(out.count('Would delete checkpoint') == 4, out)
        expect(ck.manifest(self.store) == m0, 'a dry run changed the manifest')
        c = ck.by_id(self.g)[before]
        frozen = [d['filename'] for d in c['disks']]
        out = ok(*self.q('delete', before[:8])).out
        note(out)
        expect(out.splitlines()[0] ==
               f"Deleted checkpoint '{c['name']}' ({before})", out)
        expect(not any(os.path.exists(f) for f in frozen),
               f'the deleted checkpoint\'s images are left: {frozen}')
        # P: its image is merged with the active one, online
        r = ok_json('delete', *self.q('delete', self.ids['P']))
        expect(r['deleted'] == [self.ids['P']] and r['merges'] == [],
               f'delete P: {r}')
        expect(set(ck.by_id(self.g)) == {self.ids['A'], self.ids['B']},
               f'left: {list(ck.by_id(self.g))}')
        expect(ok_json('merges', *self.q('merges')) == [], 'merges left')
        expect(ok_json('merges', *self.q('merges')) == [], 'merges left')
        expect('No merges' in ok(*self.q('merges')).out, 'merges')
        stray = ck.stray_children(self.store, [self.work])
        expect(not stray, f'images the manifest does not reference: {stray}')
        # B: its image has one image built on it, the active one: merged
        # online, under the running guest
        frozen_b = [d['filename'] for d in ck.by_id(self.g)[self.ids['B']]['disks']]
        active = [d['filename'] for d in ck.manifest(self.store)['active']]
        out = ok(*self.q('delete', 'B')).out
        note(out)
        expect('Merged: disk vda' in out, f'no merge: {out}')
        left = [f for f in frozen_b + active if os.path.exists(f)]
        expect(len(left) == 1, f'of B\'s and the active image, left: {left}')
        m = ck.manifest(self.store)
        expect([c['id'] for c in m['checkpoints']] == [self.ids['A']] and
               m.get('current') == self.ids['A'] and 'merge' not in m,
               f'manifest: {m}')
        expect([d['filename'] for d in m['active']] == left, f'{m["active"]}')
        note(error(*self.q('info', 'P'), expect_in="'P'"))
        note(error(*self.q('delete', 'nothing'), expect_in='nothing'))
        self.g.wait_for_ticks(1)

    # -- 6 --------------------------------------------------------------

    def export(self):
        if not self.has_export:
            raise Skip('QEMU has no checkpoint-export yet')
        out = ok_json('export', *self.q('export', 'B', self.export_dir))
        expect(out['id'] == self.ids['B'], f'export: {out}')
        for f in ('manifest.json', 'config.json'):
            expect(os.path.isfile(os.path.join(self.export_dir, f)),
                   f'no {f} in the export: {os.listdir(self.export_dir)}')
        self.g.wait_for_ticks(1)

    # -- 7 --------------------------------------------------------------

    def config(self, argv):
        path = os.path.join(self.store, 'config.json')
        if os.path.exists(path):
            note('config.json written by QEMU')
            return json.load(open(path))
        note('QEMU did not write config.json: the test writes it as QEMU'
             ' will (the command line, cwd, the disks)')
        cfg = {'version': 1, 'argv': argv, 'cwd': os.getcwd(),
               'disks': [{'device': 'vda', 'format': 'vhdx',
                          'filename': self.disk}]}
        with open(path, 'w') as f:
            json.dump(cfg, f)
        return cfg

    def start_new(self, store, name, console_after=None):
        """start --store with the console in a file and the agent socket
        moved; returns (start's JSON, console path, QMP)."""
        sock = os.path.join(self.work, f'{name}.sock')
        console = os.path.join(self.work, f'{name}-console.log')
        newdir = os.path.join(self.work, f'{name}-run')
        os.makedirs(newdir, exist_ok=True)
        out = ok_json('start', 'start', '--store', store, '--qmp', sock,
                      '--console', f'file,path={console}',
                      '--replace', f'{self.g.tmpdir}={newdir}')
        self.started.append([None, out['pid']])
        note(' '.join(out['argv']))
        expect(any(newdir in a for a in out['argv']),
               '--replace changed nothing')
        q = QMP(sock, timeout=10)
        self.started[-1][0] = q
        return out, console, q

    def start(self):
        argv = self.g.command_line()
        self.g.shutdown()
        expect(self.g.proc.returncode == 0, f'QEMU exited {self.g.proc.returncode}')
        self.config(argv)
        active = ck.manifest(self.store)['active']
        expect(active and active[0]['filename'] != self.disk,
               f'the disk is on its original file: {active}')
        out, console, q = self.start_new(self.store, 'restart')
        blocks = [b for b in q.cmd('query-block') if b.get('inserted')]
        files = [os.path.realpath(b['inserted']['file']) for b in blocks]
        note(f'query-block: {files}')
        expect(files == [active[0]['filename']],
               f'the VM runs on {files}, the manifest says {active}')
        cur = [c['id'] for c in q.cmd('query-checkpoints') if c['current']]
        expect(cur == [self.ids['A']], f'current {cur}')
        wait_console(console, r'^GUEST-READY$', ck.BOOT_TIMEOUT)
        m = wait_console(console, TICK_RE.pattern, 30)
        note(f'restarted guest: {m.group(0)}')
        # the guest reads what B's apply left on the disk (the data
        # file written before B), with its counter file
        expect(int(m.group(2)) >= self.counter['B'],
               f'the restarted guest counts from {m.group(2)}, below B\'s'
               f' {self.counter["B"]}: not on the active image?')
        st = q.cmd('query-status')['status']
        expect(st == 'running', f'VM {st}')
        # its agent, on the socket --replace moved: the guest reads B's
        # file from the disk
        got = guest_file(os.path.join(self.work, 'restart-run', 'qga.sock'),
                         ck.DATA_FILE)
        expect(got.strip() == self.data['B'][0],
               f'the restarted guest reads {got!r}, B wrote {self.data["B"]}')
        stop(self.started.pop())

    # -- 8 --------------------------------------------------------------

    def start_export(self):
        if not self.has_export:
            raise Skip('QEMU has no checkpoint-export yet')
        out, console, q = self.start_new(self.export_dir, 'export')
        expect(out.get('applied', {}).get('id') == self.ids['B'], f'{out}')
        m = wait_console(console, TICK_RE.pattern, 60)
        note(f'exported guest: {m.group(0)}')
        base = self.counter['B']
        expect(base + 1 <= int(m.group(1)) <= base + 3,
               f'the exported VM counts from {m.group(1)}, B was at {base}')
        cur = [c['id'] for c in q.cmd('query-checkpoints') if c['current']]
        expect(cur == [self.ids['B']], f'current {cur}')
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


def guest_file(qga_path, path):
    """A file of the guest, read through its agent at qga_path."""
    qga = guestlib.QGA(qga_path)
    deadline = time.monotonic() + 30
    try:
        while True:
            try:
                r = qga.cmd('guest-file-open', timeout=5, path=path)
                break
            except (OSError, GuestError):
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.5)
        data = qga.cmd('guest-file-read', handle=r, count=4096)
        qga.cmd('guest-file-close', handle=r)
        return base64.b64decode(data.get('buf-b64', '')).decode()
    finally:
        qga.close()


def stop(started):
    """Quit a QEMU that start started; kill it if it does not go."""
    q, pid = started
    if q:
        try:
            q.raw('quit')
        except Exception:       # pylint: disable=broad-except
            pass
        q.close()
    for _ in range(100):
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.1)
    os.kill(pid, 9)


def run_checks(tap, s):
    tap.check('boot with a standard store; list of no checkpoints', s.boot)
    tap.check('create A (for people)', s.take, 'A', False)
    tap.check('create B --json', s.take, 'B', True)
    tap.check('create --type production: frozen, thawed', s.production)
    tap.check('list, list --tree, info (both outputs)', s.read_commands)
    tap.check('rename (both outputs)', s.rename)
    tap.check('apply the production checkpoint: the VM off; cont boots it',
              s.apply_production)
    tap.check('apply A: A\'s data and counter', s.apply_a)
    tap.check('apply B --checkpoint-first --json', s.apply_b_first)
    tap.check('export B while the VM runs', s.export)
    tap.check('delete --dry-run, delete (images deleted, an online merge),'
              ' merges; unknown checkpoint', s.delete)
    tap.check('quit; start --store: the VM on its active image, the guest'
              ' boots and reads its file', s.start)
    tap.check('start --store of the export: the guest goes on from B',
              s.start_export)


def main():
    if not guestlib.require_built():
        return 1
    tap = Tap(dependent=True)
    t0 = time.monotonic()
    with scratch_dir('hvcp-cli-guest-', lambda: tap.failed) as work:
        s = Scenario(work)
        try:
            run_checks(tap, s)
        finally:
            s.cleanup(tap.failed)
    note(f'{time.monotonic() - t0:.0f}s')
    return tap.done()


if __name__ == '__main__':
    sys.exit(main())
