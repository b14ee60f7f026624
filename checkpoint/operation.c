/*
 * Hyper-V-style checkpoints: the operation in progress
 *
 * Copyright (c) 2026 The Hyper-V checkpoints project
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 *
 * One record says what runs: an apply (from its checks to its load)
 * and a create's memory save (which goes on in the background after
 * checkpoint-create returned, or runs inside an apply with
 * checkpoint-first).  Every operation asks it before it starts;
 * create.c and apply.c only set their part, and neither calls the
 * other to ask.  An apply that waits for checkpoint-first's save is
 * woken when the save ends.
 */

#include "qemu/osdep.h"
#include "checkpoint.h"

static struct {
    bool applying;
    bool saving;
    /* Called once when the running memory save ends */
    CheckpointSettleFn *on_saved;
    void *on_saved_opaque;
} op;

bool checkpoint_op_applying(void)
{
    return op.applying;
}

bool checkpoint_op_saving(void)
{
    return op.saving;
}

bool checkpoint_op_idle(void)
{
    return !op.applying && !op.saving;
}

void checkpoint_op_set_applying(bool applying)
{
    op.applying = applying;
}

void checkpoint_op_save_started(void)
{
    assert(!op.saving);
    op.saving = true;
}

void checkpoint_op_save_ended(void)
{
    CheckpointSettleFn *fn = op.on_saved;

    op.saving = false;
    op.on_saved = NULL;
    if (fn) {
        fn(op.on_saved_opaque);
    }
}

void checkpoint_op_when_saved(CheckpointSettleFn *fn, void *opaque)
{
    assert(op.saving);
    op.on_saved = fn;
    op.on_saved_opaque = opaque;
}

void checkpoint_op_forget_waiter(void *opaque)
{
    if (op.on_saved_opaque == opaque) {
        op.on_saved = NULL;
        op.on_saved_opaque = NULL;
    }
}
