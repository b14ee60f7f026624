# Hyper-V-style checkpoints for QEMU 10.0.13.
#
#   make run     build what is missing, boot the default guest (QMP + HMP)
#   make check   build what is missing, run every test
#   make demo    build what is missing, a scripted tour of checkpoints
#                (scripts/demo: create, apply, rename, delete; prints
#                the tree)
#   make bench-disk   differencing VHDX vs qcow2 (and cp): JSON lines and
#                a table of ratios (a benchmark, not a test)
#   make bench-ram    copy-on-write RAM snapshot vs upstream mechanisms
#                (JSON lines, then ratios; a benchmark, not a test)
#   make bench-checkpoint  checkpoint-create/apply pause and restore time
#                vs savevm/loadvm (JSON lines, then medians, ratios and
#                targets; a benchmark, not a test)
#   make bench        every benchmark
#   make fuzz    the fuzzers (vhdx open path, checkpoint manifest, memory
#                state file) under AddressSanitizer, FUZZ_S seconds per
#                target (default 3600); tests/fuzz/README.md
#   make torture      crash-loop torture of the checkpoint store (not a
#                part of check): TORTURE_S seconds (default 3600),
#                TORTURE_SEED the first seed (tests/torture/crashloop.py)
#
# Every target installs the Debian packages it needs first (as root), and
# prepares qemu/ from the pinned source and patches/ when needed.

.PHONY: all deps prepare qemu guest asan run demo check fuzz bench bench-disk bench-ram bench-checkpoint torture refresh-patches clean distclean

all: qemu guest

deps:
	@scripts/install-deps

# Cheap when nothing changed: prepare is a no-op while qemu/ matches
# patches/, and ninja rebuilds only what changed.
prepare: deps
	@scripts/prepare

# build/qemu-checkpoint: the checkpoint management CLI (a link to
# scripts/qemu-checkpoint, which runs from the source tree)
qemu: prepare
	@scripts/build-qemu
	@ln -sfn ../scripts/qemu-checkpoint build/qemu-checkpoint

guest: qemu
	@scripts/build-guest

run: qemu guest
	@scripts/run-vm

check: qemu guest asan
	@scripts/run-tests

# qemu-img with AddressSanitizer, for the fuzzing corpus of the vhdx
# open path (tests/fuzz/README.md).
asan: prepare
	@scripts/build-asan-img

demo: qemu guest
	@scripts/demo

# Not a test: fuzzing for FUZZ_S seconds per target (tests/fuzz/run-fuzz).
fuzz: qemu asan
	@tests/fuzz/run-fuzz

bench: bench-disk bench-ram bench-checkpoint

# A benchmark, not a test: see scripts/bench-disk.
bench-disk: qemu
	@scripts/bench-disk

# Not a test either: prints measurements (see migration/cow-snapshot/README.md).
bench-ram: qemu
	@scripts/bench-ram $(BENCH_ARGS)

# Not a test either: checkpoint-create/apply against savevm/loadvm.
bench-checkpoint: qemu
	@scripts/bench-checkpoint $(BENCH_ARGS)

# Not in check (its bounded run is): random operations, SIGKILL, checks.
torture: qemu
	@HVCP_BUILD=$(CURDIR)/build/qemu python3 tests/torture/crashloop.py

refresh-patches:
	@scripts/refresh-patches

clean:
	rm -rf build/qemu build/asan build/guest build/run build/demo

# Also drops the prepared tree, with any commits not yet in patches/.
distclean:
	rm -rf build qemu
