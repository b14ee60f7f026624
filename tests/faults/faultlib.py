# SPDX-License-Identifier: GPL-2.0-or-later
"""Helpers of the fault-injection tests: TAP, QEMU without a guest
(-accel qtest), disks as -blockdev chains, guest I/O over NBD, a
blkdebug layer put between a format node and its file node at the
moment a case wants it, and the consistency checks of a checkpoint
store.

The disks: disk i is the image IMAGES[i] ("d0.qcow2", "d1.vhdx"), given
as -blockdev file node f<i> and format node n<i> to the device vd<i>.
"""

import json
import os
import re
import shutil
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                '..', 'pylib'))
from hvcptap import Skip, Tap, expect, note  # noqa: E402,F401
from hvcpvm import QEMU, QEMU_IMG, QEMU_IO, QemuVM  # noqa: E402
import hvcpvm  # noqa: E402

IMAGES = [('d0.qcow2', 'qcow2'), ('d1.vhdx', 'vhdx')]
UUID = r'[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}'
CHILD_RE = re.compile(r'_' + UUID + r'\.(avhdx|qcow2)$')
# Guest RAM the tests fill (through qtest) so that a state file has data
RAM_ADDR = 0x200000


def run(*args, check=True):
    return hvcpvm.run(*args, check=check)


def require_built():
    for p in (QEMU, QEMU_IMG, QEMU_IO):
        if not os.access(p, os.X_OK):
            raise Skip(f'{p} is not built (set HVCP_BUILD)')


def run_points(points):
    """Run the test points (description, function, arguments...) as TAP,
    those whose description contains the first command line argument if
    one is given; a skip of the whole program if QEMU is not built.
    Returns the exit code."""
    try:
        require_built()
    except Skip as e:
        print(f'1..0 # SKIP {e}')
        return 0
    only = sys.argv[1] if len(sys.argv) > 1 else ''
    tap = Tap()
    for desc, func, *args in points:
        if only in desc:
            tap.check(desc, func, *args)
    return tap.done()


def make_images(workdir, size='16M'):
    out = []
    for name, fmt in IMAGES:
        path = os.path.join(workdir, name)
        run(QEMU_IMG, 'create', '-f', fmt, path, size)
        out.append((path, fmt))
    return out


class VM(QemuVM):
    """QEMU with -accel qtest: no guest code runs; disks are read and
    written over NBD, RAM through the qtest socket."""

    def __init__(self, workdir, disks, store=None, cwd=None, name='vm',
                 env=None):
        self.workdir = workdir
        self.disks = list(disks)
        self.store = store
        args = ['-M', 'microvm', '-accel', 'qtest', '-display', 'none',
                '-nodefaults', '-m', '32M']
        for i, (path, fmt) in enumerate(self.disks):
            args += ['-blockdev', f'driver=file,filename={path},node-name=f{i}',
                     '-blockdev', f'driver={fmt},file=f{i},node-name=n{i}',
                     '-device', f'virtio-blk-device,drive=n{i},id=vd{i},share-rw=on']
        if self.store:
            args += ['-checkpoints', f'dir={self.store},type=standard']
        super().__init__(args, log=os.path.join(workdir, f'{name}.log'),
                         log_mode='a', cwd=cwd or workdir, env=env,
                         qtest=True, name='faults')
        self.log = self.log_path
        self.nbd_path = os.path.join(self.sockdir, 'nbd.sock')
        self.nbd_started = False

    # -- monitors ----------------------------------------------------------

    def qmp(self, cmd, /, **args):
        return self.cmd(cmd, **args)

    def fill_ram(self, value, size=0x100000):
        self.memset(RAM_ADDR, size, value)

    def running(self):
        return self.qmp('query-status')['running']

    def close(self):
        super().close()
        shutil.rmtree(self.sockdir, ignore_errors=True)

    # -- the guest's disks -------------------------------------------------

    def node_of(self, dev):
        for b in self.qmp('query-block'):
            if b.get('qdev') == dev or b.get('device') == dev:
                return b['inserted']['node-name']
        raise AssertionError(f'no disk {dev} in query-block')

    def io(self, dev, cmd, write):
        """qemu-io @cmd on what the guest sees as device @dev (an NBD
        export of its node; HMP's qemu-io prints on QEMU's stdout)."""
        if not self.nbd_started:
            self.qmp('nbd-server-start',
                     addr={'type': 'unix', 'data': {'path': self.nbd_path}})
            self.nbd_started = True
        self.qmp('block-export-add', type='nbd', id='io',
                 **{'node-name': self.node_of(dev)}, name='io',
                 writable=write)
        try:
            r = run(QEMU_IO, *(['-t', 'writeback'] if write else ['-r']),
                    '-f', 'raw',
                    f'nbd+unix:///io?socket={self.nbd_path}', '-c', cmd,
                    check=False)
        finally:
            self.qmp('block-export-del', id='io')
            self.event(lambda e: e['event'] == 'BLOCK_EXPORT_DELETED')
        return r.stdout + r.stderr

    def write_pattern(self, p, devs=None):
        for i in devs if devs is not None else range(len(self.disks)):
            out = self.io(f'vd{i}', f'write -P 0x{p:02x} 0 64k', True)
            expect('wrote 65536/65536' in out,
                   f'writing 0x{p:02x} to vd{i}: {out}')

    def check_pattern(self, p, devs=None):
        """The guest reads pattern @p at 0 (64 KiB) on every disk."""
        for i in devs if devs is not None else range(len(self.disks)):
            out = self.io(f'vd{i}', f'read -P 0x{p:02x} 0 64k', False)
            expect('read 65536/65536' in out and 'fail' not in out.lower(),
                   f'vd{i} does not read back 0x{p:02x} (data lost?): {out}')

    # -- checkpoints -------------------------------------------------------

    def create(self, name, timeout=60):
        """checkpoint-create; returns ('ok', id), ('error', desc) when
        the command fails, or ('job-failed', desc) when its job does."""
        r = self.raw('checkpoint-create', name=name, type='standard')
        if 'error' in r:
            return 'error', r['error']['desc']
        cid = r['return']['id']
        ev = self.event(lambda e: e['event'] in ('CHECKPOINT_CREATED',
                                                 'CHECKPOINT_CREATE_FAILED')
                        and e['data']['id'] == cid, timeout)
        expect(ev, f'checkpoint {name} ({cid}): neither CHECKPOINT_CREATED'
               f' nor CHECKPOINT_CREATE_FAILED in {timeout}s')
        if ev['event'] == 'CHECKPOINT_CREATED':
            return 'ok', cid
        return 'job-failed', ev['data']['error']

    def create_ok(self, name):
        how, what = self.create(name)
        expect(how == 'ok', f'checkpoint-create {name}: {how}: {what}')
        return what

    def checkpoints(self):
        return self.qmp('query-checkpoints')

    # -- blkdebug ----------------------------------------------------------

    def inject(self, i, conf):
        """Put a blkdebug node with the rules of config file @conf
        between the format node of disk @i (as it is now) and its file
        node."""
        fmt = self.disks[i][1]
        node = self.node_of(f'vd{i}')
        info = {n['node-name']: n for n in
                self.qmp('query-named-block-nodes', flat=True)}
        # the format node's file child
        children = self.qmp('x-debug-query-block-graph')
        file_node = backing = None
        ids = {n['id']: n['name'] for n in children['nodes']}
        for e in children['edges']:
            if ids.get(e['parent']) == node and e['name'] == 'file':
                file_node = ids[e['child']]
            if ids.get(e['parent']) == node and e['name'] == 'backing':
                backing = ids[e['child']]
        expect(file_node, f'no file child under {node}: {children}')
        self.qmp('blockdev-add', driver='blkdebug', **{'node-name': f'dbg{i}'},
                 config=conf, image=file_node)
        opts = {'driver': fmt, 'node-name': node, 'file': f'dbg{i}'}
        if backing or info[node].get('backing_file'):
            opts['backing'] = backing
        self.qmp('blockdev-reopen', options=[opts])
        # The checkpoint code reads bs->filename without refreshing it;
        # after a reopen, it is '' until a query refreshes it (reported)
        self.qmp('query-named-block-nodes', flat=True)
        return node, file_node, backing

    def uninject(self, i, where):
        node, file_node, backing = where
        fmt = self.disks[i][1]
        opts = {'driver': fmt, 'node-name': node, 'file': file_node}
        if backing:
            opts['backing'] = backing
        names = [n['node-name'] for n in
                 self.qmp('query-named-block-nodes', flat=True)]
        if node in names:
            r = self.raw('blockdev-reopen', options=[opts])
            if 'error' in r:
                note(f'cannot take blkdebug out from under {node}:'
                     f' {r["error"]["desc"]}')
                return False
        r = self.raw('blockdev-del', **{'node-name': f'dbg{i}'})
        if 'error' in r:
            note(f'blockdev-del dbg{i}: {r["error"]["desc"]}')
            return False
        return True


def blkdebug_conf(path, iotype, errno, event='none'):
    with open(path, 'w') as f:
        f.write(f'[inject-error]\nevent = "{event}"\niotype = "{iotype}"\n'
                f'errno = "{errno}"\n')
    return path


# -- the store -------------------------------------------------------------

def manifest(store):
    with open(os.path.join(store, 'manifest.json')) as f:
        return json.load(f)


def manifest_text(store):
    try:
        with open(os.path.join(store, 'manifest.json')) as f:
            return f.read()
    except FileNotFoundError:
        return None


def listing(*dirs):
    """Every file and folder under @dirs (sorted), for 'nothing changed'."""
    out = []
    for d in dirs:
        for root, subdirs, files in os.walk(d):
            for n in subdirs + files:
                out.append(os.path.join(root, n))
    return sorted(out)


def active_disks(store, disks):
    m = manifest(store)
    by_dev = {a['device']: a['filename'] for a in m.get('active', [])}
    return [(by_dev.get(f'vd{i}', p), fmt) for i, (p, fmt) in enumerate(disks)]


def backing_chain(image):
    r = run(QEMU_IMG, 'info', '-U', '--backing-chain', '--output=json',
            image, check=False)
    if r.returncode != 0:
        return []
    return [os.path.realpath(i['filename']) for i in json.loads(r.stdout)]


def check_store(store, image_dirs, allow_operation=False):
    """The store is consistent: the manifest parses, every file it names
    exists, no manifest.json.tmp, no folder of no checkpoint, no
    differencing image beside the disks that it does not reference."""
    problems = []
    try:
        m = manifest(store)
    except Exception as e:          # pylint: disable=broad-except
        return [f'manifest.json does not parse: {e}']
    if os.path.exists(os.path.join(store, 'manifest.json.tmp')):
        problems.append('manifest.json.tmp left behind')
    if m.get('operation') and not allow_operation:
        problems.append(f'an operation is still recorded: {m["operation"]}')
    refs = set()
    for c in m.get('checkpoints', []):
        if c['state'] != 'ready':
            problems.append(f'checkpoint {c["name"]} is {c["state"]}')
        for d in c['disks']:
            refs.add(os.path.realpath(d['filename']))
        for k in ('state-file', 'config-file'):
            if k in c:
                f = os.path.join(store, c[k])
                if not os.path.isfile(f):
                    problems.append(f'{c["name"]}: {k} {f} is missing')
    for d in m.get('active', []):
        refs.add(os.path.realpath(d['filename']))
    for f in sorted(refs):
        if not os.path.isfile(f):
            problems.append(f'the manifest names {f}, which does not exist')
    # images under referenced ones (a failed save leaves the disks on
    # the children of a dropped checkpoint) are referenced too
    for f in sorted(refs):
        if os.path.isfile(f):
            refs |= set(backing_chain(f))
    ids = {c['id'] for c in m.get('checkpoints', [])}
    for n in sorted(os.listdir(store)):
        if n in ('manifest.json', 'config.json'):
            continue
        if n not in ids:
            problems.append(f'{n} in the store belongs to no checkpoint')
    for d in image_dirs:
        for f in sorted(os.listdir(d)):
            p = os.path.realpath(os.path.join(d, f))
            if CHILD_RE.search(f) and p not in refs:
                problems.append(f'orphan image {p}')
    return problems


def expect_store(store, image_dirs):
    problems = check_store(store, image_dirs)
    expect(not problems, 'store inconsistent: ' + '; '.join(problems))


def restart_check(workdir, store, disks, pattern, name='restart'):
    """A new QEMU on the manifest's active images opens the store, has
    the same tree, reads @pattern, and can take a checkpoint."""
    m = manifest(store)
    vm = VM(workdir, active_disks(store, disks), store=store, name=name)
    try:
        vm.start()
        got = sorted((c['id'], c['name']) for c in vm.checkpoints())
        want = sorted((c['id'], c['name']) for c in m['checkpoints'])
        expect(got == want, f'after a restart the tree is {got}, expected {want}')
        vm.check_pattern(pattern)
        vm.create_ok('after-restart')
    finally:
        vm.quit()
    expect_store(store, [workdir])


class Mount:
    """A small tmpfs, unmounted on exit (also on failure)."""

    def __init__(self, path, size):
        self.path = path
        self.size = size
        self.mounted = False

    def __enter__(self):
        os.makedirs(self.path, exist_ok=True)
        if os.geteuid() != 0:
            raise Skip('mounting a tmpfs needs root')
        r = run('mount', '-t', 'tmpfs', '-o', f'size={self.size}', 'tmpfs',
                self.path, check=False)
        if r.returncode != 0:
            raise Skip(f'cannot mount a tmpfs: {r.stderr.strip()}')
        self.mounted = True
        return self

    def __exit__(self, *exc):
        if self.mounted:
            r = run('umount', self.path, check=False)
            if r.returncode != 0:
                run('umount', '-l', self.path, check=False)
            self.mounted = False

    def free(self):
        st = os.statvfs(self.path)
        return st.f_bavail * st.f_frsize

    def fill(self, leave):
        """Take all but @leave bytes of free space (a file 'filler')."""
        filler = os.path.join(self.path, 'filler')
        size = self.free() - leave
        if os.path.exists(filler):
            size += os.path.getsize(filler)
        with open(filler, 'wb') as f:
            if size > 0:
                os.posix_fallocate(f.fileno(), 0, size)
        return filler
