/*
 * Differencing VHDX: the coroutine wrappers declared in vhdx-diff.h
 *
 * Copyright (c) 2026 The Hyper-V checkpoints project authors
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 *
 * The co_wrapper_* declarations of vhdx-diff.h are turned into functions
 * by QEMU's scripts/block-coroutine-wrapper.py (see meson.build), as
 * QEMU's own are into block/block-gen.c.  The generated file includes
 * QEMU's headers only, so it is built here, after this folder's.
 */

#include "qemu/osdep.h"
#include "block/block_int.h"
#include "vhdx-diff.h"
#include "hyperv-checkpoints/block/vhdx-diff/vhdx-diff-gen.c.inc"
