#!/usr/bin/env bash
# Locate the pinned QEMU source and print the path of something that can
# be imported as the pristine tree.
#
# Usage: scripts/qemu-source.sh PROJECT_DIR
#
# Prints one line, "checkout DIR" or "tarball FILE", on stdout.  Tries,
# in this order:
#   1. an initialised qemu/ submodule or checkout of exactly QEMU_VERSION;
#   2. ../shared/qemu-src/ beside the project, verified against its
#      SHA256SUMS and against the checksum pinned in this project;
#   3. Debian's source package of exactly DEBIAN_VERSION (apt-get source),
#      verified against the same pinned checksum.
# Anything else (a different version, a checksum mismatch) is an error:
# never silently use a different QEMU.

set -euo pipefail

QEMU_VERSION=10.0.13
DEBIAN_VERSION=1:10.0.13+ds-0+deb13u1
ORIG_TARBALL=qemu_10.0.13+ds.orig.tar.xz
# sha256 of $ORIG_TARBALL as published by Debian; the source of truth
# is this project, not whatever cache happens to be around.
ORIG_SHA256=6a0888e806c2ffc0c5f0733e974f9aea55491950d3c47c98669c8b236dde59ae

die() { echo "qemu-source: error: $*" >&2; exit 1; }
say() { echo "qemu-source: $*" >&2; }

project=${1:?usage: qemu-source.sh PROJECT_DIR}
project=$(cd "$project" && pwd)

# 1. An initialised qemu/ (a git submodule, or a plain checkout).
if [ -f "$project/qemu/VERSION" ]; then
    v=$(cat "$project/qemu/VERSION")
    [ "$v" = "$QEMU_VERSION" ] ||
        die "$project/qemu holds QEMU $v, this project is pinned to $QEMU_VERSION"
    echo "checkout $project/qemu"
    exit 0
fi

verify_tarball() {
    local file=$1 sum
    sum=$(sha256sum "$file" | cut -d' ' -f1)
    [ "$sum" = "$ORIG_SHA256" ] ||
        die "$file has sha256 $sum, expected $ORIG_SHA256 (QEMU $QEMU_VERSION)"
}

# 2. The shared cache beside the project (or named by QEMU_SRC_CACHE).
cache=${QEMU_SRC_CACHE:-$project/../shared/qemu-src}
if [ -f "$cache/$ORIG_TARBALL" ]; then
    [ -f "$cache/SHA256SUMS" ] || die "$cache has no SHA256SUMS to verify against"
    (cd "$cache" && grep " $ORIG_TARBALL\$" SHA256SUMS | sha256sum -c --quiet -) >&2 ||
        die "$cache/$ORIG_TARBALL does not match $cache/SHA256SUMS"
    verify_tarball "$cache/$ORIG_TARBALL"
    say "using $cache/$ORIG_TARBALL (checksum verified)"
    echo "tarball $cache/$ORIG_TARBALL"
    exit 0
fi

# 3. Debian's source package, fetched into the project's download cache.
dl=$project/build/downloads
mkdir -p "$dl"
if [ ! -f "$dl/$ORIG_TARBALL" ]; then
    say "no qemu/ checkout and no $cache: fetching Debian source package qemu=$DEBIAN_VERSION"
    aptdir=$dl/apt
    mkdir -p "$aptdir/lists/partial" "$aptdir/cache/archives/partial"
    cat > "$aptdir/sources.list" <<EOF
deb-src http://deb.debian.org/debian trixie main
deb-src http://deb.debian.org/debian trixie-updates main
deb-src http://deb.debian.org/debian-security trixie-security main
deb-src http://deb.debian.org/debian trixie-proposed-updates main
EOF
    aptopts=(-o "Dir::Etc::SourceList=$aptdir/sources.list"
             -o "Dir::Etc::SourceParts=-"
             -o "Dir::State::Lists=$aptdir/lists"
             -o "Dir::Cache=$aptdir/cache")
    apt-get "${aptopts[@]}" update >&2 || die "apt-get update for Debian sources failed"
    (cd "$dl" && apt-get "${aptopts[@]}" source --download-only "qemu=$DEBIAN_VERSION") >&2 ||
        die "could not fetch Debian source package qemu=$DEBIAN_VERSION"
fi
[ -f "$dl/$ORIG_TARBALL" ] || die "Debian source package did not provide $ORIG_TARBALL"
verify_tarball "$dl/$ORIG_TARBALL"
say "using Debian source package $dl/$ORIG_TARBALL (checksum verified)"
echo "tarball $dl/$ORIG_TARBALL"
