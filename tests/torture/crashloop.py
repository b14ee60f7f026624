#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-2.0-or-later
"""Crash-loop torture of the checkpoint store (issue 10).

QEMU (-M microvm -accel qtest, no guest) with a vhdx and a qcow2 disk and
a standard checkpoint store runs random operations: writes (HMP qemu-io
"write -P"), checkpoint-create (sometimes with writes while its memory
is saved), checkpoint-apply with and without checkpoint-first,
checkpoint-rename.  It is killed with SIGKILL by a timer at a random
delay while a series of operations runs, or kills itself at one of the
named points of QEMU_CHECKPOINT_CRASH_AT (checkpoint/FORMAT.md), and
sometimes again while it opens (recovers) the store.  After each kill
QEMU is started on the store with the images manifest.json lists in
"active", and checked against an oracle of what was written:

  - the store opens (QEMU starts, query-checkpoints answers), the
    manifest parses, records no operation, every checkpoint is ready;
  - the tree is the oracle's: no checkpoint lost, none gained except
    the one the interrupted create (or checkpoint-first) may have made,
    same parents and names (a killed rename: old or new name), "Now"
    under the right checkpoint and on the active images' chain;
  - every checkpoint's frozen images hold what the disks held when it
    was created (the chain read with qemu-img convert);
  - the active images hold the state before or after the interrupted
    operation (a write killed midway: each of its sectors old or new;
    an apply: all disks before, or all disks the checkpoint's);
  - no file is left in the image folder or the store folder that the
    manifest does not reference: manifest.json, the VM's config.json,
    active images, the checkpoints' images, state and config files and
    folders, and every
    image on the backing chains of those images.

The disks are small (8 MiB) and the oracle keeps one pattern byte per
512-byte sector, so a check takes a fraction of a second.  Disks use
cache=writethrough, so a write that returned is on disk (in the host's
page cache, which survives SIGKILL) and must survive the kill.

Rounds: each round starts from blank images and an empty store and runs
with its own seed (random.Random(seed)) until it has its number of kills
or a failure; a failure ends its round (what follows would build on a
broken store) and the next round starts with the next seed.  Timing is
not deterministic, so a seed reproduces the sequence of operations and
delays, not always the very same kill.

Usage:
  crashloop.py [--seconds S] [--seed N] [--rounds R] [--kills-per-round K]
               [--keep DIR] [--verbose]
  crashloop.py --bounded      the fixed-seed run of make check (TAP)

Environment: HVCP_BUILD (the QEMU build, default build/qemu), and for
"make torture" TORTURE_S (seconds, default 3600) and TORTURE_SEED.
Prints TAP: one test point per round, the plan at the end (first with
--bounded), and a final line with iterations, kills, failures,
kills/hour and the seeds of failed rounds.  Exits 1 on any failure.
"""

import argparse
import fcntl
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import traceback

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(REPO, 'tests', 'pylib'))
from hvcptap import note, out, skip_all  # noqa: E402
from hvcpvm import QMP, QemuError, QMPGone, QemuVM, tool  # noqa: E402
import hvcpvm  # noqa: E402

MiB = 1024 * 1024
SECTOR = 512
DISK_SIZE = 8 * MiB
NSECT = DISK_SIZE // SECTOR
MAX_WRITE_SECTORS = 128             # 64 KiB
MAX_CHECKPOINTS = 10                # no create beyond (no delete yet)
RAM_MB = 64
# device, format, base image
DISKS = [('d0', 'vhdx', 'sys.vhdx'), ('d1', 'qcow2', 'data.qcow2')]
CRASH_ENV = 'QEMU_CHECKPOINT_CRASH_AT'
CRASH_POINTS = ['create-before-switch', 'create-after-switch', 'create-saving',
                'apply-after-switch', 'apply-after-commit']
CMD_TIMEOUT = 60                    # a command that takes longer: a hang
BOUNDED_SEEDS = list(range(1, 11))
BOUNDED_KILLS = 20                  # per seed: 200 kills
NAME_CHARS = ('abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789'
              ' -_.:,;()[]{}"\'\\/éüßøæ€✓日本')


TOOLS = ['qemu-system-x86_64', 'qemu-img', 'qemu-io']
BUILD_LOCK = '/tmp/hvcp-build.lock'     # held by whoever rebuilds build/qemu


def snapshot_tools():
    """Hard links (else copies) of the programs, taken while no rebuild
    runs: an hour-long run keeps testing one build, and a relink in the
    shared tree cannot fail a QEMU start.  From then on tool() names
    them (hvcpvm.tool_dir)."""
    d = tempfile.mkdtemp(prefix='hvcp-torture-bin-', dir='/tmp')
    lock = None
    if os.path.exists(BUILD_LOCK):
        lock = open(BUILD_LOCK)
        fcntl.flock(lock, fcntl.LOCK_SH)
    try:
        for name in TOOLS:
            src, dst = tool(name), os.path.join(d, name)
            try:
                os.link(src, dst)
            except OSError:
                shutil.copy2(src, dst)
    finally:
        if lock:
            lock.close()
    hvcpvm.tool_dir = d
    return d


class Failure(Exception):
    """A real problem: kind (a short tag) and what was seen."""

    def __init__(self, kind, msg):
        super().__init__(f'{kind}: {msg}')
        self.kind = kind
        self.msg = msg


class Gone(QMPGone):
    """QEMU went away (killed) while a command was sent or awaited.  A
    QMPGone, so that QemuVM.start() takes it for a QEMU not listening
    yet, and looks whether QEMU exited."""


# -- QEMU and its monitor ---------------------------------------------------

class Qmp(QMP):
    """The shared synchronous QMP client (a kill shows as Gone at once,
    without the asyncio machinery of qemu.qmp), with the loop's
    exceptions: a closed socket is Gone, a QEMU that runs but does not
    answer in time (CMD_TIMEOUT) a hang, a QMP error a Failure."""

    def gone(self):
        raise Gone()

    def hang(self, seconds):
        raise Failure('hang', f'QEMU did not answer in {seconds}s')

    def cmd(self, name, /, **args):
        r = self.raw(name, **args)
        if 'error' in r:
            raise Failure('qmp-error', f'{name} {args}: {r["error"].get("desc")}')
        return r['return']


class Qemu(QemuVM):
    """QEMU on the round's disks and store, its sockets and log in the
    round's scratch folder.  A kill by this test (the timer, or the end
    of a series) is sigkill(): it may come from a timer thread, and
    marks the QEMU as killed, so that a SIGKILL it did not send shows."""

    qmp_class = Qmp
    connect_interval = 0.005    # a recovery may be killed 0-60 ms in

    def __init__(self, scratch, store, active, env):
        args = ['-M', 'microvm', '-accel', 'qtest',
                '-display', 'none', '-nodefaults', '-no-user-config',
                '-m', f'{RAM_MB}M']
        for dev, fmt, path in active:
            args += ['-drive', f'if=none,id={dev},file={path},format={fmt},'
                     'cache=writethrough',
                     '-device', f'virtio-blk-device,drive={dev}']
        args += ['-checkpoints', f'dir={store},type=standard']
        # stdbuf: stdout line buffered, as HMP qemu-io prints there and
        # new_output() reads it right after each write
        super().__init__(args, sockdir=scratch, name='qemu', qtest=True,
                         env={CRASH_ENV: None, **env},
                         wrapper=['stdbuf', '-oL'], qmp_timeout=CMD_TIMEOUT)
        self.scratch = scratch
        self.kill_lock = threading.Lock()
        self.quitting = False
        self.killed = False             # by this test's timer or sigkill()
        self._log_pos = 0

    def start(self, timeout=30):
        """Start; returns once QMP answers.  Gone if QEMU was killed
        meanwhile, Failure('store-open') if it exited by itself."""
        return super().start(timeout)

    def start_error(self, msg):
        if self.proc.poll() is not None:
            self.proc.wait()
            if self.killed or self.proc.returncode == -signal.SIGKILL:
                return Gone()
        return Failure('store-open', f'{msg}: {self.log_tail()}')

    def died(self):
        # QEMU went away while an event was awaited: killed
        return Gone()

    def sigkill(self, force=False):
        # A timer thread may call this while the main thread quits QEMU:
        # once quit() has begun, QEMU is left to exit by itself
        with self.kill_lock:
            if (self.quitting and not force) or not self.alive():
                return
            self.killed = True
            super().sigkill()

    def quit(self, timeout=30):
        """QMP quit; Gone if a kill came first, Failure if QEMU does not
        end in timeout s or ends with an error."""
        with self.kill_lock:
            self.quitting = True
            if self.killed:
                raise Gone()
        self.cmd('quit')
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired as e:
            self.sigkill(force=True)
            raise Failure('hang', f'QEMU did not quit in {timeout}s') from e
        self.close()
        if self.killed:
            raise Gone()
        if self.proc.returncode != 0:
            raise Failure('qemu-exit', f'QEMU exited with {self.proc.returncode}'
                          f' after quit: {self.log_tail()}')

    def wait_event(self, match, timeout=CMD_TIMEOUT):
        """The first event for which match(event) is true (taken off the
        kept events); Gone if QEMU went away, a hang if it runs but
        sent none in timeout s."""
        ev = self.event(match, timeout, take='one')
        if ev is None:
            if not self.alive():
                raise Gone()
            raise Failure('hang', f'QEMU did not answer in {timeout}s')
        return ev

    def new_output(self):
        """What QEMU printed since the last call (stdout is line
        buffered: HMP qemu-io prints there)."""
        with open(self.log_path, errors='replace') as f:
            f.seek(self._log_pos)
            text = f.read()
            self._log_pos = f.tell()
        return text

    def log_tail(self, n=12):
        try:
            with open(self.log_path, errors='replace') as f:
                lines = [l for l in f.read().splitlines() if not l.startswith('[')]
        except OSError:
            return '(no log)'
        return ' | '.join(lines[-n:]).strip() or '(nothing)'

    def fill_ram(self, size, value):
        """Non-zero RAM makes the memory save of a create last longer
        (through the qtest protocol: no guest code runs).  The reply is
        not looked at."""
        try:
            self.qtest(f'memset 0x100000 {size:#x} {value:#x}', timeout=CMD_TIMEOUT)
        except socket.timeout as e:
            raise Failure('hang', 'qtest memset got no answer') from e
        except (OSError, QemuError) as e:   # refused, reset, or closed
            raise Gone() from e


# -- the oracle's disk content ----------------------------------------------

_SECTOR_BYTES = [bytes([v]) * SECTOR for v in range(256)]


def expand(model):
    """The raw disk content of a model (one pattern byte per sector)."""
    return b''.join(_SECTOR_BYTES[v] for v in model)


def read_image(path, fmt, scratch):
    """The raw virtual content of the chain of image path."""
    raw = os.path.join(scratch, 'read.raw')
    r = subprocess.run([tool('qemu-img'), 'convert', '-U', '-f', fmt, '-O', 'raw',
                        path, raw], capture_output=True, text=True)
    if r.returncode != 0:
        raise Failure('image-unreadable', f'qemu-img convert {path}: {r.stderr.strip()}')
    with open(raw, 'rb') as f:
        data = f.read()
    os.unlink(raw)
    if len(data) != DISK_SIZE:
        raise Failure('image-size', f'{path} is {len(data)} bytes, expected {DISK_SIZE}')
    return data


def sector_value(data, s):
    blk = data[s * SECTOR:(s + 1) * SECTOR]
    return blk[0] if blk.count(blk[0]) == SECTOR else None


def describe_diff(data, model, limit=4):
    """Where data differs from model, for a failure message."""
    diffs = []
    exp = expand(model)
    for s in range(NSECT):
        a, b = s * SECTOR, (s + 1) * SECTOR
        if data[a:b] != exp[a:b]:
            v = sector_value(data, s)
            diffs.append(f'sector {s}: {"torn" if v is None else hex(v)} != {model[s]:#x}')
            if len(diffs) >= limit:
                diffs.append('...')
                break
    return ', '.join(diffs)


def backing_chain(path):
    r = subprocess.run([tool('qemu-img'), 'info', '-U', '--backing-chain',
                        '--output=json', path], capture_output=True, text=True)
    if r.returncode != 0:
        raise Failure('image-unreadable', f'qemu-img info {path}: {r.stderr.strip()}')
    info = json.loads(r.stdout)
    if isinstance(info, dict):
        info = [info]
    return [os.path.realpath(i['filename']) for i in info]


class Cp:
    """A checkpoint as the oracle knows it."""

    def __init__(self, name, parent, content):
        self.name = name
        self.parent = parent
        self.content = content          # device -> model (bytes)
        self.alt_name = None            # a killed rename: this or name


# -- one round -------------------------------------------------------------

class Round:
    """Blank disks and store, then kills until quota or failure."""

    def __init__(self, seed, workdir, stats, verbose=False, sabotage=None):
        self.sabotage = sabotage
        self.seed = seed
        self.rng = random.Random(seed)
        self.apply_jobs = 0         # job ids of applies run as jobs
        self.stats = stats
        self.verbose = verbose
        self.images = os.path.join(workdir, 'images')
        self.store = os.path.join(workdir, 'store')
        self.scratch = os.path.join(workdir, 'scratch')
        for d in (self.images, self.store, self.scratch):
            os.makedirs(d)
        self.base = {dev: os.path.join(self.images, f) for dev, _, f in DISKS}
        self.fmt = {dev: fmt for dev, fmt, _ in DISKS}
        for dev, fmt, _ in DISKS:
            subprocess.run([tool('qemu-img'), 'create', '-q', '-f', fmt,
                            self.base[dev], str(DISK_SIZE)], check=True)
        # committed state
        self.cur = {dev: bytes(NSECT) for dev, _, _ in DISKS}
        self.cps = {}                   # id -> Cp
        self.current = None
        self.active = [(dev, fmt, self.base[dev]) for dev, fmt, _ in DISKS]
        # what the kill may or may not have done
        self.maybe_cps = {}             # id -> Cp: may be there or not
        self.maybe_new = []             # Cps with an id not known yet
        self.pending = None             # the operation in flight
        self.qemu = None
        self.kills = 0
        self.iteration = 0
        self.trace = []
        self.failures = []              # (iteration, Failure, trace) not fatal
        self.leaked = set()             # strays reported already
        self.last_refs = set()          # referenced at the last check
        self.last_named = set()         # ... and named by the manifest
        self.dropped = set()            # ids of checkpoints the kills dropped
        self.op_time = 0.03             # mean duration of an operation
        self.n_ops = 0
        self.names = 0

    # -- helpers ----------------------------------------------------------

    def log(self, msg):
        self.trace.append(msg)
        if self.verbose:
            note(f'  {msg}')

    def start_qemu(self, env=None):
        self.qemu = Qemu(self.scratch, self.store, self.active, env or {})
        self.qemu.start()
        return self.qemu

    def new_name(self):
        self.names += 1
        if self.rng.random() < 0.7:
            return f'cp{self.names}'
        n = self.rng.choice([1, 2, 10, 50, 99, 100])
        return ''.join(self.rng.choice(NAME_CHARS) for _ in range(n))

    # -- operations -------------------------------------------------------
    # Each sets self.pending to what is in flight before it talks to
    # QEMU, and updates the committed state once QEMU answered.  Add
    # delete and export here (and to ops()) once they exist.

    def op_write(self, dev=None):
        dev = dev or self.rng.choice([d for d, _, _ in DISKS])
        n = self.rng.randint(1, MAX_WRITE_SECTORS)
        s = self.rng.randrange(0, NSECT - n + 1)
        p = self.rng.randint(1, 255)
        self.pending = ('write', dev, s, n, p)
        self.log(f'write {dev} sectors {s}+{n} pattern {p:#x}')
        r = self.qemu.hmp(f'qemu-io {dev} "write -P {p:#x} {s * SECTOR} {n * SECTOR}"')
        text = self.qemu.new_output()
        want = f'wrote {n * SECTOR}/{n * SECTOR} bytes at offset {s * SECTOR}'
        if want not in text:
            if not self.qemu.alive():
                raise Gone()
            raise Failure('write-failed', f'qemu-io {dev} write at {s * SECTOR}:'
                          f' {r.strip()} {text.strip()}')
        m = bytearray(self.cur[dev])
        m[s:s + n] = bytes([p]) * n
        self.cur[dev] = bytes(m)
        self.pending = None

    def op_create(self):
        name = self.new_name()
        cp = Cp(name, self.current, dict(self.cur))
        self.pending = ('create', cp)
        self.maybe_new.append(cp)
        self.log(f'checkpoint-create {name!r}')
        cid = self.qemu.cmd('checkpoint-create', name=name, type='standard')['id']
        self.log(f'  -> {cid} (creating)')
        self.maybe_new.remove(cp)
        self.maybe_cps[cid] = cp
        self.pending = None
        # The VM runs while its memory is saved: writes now go to the
        # new children
        for _ in range(self.rng.choice([0, 0, 0, 1, 2, 3])):
            self.op_write()
        self.pending = ('create-wait', cid)
        ev = self.qemu.wait_event(lambda ev: ev['event'] in ('CHECKPOINT_CREATED',
                                                             'CHECKPOINT_CREATE_FAILED')
                                  and ev['data']['id'] == cid
                                  or ev['event'] == 'JOB_STATUS_CHANGE'
                                  and ev['data']['id'] == f'checkpoint-{cid}'
                                  and ev['data']['status'] == 'concluded')
        state = {c['id']: c['state'] for c in self.qemu.cmd('query-checkpoints')}
        if state.get(cid) != 'ready':
            jobs = self.qemu.cmd('query-jobs')
            raise Failure('create-failed', f'checkpoint {cid} is {state.get(cid)}'
                          f' after its job ({ev["event"]} {ev["data"]}): {jobs};'
                          f' QEMU: {self.qemu.log_tail()}')
        self.log('  ready')
        del self.maybe_cps[cid]
        self.cps[cid] = cp
        self.current = cid
        self.pending = None

    def op_apply(self, first=False):
        target = self.rng.choice(sorted(self.cps))
        new = Cp(None, self.current, dict(self.cur)) if first else None
        self.pending = ('apply', target, dict(self.cur), self.current, new)
        if new:
            self.maybe_new.append(new)
        self.log(f'checkpoint-apply {target} ({self.cps[target].name!r})'
                 + (' checkpoint-first' if first else ''))
        args = {'checkpoint': target}
        if first:
            args['checkpoint-first'] = True
        # Half the applies run as a job (job-id): the kills then also
        # land while the job waits for checkpoint-first's save, and in
        # the bottom half that switches and loads
        if self.rng.random() < 0.5:
            self.apply_jobs += 1
            args['job-id'] = f'apply-{self.apply_jobs}'
        # An apply without a job leaves its CHECKPOINT_APPLIED among the
        # kept events: it must not pass for this apply's
        events = self.qemu.events
        events[:] = [ev for ev in events if ev['event'] != 'CHECKPOINT_APPLIED']
        r = self.qemu.cmd('checkpoint-apply', **args)
        if 'job-id' in args:
            self.wait_apply_job(args['job-id'], target)
        if first:
            if 'created' not in r:
                raise Failure('qmp-error', f'checkpoint-apply with checkpoint-first'
                              f' returned {r}')
            self.log(f'  -> created {r["created"]}')
            name = self.query_name(r['created'])
            new.name = name
            self.maybe_new.remove(new)
            self.cps[r['created']] = new
        self.cur = dict(self.cps[target].content)
        self.current = target
        self.pending = None

    def wait_apply_job(self, job, target):
        """The apply job @job applies @target: CHECKPOINT_APPLIED comes
        before the job concludes; a job that concludes first failed."""
        ev = self.qemu.wait_event(
            lambda ev: ev['event'] == 'CHECKPOINT_APPLIED'
            and ev['data']['id'] == target
            or ev['event'] == 'JOB_STATUS_CHANGE'
            and ev['data']['id'] == job
            and ev['data']['status'] == 'concluded')
        if ev['event'] != 'CHECKPOINT_APPLIED':
            raise Failure('apply-job', f'apply job {job} of {target}'
                          ' concluded without applying it')
        self.log(f'  job {job} applied it')

    def query_name(self, cid):
        for c in self.qemu.cmd('query-checkpoints'):
            if c['id'] == cid:
                return c['name']
        raise Failure('checkpoint-lost', f'{cid} made by checkpoint-first is not'
                      ' in query-checkpoints')

    def op_rename(self):
        cid = self.rng.choice(sorted(self.cps))
        name = self.new_name()
        cp = self.cps[cid]
        self.pending = ('rename', cid)
        cp.alt_name = name
        self.log(f'checkpoint-rename {cid} {cp.name!r} -> {name!r}')
        self.qemu.cmd('checkpoint-rename', checkpoint=cid, name=name)
        cp.name, cp.alt_name = name, None
        self.pending = None

    def ops(self):
        """(weight, enabled, run) of every operation."""
        n = len(self.cps)
        return [
            (50, True, self.op_write),
            (12, n < MAX_CHECKPOINTS, self.op_create),
            (8, n > 0, self.op_apply),
            (5, 0 < n < MAX_CHECKPOINTS, lambda: self.op_apply(first=True)),
            (5, n > 0, self.op_rename),
            # (w, n > 0, self.op_delete), (w, n > 0, self.op_export): later
        ]

    def pick(self, want=None):
        choices = [(w, f) for w, ok, f in self.ops() if ok]
        if want:
            sel = [(w, f) for w, f in choices if want(f)]
            choices = sel or choices
        total = sum(w for w, _ in choices)
        x = self.rng.uniform(0, total)
        for w, f in choices:
            x -= w
            if x <= 0:
                return f
        return choices[-1][1]

    # -- one life of QEMU -------------------------------------------------

    def life(self):
        """Start QEMU, run operations until it is killed, check."""
        self.iteration += 1
        self.stats['iterations'] += 1
        self.trace = [f'iteration {self.iteration}']
        env = {}
        x = self.rng.random()
        nops = self.rng.randint(1, 8)
        point = None
        if x < 0.2:
            point = self.rng.choice(CRASH_POINTS)
            env[CRASH_ENV] = point
            nops = 12
        fill = self.rng.random() < 0.3
        fill_size = self.rng.randint(4, 32) * MiB
        # (scaled so that most kills land inside an operation)
        delay = self.rng.uniform(0, 0.8 * nops * self.op_time)
        if point:
            delay = 3 + nops * self.op_time     # a backstop only
        self.log(f'start on {[os.path.basename(a[2]) for a in self.active]}'
                 + (f', {CRASH_ENV}={point}' if point else '')
                 + f', kill after {delay * 1000:.0f} ms')
        q = self.start_qemu(env)
        timer = None
        try:
            if fill:
                q.fill_ram(fill_size, self.rng.randint(1, 255))
            timer = threading.Timer(delay, q.sigkill)
            timer.start()
            for _ in range(nops):
                if point and point.startswith('apply') and self.cps:
                    f = self.pick(lambda f: f != self.op_write)
                elif point:
                    f = self.pick(lambda f: f == self.op_create)
                else:
                    f = self.pick()
                t0 = time.monotonic()
                f()
                self.n_ops += 1
                self.stats['operations'] += 1
                self.op_time += (time.monotonic() - t0 - self.op_time) * 0.05
            self.log('series done: kill')
            q.sigkill()
        except Gone:
            pass
        finally:
            if timer:
                timer.cancel()
        rc = q.wait()
        if rc != -signal.SIGKILL:
            raise Failure('qemu-crash', f'QEMU exited with {rc} (not SIGKILL)'
                          f' during {self.pending}: {q.log_tail()}')
        how = 'timer' if q.killed else f'crash point {point}'
        if not q.killed and (not point or point not in q.log_tail(40)):
            how = 'an unknown SIGKILL'
        self.log(f'killed ({how}) during {self.pending_text()}')
        kind = self.pending[0] if self.pending else 'between'
        if kind == 'apply' and self.pending[4]:
            kind = 'apply-first'
        if point:
            kind = f'{kind} ({point})' if not q.killed else kind
        self.stats['during'][kind] = self.stats['during'].get(kind, 0) + 1
        if self.sabotage:
            self.do_sabotage()
        self.kills += 1
        self.stats['kills'] += 1
        self.recover()

    def pending_text(self):
        p = self.pending
        if not p:
            return 'nothing (between operations)'
        if p[0] == 'create':
            return f'checkpoint-create {p[1].name!r}'
        if p[0] == 'apply':
            return f'checkpoint-apply {p[1]}' + (' checkpoint-first' if p[4] else '')
        return ' '.join(str(x) for x in p)

    # -- after a kill ---------------------------------------------------

    def do_sabotage(self):
        """Break the store behind QEMU's back (--sabotage, to see that
        the checks catch it): a write into a frozen image, a write into
        the active image, or a stray file."""
        kind = self.sabotage
        if kind == 'frozen' and self.cps:
            cid = self.rng.choice(sorted(self.cps))
            m = self.manifest()
            c = [c for c in m['checkpoints'] if c['id'] == cid][0]
            d = c['disks'][-1]      # the qcow2 one: vhdx links would refuse
            cmd = f'write -P 0xee {self.rng.randrange(NSECT) * SECTOR} 512'
        elif kind == 'active':
            dev, fmt, path = self.manifest_active()[0]
            d = {'filename': path, 'format': fmt}
            cmd = f'write -P 0xee {self.rng.randrange(NSECT) * SECTOR} 512'
        elif kind == 'stray':
            open(os.path.join(self.images, 'stray.img'), 'w').close()
            return
        else:
            return
        subprocess.run([tool('qemu-io'), '-f', d['format'], '-c', cmd, d['filename']],
                       check=True, capture_output=True)
        self.log(f'sabotage: qemu-io {d["filename"]} {cmd}')

    def recover(self):
        """Start QEMU on the store (sometimes killed again while it
        recovers), ask it for the tree, quit, check the files."""
        while True:
            self.active = self.manifest_active()
            q = Qemu(self.scratch, self.store, self.active, {})
            self.qemu = q
            kill_at = None
            if self.rng.random() < 0.1:
                kill_at = self.rng.uniform(0, 0.06)
            timer = threading.Timer(kill_at, q.sigkill) if kill_at is not None else None
            try:
                if timer:
                    timer.start()
                q.start()
                tree = q.cmd('query-checkpoints')
                if timer:
                    timer.cancel()
                    timer = None
                    if q.killed:
                        raise Gone()
                q.quit()
                # The merges that QEMU runs once the store is open (those
                # a dropped create leaves) may move "Now" to other files
                self.active = self.manifest_active()
                break
            except Gone:
                rc = q.wait()
                if rc != -signal.SIGKILL:
                    raise Failure('qemu-crash', f'QEMU exited with {rc} while opening'
                                  f' the store: {q.log_tail()}') from None
                self.log(f'killed again {kill_at * 1000:.0f} ms into the recovery')
                self.kills += 1
                self.stats['kills'] += 1
            finally:
                if timer:
                    timer.cancel()
        self.check(tree)

    def manifest(self):
        path = os.path.join(self.store, 'manifest.json')
        if not os.path.exists(path):
            return None
        try:
            with open(path, encoding='utf-8') as f:
                return json.load(f)
        except (ValueError, UnicodeDecodeError) as e:
            size = os.path.getsize(path)
            raise Failure('manifest-corrupt', f'{path} ({size} bytes) does not'
                          f' parse: {e}') from None

    def manifest_active(self):
        m = self.manifest()
        if not m or not m.get('active'):
            return [(dev, fmt, self.base[dev]) for dev, fmt, _ in DISKS]
        act = {d['device']: (d['format'], d['filename']) for d in m['active']}
        if sorted(act) != sorted(d for d, _, _ in DISKS):
            raise Failure('manifest', f'active lists {sorted(act)}')
        return [(dev, act[dev][0], act[dev][1]) for dev, _, _ in DISKS]

    def check(self, tree):
        """The store against the oracle; then the oracle takes what the
        store holds (the interrupted operation resolved)."""
        m = self.manifest()
        if m is None:
            if self.cps:
                raise Failure('manifest-missing', 'the store has no manifest.json')
            m = {'checkpoints': []}
        if 'operation' in m:
            raise Failure('operation-left', f'the manifest still records {m["operation"]}'
                          ' after QEMU opened the store')
        mcps = m.get('checkpoints', [])
        ids = [c['id'] for c in mcps]
        qids = [c['id'] for c in tree]
        if sorted(ids) != sorted(qids):
            raise Failure('manifest', f'query-checkpoints {qids} != manifest {ids}')
        for c in mcps:
            if c['state'] != 'ready':
                raise Failure('not-ready', f'checkpoint {c["id"]} is {c["state"]}'
                              ' after QEMU opened the store')
        lost = [i for i in self.cps if i not in ids]
        if lost:
            raise Failure('checkpoint-lost', f'checkpoints {lost} are gone'
                          f' (killed during {self.pending_text()})')

        # Which checkpoints the store has beyond the committed ones
        new_cps = {}
        unknown = [c for c in mcps if c['id'] not in self.cps
                   and c['id'] not in self.maybe_cps]
        candidates = list(self.maybe_new)
        for c in unknown:
            match = [x for x in candidates if x.parent == c.get('parent')]
            if not match:
                raise Failure('checkpoint-unexpected',
                              f'checkpoint {c["id"]} ({c["name"]!r}, parent'
                              f' {c.get("parent")}) was made by no operation'
                              f' (killed during {self.pending_text()})')
            cp = match[0]
            candidates.remove(cp)
            new_cps[c['id']] = Cp(c['name'] if cp.name is None else cp.name,
                                  cp.parent, cp.content)
        for cid, cp in self.maybe_cps.items():
            if cid in ids:
                new_cps[cid] = cp

        # Each checkpoint: parent, name, files, content
        scratch = self.scratch
        every = dict(self.cps)
        every.update(new_cps)
        for c in mcps:
            cp = every[c['id']]
            if c.get('parent') != cp.parent:
                raise Failure('tree', f'checkpoint {c["id"]} has parent {c.get("parent")},'
                              f' expected {cp.parent}')
            if c['name'] not in (cp.name, cp.alt_name):
                raise Failure('name', f'checkpoint {c["id"]} is named {c["name"]!r},'
                              f' expected {cp.name!r}'
                              + (f' or {cp.alt_name!r}' if cp.alt_name else ''))
            sf = c.get('state-file')
            if not sf or not os.path.isfile(os.path.join(self.store, sf)):
                raise Failure('missing-file', f'checkpoint {c["id"]}: state file'
                              f' {sf} is missing')
            disks = {d['device']: d for d in c['disks']}
            if sorted(disks) != sorted(cp.content):
                raise Failure('tree', f'checkpoint {c["id"]} holds the disks {sorted(disks)}')
            for dev, d in disks.items():
                if not os.path.exists(d['filename']):
                    raise Failure('missing-file', f'checkpoint {c["id"]}: image'
                                  f' {d["filename"]} of {dev} is missing')
                data = read_image(d['filename'], d['format'], scratch)
                if data != expand(cp.content[dev]):
                    raise Failure('checkpoint-content',
                                  f'checkpoint {c["id"]} ({c["name"]!r}) disk {dev}'
                                  f' ({os.path.basename(d["filename"])}) is not what'
                                  f' it was at its creation: {describe_diff(data, cp.content[dev])}'
                                  f' (killed during {self.pending_text()})')

        # The current content: before or after the interrupted operation
        active = {dev: path for dev, _, path in self.active}
        now = {dev: read_image(active[dev], self.fmt[dev], scratch) for dev in active}
        cur = self.resolve_content(now, every)

        # Now: under the right checkpoint, on the active images' chains
        mcur = m.get('current')
        p = self.pending
        applied = False
        if p and p[0] == 'apply' and cur == every[p[1]].content and cur != p[2]:
            allowed = {p[1]}
            applied = True
        else:
            # a checkpoint the kill left in the tree has "Now" under it
            allowed = set(new_cps) if new_cps else {self.current}
            if p and p[0] == 'apply' and cur == every[p[1]].content:
                allowed.add(p[1])
                applied = mcur == p[1]
        if mcur not in allowed:
            raise Failure('current', f'"Now" is under {mcur}, expected'
                          f' {" or ".join(str(a) for a in sorted(allowed, key=str))}'
                          f' (killed during {self.pending_text()})')
        if mcur:
            frozen = {os.path.realpath(d['filename']) for c in mcps if c['id'] == mcur
                      for d in c['disks']}
            for dev, path in active.items():
                chain = backing_chain(path)
                if not frozen & set(chain[1:]):
                    raise Failure('current', f'the active image {path} of {dev} is'
                                  f' not below the images of the current checkpoint'
                                  f' {mcur}: chain {chain}')

        stray = self.check_files(m)

        # The oracle takes what the store holds
        for c in mcps:
            cp = every[c['id']]
            cp.name, cp.alt_name = c['name'], None
        self.cps = {c['id']: every[c['id']] for c in mcps}
        self.maybe_cps, self.maybe_new = {}, []
        self.current = mcur
        self.cur = cur
        self.dropped |= {cid for cid in self.maybe_cps if cid not in ids}
        pend = self.pending_text()
        self.pending = None
        self.log(f'checked: {len(self.cps)} checkpoints, current {mcur}'
                 + (', apply took effect' if applied else ''))
        if stray:
            # Not fatal: reported once, then the round goes on, so that
            # one leak does not hide the other kinds of failure
            self.leaked |= {f for f, _ in stray}
            self.failures.append((self.iteration, Failure(
                'unreferenced-file', 'files the manifest does not reference'
                f' after a kill during {pend}: ' + '; '.join(
                    f'{os.path.relpath(f, os.path.dirname(self.images))}'
                    f' ({kind})' for f, kind in stray)), list(self.trace)))

    def resolve_content(self, now, every):
        """The models of the active images' content, if it is the state
        before or after the interrupted operation."""
        p = self.pending
        want = {dev: expand(self.cur[dev]) for dev in now}
        if p and p[0] == 'write':
            _, wdev, s, n, pat = p
            res = dict(self.cur)
            for dev, data in now.items():
                if dev != wdev and data != want[dev]:
                    raise Failure('current-content', f'disk {dev} changed though the'
                                  f' interrupted write was to {wdev}:'
                                  f' {describe_diff(data, self.cur[dev])}')
            data = now[wdev]
            a, b = s * SECTOR, (s + n) * SECTOR
            if data[:a] != want[wdev][:a] or data[b:] != want[wdev][b:]:
                raise Failure('current-content', f'disk {wdev} changed outside the'
                              f' interrupted write (sectors {s}+{n}):'
                              f' {describe_diff(data, self.cur[wdev])}')
            m = bytearray(self.cur[wdev])
            for i in range(s, s + n):
                v = sector_value(data, i)
                if v not in (self.cur[wdev][i], pat):
                    raise Failure('current-content', f'disk {wdev} sector {i} of the'
                                  f' interrupted write holds {v}, neither the old'
                                  f' {self.cur[wdev][i]:#x} nor the new {pat:#x}')
                m[i] = v
            res[wdev] = bytes(m)
            return res
        if p and p[0] == 'apply':
            after = every[p[1]].content
            if all(now[dev] == want[dev] for dev in now):
                return dict(self.cur)
            if all(now[dev] == expand(after[dev]) for dev in now):
                return dict(after)
            raise Failure('current-content', 'the disks hold neither the state before'
                          f' the interrupted apply of {p[1]} nor its checkpoint\'s: '
                          + '; '.join(f'{dev}: vs before {describe_diff(now[dev], self.cur[dev], 2)}'
                                      f' / vs after {describe_diff(now[dev], after[dev], 2)}'
                                      for dev in now))
        for dev, data in now.items():
            if data != want[dev]:
                raise Failure('current-content', f'disk {dev} does not hold what was'
                              f' written (killed during {self.pending_text()}):'
                              f' {describe_diff(data, self.cur[dev])}')
        return dict(self.cur)

    def check_files(self, m):
        """Nothing in the image and store folders that the manifest does
        not reference (with the images' backing chains)."""
        refs = {os.path.realpath(os.path.join(self.store, name))
                for name in ('manifest.json', 'config.json')}
        named = []
        for c in m.get('checkpoints', []):
            refs.add(os.path.realpath(os.path.join(self.store, c['id'])))
            for key in ('state-file', 'config-file'):
                if key in c:
                    f = os.path.realpath(os.path.join(self.store, c[key]))
                    refs.add(f)
                    refs.add(os.path.dirname(f))
            named += [d['filename'] for d in c['disks']]
        if m.get('active'):
            named += [d['filename'] for d in m['active']]
        else:
            named += list(self.base.values())
        for f in set(named):
            if not os.path.exists(f):
                raise Failure('missing-file', f'{f}, named in the manifest, is missing')
            refs.update(backing_chain(f))
        stray = []
        for top in (self.images, self.store):
            for root, dirs, files in os.walk(top):
                for e in dirs + files:
                    p = os.path.realpath(os.path.join(root, e))
                    if p not in refs and p not in self.leaked:
                        stray.append(p)
        stray = [(p, self.stray_kind(p)) for p in sorted(stray)]
        self.last_named = {os.path.realpath(f) for f in named}
        self.last_refs = refs
        return stray

    def stray_kind(self, path):
        """What an unreferenced file probably is, for the report."""
        base = os.path.basename(path)
        uuid = base.rsplit('_', 1)[-1].split('.')[0] if '_' in base else None
        if base == 'manifest.json.tmp':
            return 'a manifest.json.tmp left by a kill'
        if path.startswith(self.store + os.sep):
            return 'in the store'
        if path in self.last_refs and path not in self.last_named:
            return ('was referenced only as a backing file of the active image:'
                    ' the frozen image of a "creating" checkpoint that recovery'
                    ' dropped; left behind when an apply replaced the active image')
        if uuid in self.dropped:
            return f'named after the dropped checkpoint {uuid}'
        if path in self.last_refs:
            return 'was named by the manifest before this kill'
        return 'made during this iteration and never recorded in the manifest'

    def run(self, kills, deadline):
        while self.kills < kills and time.monotonic() < deadline:
            self.life()


# -- the driver ------------------------------------------------------------

def run_round(seed, kills, deadline, stats, args):
    """One round in a fresh folder under /tmp, removed afterwards (copied
    into --keep first).  Returns (round, failure or None)."""
    workdir = tempfile.mkdtemp(prefix='hvcp-torture-', dir='/tmp')
    r = err = None
    try:
        r = Round(seed, workdir, stats, args.verbose, args.sabotage)
        r.run(kills, deadline)
    except Failure as e:
        err = e
    except Exception:                   # pylint: disable=broad-except
        # A bug of this harness, or an exception it does not expect:
        # the round fails with the traceback, and TAP stays whole
        err = Failure('harness', traceback.format_exc())
    finally:
        if r and r.qemu and r.qemu.proc:
            r.qemu.kill()               # QemuVM.kill(): SIGKILL and wait
        if args.keep:
            dest = os.path.join(args.keep, f'seed-{seed}')
            shutil.rmtree(dest, ignore_errors=True)
            shutil.copytree(workdir, dest, symlinks=True,
                            ignore=shutil.ignore_patterns('*.sock'))
        shutil.rmtree(workdir, ignore_errors=True)
    return r, err


def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n\n', 1)[0])
    ap.add_argument('--seconds', type=float,
                    default=float(os.environ.get('TORTURE_S') or 3600))
    ap.add_argument('--seed', type=int,
                    default=int(os.environ['TORTURE_SEED'])
                    if os.environ.get('TORTURE_SEED') else None)
    ap.add_argument('--rounds', type=int, default=0, help='at most this many rounds')
    ap.add_argument('--kills-per-round', type=int, default=25)
    ap.add_argument('--bounded', action='store_true',
                    help=f'seeds {BOUNDED_SEEDS}, {BOUNDED_KILLS} kills each (make check)')
    ap.add_argument('--keep', metavar='DIR',
                    help='copy each round\'s folder (images, store, QEMU log) into DIR')
    ap.add_argument('--verbose', action='store_true')
    ap.add_argument('--sabotage', choices=['frozen', 'active', 'stray'],
                    help='damage the store after each kill (checks the checks)')
    args = ap.parse_args()

    for name in TOOLS:
        if not os.access(tool(name), os.X_OK):
            return skip_all(f'{tool(name)} not built')
    if not shutil.which('stdbuf'):
        return skip_all('stdbuf (coreutils) not found')
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))   # clean up
    bins = snapshot_tools()
    try:
        return run(args)
    finally:
        shutil.rmtree(bins, ignore_errors=True)


def run(args):

    stats = {'iterations': 0, 'kills': 0, 'operations': 0, 'during': {}}
    failures = []
    t0 = time.monotonic()
    if args.bounded:
        seeds = list(BOUNDED_SEEDS)
        kills = BOUNDED_KILLS
        deadline = t0 + 10 ** 6
        out(f'1..{len(seeds)}')
    else:
        seed0 = args.seed if args.seed is not None else random.randrange(1, 10 ** 6)
        seeds = None
        kills = args.kills_per_round
        deadline = t0 + args.seconds
        note(f'torture: {args.seconds:.0f} s from seed {seed0}, {kills} kills per round')
    if args.keep:
        os.makedirs(args.keep, exist_ok=True)

    n = 0
    while True:
        if seeds is not None:
            if n >= len(seeds):
                break
            seed = seeds[n]
        else:
            if time.monotonic() >= deadline or (args.rounds and n >= args.rounds):
                break
            seed = seed0 + n
        n += 1
        k0 = stats['kills']
        r, err = run_round(seed, kills, deadline, stats, args)
        k = stats['kills'] - k0
        its = r.iteration if r else 0
        found = list(r.failures) if r else []
        if err:
            found.append((its, err, r.trace if r else []))
        if found:
            out(f'not ok {n} - seed {seed}: {len(found)} failures'
                f' ({", ".join(sorted({e.kind for _, e, _ in found}))}) in {k} kills,'
                f' {its} iterations' + (f'; stopped by {err.kind}' if err else ''))
            for it, e, trace in found:
                failures.append((seed, e))
                note(f'FAILURE seed={seed} iteration={it} kind={e.kind}'
                     + (' (fatal: the round stops)' if e is err else ''))
                note(e.msg)
                note('what happened in that iteration:')
                for line in trace:
                    note(f'  {line}')
            note(f'reproduce: TORTURE_SEED={seed} python3 {sys.argv[0]} --rounds 1'
                 f' --kills-per-round {kills} --verbose')
        else:
            out(f'ok {n} - seed {seed}: {k} kills, {its} iterations, no failure')

    elapsed = time.monotonic() - t0
    if seeds is None:
        out(f'1..{n}')
    rate = stats['kills'] * 3600 / elapsed if elapsed else 0
    kinds = sorted({e.kind for _, e in failures})
    bad_seeds = sorted({s for s, _ in failures})
    note(f'torture: {stats["iterations"]} iterations, {stats["operations"]} operations,'
         f' {stats["kills"]} kills, {len(failures)} failures in {elapsed:.0f} s'
         f' ({rate:.0f} kills/hour)'
         + (f'; failing seeds {bad_seeds} ({", ".join(kinds)})'
            if failures else ''))
    note('kills during: ' + ', '.join(f'{k} {v}' for k, v in
                                      sorted(stats['during'].items())))
    return 1 if failures else 0


if __name__ == '__main__':
    sys.exit(main())
