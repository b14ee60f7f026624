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
from hvcp_tap import Tap, qemu_img, need_tools  # noqa: E402

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


def main():
    need_tools()
    t.plan(len(CASES) * 2)
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
    return 1 if t.failed else 0


if __name__ == '__main__':
    sys.exit(main())
