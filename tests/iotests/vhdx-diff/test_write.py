#!/usr/bin/env python3
# Writing differencing VHDX images: sector bitmaps, zero writes,
# discards, chains, interop with libvhdi and crash consistency
#
# Copyright (c) 2026 The Hyper-V checkpoints project authors
#
# SPDX-License-Identifier: GPL-2.0-or-later
#
# A pattern model of every layer gives the expected contents; the image
# is read back with `qemu-img convert`.  Environment: HVCP_BUILD.
# Prints TAP.

import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from vhdx_tools import (Tap, QEMU_IO, contents, qemu_img, qemu_io, run,  # noqa: E402
                      sha256_file, need_tools)
import vhdx_image  # noqa: E402

t = Tap()
MiB = 1024 * 1024
SIZE = 64 * MiB


class Model:
    """Expected contents of a virtual disk, as a bytearray"""

    def __init__(self, base=None):
        self.data = bytearray(base.data) if base else bytearray(SIZE)

    def write(self, off, length, pattern):
        self.data[off:off + length] = bytes([pattern]) * length


def apply(image, model, writes, fmt='vhdx'):
    """writes: (offset, length, pattern or 'zero' or 'discard')"""
    cmds = []
    for off, length, pat in writes:
        if pat == 'zero':
            cmds += ['-c', f'write -z {off} {length}']
            model.write(off, length, 0)
        elif pat == 'discard':
            cmds += ['-c', f'discard {off} {length}']
        else:
            cmds += ['-c', f'write -P {pat} {off} {length}']
            model.write(off, length, pat)
    r = qemu_io('-f', fmt, *cmds, image)
    assert r.returncode == 0 and 'error' not in r.stdout.lower(), \
        r.stdout + r.stderr


def first_diff(a, b):
    for i in range(0, min(len(a), len(b)), 512):
        if a[i:i + 512] != b[i:i + 512]:
            return f'first difference in sector at {i:#x}'
    return f'lengths {len(a)} {len(b)}'


def check(image, model, tmp, name):
    got = contents(image, tmp)
    t.ok(got == bytes(model.data), name,
         '' if got == bytes(model.data) else first_diff(got, model.data))


def create(path, backing=None, block_size='2M'):
    args = ['create', '-q', '-f', 'vhdx', '-o', f'block_size={block_size}']
    if backing:
        args += ['-b', backing, '-F', 'vhdx']
    r = qemu_img(*args, path, str(SIZE))
    assert r.returncode == 0, r.stderr


def filled_base_and_child(tmp, prefix):
    """A base with 8 MiB blocks holding 0x5a everywhere, and an empty
    child of it with 1 MiB blocks: (base, child, model of the child)"""
    base = os.path.join(tmp, f'{prefix}base.vhdx')
    child = os.path.join(tmp, f'{prefix}child.avhdx')
    create(base, block_size='8M')
    model = Model()
    apply(base, model, [(0, SIZE, 0x5a)])
    create(child, os.path.basename(base), block_size='1M')
    return base, child, model


def test_layers(tmp):
    base = os.path.join(tmp, 'base.vhdx')
    mid = os.path.join(tmp, 'mid.avhdx')
    top = os.path.join(tmp, 'top.avhdx')
    create(base, block_size='8M')
    mbase = Model()
    apply(base, mbase, [(0, SIZE, 0x11)])
    base_sum = sha256_file(base)

    create(mid, 'base.vhdx')
    mmid = Model(mbase)
    apply(mid, mmid, [
        (4096, 4096, 0x22),              # a few sectors: PARTIALLY_PRESENT
        (512, 512, 0x23),                # another run in the same block
        (3 * MiB, MiB, 0x24),            # half a block
        (6 * MiB - 512, 1024, 0x25),     # across a block boundary
        (10 * MiB, 2 * MiB, 0x26),       # a whole block
        (20 * MiB + 1536, 70000, 0x27),  # unaligned length
    ])
    check(mid, mmid, tmp, 'partial writes read back through the child')
    t.ok(sha256_file(base) == base_sum, 'writing the child leaves the '
         'parent unchanged')

    create(top, 'mid.avhdx', block_size='1M')
    mtop = Model(mmid)
    apply(top, mtop, [
        (4096 + 1024, 512, 0x31),
        (3 * MiB + 4096, 8192, 0x32),
        (40 * MiB, 5 * MiB, 0x33),
    ])
    check(top, mtop, tmp, 'depth-3 chain reads every layer through the top')

    # Zero writes and discards over parent data must never show the parent
    apply(top, mtop, [
        (4096, 8192, 'zero'),            # over mid's and base's data
        (30 * MiB, MiB, 'zero'),         # a block only the base has
        (40 * MiB, MiB, 'discard'),      # a whole block of this layer
        (42 * MiB + 4096, 8192, 'discard'),  # part of one: kept
        (50 * MiB, MiB, 'discard'),      # nothing of this layer: parent
    ])
    mtop.write(40 * MiB, MiB, 0)         # zeros, never the parent's data
    check(top, mtop, tmp, 'zero writes and discards hide the parents')

    r = qemu_img('check', top)
    t.ok(r.returncode == 0, 'qemu-img check after writes', r.stdout + r.stderr)

    r = qemu_img('map', '--output=json', top)
    ok = r.returncode == 0 and '"depth": 0' in r.stdout and \
        '"depth": 2' in r.stdout
    t.ok(ok, 'map shows data of all three layers', r.stdout[:2000])
    return base, mid, top, mtop


def test_vhdimount(tmp, top, model,
                   name='vhdimount reads the written chain like the model'):
    mnt = tempfile.mkdtemp(dir=tmp, prefix='mnt-')
    try:
        r = run('vhdimount', top, mnt)
    except FileNotFoundError:
        t.ok(True, f'{name} # SKIP no vhdimount')
        return
    if r.returncode != 0:
        t.ok(True, f'{name} # SKIP vhdimount failed: {r.stderr.strip()}')
        return
    try:
        images = sorted(os.listdir(mnt))
        with open(os.path.join(mnt, images[-1]), 'rb') as f:
            got = f.read()
    finally:
        subprocess.run(['umount', mnt])
    t.ok(got == bytes(model.data), name,
         '' if got == bytes(model.data) else first_diff(got, model.data))


def test_crash(tmp):
    """SIGKILL a writer; every sector must be old or new afterwards"""
    base, child, _ = filled_base_and_child(tmp, 'c')
    cmds = []
    writes = []
    for i in range(400):
        off = (i * 7919 * 4096) % (SIZE - 65536)
        writes.append((off, 8192, 0x80 + i % 64))
        cmds += ['-c', f'write -P {0x80 + i % 64} {off} 8192']
    p = subprocess.Popen([QEMU_IO, '-f', 'vhdx', *cmds, child],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(0.5)
    p.send_signal(signal.SIGKILL)
    p.wait()
    # Replays the log when opened read-write
    r = qemu_img('check', '-r', 'all', child)
    t.ok(r.returncode == 0, 'check after SIGKILL of the writer',
         r.stdout + r.stderr)
    got = contents(child, tmp)
    allowed = [set([0x5a]) for _ in range(SIZE // 512)]
    for off, length, pat in writes:
        for s in range(off // 512, (off + length) // 512):
            allowed[s].add(pat)
    bad = []
    for s in range(SIZE // 512):
        sector = got[s * 512:(s + 1) * 512]
        if len(sector) != 512 or len(set(sector)) != 1 or \
                sector[0] not in allowed[s]:
            bad.append(s)
    t.ok(not bad, 'every sector holds the parent or a written pattern',
         f'{len(bad)} bad sectors, first {bad[:5]}')


def test_crash_after_flush(tmp, differencing=True):
    """Metadata is logged on flush: flushed writes survive a SIGKILL.
    The same holds for a base image, whose BAT entries are deferred to
    the next flush too."""
    kind = 'differencing' if differencing else 'base'
    base = os.path.join(tmp, f'f{kind}-base.vhdx')
    child = os.path.join(tmp, f'f{kind}-child.avhdx')
    create(base, block_size='8M')
    if differencing:
        apply(base, Model(), [(0, SIZE, 0x5a)])
        create(child, os.path.basename(base), block_size='1M')
        before = 0x5a
    else:
        create(child, block_size='1M')
        before = 0
    flushed = [(0, 4096, 0x61), (3 * MiB + 512, 1 * MiB, 0x62),
               (9 * MiB, 512, 0x63)]
    unflushed = [(20 * MiB, 4096, 0x71), (3 * MiB, 512, 0x72)]
    cmds = []
    for off, length, pat in flushed:
        cmds += ['-c', f'write -P {pat} {off} {length}']
    cmds += ['-c', 'flush']
    for off, length, pat in unflushed:
        cmds += ['-c', f'write -P {pat} {off} {length}']
    cmds += ['-c', 'sleep 20000']
    p = subprocess.Popen([QEMU_IO, '-f', 'vhdx', *cmds, child],
                         stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                         text=True)
    # Wait until the last write is done, then kill during the sleep
    seen = 0
    for line in p.stdout:
        if line.startswith('wrote'):
            seen += 1
        if seen == len(flushed) + len(unflushed):
            break
    p.send_signal(signal.SIGKILL)
    p.wait()
    r = qemu_img('check', '-r', 'all', child)
    t.ok(r.returncode == 0, f'check after SIGKILL following a flush ({kind})',
         r.stdout + r.stderr)
    got = contents(child, tmp)
    bad = [off for off, length, pat in flushed
           if got[off:off + length] != bytes([pat]) * length]
    t.ok(not bad, f'every write made before the flush survives ({kind})',
         bad)
    bad = [off for off, length, pat in unflushed
           if got[off:off + length] not in (bytes([pat]) * length,
                                            bytes([before]) * length)]
    t.ok(not bad, f'later writes read as written or as before ({kind})',
         bad)


def test_log_guid_without_entry(tmp):
    """A writer killed between setting a new LogGuid and writing the
    first entry under it: the image must stay writable"""
    base, child, model = filled_base_and_child(tmp, 'l')
    apply(child, model, [(0, 4096, 0x41)])
    vhdx_image.set_log_guid(child, uuid.uuid4())
    r = qemu_img('convert', '-O', 'raw', child, os.path.join(tmp, 'l.raw'))
    t.ok(r.returncode == 0, 'read-only open of an image with an empty log'
         ' under a LogGuid', r.stderr)
    r = qemu_io('-f', 'vhdx', '-c', f'write -P 0x42 {5 * MiB} 4096', child)
    t.ok(r.returncode == 0 and 'failed' not in r.stdout, 'a new block can'
         ' be written (log emptied on a read-write open)',
         r.stdout + r.stderr)
    model.write(5 * MiB, 4096, 0x42)
    check(child, model, tmp, 'the write and the old data read back')
    t.ok(vhdx_image.log_guid(child) == uuid.UUID(int=0),
         'the LogGuid is zero again', str(vhdx_image.log_guid(child)))


def last_block_end(path):
    """End of the last block (payload or sector bitmap) the BAT of @path
    points at, for images with 1 MiB blocks"""
    chunk_ratio = 4096  # payload blocks per bitmap block (512 B sectors)
    entries = (SIZE // MiB + chunk_ratio - 1) // chunk_ratio * \
        (chunk_ratio + 1)
    with open(path, 'rb') as f:
        f.seek(vhdx_image.bat_offset(path))
        bat = f.read(8 * entries)
    end = 0
    for i in range(len(bat) // 8):
        e = int.from_bytes(bat[8 * i:8 * i + 8], 'little')
        if e & ~0xFFFFF:
            end = max(end, (e & ~0xFFFFF) + MiB)
    return end


def test_file_end(tmp):
    """The file grows ahead of the writes, in steps, and is cut back to
    its last block at every flush and at the close"""
    base, child, model = filled_base_and_child(tmp, 'e')
    before = os.path.getsize(child)
    cmds = []
    for i in range(40):
        if i == 20:
            cmds += ['-c', 'flush']
        cmds += ['-c', f'write -P {0x60 + i} {i * MiB + 4096} 4096']
        model.write(i * MiB + 4096, 4096, 0x60 + i)
    r = qemu_io('-f', 'vhdx', *cmds, child)
    assert r.returncode == 0 and 'error' not in r.stdout.lower(), r.stderr
    size = os.path.getsize(child)
    end = last_block_end(child)
    # 40 new payload blocks of 1 MiB (the bitmap block may exist already)
    t.ok(size == end and end >= before + 40 * MiB, 'a closed child ends '
         'with its last block', f'file {size}, last block ends at {end}, '
         f'{before} before the writes')
    check(child, model, tmp, 'blocks allocated in steps read back')


def test_zero_blocks(tmp):
    """Zero writes of whole blocks allocate no data in the file, whatever
    the block's state, and hide the parent"""
    base, child, model = filled_base_and_child(tmp, 'z')
    apply(child, model, [
        (2 * MiB, MiB, 0x61),                 # block 2 FULLY_PRESENT
        (3 * MiB + 4096, 8192, 0x62),         # block 3 PARTIALLY_PRESENT
        (40 * MiB, 4096, 0x63),               # outside the zero writes
    ])
    used = os.stat(child).st_blocks * 512
    # 512 KiB of head, blocks 2 to 17 whole (written, partial, absent),
    # 512 KiB of tail; then 16 absent blocks at once
    apply(child, model, [(MiB + 512 * 1024, 17 * MiB, 'zero'),
                         (44 * MiB, 16 * MiB, 'zero')])
    grown = os.stat(child).st_blocks * 512 - used
    t.ok(grown <= 4 * MiB, 'zeroing 33 MiB of whole blocks writes no zeros',
         f'the file uses {grown} more bytes')
    check(child, model, tmp, 'zeroed blocks read as zeros, the rest as '
          'before')
    r = qemu_img('check', child)
    t.ok(r.returncode == 0, 'qemu-img check after zero writes',
         r.stdout + r.stderr)
    test_vhdimount(tmp, child, model,
                   'vhdimount reads the zeroed blocks as zeros')


def test_discard_blocks(tmp):
    """A discard of whole blocks gives their space back and reads zeros
    where this layer had data, the parent where it had none; the part of
    a block it covers is left alone"""
    _, child, model = filled_base_and_child(tmp, 'd')
    apply(child, model, [(2 * MiB, 8 * MiB, 0x61),   # blocks 2 to 9
                         (11 * MiB, 4096, 0x62)])    # block 11, partial
    used = os.stat(child).st_blocks * 512
    # 1.5 MiB to 11.5 MiB: blocks 2 to 10 whole (10 absent), two halves
    r = qemu_io('-d', 'unmap', '-f', 'vhdx', '-c',
                f'discard {MiB + 512 * 1024} {10 * MiB}', child)
    model.write(2 * MiB, 8 * MiB, 0)
    freed = used - os.stat(child).st_blocks * 512
    t.ok(r.returncode == 0 and freed >= 7 * MiB, 'discarding whole blocks '
         'gives their space back', f'{freed} bytes freed; {r.stderr}')
    check(child, model, tmp, 'discarded blocks read zeros where the child '
          'had data, the parent where it had none')
    r = qemu_img('check', child)
    t.ok(r.returncode == 0, 'qemu-img check after the discard',
         r.stdout + r.stderr)


def main():
    need_tools()
    with tempfile.TemporaryDirectory(prefix='vhdx-write-') as tmp:
        base, mid, top, mtop = test_layers(tmp)
        test_vhdimount(tmp, top, mtop)
        test_crash(tmp)
        test_crash_after_flush(tmp)
        test_crash_after_flush(tmp, differencing=False)
        test_log_guid_without_entry(tmp)
        test_file_end(tmp)
        test_zero_blocks(tmp)
        test_discard_blocks(tmp)
    return t.done()


if __name__ == '__main__':
    sys.exit(main())
