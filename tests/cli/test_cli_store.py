#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-2.0-or-later
"""qemu-checkpoint with QEMU but no guest (-accel qtest on microvm, a
vhdx and a qcow2 disk): the merges of a running VM, and a stopped VM's
store (--store).

Running VM (--qmp, the merges slowed down by
QEMU_CHECKPOINT_MERGE_SPEED):
  1. create two checkpoints with 8 MiB written between them; delete
     --all with stderr on a terminal: a progress bar, the disks back on
     their original files;
  2. again, and the merge job paused (job-pause) while the CLI waits:
     delete says so on one line and exits 1; "merges --resume" finishes
     the merge.

Stopped VM (--store; skipped while QEMU has no -checkpoints offline=on):
  3. the store of A -> B -> C with "Now" under B: list, list --tree,
     info, rename in both output modes, JSON checked against
     scripts/qemu-checkpoint.md; an unknown checkpoint, create and apply
     refused;
  4. delete --dry-run changes nothing; delete B: its image stays as
     merge pending (two images built on it); delete C: C's image is
     deleted and B's is merged, offline: files gone, the manifest
     updated, no image left that nothing references;
  5. start --store: the VM runs on the manifest's active images
     (query-block); config.json is QEMU's (or, while QEMU does not write
     one, the test's, with a note);
  6. export (skipped while QEMU has no checkpoint-export): the export
     folder is a store; moved elsewhere, start --store brings up the
     checkpoint as a new VM; exported as qcow2, start opens the disks
     as qcow2;
  7. delete --all: the disks end on their original files, no
     differencing image left.

Prints TAP.  Run by meson (suite hyperv-checkpoints-cli) or by hand:
    HVCP_BUILD=build/qemu PYTHONPATH=tests/pylib:tests/store:tests/cli \
    python3 tests/cli/test_cli_store.py
"""

import json
import os
import pty
import shutil
import subprocess
import sys
import time

import clilib as cl
from clilib import error, ok, ok_json
from hvcptap import Tap, Skip, expect, note, scratch_dir
import storelib as sl

MIB = 1024 * 1024
SPEED = str(4 * MIB)        # bytes per second of a slowed-down merge


def manifest(store):
    with open(os.path.join(store, 'manifest.json'), encoding='utf-8') as f:
        return json.load(f)


def children_in(folder):
    return sorted(os.path.join(folder, f) for f in os.listdir(folder)
                  if sl.CHILD_RE.search(f))


def chain(path):
    r = sl.run(sl.QEMU_IMG, 'info', '-U', '--backing-chain',
               '--output=json', path, check=True)
    info = json.loads(r.stdout)
    return [os.path.realpath(i['filename']) for i in
            (info if isinstance(info, list) else [info])]


def referenced(store):
    m = manifest(store)
    files = set()
    for f in [d['filename'] for c in m['checkpoints'] for d in c['disks']] + \
            [d['filename'] for d in m['active']]:
        files.update(chain(f))
    return files


def no_stray(store, folder):
    stray = [f for f in children_in(folder) if f not in referenced(store)]
    expect(not stray, f'images that nothing references: {stray}')


def write(vm, dev, pattern, offset, length):
    vm.write(dev, pattern, offset, length)


class Online:
    """A qtest VM with a store and a second QMP socket for the CLI."""

    def __init__(self, work):
        self.folder = os.path.join(work, 'online')
        os.makedirs(self.folder)
        self.store = os.path.join(self.folder, 'store')
        self.disk = sl.mkimg(os.path.join(self.folder, 'd.vhdx'), 'vhdx', '64M')
        self.sock = os.path.join(work, 'cli-online.sock')
        self.vm = sl.VM(work, [('d0', self.disk, 'vhdx')], self.store,
                        extra=['-qmp', f'unix:{self.sock},server=on,wait=off'],
                        env={'QEMU_CHECKPOINT_MERGE_SPEED': SPEED})

    def two_checkpoints(self, a, b):
        ok('--qmp', self.sock, 'create', a)
        write(self.vm, 'd0', 0x5a, 0, 8 * MIB)
        out = ok_json('create', '--qmp', self.sock, 'create', b,
                      '--type', 'standard')
        expect(out['name'] == b and out['state'] == 'ready' and out['current'],
               f'create: {out}')

    def on_original(self):
        m = manifest(self.store)
        expect(m['checkpoints'] == [], f'checkpoints left: {m["checkpoints"]}')
        expect([d['filename'] for d in m['active']] == [self.disk],
               f'active: {m["active"]}')
        expect(children_in(self.folder) == [],
               f'differencing images left: {children_in(self.folder)}')

    def progress_bar(self):
        """delete --all with stderr on a terminal: a progress bar."""
        self.two_checkpoints('A', 'B')
        master, slave = pty.openpty()
        proc = subprocess.Popen([cl.CLI, '--qmp', self.sock, 'delete', '--all'],
                                stdin=subprocess.DEVNULL,
                                stdout=subprocess.PIPE, stderr=slave,
                                env=cl.env(), text=True)
        os.close(slave)
        err = b''
        while True:
            try:
                data = os.read(master, 4096)
            except OSError:
                break
            if not data:
                break
            err += data
        out, _ = proc.communicate(timeout=120)
        os.close(master)
        text = err.decode(errors='replace')
        note(f'stdout: {out.strip()}')
        note(f'stderr (terminal): {text[-200:]!r}')
        expect(proc.returncode == 0, f'delete --all exited {proc.returncode}')
        expect('merging [' in text and '%' in text and '\r' in text,
               'no progress bar on the terminal')
        expect('Merged: disk d0' in out, f'no merge reported: {out}')
        self.on_original()

    def paused(self):
        """The merge job paused while delete waits: one line, exit 1;
        merges --resume completes it."""
        self.two_checkpoints('C', 'D')
        proc = subprocess.Popen([cl.CLI, '--qmp', self.sock, '--json',
                                 'delete', '--all'],
                                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, env=cl.env(), text=True)
        try:
            self.vm.wait_until(
                lambda: any(m['state'] == 'running' for m in
                            self.vm.cmd('query-checkpoint-merges')),
                'the merge to run', 30, 0.05)
            job = [j for j in self.vm.cmd('query-jobs')
                   if j['type'] == 'checkpoint-merge'][0]
            self.vm.cmd('job-pause', id=job['id'])
            out, err = proc.communicate(timeout=60)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        note(f'delete: exit {proc.returncode}, stderr {err.strip()}')
        lines = err.splitlines()
        expect(proc.returncode == 1 and len(lines) == 1 and
               lines[0].startswith(cl.PREFIX) and 'paused' in lines[0],
               f'delete with the merge paused: exit {proc.returncode},'
               f' stderr {err!r}')
        plan = cl.validate(json.loads(out), 'delete')
        expect(len(plan['deleted']) == 2, f'deleted: {plan["deleted"]}')
        left = ok_json('merges', '--qmp', self.sock, 'merges')
        expect(left, 'no merge left while paused')
        done = ok_json('merges', '--qmp', self.sock, 'merges', '--resume')
        expect(done == [], f'merges after --resume: {done}')
        self.on_original()
        r = ok('--qmp', self.sock, 'merges')
        expect('No merges' in r.out, r.out)

    def close(self):
        self.vm.kill()


class Stopped:
    """The store of a VM that was shut down: A -> B -> C, Now under B."""

    def __init__(self, work):
        self.work = work
        self.folder = os.path.join(work, 'stopped')
        os.makedirs(self.folder)
        self.store = os.path.join(self.folder, 'store')
        self.disks = [('d0', sl.mkimg(os.path.join(self.folder, 'v.vhdx'),
                                      'vhdx', '64M'), 'vhdx'),
                      ('d1', sl.mkimg(os.path.join(self.folder, 'q.qcow2'),
                                      'qcow2', '64M'), 'qcow2')]
        self.ids = {}
        self.has_export = False
        self.argv = None
        self.vm = None

    def make(self):
        vm = sl.VM(self.work, self.disks, self.store)
        try:
            self.argv = vm.command_line()
            for i, name in enumerate('ABC'):
                for dev, _, _ in self.disks:
                    write(vm, dev, 0x10 + i, i * 65536, 65536)
                self.ids[name] = vm.create(name)
            vm.apply(self.ids['B'])
            self.has_export = any(c['name'] == 'checkpoint-export'
                                  for c in vm.cmd('query-commands'))
            vm.shutdown()
        finally:
            vm.kill()
        note(f'checkpoints: {self.ids}; checkpoint-export:'
             f' {"yes" if self.has_export else "no"}')

    def offline_supported(self):
        r = cl.cli('--store', self.store, 'list')
        if r.rc != 0 and "'offline'" in r.err:
            raise Skip(f'QEMU has no -checkpoints offline=on yet ({r.err.strip()})')
        expect(r.rc == 0 and not r.err, f'list: {r!r}')
        return True

    def read_commands(self):
        s = self.store
        cps = ok_json('list', '--store', s, 'list')
        expect([c['name'] for c in cps] == ['A', 'B', 'C'], f'list: {cps}')
        cur = [c['name'] for c in cps if c['current']]
        expect(cur == ['B'], f'current: {cur}')
        expect(ok_json('list', '--store', s, 'list', '--tree') == cps,
               'list --tree --json is not list --json')
        table = ok('--store', s, 'list').out
        note(table)
        for cid in self.ids.values():
            expect(cid in table, f'{cid} not in the table')
        tree = ok('--store', s, 'list', '--tree').out
        note(tree)
        lines = tree.splitlines()
        expect(lines[0].startswith('A  (') and
               lines[1].startswith('`- B  (') and
               any(ln.strip(' |`+-') == 'Now' for ln in lines) and
               any(ln.strip(' |`+-').startswith('C  (') for ln in lines),
               f'the tree: {tree}')
        info = ok_json('info', '--store', s, 'info', 'B')
        expect(info['id'] == self.ids['B'] and info['parent'] == self.ids['A']
               and len(info['disks']) == 2, f'info: {info}')
        human = ok('--store', s, 'info', self.ids['B'][:8]).out
        expect('Id:' in human and self.ids['B'] in human and
               'Parent:' in human and 'Disk d0:' in human, human)

    def rename_and_refusals(self):
        s = self.store
        r = ok_json('rename', '--store', s, 'rename', 'C', 'C renamed')
        expect(r['name'] == 'C renamed' and r['id'] == self.ids['C'], f'{r}')
        out = ok('--store', s, 'rename', 'C renamed', 'C').out
        expect('Renamed' in out, out)
        names = [c['name'] for c in manifest(s)['checkpoints']]
        expect(names == ['A', 'B', 'C'], f'the manifest names {names}')
        note(error('--store', s, 'info', 'no such checkpoint',
                   expect_in='no such checkpoint'))
        note(error('--store', s, 'apply', 'nope', expect_in='nope'))
        note(error('--store', s, 'create', 'X'))
        note(error('--store', s, 'apply', 'A'))
        expect([c['name'] for c in manifest(s)['checkpoints']] == ['A', 'B', 'C'],
               'a refused command changed the tree')

    def delete_offline(self):
        s = self.store
        before = open(os.path.join(s, 'manifest.json'), 'rb').read()
        files = {f: os.stat(f).st_mtime_ns for f in children_in(self.folder)}
        plan = ok_json('delete-dry-run', '--store', s, 'delete', 'B', '--dry-run')
        expect(plan['deleted'] == [self.ids['B']], f'plan: {plan}')
        human = ok('--store', s, 'delete', '--all', '--dry-run').out
        expect('Would delete' in human, human)
        expect(open(os.path.join(s, 'manifest.json'), 'rb').read() == before,
               'a dry run changed the manifest')
        expect({f: os.stat(f).st_mtime_ns for f in children_in(self.folder)}
               == files, 'a dry run changed the images')
        # B's images have two images built on them: pending
        frozen_b = [d['filename'] for d in
                    ok_json('info', '--store', s, 'info', 'B')['disks']]
        r = ok('--store', s, 'delete', 'B')
        note(r.out)
        expect('Merge pending' in r.out, f'no pending merge: {r.out}')
        pend = ok_json('merges', '--store', s, 'merges')
        expect(pend and all(m['state'] == 'pending' for m in pend), f'{pend}')
        # C's images go, then B's are merged (offline copies)
        frozen_c = [d['filename'] for d in
                    ok_json('info', '--store', s, 'info', 'C')['disks']]
        out = ok_json('delete', '--store', s, 'delete', 'C')
        note(json.dumps(out)[:400])
        expect(out['deleted'] == [self.ids['C']] and out['merges'] == [],
               f'delete C: {out}')
        for f in frozen_c:
            expect(not os.path.exists(f), f'C\'s image {f} is still there')
        m = manifest(s)
        expect([c['id'] for c in m['checkpoints']] == [self.ids['A']],
               f'the manifest: {m["checkpoints"]}')
        expect(m.get('current') == self.ids['A'], f'current: {m.get("current")}')
        expect('merge' not in m and 'operation' not in m, f'manifest: {m}')
        active = [d['filename'] for d in m['active']]
        gone = [f for f in frozen_b if os.path.exists(f)] + \
            [f for f in active if not os.path.exists(f)]
        remaining = children_in(self.folder)
        expect(len(remaining) == 2, f'images left: {remaining}')
        expect(all(f in remaining for f in active), f'active {active}')
        note(f'B\'s images {frozen_b}; left: {remaining}; {gone}')
        # the merge made one image of B's and of Now's per disk
        for f in active:
            ch = chain(f)
            expect(len(ch) == 2 and ch[1] in [d[1] for d in self.disks],
                   f'chain of {f}: {ch}')
        no_stray(s, self.folder)
        expect(ok_json('merges', '--store', s, 'merges') == [], 'merges left')

    def config(self):
        """config.json of the store: QEMU's, else one written here."""
        path = os.path.join(self.store, 'config.json')
        if os.path.exists(path):
            note('config.json written by QEMU')
            return
        note('QEMU did not write config.json: the test writes it as QEMU'
             ' will (the command line, cwd, the disks)')
        cfg = {'version': 1, 'argv': self.argv, 'cwd': os.getcwd(),
               'disks': [{'device': d, 'format': f, 'filename': p}
                         for d, p, f in self.disks]}
        with open(path, 'w') as f:
            json.dump(cfg, f)

    def start(self):
        self.config()
        sock = os.path.join(self.work, 'started.sock')
        out = ok_json('start', 'start', '--store', self.store, '--qmp', sock)
        note(' '.join(out['argv']))
        active = {d['device']: d['filename'] for d in manifest(self.store)['active']}
        for dev, path, _ in self.disks:
            expect(active[dev] != path, f'{dev} is still on {path}')
        q = None
        try:
            q = sl.hvcpvm.QMP(sock, timeout=10)
            blocks = {b['device']: b['inserted']['file']
                      for b in q.cmd('query-block') if b.get('inserted')}
            note(f'query-block: {blocks}')
            for dev, f in active.items():
                expect(os.path.realpath(blocks.get(dev, '')) == f,
                       f'{dev} runs on {blocks.get(dev)}, the manifest says {f}')
            cur = [c['id'] for c in q.cmd('query-checkpoints') if c['current']]
            want = manifest(self.store).get('current')
            expect(cur == [want], f'current {cur}, the manifest says {want}')
            st = q.cmd('query-status')['status']
            expect(st == 'running', f'the VM is {st}')
        finally:
            stop(q, out['pid'])

    def export(self):
        if not self.has_export:
            raise Skip('QEMU has no checkpoint-export yet')
        target = os.path.join(self.work, 'export-a')
        out = ok_json('export', '--store', self.store, 'export', 'A', target)
        expect(out['id'] == self.ids['A'], f'export: {out}')
        expect(os.path.isfile(os.path.join(target, 'manifest.json')) and
               os.path.isfile(os.path.join(target, 'config.json')),
               f'the export: {os.listdir(target)}')
        cfg = json.load(open(os.path.join(target, 'config.json')))
        expect(cfg.get('resume-checkpoint') == self.ids['A'], f'config: {cfg}')
        moved = os.path.join(self.work, 'moved-export')
        shutil.move(target, moved)
        cps = ok_json('list', '--store', moved, 'list')
        expect([c['id'] for c in cps] == [self.ids['A']], f'export list {cps}')
        sock = os.path.join(self.work, 'export.sock')
        st = ok_json('start', 'start', '--store', moved, '--qmp', sock)
        expect(st.get('applied', {}).get('id') == self.ids['A'], f'start {st}')
        q = None
        try:
            q = sl.hvcpvm.QMP(sock, timeout=10)
            cur = [c['id'] for c in q.cmd('query-checkpoints') if c['current']]
            expect(cur == [self.ids['A']], f'current {cur}')
            files = [b['inserted']['file'] for b in q.cmd('query-block')
                     if b.get('inserted')]
            expect(files and all(os.path.realpath(f).startswith(moved + '/')
                                 for f in files),
                   f'the exported VM runs on {files}, not on images in {moved}')
        finally:
            stop(q, st['pid'])
        # to another format: start puts the new format on the command line
        x = os.path.join(self.work, 'export-a-qcow2')
        r = ok('--store', self.store, 'export', self.ids['A'][:8], x,
               '--format', 'qcow2')
        expect('Exported' in r.out, r.out)
        sock = os.path.join(self.work, 'export2.sock')
        st = ok_json('start', 'start', '--store', x, '--qmp', sock)
        q = None
        try:
            q = sl.hvcpvm.QMP(sock, timeout=10)
            drv = [b['inserted']['drv'] for b in q.cmd('query-block')
                   if b.get('inserted')]
            expect(drv == ['qcow2', 'qcow2'], f'formats of the export: {drv}')
            cur = [c['id'] for c in q.cmd('query-checkpoints') if c['current']]
            expect(cur == [self.ids['A']], f'current {cur}')
        finally:
            stop(q, st['pid'])

    def delete_all(self):
        out = ok_json('delete', '--store', self.store, 'delete', '--all')
        expect(out['deleted'] == [self.ids['A']], f'{out}')
        m = manifest(self.store)
        expect(m['checkpoints'] == [], f'{m}')
        expect(sorted(d['filename'] for d in m['active']) ==
               sorted(p for _, p, _ in self.disks), f'active {m["active"]}')
        expect(children_in(self.folder) == [],
               f'images left: {children_in(self.folder)}')
        r = ok('--store', self.store, 'list')
        expect('No checkpoints' in r.out, r.out)


def stop(q, pid):
    """Quit the QEMU that start started (kill it if need be)."""
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


def main():
    if not os.access(cl.qemu(), os.X_OK):
        print(f'1..1\nnot ok 1 - QEMU is built\n# {cl.qemu()} not found')
        return 1
    tap = Tap()
    t0 = time.monotonic()
    with scratch_dir('hvcp-cli-store-', lambda: tap.failed) as work:
        online = tap.check('a qtest VM with a store and a QMP socket for the CLI',
                           Online, work)
        if online:
            try:
                tap.check('delete --all on a terminal: progress bar, disks back'
                          ' on their files', online.progress_bar)
                tap.check('merge job paused while delete waits: one line, exit 1;'
                          ' merges --resume', online.paused)
            finally:
                online.close()
        st = Stopped(work)
        tap.check('a stopped VM\'s store: A -> B -> C, Now under B', st.make)
        offline = bool(st.ids) and \
            tap.check('--store opens the store offline', st.offline_supported)
        steps = [('--store: list, list --tree, info (both outputs)',
                  st.read_commands, True),
                 ('--store: rename; unknown checkpoint, create, apply refused',
                  st.rename_and_refusals, True),
                 ('--store: dry run changes nothing; delete B (pending), delete C'
                  ' (deleted, B merged offline): files and manifest',
                  st.delete_offline, True),
                 ('start --store: the VM runs on the active images', st.start,
                  False),
                 ('export, moved, start --store: the checkpoint as a new VM',
                  st.export, True),
                 ('--store: delete --all: the disks on their original files',
                  st.delete_all, True)]
        for desc, func, needs_offline in steps:
            if not st.ids:
                tap.check(desc, lambda: expect(False, 'no store was made'))
            elif needs_offline and not offline:
                tap.check(desc, skip_offline)
            else:
                tap.check(desc, func)
    note(f'{time.monotonic() - t0:.0f}s')
    return tap.done()


def skip_offline():
    raise Skip('needs --store (-checkpoints offline=on)')


if __name__ == '__main__':
    sys.exit(main())
