#!/usr/bin/env bash
# A/B of arbor's single appends at two commits, alternated, so that a regression (such
# as ce3d420's, 15–22 % slower single appends) is caught by a command and not by luck.
#
#   bash benches/ab.sh A_COMMIT B_COMMIT [ROUNDS]      (ROUNDS: default 5)
#
# Builds the `arbor` binary of each commit (a detached worktree under $AB_DIR, one shared
# target dir), and the harness (`arbor-bench`) once from this checkout: the instrument is
# the same for both sides, only the server differs. Then, ROUNDS times, starts each
# commit's `arbor serve` on a fresh data dir on 127.0.0.1 and runs
#   arbor-bench run --scenario append --pace closed --systems arbor --url … --duration S
# against it (the instrument check — HTTP floor from the harness and from wrk, one fixed
# node per request from both — and the agents' closed loop), A then B in odd rounds,
# B then A in even ones, so drift in the machine's load falls on both sides alike.
# Prints every round's figures and, per figure, the median over rounds of B/A.
#
# Environment:
#   AB_SECONDS=5          seconds of each measured series
#   AB_DURABILITY=fsync   the servers' --durability (fsync or none)
#   AB_AGENTS=16          agents of the closed loop; AB_CONNECTIONS=64 of the fixed appends
#   AB_DIR, AB_TARGET_DIR work and cargo target dirs (see ab_lib.sh)
#   AB_FAIL_BELOW         if set (e.g. 0.9), exit 1 when the median B/A of arbor's fixed
#                         appends (harness client) is below it: a regression gate
set -euo pipefail

usage() {
    echo "usage: $0 A_COMMIT B_COMMIT [ROUNDS]" >&2
    exit 2
}
[ "$#" -ge 2 ] && [ "$#" -le 3 ] || usage
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"
rounds="${3:-5}"
[[ "$rounds" =~ ^[1-9][0-9]*$ ]] || usage
seconds="${AB_SECONDS:-5}"
durability="${AB_DURABILITY:-fsync}"
agents="${AB_AGENTS:-16}"
connections="${AB_CONNECTIONS:-64}"
# shellcheck source=benches/ab_lib.sh
. "$repo/benches/ab_lib.sh"
ab_init "$1" "$2"
mkdir -p "$dir/reports"

bash benches/tools.sh >/dev/null

# The instrument, from this checkout.
log "building arbor-bench (this checkout) …"
cargo build --release -p arbor-bench >"$dir/build-bench.log" 2>&1 || {
    tail -30 "$dir/build-bench.log" >&2
    exit 1
}
bench_target="${CARGO_TARGET_DIR:-$repo/target}"
cp "$bench_target/release/arbor-bench" "$dir/bin/arbor-bench"

# The server of each commit.
ab_build "$sha_a" arbor arbor --bin arbor
ab_build "$sha_b" arbor arbor --bin arbor

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}

wait_up() { # PORT PID
    local i
    for i in $(seq 1 200); do
        if ! kill -0 "$2" 2>/dev/null; then return 1; fi
        if python3 -c "import urllib.request,sys; urllib.request.urlopen('http://127.0.0.1:$1/healthz', timeout=1)" 2>/dev/null; then
            return 0
        fi
        sleep 0.05
    done
    return 1
}

server_pid=""
data=""
# shellcheck disable=SC2317 # invoked by the trap
stop_server() {
    if [ -n "$server_pid" ]; then
        kill "$server_pid" 2>/dev/null || true
        wait "$server_pid" 2>/dev/null || true
        server_pid=""
    fi
    if [ -n "$data" ]; then
        rm -rf "$data"
        data=""
    fi
}
trap stop_server EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# One measurement: SIDE (A|B) SHA ROUND → a JSON report.
measure() {
    local side="$1" sha="$2" round="$3" port out
    port="$(free_port)"
    data="$(mktemp -d "${TMPDIR:-/tmp}/arbor-ab-data.XXXXXX")"
    "$dir/bin/arbor-$sha" serve --data-dir "$data" --listen "127.0.0.1:$port" \
        --durability "$durability" >"$dir/server-$sha.log" 2>&1 &
    server_pid=$!
    if ! wait_up "$port" "$server_pid"; then
        tail -20 "$dir/server-$sha.log" >&2
        log "arbor at $sha did not start"
        exit 1
    fi
    out="$dir/reports/round$round-$side-$sha.json"
    RUST_LOG=warn "$dir/bin/arbor-bench" run --scenario append --pace closed --systems arbor \
        --url "http://127.0.0.1:$port" --duration "$seconds" --agents "$agents" \
        --connections "$connections" --json "$out" >/dev/null 2>"$dir/bench.log" || {
        tail -20 "$dir/bench.log" >&2
        exit 1
    }
    stop_server
    printf '%s\n' "$out"
}

log "A = $sha_a, B = $sha_b: $rounds rounds, ${seconds} s per series, --durability $durability"
reports=()
for r in $(seq 1 "$rounds"); do
    if [ $((r % 2)) -eq 1 ]; then order="A B"; else order="B A"; fi
    for side in $order; do
        if [ "$side" = A ]; then sha="$sha_a"; else sha="$sha_b"; fi
        log "round $r: $side ($sha)"
        reports+=("$r $side $(measure "$side" "$sha" "$r")")
    done
done

printf '%s\n' "${reports[@]}" | python3 "$repo/benches/ab_summary.py" "$sha_a" "$sha_b" "${AB_FAIL_BELOW:-}"
