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

# The digest of the commits pristine..HEAD of qemu/, regenerated as
# patches: what the stamp of an older prepare recorded of qemu/ (see
# write_series_stamp).  Not a fingerprint of the content: the "index"
# lines abbreviate hashes to a length that grows with the number of
# objects in qemu/.git (7 digits before git gc packs the import, 8
# after), and git's version and settings change the text too.
tree_series_digest() {
    local qemu=$1 tmp digest
    tmp=$(mktemp -d)
    series_format_patch "$qemu" "$tmp"
    digest=$(series_digest "$tmp")
    rm -rf "$tmp"
    echo "$digest"
}

# The stamp of a prepared qemu/, in its .git: the digest of the patches/
# it was prepared from (or refreshed to), and the commit qemu/ was at.
series_stamp() { echo "$1/.git/hyperv-checkpoints-series"; }

write_series_stamp() {
    local qemu=$1 patches=$2
    printf '%s %s\n' "$(series_digest "$patches")" "$(git -C "$qemu" rev-parse HEAD)" \
        > "$(series_stamp "$qemu")"
}

# Whether the commits pristine..HEAD of qemu/ are exactly the series in
# patches/: as many commits as patches, each with the tree of pristine
# plus the patches up to its own (applied as scripts/check-patches does)
# and with the author and message git am takes from its patch.  Content
# only, unlike a digest of regenerated patch files: a stamp that git
# wrote differently, an amend or rebase that changed nothing, or
# another git does not make qemu/ look changed.
series_matches_patches() {
    local qemu=$1 patches=$2 tmp p c n=0 matched=0
    local -a files=() commits
    for p in "$patches"/*.patch; do [ -e "$p" ] && files+=("$p"); done
    mapfile -t commits < <(git -C "$qemu" rev-list --reverse pristine..HEAD)
    [ "${#files[@]}" = "${#commits[@]}" ] || return 1
    tmp=$(mktemp -d)
    # a scratch index: neither qemu/'s index nor its work tree is touched
    GIT_INDEX_FILE=$tmp/index git -C "$qemu" read-tree pristine || { rm -rf "$tmp"; return 1; }
    for p in "${files[@]}"; do
        c=${commits[n]}
        n=$((n + 1))
        GIT_INDEX_FILE=$tmp/index git -C "$qemu" apply --cached --whitespace=nowarn "$p" \
            2>/dev/null || break
        [ "$(GIT_INDEX_FILE=$tmp/index git -C "$qemu" write-tree)" = \
          "$(git -C "$qemu" rev-parse "$c^{tree}")" ] || break
        git -C "$qemu" mailinfo "$tmp/msg" "$tmp/diff" < "$p" > "$tmp/info" || break
        [ "$(sed -n 's/^Author: //p' "$tmp/info") <$(sed -n 's/^Email: //p' "$tmp/info")>" = \
          "$(git -C "$qemu" log -1 --format='%an <%ae>' "$c")" ] || break
        { sed -n 's/^Subject: //p' "$tmp/info"; echo; cat "$tmp/msg"; } |
            git stripspace > "$tmp/want"
        git -C "$qemu" log -1 --format=%B "$c" | git stripspace > "$tmp/have"
        cmp -s "$tmp/want" "$tmp/have" || break
        matched=$n
    done
    rm -rf "$tmp"
    [ "$matched" = "${#files[@]}" ]
}

qemu_git() {
    git -C "$QEMU_DIR" -c user.name="hyperv-checkpoints prepare" \
        -c user.email="prepare@hyperv-checkpoints.invalid" \
        -c core.autocrlf=false -c advice.detachedHead=false "$@"
}
