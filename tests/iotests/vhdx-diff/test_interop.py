#!/usr/bin/env python3
# Interoperability with images Windows wrote (../shared/interop)
#
# Copyright (c) 2026 The Hyper-V checkpoints project authors
#
# SPDX-License-Identifier: GPL-2.0-or-later
#
# The real Hyper-V checkpoint disk differencing.avhdx has no published
# parent; a stand-in all-zero 8 GiB VHDX with the parent's DataWriteGuid
# gives a known answer (see ../shared/interop/README.md).  The images are
# read from the shared folder and never copied into the project.
#
# Environment: HVCP_BUILD (QEMU build dir), HVCP_INTEROP_DIR.
# Prints TAP.

import gzip
import os
import shutil
import sys
import tempfile
import uuid

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import vhdx_image  # noqa: E402
from vhdx_tools import QEMU_IMG, Tap, qemu_img, sha256_file, skip_all  # noqa: E402

INTEROP = os.environ.get('HVCP_INTEROP_DIR', '')

PARENT_NAME = 'Generation 1_49C4BAF3-4B25-4406-8C4B-D39E65C32385.avhdx'
PARENT_GUID = uuid.UUID('ff34003b-11ed-4cf8-a166-b2be05e20b80')
CHILD_SHA256 = \
    'fc5c91bfd8f7ee388cf482dc7eb6cef64b39a7e1bd043516ee95887b839f2b78'
# Raw contents as Debian bookworm's vhdimount (libvhdi 20210425) shows them
BASE_SHA256 = {
    'dynamic.vhdx':
    '8e2b5e9265d694b42b81819e3bff29770eff4ed0f4f9f311693ff3dbdc93efac',
    'fixed.vhdx':
    'bc0be4623b15aa84216fb31ba24e3b621ec7f1c72d198c990ac0eced222d9f62',
}

t = Tap()
tap = t.ok


def gunzip(name, dst):
    with gzip.open(os.path.join(INTEROP, name + '.gz'), 'rb') as src, \
            open(dst, 'wb') as out:
        shutil.copyfileobj(src, out)


def convert_sha256(image, tmp):
    raw = os.path.join(tmp, 'out.raw')
    r = qemu_img('convert', '-O', 'raw', image, raw)
    if r.returncode != 0:
        return None, r.stderr
    digest = sha256_file(raw)
    os.unlink(raw)
    return digest, ''


def test_base_images(tmp):
    for name, want in BASE_SHA256.items():
        img = os.path.join(tmp, name)
        gunzip(name, img)
        got, err = convert_sha256(img, tmp)
        tap(got == want, f'convert {name}', err or f'sha256 {got}')


def test_child_without_parent(child):
    r = qemu_img('convert', '-O', 'raw', child, child + '.raw')
    tap(r.returncode != 0 and PARENT_NAME in r.stderr and
        'differencing.avhdx' in r.stderr,
        'missing parent is refused, naming both files', r.stderr)


def test_child_info(child):
    r = qemu_img('info', child)
    tap(r.returncode == 0 and f'backing file: {PARENT_NAME}' in r.stdout and
        'backing file format: vhdx' in r.stdout,
        'qemu-img info shows the parent', r.stdout + r.stderr)


def make_parent(path, guid):
    r = qemu_img('create', '-q', '-f', 'vhdx', path, '8G')
    if r.returncode != 0:
        raise RuntimeError(r.stderr)
    vhdx_image.set_data_write_guid(path, guid)


def test_child_with_parent(tmp, child):
    parent = os.path.join(tmp, PARENT_NAME)
    make_parent(parent, PARENT_GUID)
    got, err = convert_sha256(child, tmp)
    tap(got == CHILD_SHA256, 'convert differencing.avhdx with its parent',
        err or f'sha256 {got}')
    r = qemu_img('compare', child, parent)
    tap(r.returncode == 1, 'compare child and parent differ',
        r.stdout + r.stderr)
    os.unlink(parent)


def test_wrong_linkage(tmp, child):
    parent = os.path.join(tmp, PARENT_NAME)
    make_parent(parent, uuid.UUID('00112233-4455-6677-8899-aabbccddeeff'))
    r = qemu_img('convert', '-O', 'raw', child, child + '.raw')
    tap(r.returncode != 0 and 'DataWriteGuid' in r.stderr and
        PARENT_NAME in r.stderr and 'differencing.avhdx' in r.stderr,
        'parent with another DataWriteGuid is refused', r.stderr)
    os.unlink(parent)


def test_wrong_size(tmp, child):
    parent = os.path.join(tmp, PARENT_NAME)
    r = qemu_img('create', '-q', '-f', 'vhdx', parent, '4G')
    vhdx_image.set_data_write_guid(parent, PARENT_GUID)
    r = qemu_img('convert', '-O', 'raw', child, child + '.raw')
    tap(r.returncode != 0 and 'virtual size' in r.stderr and
        PARENT_NAME in r.stderr, 'parent of another size is refused',
        r.stderr)
    os.unlink(parent)


def main():
    if not os.path.isdir(INTEROP) or not os.path.exists(
            os.path.join(INTEROP, 'differencing.avhdx.gz')):
        return skip_all(f'interop images not found in '
                        f'"{INTEROP}" (../shared/interop next to the project)')
    if not os.access(QEMU_IMG, os.X_OK):
        return skip_all(f'{QEMU_IMG} not built')
    with tempfile.TemporaryDirectory(prefix='vhdx-interop-') as tmp:
        test_base_images(tmp)
        child = os.path.join(tmp, 'differencing.avhdx')
        gunzip('differencing.avhdx', child)
        test_child_without_parent(child)
        test_child_info(child)
        test_child_with_parent(tmp, child)
        test_wrong_linkage(tmp, child)
        test_wrong_size(tmp, child)
    return t.done()


if __name__ == '__main__':
    sys.exit(main())
