# Shared helpers of the vhdx-diff tests: TAP output and the QEMU tools
#
# Copyright (c) 2026 The Hyper-V checkpoints project authors
#
# SPDX-License-Identifier: GPL-2.0-or-later

import hashlib
import os
import subprocess
import sys

BUILD = os.environ.get('HVCP_BUILD', '')
QEMU_IMG = os.path.join(BUILD, 'qemu-img')
QEMU_IO = os.path.join(BUILD, 'qemu-io')


class Tap:
    def __init__(self):
        self.n = 0
        self.failed = 0

    def plan(self, count):
        print(f'1..{count}')
        sys.stdout.flush()

    def ok(self, cond, name, diag=''):
        self.n += 1
        if not cond:
            self.failed += 1
        print(f'{"ok" if cond else "not ok"} {self.n} - {name}')
        for line in str(diag).splitlines():
            print(f'# {line}')
        sys.stdout.flush()
        return cond


def run(*args):
    return subprocess.run([str(a) for a in args], capture_output=True,
                          text=True)


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
            print(f'1..0 # SKIP {prog} not built')
            sys.exit(0)
