# Sourced by scripts/build-qemu and scripts/build-asan-img: configure the
# prepared tree qemu/ into a build folder, once, and again whenever the
# options change.
#
#   configure_qemu BUILDDIR LOG WHAT OPTION...
#
# BUILDDIR is removed and configured anew when it has no build.ninja or
# was configured with other options (the options are kept in its
# .hyperv-checkpoints-configure); configure's output goes to LOG, whose
# last lines are shown if it fails.  WHAT says what is configured.
# Needs $project (the repository) and say(); $qemu_src, when set, is the
# tree to configure instead of qemu/ (check-patches --each).

# Firmware and option ROMs come from Debian's seabios, ipxe-qemu and
# qemu-system-data: the source has no blobs (see patches/0001).
firmwarepath=/usr/share/qemu:/usr/share/seabios:/usr/lib/ipxe/qemu

# The options of build/qemu (the order is that of before this file was
# shared, so that the stamp of an existing build still matches)
hvcp_qemu_options=(
    --without-default-features
    --target-list=x86_64-softmmu
    --enable-tcg --enable-kvm
    --enable-tools --enable-guest-agent
    --enable-vhdx
    --enable-fdt=system         # -M microvm needs a device tree
    --enable-linux-aio --enable-zstd
    --disable-docs
    --disable-install-blobs --firmwarepath=$firmwarepath
    --disable-download          # nothing but Debian packages is reachable
    --python=/usr/bin/python3   # Debian's meson lives in its dist-packages
)

configure_qemu() {
    local builddir=$1 log=$2 what=$3
    shift 3
    local stamp=$builddir/.hyperv-checkpoints-configure
    local want
    want=$(printf '%s\n' "$@")
    if [ -f "$builddir/build.ninja" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$want" ]; then
        return 0
    fi
    say "configuring $what"
    rm -rf "$builddir"
    mkdir -p "$builddir"
    (cd "$builddir" && "${qemu_src:-$project/qemu}/configure" "$@") > "$log" 2>&1 || {
        tail -30 "$log" >&2
        say "error: configure failed (full log: ${log#"$project"/})"
        exit 1
    }
    echo "$want" > "$stamp"
}
