# Shared by the A/B scripts (`ab.sh`, `ab_catchup.sh`): their work dirs, the two commits,
# and building one artifact at a commit. Sourced, not run.
#
# Environment (both scripts):
#   AB_DIR          work dir (default ${TMPDIR:-/tmp}/arbor-ab): worktrees, binaries, logs
#   AB_TARGET_DIR   cargo target dir of the two commits (default $AB_DIR/target; point it
#                   at an existing target dir to reuse its built dependencies)

log() { printf 'ab: %s\n' "$*" >&2; }

# ab_init A_COMMIT B_COMMIT: sets dir, target, sha_a and sha_b (run inside the checkout).
ab_init() {
    # Absolute: the builds run inside the worktrees.
    dir="$(realpath -m "${AB_DIR:-${TMPDIR:-/tmp}/arbor-ab}")"
    target="$(realpath -m "${AB_TARGET_DIR:-$dir/target}")"
    mkdir -p "$dir/bin"
    export CARGO_BUILD_JOBS="${CARGO_BUILD_JOBS:-1}"
    sha_a="$(git rev-parse --verify --short=9 "$1^{commit}")"
    sha_b="$(git rev-parse --verify --short=9 "$2^{commit}")"
}

# ab_build SHA NAME ARTIFACT CARGO_BUILD_ARGS…: builds at SHA (a detached worktree,
# removed after) and copies $target/release/ARTIFACT to $dir/bin/NAME-SHA, unless that
# binary exists already.
ab_build() {
    local sha="$1" name="$2" artifact="$3" wt="$dir/src-$1"
    shift 3
    if [ -x "$dir/bin/$name-$sha" ]; then
        log "$name at $sha: built already ($dir/bin/$name-$sha)"
        return 0
    fi
    log "building $name at $sha …"
    git worktree remove --force "$wt" >/dev/null 2>&1 || rm -rf "$wt"
    git worktree add --detach "$wt" "$sha" >/dev/null 2>&1
    if ! (cd "$wt" && CARGO_TARGET_DIR="$target" cargo build --release "$@") \
        >"$dir/build-$name-$sha.log" 2>&1; then
        tail -30 "$dir/build-$name-$sha.log" >&2
        git worktree remove --force "$wt" >/dev/null 2>&1 || true
        exit 1
    fi
    cp "$target/release/$artifact" "$dir/bin/$name-$sha"
    git worktree remove --force "$wt" >/dev/null 2>&1 || true
}
