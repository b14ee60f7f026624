#!/usr/bin/env python3
# Live block jobs over QMP on differencing VHDX chains (intermediate and
# active block-commit, block-stream with and without a base), and
# qemu-img convert (flatten), compare and map on the same chains, each
# next to the same operation on a qcow2 chain as the reference
#
# Copyright (c) 2026 The Hyper-V checkpoints project authors
#
# SPDX-License-Identifier: GPL-2.0-or-later
#
# A pattern model of the chain gives the expected contents; every image
# is read back with `qemu-img convert`.  Environment: HVCP_BUILD.
# Prints TAP.

import json
import os
import shutil
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from vhdx_tools import (Tap, BUILD, contents, qemu_img, qemu_io,  # noqa: E402
                        need_tools, skip_all)
from hvcpvm import QemuVM  # noqa: E402

t = Tap()
MiB = 1024 * 1024
KiB = 1024
SIZE = 32 * MiB
QEMU = os.path.join(BUILD, 'qemu-system-x86_64')
FORMATS = ('vhdx', 'qcow2')

# (layer, offset, length, pattern): base, mid, top.  Offsets are 64 KiB
# aligned so that the maps of both formats can be compared.
LAYERS = (
    [(0, SIZE, 0x11)],
    [(1 * MiB, 1 * MiB, 0x22), (5 * MiB, 64 * KiB, 0x23),
     (7 * MiB + 512 * KiB, 2 * MiB, 0x24)],
    [(3 * MiB, 1 * MiB, 0x33), (1 * MiB, 64 * KiB, 0x34),
     (8 * MiB, 192 * KiB, 0x35), (31 * MiB, 1 * MiB, 0x36)],
)


class Model:
    def __init__(self):
        self.data = bytearray(SIZE)
        self.owner = bytearray(SIZE // (64 * KiB))   # 0: none, 1 + depth

    def write(self, off, length, pattern, layer=None):
        self.data[off:off + length] = bytes([pattern]) * length
        if layer is not None:
            for c in range(off // (64 * KiB), (off + length) // (64 * KiB)):
                self.owner[c] = layer + 1


def names(d, fmt):
    ext = ('vhdx', 'avhdx', 'avhdx') if fmt == 'vhdx' else ('qcow2',) * 3
    return [os.path.join(d, f'{n}.{e}')
            for n, e in zip(('base', 'mid', 'top'), ext)]


def make_chain(d, fmt):
    """base <- mid <- top, each written before its child exists"""
    os.makedirs(d, exist_ok=True)
    paths = names(d, fmt)
    model = Model()
    for depth, layer in enumerate(LAYERS):
        args = ['create', '-q', '-f', fmt]
        if fmt == 'vhdx':
            args += ['-o', 'block_size=1M']
        if depth:
            args += ['-b', os.path.basename(paths[depth - 1]), '-F', fmt]
        r = qemu_img(*args, paths[depth], str(SIZE))
        assert r.returncode == 0, r.stderr
        cmds = []
        for off, length, pat in layer:
            cmds += ['-c', f'write -P {pat} {off} {length}']
            model.write(off, length, pat, 2 - depth)
        r = qemu_io('-f', fmt, *cmds, paths[depth])
        assert r.returncode == 0 and 'error' not in r.stdout.lower(), \
            r.stdout + r.stderr
    return paths, model


def model_upto(depth):
    """Model of the chain down from layer @depth (0 = base)"""
    m = Model()
    for layer in LAYERS[:depth + 1]:
        for off, length, pat in layer:
            m.write(off, length, pat)
    return m


def same(got, want):
    if got == bytes(want):
        return True, ''
    if len(got) != len(want):
        return False, got[:400].decode(errors='replace')
    for i in range(0, len(got), 512):
        if got[i:i + 512] != want[i:i + 512]:
            return False, f'first difference in the sector at {i:#x}'
    return False, '?'


def check_contents(image, model, tmp, name, *opts):
    ok, diag = same(contents(image, tmp, *opts), model.data)
    t.ok(ok, name, diag)


def check_clean(image, name):
    r = qemu_img('check', image)
    t.ok(r.returncode == 0, name, r.stdout + r.stderr)


def backing_of(image):
    r = qemu_img('info', '--output=json', image)
    if r.returncode != 0:
        return 'ERROR ' + r.stderr
    return json.loads(r.stdout).get('backing-filename')


class VM:
    """qemu-system-x86_64 -M none with the chain as -blockdev nodes"""

    def __init__(self, tmp, fmt, paths):
        args = ['-M', 'none', '-nodefaults', '-display', 'none']
        prev = None
        for name, path in zip(('base', 'mid', 'top'), paths):
            node = {'driver': fmt, 'node-name': name,
                    'file': {'driver': 'file', 'filename': path}}
            node['backing'] = prev
            args += ['-blockdev', json.dumps(node)]
            prev = name
        self.vm = QemuVM(args, binary=QEMU, name='vhdx-jobs').start()

    def qmp(self, cmd, **args):
        return self.vm.raw(cmd, **args)

    def hmp_qemu_io(self, node, cmd):
        r = self.qmp('human-monitor-command',
                     **{'command-line': f'qemu-io {node} "{cmd}"'})
        return r.get('return', r)

    def wait_job(self, job, ready=False):
        """Wait for the job's end (or readiness); return the event data"""
        name = 'BLOCK_JOB_READY' if ready else 'BLOCK_JOB_COMPLETED'
        ev = self.vm.event(lambda e: e['event'] == name and
                           e['data'].get('device') == job, timeout=600 * 60)
        return ev['data'] if ev else {'error': 'timeout'}

    def shutdown(self):
        self.vm.quit()
        self.vm.cleanup()


def run_job(tmp, fmt, paths, cmd, args, active=False, during=None):
    """Run one job to its end; return (event data, diagnostics)"""
    vm = VM(tmp, fmt, paths)
    log = []
    try:
        r = vm.qmp(cmd, **args)
        log.append(r)
        if 'error' in r:
            return r, json.dumps(log)
        if active:
            log.append(vm.wait_job(args['job-id'], ready=True))
            if during:
                for c in during:
                    # through the job's filter node, as a guest would
                    log.append(vm.hmp_qemu_io('cf', c))
            log.append(vm.qmp('job-complete', id=args['job-id']))
        ev = vm.wait_job(args['job-id'])
        log.append(ev)
        return ev, json.dumps(log)
    finally:
        vm.shutdown()


def test_intermediate_commit(tmp):
    results = {}
    for fmt in FORMATS:
        d = os.path.join(tmp, f'icommit-{fmt}')
        paths, model = make_chain(d, fmt)
        ev, log = run_job(tmp, fmt, paths, 'block-commit',
                          {'job-id': 'c', 'device': 'top', 'top-node': 'mid',
                           'base-node': 'base'})
        t.ok('error' not in ev and ev.get('offset') == SIZE,
             f'{fmt}: intermediate block-commit (mid into base) completes',
             log)
        t.ok(os.path.basename(str(backing_of(paths[2]))) ==
             os.path.basename(paths[0]),
             f'{fmt}: top now links to base', backing_of(paths[2]))
        check_contents(paths[2], model, tmp,
                       f'{fmt}: top reads the same after the commit')
        check_contents(paths[0], model_upto(1), tmp,
                       f'{fmt}: base holds base + mid')
        check_clean(paths[2], f'{fmt}: check of top after the commit')
        check_clean(paths[0], f'{fmt}: check of base after the commit')
        results[fmt] = paths
    r = qemu_img('compare', results['vhdx'][2], results['qcow2'][2])
    t.ok(r.returncode == 0, 'vhdx and qcow2 tops compare identical after '
         'the intermediate commit', r.stdout + r.stderr)


def test_active_commit(tmp):
    during = [(2 * MiB, 1 * MiB, 0x55), (20 * MiB + 4 * KiB, 4 * KiB, 0x56)]
    for fmt in FORMATS:
        d = os.path.join(tmp, f'acommit-{fmt}')
        paths, model = make_chain(d, fmt)
        ev, log = run_job(tmp, fmt, paths, 'block-commit',
                          {'job-id': 'a', 'device': 'top',
                           'base-node': 'base', 'filter-node-name': 'cf'},
                          active=True,
                          during=[f'write -P {p} {o} {n}'
                                  for o, n, p in during])
        for o, n, p in during:
            model.write(o, n, p)
        t.ok('error' not in ev and ev.get('type') == 'commit',
             f'{fmt}: active block-commit (top into base) completes after '
             'job-complete', log)
        check_contents(paths[0], model, tmp,
                       f'{fmt}: base holds the whole chain and the writes '
                       'made while the job ran')
        check_clean(paths[0], f'{fmt}: check of base after the active commit')


def test_stream(tmp):
    for fmt in FORMATS:
        d = os.path.join(tmp, f'stream-{fmt}')
        paths, model = make_chain(d, fmt)
        ev, log = run_job(tmp, fmt, paths, 'block-stream',
                          {'job-id': 's', 'device': 'top',
                           'base-node': 'base'})
        t.ok('error' not in ev and ev.get('offset') == SIZE,
             f'{fmt}: block-stream of mid into top completes', log)
        t.ok(os.path.basename(str(backing_of(paths[2]))) ==
             os.path.basename(paths[0]),
             f'{fmt}: top now links to base', backing_of(paths[2]))
        check_contents(paths[2], model, tmp,
                       f'{fmt}: top reads the same after streaming mid')

        # Stream everything below top into top: base <- top only now
        ev, log = run_stream_all(tmp, fmt, paths)
        t.ok('error' not in ev and ev.get('offset') == SIZE,
             f'{fmt}: block-stream of the whole chain into top completes',
             log)
        t.ok(backing_of(paths[2]) is None, f'{fmt}: top has no backing file '
             'after streaming everything', backing_of(paths[2]))
        hide = os.path.join(tmp, f'hidden-{fmt}')
        os.mkdir(hide)
        for p in paths[:2]:
            shutil.move(p, hide)
        check_contents(paths[2], model, tmp,
                       f'{fmt}: top alone reads the whole chain (parents '
                       'moved away)')
        check_clean(paths[2], f'{fmt}: check of the standalone top')


def run_stream_all(tmp, fmt, paths):
    args = ['-M', 'none', '-nodefaults', '-display', 'none']
    for name, path, backing in (('base', paths[0], None),
                                ('top', paths[2], 'base')):
        node = {'driver': fmt, 'node-name': name, 'backing': backing,
                'file': {'driver': 'file', 'filename': path}}
        args += ['-blockdev', json.dumps(node)]
    vm = QemuVM(args, binary=QEMU, name='vhdx-jobs').start()
    log = []
    try:
        r = vm.raw('block-stream', **{'job-id': 's', 'device': 'top'})
        log.append(r)
        if 'error' in r:
            return r, json.dumps(log)
        ev = vm.event(lambda e: e['event'] == 'BLOCK_JOB_COMPLETED',
                      timeout=120)
        ev = ev['data'] if ev else {'error': 'timeout'}
        log.append(ev)
        return ev, json.dumps(log)
    finally:
        vm.quit()
        vm.cleanup()


def norm_map(image):
    """qemu-img map as merged (start, length, depth, data, zero) runs"""
    r = qemu_img('map', '--output=json', image)
    if r.returncode != 0:
        return r.stderr
    out = []
    for e in json.loads(r.stdout):
        key = (e['depth'], e['data'], e['zero'])
        if out and out[-1][2:] == key and \
                out[-1][0] + out[-1][1] == e['start']:
            out[-1] = (out[-1][0], out[-1][1] + e['length']) + key
        else:
            out.append((e['start'], e['length']) + key)
    return out


def test_tools(tmp):
    chains = {}
    for fmt in FORMATS:
        chains[fmt] = make_chain(os.path.join(tmp, f'tools-{fmt}'), fmt)
    (vpaths, model), (qpaths, _) = chains['vhdx'], chains['qcow2']

    vmap, qmap = norm_map(vpaths[2]), norm_map(qpaths[2])
    t.ok(isinstance(vmap, list) and vmap == qmap,
         'qemu-img map of the vhdx chain equals that of the qcow2 chain',
         f'vhdx {vmap}\nqcow2 {qmap}')
    bad = []
    for start, length, depth, data, zero in vmap if isinstance(vmap, list) \
            else []:
        for c in range(start // (64 * KiB), (start + length) // (64 * KiB)):
            if not data or model.owner[c] != depth + 1:
                bad.append((start, length, depth, model.owner[c]))
                break
    t.ok(isinstance(vmap, list) and not bad and
         sum(e[1] for e in vmap) == SIZE,
         'every map run names the layer that wrote it', bad)

    for fmt, (paths, _) in chains.items():
        flat = os.path.join(tmp, f'flat-{fmt}.{fmt}')
        r = qemu_img('convert', '-O', fmt, paths[2], flat)
        t.ok(r.returncode == 0 and backing_of(flat) is None,
             f'{fmt}: convert flattens the chain', r.stderr)
        check_contents(flat, model, tmp, f'{fmt}: the flat copy reads as '
                       'the chain')
        r = qemu_img('compare', paths[2], flat)
        t.ok(r.returncode == 0 and 'identical' in r.stdout,
             f'{fmt}: compare chain vs flat copy: identical',
             r.stdout + r.stderr)
        check_clean(flat, f'{fmt}: check of the flat copy')
    r = qemu_img('compare', vpaths[2], qpaths[2])
    t.ok(r.returncode == 0, 'compare vhdx chain vs qcow2 chain: identical',
         r.stdout + r.stderr)
    r = qemu_img('compare', '-s', vpaths[2], vpaths[1])
    t.ok(r.returncode == 1 and 'mismatch' in r.stdout.lower(),
         'compare top vs mid: exit 1, content mismatch', r.stdout + r.stderr)
    flat = os.path.join(tmp, 'flat-vhdx.vhdx')
    r = qemu_io('-f', 'vhdx', '-c', f'write -P 0x77 {9 * MiB} 512', flat)
    assert r.returncode == 0, r.stderr
    r = qemu_img('compare', vpaths[2], flat)
    t.ok(r.returncode == 1 and str(9 * MiB) in r.stdout,
         'compare finds a changed sector in the flat copy at its offset',
         r.stdout + r.stderr)

    # convert of a chain into a vhdx chain keeps the top layer only (-B)
    out = os.path.join(os.path.dirname(vpaths[0]), 'rebuilt.avhdx')
    r = qemu_img('convert', '-O', 'vhdx', '-B', 'mid.avhdx', '-F', 'vhdx',
                 vpaths[2], out)
    t.ok(r.returncode == 0, 'convert -B writes a new child of mid',
         r.stderr)
    check_contents(out, model, tmp, 'the new child reads as the chain')


def main():
    need_tools()
    if not os.access(QEMU, os.X_OK):
        return skip_all(f'{QEMU} not built')
    with tempfile.TemporaryDirectory(prefix='vhdx-diff-jobs-') as tmp:
        test_intermediate_commit(tmp)
        test_active_commit(tmp)
        test_stream(tmp)
        test_tools(tmp)
    return t.done()


if __name__ == '__main__':
    sys.exit(main())
