#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-2.0-or-later
"""checkpoint-delete and the merges (issue 11), without a guest.

- a model-based random run: writes, creates, applies (with and without
  checkpoint-first), renames, deletes, subtree deletes and delete-all
  over a vhdx and a qcow2 disk; the tree is compared with the model
  after every step, the content of every checkpoint and of "Now" after
  every delete, and at the end no file is left that nothing references.
  HVCP_DELETE_SEEDS (comma-separated) and HVCP_DELETE_STEPS choose the
  runs;
- Hyper-V's rules one by one: a checkpoint with one child, with two
  (merge pending, then merged without being asked), delete all (the
  disks end on their original files), a branch no device has open
  (offline merge), a dry run that changes no byte;
- QEMU killed at each step of a delete and of a merge, and at random
  moments of a copy; reopened, every checkpoint's content is intact,
  the merge finished and no file is left over.
"""

import os
import random
import shutil
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                '..', 'pylib'))
from hvcptap import Tap, expect, note, skip_all  # noqa: E402
import storelib as sl  # noqa: E402
import deletelib as dl  # noqa: E402


def fresh(tmp, name):
    d = os.path.join(tmp, name)
    os.makedirs(d)
    return d


class Run:
    """A VM on two disks with its model."""

    def __init__(self, tmp, name, env=None):
        self.tmp = tmp
        self.folder = fresh(tmp, name)
        self.store = os.path.join(self.folder, 'store')
        self.disks = dl.two_disks(self.folder)
        self.model = dl.Model([d for d, _, _ in self.disks])
        self.vm = sl.VM(tmp, self.disks, self.store, env=env)

    def write(self, dev, slot, pattern):
        self.vm.write(dev, pattern, slot * dl.SLOT, dl.SLOT)
        self.model.write(dev, slot, pattern)

    def create(self, name):
        cid = self.vm.create(name)
        self.model.create(cid, name)
        return cid

    def apply(self, cid, first=False):
        r = self.vm.apply(cid, **{'checkpoint-first': first})
        if first:
            created = r['created']
            name = [c['name'] for c in self.vm.checkpoints()
                    if c['id'] == created][0]
            self.model.create(created, name)
        self.model.apply(cid)
        return r

    def delete(self, **args):
        r = self.vm.cmd('checkpoint-delete', **args)
        if args.get('dry-run'):
            return r
        if args.get('all'):
            gone = self.model.delete_all()
        else:
            gone = self.model.delete(args['checkpoint'],
                                     args.get('subtree', False))
        expect(sorted(r['deleted']) == sorted(gone),
               f'deleted {r["deleted"]}, the model {gone}')
        return r

    def settle(self, what):
        merges = dl.wait_merges(self.vm)
        failed = [m for m in merges if m['state'] in ('failed', 'paused')]
        expect(not failed, f'{what}: merges failed: {failed}')
        return merges

    def check(self, what, content=True):
        dl.check_tree(self.vm, self.model, what)
        if content:
            self.settle(what)
            dl.check_content(self.vm, self.model, self.disks, what)

    def restart(self, env=None):
        self.vm.kill()
        self.vm = sl.VM(self.tmp, sl.active_disks(self.store, self.disks),
                        self.store, env=env)


# The model-based run ----------------------------------------------------

def random_step(run, rng, step):
    m = run.model
    ids = list(m.tree)
    r = rng.random()
    if len(ids) > 7:
        r = 0.7 + r * 0.3           # a big tree: delete
    if r < 0.3 or not ids and r >= 0.5:
        dev = rng.choice(m.devs)
        run.write(dev, rng.randrange(dl.SLOTS), rng.randrange(1, 255))
        return 'write', False
    if r < 0.5:
        run.create(f'c{step}')
        return 'create', False
    if r < 0.62:
        first = rng.random() < 0.4
        run.apply(rng.choice(ids), first)
        return f'apply{" (checkpoint-first)" if first else ""}', False
    if r < 0.67:
        cid = rng.choice(ids)
        name = f'n{step}'
        run.vm.cmd('checkpoint-rename', checkpoint=cid, name=name)
        m.tree[cid]['name'] = name
        return 'rename', False
    if r < 0.88:
        run.delete(checkpoint=rng.choice(ids))
        return 'delete', True
    if r < 0.97:
        run.delete(checkpoint=rng.choice(ids), subtree=True)
        return 'delete subtree', True
    run.delete(all=True)
    return 'delete all', True


def model_run(tmp, seed, steps):
    rng = random.Random(seed)
    run = Run(tmp, f'model-{seed}')
    done = {}
    try:
        for step in range(steps):
            what, content = random_step(run, rng, step)
            done[what] = done.get(what, 0) + 1
            run.check(f'seed {seed} step {step} ({what})', content)
        run.check(f'seed {seed} end')
        run.vm.shutdown()
    finally:
        run.vm.kill()
    dl.check_files(run.store, run.folder, f'seed {seed} end')
    note(f'seed {seed}: ' + ', '.join(f'{n} {w}' for w, n in
                                      sorted(done.items())))
    expect(all(done.get(w) for w in ('delete', 'create', 'write', 'apply')),
           f'seed {seed}: a kind of step never ran: {done}')


# Hyper-V's rules ------------------------------------------------------

def one_child(tmp):
    """A -> B -> Now; deleting A merges A's image with B's."""
    run = Run(tmp, 'one-child')
    try:
        run.write('d0', 0, 1)
        run.write('d1', 1, 2)
        a = run.create('A')
        run.write('d0', 2, 3)
        run.create('B')
        run.write('d1', 3, 4)
        r = run.delete(checkpoint=a)
        for d in r['disks']:
            expect(len(d['merges']) == 1 and not d['pending'],
                   f'one merge per disk: {d}')
        expect(r.get('job-id') == 'checkpoint-merge', r)
        run.check('after deleting A')
        expect(a not in [c['id'] for c in run.vm.checkpoints()], 'A gone')
        run.vm.shutdown()
    finally:
        run.vm.kill()
    dl.check_files(run.store, run.folder, 'one child')


def two_children(tmp):
    """A with children B and C: A's images stay (merge pending) while
    two images are built on them, and merge without being asked once B
    goes."""
    run = Run(tmp, 'two-children')
    try:
        run.write('d0', 0, 1)
        a = run.create('A')
        run.write('d0', 1, 2)
        b = run.create('B')
        run.apply(a)
        run.write('d1', 2, 3)
        c = run.create('C')
        run.write('d0', 3, 4)
        r = run.delete(checkpoint=a)
        pend = [p for d in r['disks'] for p in d['pending']]
        expect(len(pend) == 2 and all('2 images are built on it' in
                                      p['reason'] for p in pend),
               f'pending with the reason: {r}')
        expect(not any(d['merges'] for d in r['disks']), r)
        merges = run.vm.cmd('query-checkpoint-merges')
        expect(len(merges) == 2 and all(m['state'] == 'pending'
                                        for m in merges), merges)
        info = run.vm.hmp('info checkpoints')
        expect('pending' in info and 'Merges:' in info, info)
        run.check('after deleting A')
        run.delete(checkpoint=c)
        run.check('after deleting C')
        merges = run.vm.cmd('query-checkpoint-merges')
        expect(len(merges) == 2 and all(m['state'] == 'pending'
                                        for m in merges),
               f'A still has two dependents (B and "Now"): {merges}')
        run.delete(checkpoint=b)
        run.check('after deleting B')
        expect(not run.vm.cmd('query-checkpoint-merges'),
               'the pending merges ran')
        expect(not run.vm.checkpoints(), 'no checkpoint left')
        run.vm.shutdown()
    finally:
        run.vm.kill()
    dl.check_files(run.store, run.folder, 'two children')


def delete_all(tmp):
    """Delete all: every disk ends on its original file with the current
    content, no differencing image left."""
    run = Run(tmp, 'all')
    try:
        run.write('d0', 0, 1)
        a = run.create('A')
        run.write('d1', 1, 2)
        run.create('B')
        run.apply(a)
        run.write('d0', 2, 3)
        run.create('C')
        run.write('d1', 4, 5)
        run.delete(all=True)
        run.check('after delete all')
        for dev, path, _ in run.disks:
            node = run.vm.node_of(dev)
            files = [b['inserted']['file'] for b in run.vm.cmd('query-block')
                     if b['inserted']['node-name'] == node]
            expect(files == [path], f'{dev} on {files}, not {path}')
        left = sorted(os.listdir(run.folder))
        expect(left == ['q.qcow2', 'store', 'v.vhdx'], left)
        expect(sl.manifest(run.store)['checkpoints'] == [], 'no checkpoint')
        run.vm.shutdown()
    finally:
        run.vm.kill()


def offline_branch(tmp):
    """A -> B -> C, then back to A: B's image is on a branch no device
    has open; its merge with C's is QEMU's own copy."""
    run = Run(tmp, 'offline')
    try:
        run.write('d0', 0, 1)
        a = run.create('A')
        run.write('d0', 1, 2)
        b = run.create('B')
        run.write('d1', 2, 3)
        run.create('C')
        run.apply(a)
        run.write('d0', 0, 9)
        r = run.delete(checkpoint=b)
        merges = [mm for d in r['disks'] for mm in d['merges']]
        expect(merges and not any(mm['online'] for mm in merges), r)
        run.check('after deleting B')
        run.vm.shutdown()
    finally:
        run.vm.kill()
    dl.check_files(run.store, run.folder, 'offline')


def create_apply_during_merge(tmp):
    """Create and apply while a (slowed-down) merge runs: they interrupt
    it, it runs again after them, and no content changes."""
    run = Run(tmp, 'during',
              env={'QEMU_CHECKPOINT_MERGE_SPEED': str(2 * 1024 * 1024)})
    try:
        run.write('d0', 0, 1)
        a = run.create('A')
        for slot in range(dl.SLOTS):
            run.write('d0', slot, 2)
            run.write('d1', slot, 2)
        run.vm.write('d0', 0x22, dl.SLOTS * dl.SLOT, 4 * 1024 * 1024)
        b = run.create('B')
        run.write('d1', 0, 3)
        run.delete(checkpoint=a)
        running = [m for m in run.vm.cmd('query-checkpoint-merges')
                   if m['state'] == 'running']
        expect(running, 'a merge runs')
        # What managers poll, while the merge runs
        for _ in range(3):
            dl.check_tree(run.vm, run.model, 'while the merge runs')
            expect('Merges:' in run.vm.hmp('info checkpoints'), 'info')
        problems = run.vm.cmd('checkpoint-check')['problems']
        expect(not problems, f'checkpoint-check during a merge: {problems}')
        c = run.create('C')
        run.write('d0', 1, 4)
        run.apply(b)
        expect(run.vm.cmd('query-checkpoint-merges'), 'merges wait or run')
        run.apply(c, first=True)
        run.check('after create and apply during the merge')
        ok = run.vm.pattern_is('d0', 0x22, dl.SLOTS * dl.SLOT,
                               4 * 1024 * 1024)
        expect(ok, 'the 4 MiB written before B')
        run.vm.shutdown()
    finally:
        run.vm.kill()
    dl.check_files(run.store, run.folder, 'create and apply during a merge')


def dry_run_changes_nothing(tmp):
    run = Run(tmp, 'dry')
    try:
        run.write('d0', 0, 1)
        a = run.create('A')
        run.write('d0', 1, 2)
        run.create('B')
        before = dl.snapshot_files(run.folder)
        for args in ({'checkpoint': a}, {'checkpoint': a, 'subtree': True},
                     {'all': True}):
            r = run.vm.cmd('checkpoint-delete', **args, **{'dry-run': True})
            expect(r['deleted'] and 'job-id' not in r, r)
        out = run.vm.hmp('checkpoint_delete -n -a')
        expect('Would delete checkpoint' in out, out)
        expect(not run.vm.cmd('query-jobs'), 'no job')
        after = dl.snapshot_files(run.folder)
        expect(before == after, 'a dry run changed files: ' +
               str(sorted(k for k in set(before) | set(after)
                          if before.get(k) != after.get(k))))
        run.check('after the dry runs')
        run.vm.shutdown()
    finally:
        run.vm.kill()


def refusals(tmp):
    # Saves of 32 MiB take half a second: the busy create below is
    # still 'creating' when the deletes reach QEMU
    run = Run(tmp, 'refusals',
              env={'QEMU_COW_SNAPSHOT_SAVE_SPEED': str(64 * 1024 * 1024)})
    try:
        a = run.create('same')
        run.create('same')
        cases = [({}, "Give either 'checkpoint' or 'all'"),
                 ({'checkpoint': a, 'all': True}, 'Give either'),
                 ({'checkpoint': 'same'}, 'several'),
                 ({'checkpoint': 'nosuch'}, 'nosuch')]
        for args, msg in cases:
            r = run.vm.qmp('checkpoint-delete', **args)
            expect('error' in r and msg.lower() in
                   r['error']['desc'].lower(),
                   f'{args}: {r}')
        before = dl.snapshot_files(run.folder)
        # A create in progress: the checkpoint is 'creating'
        cid = run.vm.cmd('checkpoint-create', name='busy',
                         type='standard')['id']
        r = run.vm.qmp('checkpoint-delete', checkpoint=cid)
        expect('error' in r, f'delete of a creating checkpoint: {r}')
        r2 = run.vm.qmp('checkpoint-delete', checkpoint=a)
        states = {c['id']: c['state'] for c in run.vm.checkpoints()}
        if states.get(cid) == 'creating':
            expect('error' in r2 and 'being created' in
                   r2['error']['desc'], f'delete during a create: {r2}')
        run.vm.wait_until(lambda: all(c['state'] == 'ready' for c in
                                      run.vm.checkpoints()), 'ready')
        expect(len(run.vm.checkpoints()) == 3 or 'error' not in r2,
               'a refused delete changed the tree')
        del before
        run.vm.shutdown()
    finally:
        run.vm.kill()


# Crashes -----------------------------------------------------------------

def scenario(run, kind):
    """Build the tree of @kind; the checkpoint to delete."""
    run.write('d0', 0, 1)
    run.write('d1', 0, 1)
    a = run.create('A')
    for slot in range(1, 5):
        run.write('d0', slot, 2)
        run.write('d1', slot, 2)
    b = run.create('B')
    if kind == 'active':
        run.write('d0', 5, 3)
        return b
    run.write('d0', 5, 3)
    run.write('d1', 5, 4)
    run.create('C')
    run.write('d1', 0, 6)
    if kind == 'offline':
        run.apply(a)
        run.write('d0', 3, 7)
    return b


def killed_at(tmp, kind, point):
    run = Run(tmp, f'kill-{kind}-{point}', env={sl.CRASH_ENV: point})
    try:
        victim = scenario(run, kind)
        try:
            run.vm.qmp('checkpoint-delete', checkpoint=victim)
            run.vm.wait(timeout=60)
        except Exception:       # pylint: disable=broad-except
            pass                # QEMU went away
        expect(f"killed at '{point}'" in run.vm.output(),
               f'QEMU was not killed at {point}: {run.vm.output()}')
        if point != 'delete-before-commit':
            run.model.delete(victim)
        run.restart()
        run.check(f'restarted after a kill at {point}')
        run.vm.shutdown()
    finally:
        run.vm.kill()
    dl.check_files(run.store, run.folder, f'killed at {point}')


def random_kills(tmp, seed, count):
    """QEMU killed at random moments of deletes and their merges (the
    images are big enough for the copy to take a while)."""
    rng = random.Random(seed)
    run = Run(tmp, f'random-kill-{seed}')
    try:
        for i in range(count):
            for slot in range(dl.SLOTS):
                run.write(rng.choice(run.model.devs), slot, i % 250 + 1)
            run.create(f'k{i}')
            ids = list(run.model.tree)
            if len(ids) < 3:
                continue
            victim = rng.choice(ids[:-1])
            timer = threading.Timer(rng.uniform(0.0, 0.3), run.vm.sigkill)
            timer.start()
            try:
                run.vm.cmd('checkpoint-delete', checkpoint=victim)
                deleted = True
            except Exception:   # pylint: disable=broad-except
                deleted = None  # killed: the manifest tells
            try:
                dl.wait_merges(run.vm, 30)
            except Exception:   # pylint: disable=broad-except
                pass
            timer.cancel()
            run.restart()
            ids_now = [c['id'] for c in run.vm.checkpoints()]
            if deleted or victim not in ids_now:
                run.model.delete(victim)
            run.check(f'seed {seed} kill {i}')
        run.vm.shutdown()
    finally:
        run.vm.kill()
    dl.check_files(run.store, run.folder, f'random kills {seed}')


def image_of(run, cid, dev):
    return [d['filename'] for c in run.vm.checkpoints() if c['id'] == cid
            for d in c['disks'] if d['device'] == dev][0]


def offline_resume(tmp):
    """QEMU's own copy of a two-layer run, killed after its first layer:
    the manifest records it, and the copy goes on from the second.  The
    run is made by a merge that fails first: another process holds the
    image it writes (qemu-io, as a user could), so that the next delete
    adds the image under it."""
    run = Run(tmp, 'resume', env={sl.CRASH_ENV: 'merge-offline-layer'})
    try:
        ids = {}
        for n, name in enumerate('ABCD'):
            run.write('d0', n, n + 1)
            ids[name] = run.create(name)
        run.write('d0', 4, 9)
        run.apply(ids['A'])
        holder = subprocess.Popen([sl.QEMU_IO, '-f', 'vhdx',
                                   image_of(run, ids['C'], 'd0')],
                                  stdin=subprocess.PIPE,
                                  stdout=subprocess.DEVNULL,
                                  stderr=subprocess.DEVNULL)
        try:
            time.sleep(1)
            run.delete(checkpoint=ids['C'])
            failed = dl.poll(lambda: [m for m in
                                      run.vm.cmd('query-checkpoint-merges')
                                      if m['state'] == 'failed'])
            expect(failed and 'lock' in failed[0]['reason'],
                   f'the merge fails while qemu-io holds the image: {failed}')
            run.delete(checkpoint=ids['B'])
        finally:
            holder.kill()
            holder.wait()
        try:
            run.vm.cmd('checkpoint-merge-resume')
            run.vm.wait(timeout=60)
        except Exception:   # pylint: disable=broad-except
            pass
        expect("killed at 'merge-offline-layer'" in run.vm.output(),
               f'not killed after a layer: {run.vm.output()}')
        rec = sl.manifest(run.store).get('merge')
        expect(rec and rec['device'] == 'd0' and len(rec['images']) == 2
               and rec.get('copied-layers') == 1,
               f'the recorded progress: {rec}')
        run.restart()
        run.check('after the copy went on')
        expect('merge' not in sl.manifest(run.store), 'merge record left')
        run.vm.shutdown()
    finally:
        run.vm.kill()
    dl.check_files(run.store, run.folder, 'offline resume')


CRASH_POINTS = [
    ('chain', 'delete-before-commit'),
    ('chain', 'delete-after-commit'),
    ('chain', 'merge-before-finalize'),
    ('chain', 'merge-after-relink'),
    ('chain', 'merge-before-remove'),
    ('active', 'merge-before-finalize'),
    ('active', 'merge-after-pivot'),
    ('active', 'merge-before-remove'),
    ('offline', 'merge-offline-copied'),
    ('offline', 'merge-after-relink'),
    ('offline', 'merge-before-remove'),
]


def main():
    tmp = tempfile.mkdtemp(prefix='hvcp-delete-')
    seeds = [int(s) for s in
             os.environ.get('HVCP_DELETE_SEEDS', '1,2,3,4,5').split(',') if s]
    steps = int(os.environ.get('HVCP_DELETE_STEPS', '200'))
    checks = [
        ('a checkpoint with one child: merged', one_child),
        ('a checkpoint with two children: pending, then merged',
         two_children),
        ('delete all: every disk back on its original file', delete_all),
        ('a branch nothing has open: merged offline', offline_branch),
        ('create and apply during a merge: it runs again after them',
         create_apply_during_merge),
        ('a dry run changes no byte', dry_run_changes_nothing),
        ('bad arguments and busy states are refused', refusals),
    ]
    for kind, point in CRASH_POINTS:
        checks.append((f'killed at {point} ({kind} merge): content intact,'
                       ' nothing left over',
                       lambda t, k=kind, p=point: killed_at(t, k, p)))
    checks.append(('an offline copy killed after a layer goes on from the'
                   ' next one', offline_resume))
    checks.append(('killed at random moments of deletes and merges',
                   lambda t: random_kills(t, 11, 12)))
    for seed in seeds:
        checks.append((f'model-based run, seed {seed}, {steps} steps',
                       lambda t, s=seed: model_run(t, s, steps)))
    only = os.environ.get('HVCP_DELETE_ONLY')
    checks = [c for c in checks if not only or only in c[0]]
    tap = Tap()
    try:
        for desc, func in checks:
            tap.check(desc, func, tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return tap.done()


if __name__ == '__main__':
    if not os.path.exists(sl.QEMU):
        sys.exit(skip_all('no QEMU build (HVCP_BUILD)'))
    sys.exit(main())
