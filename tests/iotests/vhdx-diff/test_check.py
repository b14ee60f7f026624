#!/usr/bin/env python3
# qemu-img check of differencing VHDX images: chain problems (missing
# parent, linkage mismatch, parent not vhdx, a broken grandparent) and
# sector bitmap / BAT inconsistencies, on deliberately corrupted images
#
# Copyright (c) 2026 The Hyper-V checkpoints project authors
#
# SPDX-License-Identifier: GPL-2.0-or-later
#
# Exit codes as for qcow2: 0 clean, 2 corruptions, 1 the check could not
# run.  Environment: HVCP_BUILD.  Prints TAP.

import json
import os
import sys
import tempfile
import uuid

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import vhdx_image  # noqa: E402
from vhdx_tools import Tap, qemu_img, qemu_io, need_tools  # noqa: E402

t = Tap()
MiB = 1024 * 1024
SIZE = 64 * MiB
# 2 MiB blocks, 512-byte sectors: 2048 blocks per chunk, so the sector
# bitmap entry of chunk 0 is BAT entry 2048
SB0 = 2048


def make_chain(d):
    os.makedirs(d)
    base, mid, top = (os.path.join(d, n)
                      for n in ('base.vhdx', 'mid.avhdx', 'top.avhdx'))
    for path, parent, cmds in (
            (base, None, ['write -P 0x11 0 64M']),
            (mid, 'base.vhdx', ['write -P 0x22 2M 4k']),
            (top, 'mid.avhdx', ['write -P 0x33 0 4k', 'write -P 0x34 2M 2M',
                                'write -P 0x35 10M 512'])):
        args = ['create', '-q', '-f', 'vhdx', '-o', 'block_size=2M']
        if parent:
            args += ['-b', parent, '-F', 'vhdx']
        r = qemu_img(*args, path, str(SIZE))
        assert r.returncode == 0, r.stderr
        c = []
        for cmd in cmds:
            c += ['-c', cmd]
        r = qemu_io('-f', 'vhdx', *c, path)
        assert r.returncode == 0, r.stderr
    return base, mid, top


def check(image, *opts):
    return qemu_img('check', *opts, image)


def corruptions(image):
    r = qemu_img('check', '--output=json', image)
    try:
        return json.loads(r.stdout).get('corruptions', 0)
    except ValueError:
        return None


def test_clean(tmp):
    base, mid, top = make_chain(os.path.join(tmp, 'clean'))
    for p in (base, mid, top):
        r = check(p)
        t.ok(r.returncode == 0 and 'No errors' in r.stdout,
             f'{os.path.basename(p)}: clean image checks clean',
             r.stdout + r.stderr)


def test_chain(tmp):
    base, mid, top = make_chain(os.path.join(tmp, 'missing'))
    os.rename(base, base + '.away')
    r = check(mid)
    t.ok(r.returncode == 2 and 'ERROR chain' in r.stderr and
         'Could not find the parent' in r.stderr and 'mid.avhdx' in r.stderr
         and 'base.vhdx' in r.stderr and '1 errors were found' in r.stdout,
         'missing parent: exit 2, ERROR naming child and parent',
         r.stdout + r.stderr)
    t.ok(corruptions(mid) == 1, 'missing parent: one corruption in JSON')
    r = check(top)
    t.ok(r.returncode == 2 and "in parent '" in r.stderr and
         'mid.avhdx' in r.stderr and 'base.vhdx' in r.stderr,
         'missing grandparent: reported when checking the top',
         r.stdout + r.stderr)
    r = check(mid, '-r', 'all')
    t.ok(r.returncode == 2 and 'ERROR chain' in r.stderr,
         'check -r all with a missing parent: reported, not repaired',
         r.stdout + r.stderr)
    r = qemu_img('convert', '-O', 'raw', mid, os.path.join(tmp, 'x.raw'))
    t.ok(r.returncode == 1 and 'Could not find the parent' in r.stderr,
         'outside check, the missing parent still fails the open', r.stderr)
    os.rename(base + '.away', base)
    r = check(top)
    t.ok(r.returncode == 0, 'parent back: clean again', r.stdout + r.stderr)

    # Linkage mismatch: the parent's DataWriteGuid changed
    vhdx_image.set_data_write_guid(mid, uuid.uuid4())
    r = check(top)
    t.ok(r.returncode == 2 and 'DataWriteGuid' in r.stderr and
         'top.avhdx' in r.stderr and 'mid.avhdx' in r.stderr,
         'linkage mismatch: exit 2, both files and the GUIDs named',
         r.stdout + r.stderr)

    # A parent that is not a VHDX image
    d = os.path.join(tmp, 'notvhdx')
    base, mid, top = make_chain(d)
    with open(mid, 'wb') as f:
        f.write(b'\0' * SIZE)
    r = check(top)
    t.ok(r.returncode == 2 and 'ERROR chain' in r.stderr and
         'as vhdx' in r.stderr and 'mid.avhdx' in r.stderr,
         'parent not vhdx: exit 2, reported', r.stdout + r.stderr)


def corrupted(tmp, name):
    d = os.path.join(tmp, name)
    base, mid, top = make_chain(d)
    return top


def test_bitmaps(tmp):
    # Blocks 0, 1 and 5 of top are partially present (a whole-block
    # write into a new block of a child still goes through the bitmap)
    top = corrupted(tmp, 'sb-missing')
    states = [vhdx_image.bat_entry(top, i)[0] for i in (0, 1, 5, SB0)]
    t.ok(states == [7, 7, 7, 6], 'top: blocks 0, 1, 5 partially present, '
         'chunk 0 has a bitmap', states)
    vhdx_image.set_bat_entry(top, SB0, 0, 0)
    r = check(top)
    t.ok(r.returncode == 2 and
         'block 0 (BAT entry 0) is partially present but its chunk 0 has no '
         'readable sector bitmap' in r.stderr and
         '3 errors were found' in r.stdout,
         'partially present blocks without a bitmap: three corruptions',
         r.stdout + r.stderr)
    r = qemu_img('convert', '-O', 'raw', top, os.path.join(tmp, 'x.raw'))
    t.ok(r.returncode == 1, 'and reading them fails', r.stderr)

    top = corrupted(tmp, 'sb-eof')
    size = os.path.getsize(top)
    vhdx_image.set_bat_entry(top, SB0, 6, (size // MiB + 8) * MiB)
    r = check(top)
    t.ok(r.returncode == 2 and 'sector bitmap of chunk 0' in r.stderr and
         'beyond the end of the file' in r.stderr and
         'no readable sector bitmap' in r.stderr,
         'bitmap block beyond EOF: reported with its partial blocks',
         r.stdout + r.stderr)

    top = corrupted(tmp, 'sb-state')
    _, off = vhdx_image.bat_entry(top, SB0)
    vhdx_image.set_bat_entry(top, SB0, 3, off)
    r = check(top)
    t.ok(r.returncode == 2 and 'invalid state' in r.stderr,
         'bitmap entry with an invalid state: reported', r.stdout + r.stderr)

    top = corrupted(tmp, 'payload-state')
    _, off = vhdx_image.bat_entry(top, 1)
    vhdx_image.set_bat_entry(top, 1, 4, off)
    r = check(top)
    t.ok(r.returncode == 2 and
         'block 1 (BAT entry 1) has the invalid state 4' in r.stderr,
         'payload entry with an invalid state: reported', r.stdout + r.stderr)

    top = corrupted(tmp, 'overlap')
    _, off0 = vhdx_image.bat_entry(top, 0)
    vhdx_image.set_bat_entry(top, 5, 7, off0)
    r = check(top)
    t.ok(r.returncode == 2 and 'overlap' in r.stderr and
         'BAT entries 0 and 5' in r.stderr,
         'two blocks at the same offset: reported', r.stdout + r.stderr)

    top = corrupted(tmp, 'stray-bits')
    _, sb = vhdx_image.bat_entry(top, SB0)
    # block 20 is not present; set the first byte of its bitmap
    vhdx_image.patch(top, sb + 20 * 4096 // 8, b'\xff')
    r = check(top)
    t.ok(r.returncode == 0 and 'Warning: 1 blocks' in r.stderr,
         'bitmap bits of a block that is not present: a warning only',
         r.stdout + r.stderr)

    top = corrupted(tmp, 'truncated')
    _, sb = vhdx_image.bat_entry(top, SB0)
    os.truncate(top, sb + 4096)
    r = check(top)
    t.ok(r.returncode == 2 and 'beyond the end of the file' in r.stderr,
         'truncated file (bitmap block cut off): reported',
         r.stdout + r.stderr)


def main():
    need_tools()
    with tempfile.TemporaryDirectory(prefix='vhdx-diff-check-') as tmp:
        test_clean(tmp)
        test_chain(tmp)
        test_bitmaps(tmp)
    return t.done()


if __name__ == '__main__':
    sys.exit(main())
