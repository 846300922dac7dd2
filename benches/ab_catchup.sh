#!/usr/bin/env bash
# A/B of one sink's catch-up at two commits, alternated (issue 13, goal 6): the
# `catchup` example of each commit replicates a pre-filled log into a fresh server.
#
#   bash benches/ab_catchup.sh A_COMMIT B_COMMIT [ROUNDS] [SINK]
#                                          (ROUNDS: default 3; SINK: postgres, redis or neo4j)
#
# Builds `sync/examples/catchup.rs` of each commit (a detached worktree under $AB_DIR,
# one shared target dir). Then, ROUNDS times, A then B in odd rounds and B then A in even
# ones, runs each side under its own `tests/services/with-services.sh` (a fresh server
# every run, so no run inherits another's tables, WAL or warmed JVM) and prints the
# events/s and the CPU an event (arbor's and the server's) of every run, then the median
# over rounds of B/A for each.
#
# Environment:
#   AB_EVENTS=1000000     events in the log
#   AB_DIR, AB_TARGET_DIR work and cargo target dirs (see ab_lib.sh)
# and the services' variables (ARBOR_NEO4J_HEAP, ARBOR_CACHE_MB, …; see with-services.sh).
set -euo pipefail

usage() {
    echo "usage: $0 A_COMMIT B_COMMIT [ROUNDS] [postgres|redis|neo4j]" >&2
    exit 2
}
[ "$#" -ge 2 ] && [ "$#" -le 4 ] || usage
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"
rounds="${3:-3}"
sink="${4:-postgres}"
[[ "$rounds" =~ ^[1-9][0-9]*$ ]] || usage
case "$sink" in postgres | redis | neo4j) ;; *) usage ;; esac
events="${AB_EVENTS:-1000000}"
[[ "$events" =~ ^[1-9][0-9]*$ ]] || usage
# shellcheck source=benches/ab_lib.sh
. "$repo/benches/ab_lib.sh"
ab_init "$1" "$2"

ab_build "$sha_a" catchup examples/catchup -p arbor-sync --example catchup
ab_build "$sha_b" catchup examples/catchup -p arbor-sync --example catchup

# One run: SHA → "events/s arbor_us server_us" (the example's two lines for SINK).
measure() {
    local sha="$1" out="$dir/catchup-$1.log"
    if ! ARBOR_SERVICES="$sink" bash "$repo/tests/services/with-services.sh" \
        "$dir/bin/catchup-$sha" "$events" "$sink" >"$out" 2>&1; then
        tail -20 "$out" >&2
        log "catchup at $sha failed"
        exit 1
    fi
    python3 - "$out" "$sink" <<'PY'
import re, sys
text, sink = open(sys.argv[1]).read(), sys.argv[2]
rate = re.search(rf"^{sink}: (\d+) events in [\d.]+ s = (\d+) events/s", text, re.M)
cpu = re.search(rf"^{sink}: cpu ([\d.]+) s arbor \+ ([\d.]+) s server", text, re.M)
if not rate or not cpu:
    sys.exit(f"no figures for {sink} in {sys.argv[1]}")
n = int(rate.group(1))
print(rate.group(2), round(float(cpu.group(1)) * 1e6 / n, 1), round(float(cpu.group(2)) * 1e6 / n, 1))
PY
}

log "A = $sha_a, B = $sha_b: $rounds rounds, $sink, $events events"
printf 'round side commit events/s arbor_us/event server_us/event\n'
results=()
for r in $(seq 1 "$rounds"); do
    if [ $((r % 2)) -eq 1 ]; then order="A B"; else order="B A"; fi
    for side in $order; do
        if [ "$side" = A ]; then sha="$sha_a"; else sha="$sha_b"; fi
        figures="$(measure "$sha")"
        printf '%s %s %s %s\n' "$r" "$side" "$sha" "$figures"
        results+=("$r $side $figures")
    done
done

printf '%s\n' "${results[@]}" | python3 -c '
import statistics, sys
rows = {}
for line in sys.stdin:
    r, side, rate, arbor, server = line.split()
    rows.setdefault(r, {})[side] = (float(rate), float(arbor), float(server))
ratios = [tuple(b / a for a, b in zip(v["A"], v["B"])) for v in rows.values()]
for i, name in enumerate(["events/s", "arbor CPU/event", "server CPU/event"]):
    print(f"median B/A {name}: {statistics.median(x[i] for x in ratios):.2f}")
'
