#!/usr/bin/env python3
# Malformed parent locators: a clear error, no crash
#
# Copyright (c) 2026 The Hyper-V checkpoints project authors
#
# SPDX-License-Identifier: GPL-2.0-or-later
#
# Each case corrupts the locator of a freshly created child and opens it
# with qemu-img info (no parent needed) and qemu-img convert.  A crash
# (signal) or a missing error message fails the case.
# Environment: HVCP_BUILD.  Prints TAP.

import os
import shutil
import struct
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import vhdx_image  # noqa: E402
from vhdx_tools import Tap, qemu_img, qemu_io, need_tools  # noqa: E402

t = Tap()

# (name, function(locator bytes) -> new bytes, expected error text)
CASES = [
    ('wrong locator type', lambda b: b'\x01' + b[1:], 'type is not VHDX'),
    ('entry count beyond the item',
     lambda b: b[:18] + struct.pack('<H', 0xffff) + b[20:],
     'more than its'),
    ('key offset beyond the item',
     lambda b: b[:20] + struct.pack('<I', 0xfffffff0) + b[24:],
     'outside the locator'),
    ('value length beyond the item',
     lambda b: b[:30] + struct.pack('<H', 0xfffe) + b[32:],
     'outside the locator'),
    ('odd key length',
     lambda b: b[:28] + struct.pack('<H', 27) + b[30:],
     'outside the locator'),
    ('zero value length',
     lambda b: b[:30] + struct.pack('<H', 0) + b[32:],
     'outside the locator'),
    ('key inside the entry table',
     lambda b: b[:20] + struct.pack('<I', 4) + b[24:],
     'outside the locator'),
    ('unpaired surrogate in a value',
     lambda b: b[:struct.unpack_from('<I', b, 24)[0]] + b'\x00\xd8' +
     b[struct.unpack_from('<I', b, 24)[0] + 2:], 'not valid UTF-16'),
    ('NUL in a key',
     lambda b: b[:struct.unpack_from('<I', b, 20)[0]] + b'\x00\x00' +
     b[struct.unpack_from('<I', b, 20)[0] + 2:], 'NUL'),
    ('parent_linkage not a GUID',
     lambda b: b[:struct.unpack_from('<I', b, 24)[0]] + b'x\x00' +
     b[struct.unpack_from('<I', b, 24)[0] + 2:], 'is not a GUID'),
    ('no entries', lambda b: b[:18] + b'\x00\x00' + b[20:],
     'no parent_linkage'),
]


def loop_chain(tmp, names):
    """Children of one base, relinked (unsafe rebase) into a loop"""
    d = tempfile.mkdtemp(dir=tmp, prefix='loop-')
    r = qemu_img('create', '-q', '-f', 'vhdx', os.path.join(d, 'x.vhdx'),
                 '16M')
    assert r.returncode == 0, r.stderr
    for n in names:
        r = qemu_img('create', '-q', '-f', 'vhdx', '-b', 'x.vhdx', '-F',
                     'vhdx', os.path.join(d, n))
        assert r.returncode == 0, r.stderr
    for n, parent in zip(names, names[1:] + names[:1]):
        r = qemu_img('rebase', '-u', '-f', 'vhdx', '-b', parent, '-F',
                     'vhdx', os.path.join(d, n))
        assert r.returncode == 0, r.stderr
    return d


LOOP_CASES = (['a.avhdx', 'b.avhdx'],
              ['a.avhdx', 'b.avhdx', 'c.avhdx'],
              [f'l{i}.avhdx' for i in range(8)])


def test_loops(tmp):
    for names in LOOP_CASES:
        d = loop_chain(tmp, names)
        ring = ' -> '.join(names + names[:1])
        want = ' -> '.join(f"'{os.path.join(d, n)}'"
                           for n in names + names[:1])
        for cmd in (['convert', '-O', 'raw', 'IMG', os.path.join(d, 'o')],
                    ['info', '--backing-chain', 'IMG'],
                    ['check', 'IMG']):
            r = qemu_img(*[os.path.join(d, names[0]) if a == 'IMG' else a
                           for a in cmd])
            if cmd[0] == 'info':
                # qemu-img's own chain walk refuses the loop
                ok = r.returncode == 1 and 'infinite loop' in r.stderr
            elif cmd[0] == 'check':
                ok = r.returncode == 2 and 'form a loop' in r.stderr and \
                    want in r.stderr
            else:
                ok = r.returncode == 1 and 'form a loop' in r.stderr and \
                    want in r.stderr
            t.ok(ok, f'loop {ring}: qemu-img {cmd[0]} refuses it, naming '
                 'the files', f'rc {r.returncode}: {r.stderr}')
    # A loop entered from a child outside it
    d = loop_chain(tmp, ['a.avhdx', 'b.avhdx'])
    r = qemu_img('create', '-q', '-f', 'vhdx', '-b', 'x.vhdx', '-F', 'vhdx',
                 os.path.join(d, 'top.avhdx'))
    assert r.returncode == 0, r.stderr
    r = qemu_img('rebase', '-u', '-b', 'a.avhdx', '-F', 'vhdx',
                 os.path.join(d, 'top.avhdx'))
    assert r.returncode == 0, r.stderr
    r = qemu_io('-f', 'vhdx', '-c', 'read 0 512', os.path.join(d, 'top.avhdx'))
    t.ok(r.returncode == 1 and 'form a loop' in r.stderr and
         'a.avhdx' in r.stderr and 'b.avhdx' in r.stderr,
         'a child above a loop is refused', r.stderr)


def main():
    need_tools()
    with tempfile.TemporaryDirectory(prefix='vhdx-bad-') as tmp:
        base = os.path.join(tmp, 'base.vhdx')
        good = os.path.join(tmp, 'good.avhdx')
        r = qemu_img('create', '-q', '-f', 'vhdx', base, '16M')
        assert r.returncode == 0, r.stderr
        r = qemu_img('create', '-q', '-f', 'vhdx', '-b', 'base.vhdx',
                     '-F', 'vhdx', good)
        assert r.returncode == 0, r.stderr
        off, length = vhdx_image.locator_offset(good)
        with open(good, 'rb') as f:
            f.seek(off)
            loc = f.read(length)
        for name, fn, want in CASES:
            bad = os.path.join(tmp, 'bad.avhdx')
            shutil.copy(good, bad)
            new = fn(loc)
            assert len(new) == len(loc), name
            vhdx_image.patch(bad, off, new)
            for cmd in (['info', bad],
                        ['convert', '-O', 'raw', bad, bad + '.raw']):
                r = qemu_img(*cmd)
                t.ok(r.returncode == 1 and want in r.stderr and
                     'bad.avhdx' in r.stderr,
                     f'{name}: qemu-img {cmd[0]} fails cleanly',
                     f'rc {r.returncode}: {r.stderr}')
        test_loops(tmp)
    return t.done()


if __name__ == '__main__':
    sys.exit(main())
