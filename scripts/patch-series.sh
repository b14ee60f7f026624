# Shared helpers for scripts/prepare and scripts/refresh-patches (sourced).
#
# The prepared tree qemu/ is a git repository: the tag "pristine" is the
# unmodified QEMU source, and each commit after it is one file of
# patches/, applied in order with git am.

# The exact options used to turn commits back into patches/.  prepare
# uses them too, to tell whether qemu/ still matches patches/.
series_format_patch() {
    local qemu=$1 outdir=$2
    git -C "$qemu" format-patch --quiet --zero-commit --no-signature --no-numbered \
        --no-renames --minimal -o "$outdir" pristine..HEAD >/dev/null
}

# A digest of every *.patch in a folder, in apply order.
series_digest() {
    local dir=$1
    (cd "$dir" && cat $(ls ./*.patch 2>/dev/null | LC_ALL=C sort) </dev/null) |
        sha256sum | cut -d' ' -f1
}

# The digest of the commits pristine..HEAD of qemu/, regenerated as patches.
tree_series_digest() {
    local qemu=$1 tmp digest
    tmp=$(mktemp -d)
    series_format_patch "$qemu" "$tmp"
    digest=$(series_digest "$tmp")
    rm -rf "$tmp"
    echo "$digest"
}

qemu_git() {
    git -C "$QEMU_DIR" -c user.name="hyperv-checkpoints prepare" \
        -c user.email="prepare@hyperv-checkpoints.invalid" \
        -c core.autocrlf=false -c advice.detachedHead=false "$@"
}
