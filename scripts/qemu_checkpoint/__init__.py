# SPDX-License-Identifier: GPL-2.0-or-later
"""The qemu-checkpoint command (scripts/qemu-checkpoint): a management CLI
for the project's checkpoints, over QMP."""
