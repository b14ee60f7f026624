# Shared helpers of the vhdx-diff tests: the QEMU tools (TAP output:
# tests/pylib/hvcptap.py)
#
# Copyright (c) 2026 The Hyper-V checkpoints project authors
#
# SPDX-License-Identifier: GPL-2.0-or-later

import hashlib
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                '..', '..', 'pylib'))
from hvcptap import Tap, skip_all  # noqa: E402,F401
from hvcpvm import QEMU_IMG, QEMU_IO, build_dir  # noqa: E402
import hvcpvm  # noqa: E402

BUILD = build_dir()


def run(*args):
    return hvcpvm.run(*args)


def qemu_img(*args):
    return run(QEMU_IMG, *args)


def qemu_io(*args):
    return run(QEMU_IO, *args)


def contents(image, tmp, *opts):
    """The virtual disk of image as bytes (qemu-img convert to raw, with
    extra convert options opts); qemu-img's error text if that fails."""
    raw = os.path.join(tmp, 'contents.raw')
    r = qemu_img('convert', *opts, '-O', 'raw', image, raw)
    if r.returncode != 0:
        return r.stderr.encode()
    with open(raw, 'rb') as f:
        data = f.read()
    os.unlink(raw)
    return data


def sha256_file(path):
    h = hashlib.sha256()
    with open(path, 'rb') as f:
        while True:
            buf = f.read(4 * 1024 * 1024)
            if not buf:
                break
            h.update(buf)
    return h.hexdigest()


def raw_sha256(image, tmp, *opts):
    """sha256 of `qemu-img convert -O raw` of @image, or None"""
    raw = os.path.join(tmp, 'convert-out.raw')
    r = qemu_img('convert', *opts, '-O', 'raw', image, raw)
    if r.returncode != 0:
        return None, r.stderr
    digest = sha256_file(raw)
    os.unlink(raw)
    return digest, ''


def need_tools():
    for prog in (QEMU_IMG, QEMU_IO):
        if not os.access(prog, os.X_OK):
            sys.exit(skip_all(f'{prog} not built'))
