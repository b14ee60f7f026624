/*
 * The entry point of a libFuzzer target
 *
 * Copyright (c) 2026 The Hyper-V checkpoints project authors
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */

#ifndef HVCP_FUZZ_H
#define HVCP_FUZZ_H

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#endif
