# SPDX-License-Identifier: GPL-2.0-or-later
"""Helpers for the checkpoint tests and scripts/demo: a guest with a
checkpoint store, checkpoint commands over QMP, the store's manifest,
and the guest's data as the tests write and read it.

The guest's disks (guestlib.qemu_args): /dev/vda, the first disk, holds
the ext4 filesystem mounted at /mnt/disk (the workload's counter file
and the tests' DATA_FILE); /dev/vdb, if there is one, is written raw.
"""

import contextlib
import glob
import json
import os
import re
import subprocess
import time

import guestlib
from guestlib import GuestError

BOOT_TIMEOUT = 90
DATA_FILE = '/mnt/disk/data'
# The raw pattern on /dev/vdb: PATTERN_BLOCKS blocks of 64 KiB from 1 MiB
PATTERN_SEEK = 16
PATTERN_BLOCKS = 16
CRASH_ENV = 'QEMU_CHECKPOINT_CRASH_AT'
UUID = r'[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}'
CHILD_RE = re.compile(r'_' + UUID + r'\.(avhdx|qcow2)$')


def expect(cond, msg):
    if not cond:
        raise AssertionError(msg)


def note(msg):
    """A TAP comment line."""
    for line in str(msg).splitlines() or ['']:
        print(f'# {line}', flush=True)


def store_args(store, ctype='standard'):
    return ['-checkpoints', f'dir={store},type={ctype}']


@contextlib.contextmanager
def environment(**env):
    """Set environment variables (None: unset) while starting QEMU:
    Guest has no env parameter and QEMU inherits ours."""
    old = {k: os.environ.get(k) for k in env}
    try:
        for k, v in env.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def boot(g, env=None, report=note):
    """Start QEMU (with extra environment variables) and wait for the
    guest to be ready; report(message) says how long it took."""
    t0 = time.monotonic()
    with environment(**(env or {})):
        g.start()
    # GUEST-ERROR: init could not set up the guest (e.g. mount its disk)
    m = g.wait_for_line(r'^(GUEST-READY|GUEST-ERROR.*)$', BOOT_TIMEOUT)
    if m.group(1) != 'GUEST-READY':
        raise GuestError(f'the guest did not boot: {m.group(1)}; console ends:\n{g.tail()}')
    report(f'GUEST-READY after {time.monotonic() - t0:.1f}s')


# -- QMP ------------------------------------------------------------------

def hmp(g, command):
    return g.qmp('human-monitor-command', **{'command-line': command})


def qmp_raw(g, cmd, **args):
    """A QMP command's whole response: {'return': ...} or {'error': ...}."""
    return g.raw(cmd, **args)


def qmp_error(g, cmd, **args):
    """Run a command that must fail; returns its error description."""
    resp = qmp_raw(g, cmd, **args)
    expect('error' in resp, f'{cmd} {args} succeeded: {resp}')
    return resp['error']['desc']


def wait_event(g, name, timeout=120, **data):
    """Wait for the event name whose data has the given members."""
    deadline = time.monotonic() + timeout
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            raise GuestError(f'no QMP event {name} {data} in {timeout}s')
        ev = g.qmp_event(name, timeout=left)
        if all(ev.get('data', {}).get(k) == v for k, v in data.items()):
            return ev


def create(g, name, timeout=120):
    """checkpoint-create (standard), waiting for CHECKPOINT_CREATED."""
    cid = g.qmp('checkpoint-create', name=name, type='standard')['id']
    wait_event(g, 'CHECKPOINT_CREATED', timeout, id=cid)
    return cid


def checkpoints(g):
    return g.qmp('query-checkpoints')


def by_id(g):
    return {c['id']: c for c in checkpoints(g)}


def current(g):
    cur = [c['id'] for c in checkpoints(g) if c.get('current')]
    expect(len(cur) <= 1, f'several current checkpoints: {cur}')
    return cur[0] if cur else None


def status(g):
    return g.qmp('query-status')['status']


# -- the store ------------------------------------------------------------

def manifest(store):
    with open(os.path.join(store, 'manifest.json'), encoding='utf-8') as f:
        return json.load(f)


def active_disks(store, fallback=()):
    """The manifest's active images as (filename, format), in its order;
    fallback when it names none."""
    active = manifest(store).get('active') or []
    if not active:
        return list(fallback)
    return [(d['filename'], d['format']) for d in active]


def backing_chain(path, attempts=20):
    """Every file of path's backing chain, path first (realpaths).

    The image may be open in a running QEMU: while that QEMU writes
    metadata through the VHDX log (a few milliseconds at each guest
    flush), a read-only open refuses the image (its log needs a replay),
    so a failed look is tried again."""
    for attempt in range(attempts):
        r = subprocess.run([guestlib.qemu_binary('qemu-img'), 'info', '-U',
                            '--backing-chain', '--output=json', path],
                           capture_output=True, text=True)
        if r.returncode == 0 or attempt == attempts - 1:
            break
        time.sleep(0.1)
    if r.returncode != 0:
        raise GuestError(f'qemu-img info {path}: {r.stderr.strip()}')
    info = json.loads(r.stdout)
    if isinstance(info, dict):
        info = [info]
    return [os.path.realpath(i['filename']) for i in info]


def referenced_files(store):
    """Images the manifest names, with their backing chains."""
    m = manifest(store)
    named = [d['filename'] for c in m.get('checkpoints', []) for d in c['disks']]
    named += [d['filename'] for d in m.get('active', [])]
    files = set()
    for f in named:
        files.add(os.path.realpath(f))
        if os.path.exists(f):
            files.update(backing_chain(f))
    return files


def stray_children(store, disk_dirs):
    """Differencing children (<disk>_<uuid>.avhdx/.qcow2) in disk_dirs
    that the manifest does not reference."""
    refs = referenced_files(store)
    stray = []
    for d in disk_dirs:
        for f in sorted(glob.glob(os.path.join(d, '*'))):
            if CHILD_RE.search(f) and os.path.realpath(f) not in refs:
                stray.append(f)
    return stray


def check_store_files(g, store):
    """Every image query-checkpoints names and every state file the
    manifest names exists; no folder in the store belongs to no
    checkpoint."""
    for c in checkpoints(g):
        for d in c['disks']:
            expect(os.path.exists(d['filename']),
                   f"checkpoint {c['name']} ({c['id']}): disk {d['device']}"
                   f" image {d['filename']} is missing")
    m = manifest(store)
    ids = set()
    for c in m.get('checkpoints', []):
        ids.add(c['id'])
        for key in ('state-file', 'config-file'):
            if key in c:
                path = os.path.join(store, c[key])
                expect(os.path.exists(path),
                       f"checkpoint {c['name']} ({c['id']}): {key} {path} is missing")
    for d in m.get('active', []):
        expect(os.path.exists(d['filename']),
               f"active image {d['filename']} of {d['device']} is missing")
    extra = [e for e in os.listdir(store)
             if os.path.isdir(os.path.join(store, e)) and e not in ids]
    expect(not extra, f'folders in the store of no checkpoint: {extra}')


# -- the guest's data -----------------------------------------------------

def resync(g, tries=6):
    """Talk to the guest agent again after its RAM was replaced by a
    checkpoint's: reconnect and guest-sync-delimited until it answers."""
    # pylint: disable=protected-access
    last = None
    for _ in range(tries):
        try:
            g._qga.connect(5)
            g._qga.sync()
            return
        except (OSError, GuestError) as e:
            last = e
            time.sleep(0.5)
    raise GuestError(f'the guest agent does not answer after the apply: {last}')


def write_data(g, tag, vdb=True):
    """DATA_FILE := tag; /dev/vdb's pattern := fresh random data; synced.
    Returns what read_data() will return."""
    script = f'echo {tag} > {DATA_FILE}.tmp && mv {DATA_FILE}.tmp {DATA_FILE}'
    if vdb:
        script += (f' && dd if=/dev/urandom of=/tmp/pattern bs=64k'
                   f' count={PATTERN_BLOCKS} 2>/dev/null'
                   f' && dd if=/tmp/pattern of=/dev/vdb bs=64k seek={PATTERN_SEEK}'
                   ' 2>/dev/null')
    g.sh(script + ' && sync')
    return read_data(g, vdb)


def read_data(g, vdb=True):
    """(DATA_FILE's content, md5 of /dev/vdb's pattern), read from the
    disks: the guest's clean caches are dropped first."""
    script = (f'sync; echo 3 > /proc/sys/vm/drop_caches;'
              f' echo "file=$(cat {DATA_FILE} 2>/dev/null)";')
    if vdb:
        script += (f' echo "md5=$(dd if=/dev/vdb bs=64k skip={PATTERN_SEEK}'
                   f' count={PATTERN_BLOCKS} 2>/dev/null | md5sum)"')
    vals = dict(line.split('=', 1) for line in g.sh(script).splitlines() if '=' in line)
    return (vals['file'], vals['md5'].split()[0] if vdb else None)


def file_exists(g, path):
    return g.sh(f'[ -e {path} ] && echo yes || echo no').strip() == 'yes'


def last_tick(g):
    ticks = g.ticks()
    expect(ticks, 'no TICK yet')
    return ticks[-1][0]


def sync_to_tick(g):
    """Wait for a fresh TICK and return its counter: an operation that
    starts right after it pauses the guest in its one-second sleep, so
    that the RAM counter it sees is the one just printed."""
    g.skip_console()
    (n, _), = g.wait_for_ticks(1)
    return n


def next_tick(g):
    """The first TICK the guest prints from now on, as (ram, disk)."""
    g.skip_console()
    (t,) = g.wait_for_ticks(1)
    return t


# -- HMP info checkpoints -------------------------------------------------

INFO_LINE = re.compile(r'^( *)(.*?)  \(id (' + UUID + r'), ')


def info_tree(text):
    """Parse 'info checkpoints': [(depth, name, id)] for the checkpoint
    lines and for Now (name 'Now', id None), in order."""
    out = []
    for line in text.replace('\r', '').split('\n'):
        m = INFO_LINE.match(line)
        if m:
            out.append((len(m.group(1)) // 2, m.group(2), m.group(3)))
            expect(len(m.group(1)) % 2 == 0, f'odd indentation: {line!r}')
        elif line.strip() == 'Now':
            indent = len(line) - len(line.lstrip(' '))
            out.append((indent // 2, 'Now', None))
    return out
