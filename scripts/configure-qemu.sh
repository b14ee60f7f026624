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
# Needs $project (the repository) and say().

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
    (cd "$builddir" && "$project/qemu/configure" "$@") > "$log" 2>&1 || {
        tail -30 "$log" >&2
        say "error: configure failed (full log: ${log#"$project"/})"
        exit 1
    }
    echo "$want" > "$stamp"
}
