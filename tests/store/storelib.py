# SPDX-License-Identifier: GPL-2.0-or-later
"""A VM without a guest (qtest accelerator on microvm) with virtio-blk
disks and a checkpoint store, driven over QMP, and what the store tests
look at: the manifest, the images' backing chains, files that nothing
references.

Environment: HVCP_BUILD (the QEMU build folder).  QEMU is driven through
tests/pylib/hvcpvm.py.
"""

import glob
import json
import os
import re
import shutil
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                '..', 'pylib'))
from hvcpvm import QEMU, QEMU_IMG, QEMU_IO, QemuVM, QemuError  # noqa: E402,F401
import hvcpvm  # noqa: E402

UUID = r'[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}'
CHILD_RE = re.compile(r'_' + UUID + r'\.(avhdx|qcow2)$')
CRASH_ENV = 'QEMU_CHECKPOINT_CRASH_AT'


def run(*args, check=False):
    return hvcpvm.run(*args, check=check)


def mkimg(path, fmt, size='16M', backing=None):
    args = ['create', '-q', '-f', fmt]
    if backing:
        args += ['-b', backing, '-F', fmt]
    run(QEMU_IMG, *args, path, size, check=True)
    return path


class VM(QemuVM):
    """QEMU with disks [(device, path, format)] and a store folder,
    started at once."""

    def __init__(self, tmp, disks, store=None, ctype='standard',
                 extra=(), env=None, wrapper=()):
        self.disks = list(disks)
        self.nbd = False
        args = ['-M', 'microvm', '-accel', 'qtest', '-nodefaults',
                '-display', 'none', '-m', '32M']
        for dev, path, fmt in self.disks:
            args += ['-drive', f'if=none,id={dev},file={path},format={fmt}',
                     '-device', f'virtio-blk-device,drive={dev},share-rw=on']
        if store:
            args += ['-checkpoints', f'dir={store},type={ctype}']
        args += list(extra)
        super().__init__(args, env=env, wrapper=wrapper, name='store')
        self.start()

    def qmp(self, cmd, /, **args):
        """The whole response (a command that fails raises nothing)."""
        return self.raw(cmd, **args)

    def hmp(self, line):
        return self.cmd('human-monitor-command', **{'command-line': line})

    def node_of(self, dev):
        """The node the guest device of disk dev uses now."""
        for b in self.cmd('query-block'):
            if b['device'] == dev or b.get('qdev') == dev:
                return b['inserted']['node-name']
        raise AssertionError(f'no disk {dev}')

    def io(self, dev, command, write):
        """qemu-io command (or a list of commands) on what the guest
        sees as disk dev, through an NBD export (HMP's qemu-io prints on
        QEMU's stdout)."""
        commands = [command] if isinstance(command, str) else command
        sock = os.path.join(self.sockdir, 'nbd.sock')
        if not self.nbd:
            self.cmd('nbd-server-start',
                     addr={'type': 'unix', 'data': {'path': sock}})
            self.nbd = True
        self.cmd('block-export-add', type='nbd', id='io',
                 **{'node-name': self.node_of(dev)}, name='io',
                 writable=write)
        try:
            r = run(QEMU_IO, *([] if write else ['-r']), '-f', 'raw',
                    f'nbd+unix:///io?socket={sock}',
                    *[a for c in commands for a in ('-c', c)])
        finally:
            self.cmd('block-export-del', id='io')
            self.wait_until(lambda: not self.cmd('query-block-exports'),
                            'the NBD export to go')
        return r.stdout + r.stderr

    def write(self, dev, pattern, offset, length):
        out = self.io(dev, f'write -P {pattern} {offset} {length}', True)
        if f'wrote {length}/{length}' not in out:
            raise AssertionError(f'write to {dev} failed: {out}')

    def pattern_is(self, dev, pattern, offset, length):
        out = self.io(dev, f'read -P {pattern} {offset} {length}', False)
        return f'read {length}/{length}' in out and \
            'verification failed' not in out

    def create(self, name, timeout=60):
        """checkpoint-create; waits until the checkpoint is ready (by
        polling: a QMP event wait does not end when QEMU is killed)."""
        cid = self.cmd('checkpoint-create', name=name,
                       type='standard')['id']
        def ready():
            state = [c['state'] for c in self.checkpoints()
                     if c['id'] == cid]
            if not state:
                raise AssertionError(f'checkpoint {cid} was dropped')
            return state == ['ready']

        self.wait_until(ready, f'checkpoint {cid} to be ready', timeout)
        return cid

    def apply(self, key, **args):
        """checkpoint-apply (it returns once the checkpoint is applied)"""
        return self.cmd('checkpoint-apply', checkpoint=key, **args)

    def checkpoints(self):
        return self.cmd('query-checkpoints')

    def shutdown(self):
        """QMP quit; what QEMU printed.  QemuError if it does not end."""
        if not self.quit(timeout=30):
            raise QemuError('QEMU did not quit', self.output())
        return self.output()

    def kill(self):
        """SIGKILL (if it still runs) and clean up; what QEMU printed."""
        super().kill()
        out = self.output()
        if self.own_sockdir:
            shutil.rmtree(self.sockdir, ignore_errors=True)
        return out


def start_failure(tmp, disks, store, env=None):
    """Start QEMU that must refuse to start: its output."""
    try:
        vm = VM(tmp, disks, store, env=env)
    except Exception as e:      # pylint: disable=broad-except
        return str(e) + '\n' + str(getattr(e, 'output', ''))
    vm.shutdown()
    raise AssertionError('QEMU started')


def manifest(store):
    with open(os.path.join(store, 'manifest.json'), encoding='utf-8') as f:
        return json.load(f)


def active_disks(store, disks):
    """disks [(device, path, format)] with the manifest's active images."""
    if not os.path.exists(os.path.join(store, 'manifest.json')):
        return list(disks)
    active = {d['device']: d['filename'] for d in manifest(store)['active']}
    return [(dev, active.get(dev, path), fmt) for dev, path, fmt in disks]


def backing_chain(path):
    r = run(QEMU_IMG, 'info', '-U', '--backing-chain', '--output=json',
            path, check=True)
    return [os.path.realpath(i['filename']) for i in json.loads(r.stdout)]


def referenced_files(store):
    """Every file the store needs: the manifest, the VM's configuration,
    the images the manifest names and their backing chains, state and
    configuration files and folders."""
    m = manifest(store)
    images = [d['filename'] for d in m.get('active', [])]
    files = {os.path.realpath(os.path.join(store, 'manifest.json'))}
    config = os.path.join(store, 'config.json')
    if os.path.exists(config):
        files.add(os.path.realpath(config))
    for c in m.get('checkpoints', []):
        images += [d['filename'] for d in c['disks']]
        for key in ('state-file', 'config-file'):
            if key in c:
                path = os.path.realpath(os.path.join(store, c[key]))
                files.add(path)
                files.add(os.path.dirname(path))
    for image in images:
        if os.path.exists(image):
            files.update(backing_chain(image))
        else:
            files.add(os.path.realpath(image))
    return files


def unreferenced_files(store, image_dirs):
    """Differencing images in image_dirs and entries of the store that
    nothing references."""
    ref = referenced_files(store)
    found = []
    for d in image_dirs:
        for path in glob.glob(os.path.join(d, '*')):
            if CHILD_RE.search(path) and os.path.realpath(path) not in ref:
                found.append(path)
    for path in glob.glob(os.path.join(store, '*')) + \
            glob.glob(os.path.join(store, '*', '*')):
        if os.path.realpath(path) not in ref:
            found.append(path)
    return sorted(found)


def missing_files(store):
    return sorted(f for f in referenced_files(store) if not os.path.exists(f))
