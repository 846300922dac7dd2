#!/usr/bin/env bash
# Where the CPU of one HTTP request goes (issue 13, goal 3): `GET /healthz` (the HTTP floor)
# and durable single appends, each driven by wrk (64 connections) against a fresh
# `arbor serve` on 127.0.0.1, then the CPU of each of the server's thread groups, of wrk,
# and of the whole machine (/proc/stat), over the middle seconds of the run, in µs per
# request.
#
#   bash benches/cpu_per_request.sh [ARBOR_BINARY] [ROUNDS]
#
# ARBOR_BINARY defaults to target/release/arbor (build it first); ROUNDS to 2, healthz
# then appends in each. On a machine of N cores, N / (machine µs per request) bounds the
# rate any closed loop of this request could reach: the figure that says whether a rate
# is a matter of latency (a busier loop would get there) or of CPU (it would not).
#
# Environment: CPR_PORT (default 18190), CPR_SECONDS (default 8; the middle half is
# measured), CPR_CONNECTIONS (default 64), CPR_IDS (default `client`: wrk's Lua builds
# each append with a fresh id of its own; `server`: every append is the same body
# without an id, which the server assigns, so wrk sends a prepared request as it does
# for `/healthz` and spends no more CPU a request than there — the client's share of
# the two cores is then the same on both sides of the ratio).
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bin="$(realpath "${1:-$repo/target/release/arbor}")"
rounds="${2:-2}"
port="${CPR_PORT:-18190}"
seconds="${CPR_SECONDS:-8}"
connections="${CPR_CONNECTIONS:-64}"
ids="${CPR_IDS:-client}"
case "$ids" in client | server) ;; *) echo "CPR_IDS must be client or server, not $ids" >&2; exit 2 ;; esac
[ -x "$bin" ] || { echo "no arbor binary at $bin (cargo build --release --bin arbor)" >&2; exit 2; }
command -v wrk >/dev/null || bash "$repo/benches/tools.sh" >/dev/null

work="$(mktemp -d)"
server=""
cleanup() {
    [ -n "$server" ] && kill "$server" 2>/dev/null && wait "$server" 2>/dev/null
    rm -rf "$work"
}
trap cleanup EXIT

# One append per request: a fresh id each time (a repeated id would be a replay), 256 B of
# content, under the root of one workflow.
cat >"$work/append.lua" <<'LUA'
local counter = 0
local content = string.rep("c", 256)
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
request = function()
  counter = counter + 1
  local body = string.format('{"id":"%08x-0000-4000-8000-%012x","parent_id":"%s","type":"message","role":"assistant","content":"%s","agent_id":"bench"}', math.random(0, 0xffffffff), counter, ROOT, content)
  return wrk.format(nil, WF_PATH, nil, body)
end
LUA
# The same append with no id (the server assigns one): a body fixed once, no Lua per request.
cat >"$work/append_server_ids.lua" <<'LUA'
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = string.format('{"parent_id":"%s","type":"message","role":"assistant","content":"%s","agent_id":"bench"}', ROOT, string.rep("c", 256))
LUA

# Sums utime + stime (clock ticks) per thread name (digits at the end dropped: the seven
# `sled-io-N` threads are one group), plus wrk's and the machine's busy ticks.
snapshot() {
    local pid="$1" load="$2" t
    for t in /proc/"$pid"/task/*; do
        printf '%s %s\n' "$(tr ' ' '-' <"$t/comm")" "$(awk '{print $14 + $15}' "$t/stat")"
    done
    printf 'wrk %s\n' "$(awk '{print $14 + $15}' /proc/"$load"/stat)"
    # user, nice, system, irq, softirq: not iowait or idle, nor steal (the host's other
    # tenants).
    awk 'NR == 1 {print "machine", $2 + $3 + $4 + $7 + $8}' /proc/stat
}

measure() {
    local what="$1" data="$work/data-$1-$2"
    mkdir -p "$data"
    "$bin" serve --data-dir "$data" --listen "127.0.0.1:$port" --durability fsync \
        >"$work/server.log" 2>&1 &
    server=$!
    for _ in $(seq 200); do
        curl -sf "http://127.0.0.1:$port/healthz" >/dev/null && break
        sleep 0.05
    done
    local script=() url="http://127.0.0.1:$port/healthz"
    if [ "$what" = append ]; then
        local created wf root
        created="$(curl -sf -X POST -H 'Content-Type: application/json' \
            "http://127.0.0.1:$port/v1/workflows" -d '{"system_prompt":"cpu per request"}')"
        wf="$(python3 -c 'import json,sys; print(json.load(sys.stdin)["workflow_id"])' <<<"$created")"
        root="$(python3 -c 'import json,sys; print(json.load(sys.stdin)["root_id"])' <<<"$created")"
        local lua="$work/append.lua"
        url="http://127.0.0.1:$port/"
        if [ "$ids" = server ]; then
            lua="$work/append_server_ids.lua"
            url="http://127.0.0.1:$port/v1/workflows/$wf/nodes"
        fi
        sed "1i ROOT = \"$root\"\nWF_PATH = \"/v1/workflows/$wf/nodes\"" "$lua" >"$work/run.lua"
        script=(-s "$work/run.lua")
    fi
    wrk -t1 -c"$connections" -d"$seconds" "${script[@]}" "$url" >"$work/wrk.txt" &
    local load=$!
    local quarter=$((seconds / 4))
    sleep "$quarter"
    snapshot "$server" "$load" >"$work/s0"
    sleep $((seconds / 2))
    snapshot "$server" "$load" >"$work/s1"
    wait "$load"
    python3 - "$work/s0" "$work/s1" "$work/wrk.txt" "$what" "$((seconds / 2))" <<'PY'
import collections, re, sys
def load(path):
    ticks = collections.Counter()
    for line in open(path):
        name, value = line.split()
        ticks[re.sub(r"-\d+$", "", name)] += int(value)
    return ticks
before, after, wrk, what, secs = load(sys.argv[1]), load(sys.argv[2]), sys.argv[3], sys.argv[4], int(sys.argv[5])
rate = next((float(l.split()[1]) for l in open(wrk) if l.startswith("Requests/sec")), 0.0)
errors = [l.strip() for l in open(wrk) if "Non-2xx" in l or "Socket errors" in l]
if rate <= 0 or errors:
    sys.exit(f"{what}: wrk measured nothing usable: {errors or 'no rate'}")
requests = rate * secs
# Linux clock ticks are 10 ms.
per = {k: (after[k] - before[k]) * 10_000 / requests for k in after if after[k] > before[k]}
parts = [f"{k} {v:.1f}" for k, v in sorted(per.items(), key=lambda kv: -kv[1]) if k != "machine"]
print(f"{what:8} {rate:9.0f}/s  machine {per.get('machine', 0):5.1f} us/request  ({', '.join(parts)})")
PY
    kill "$server"
    wait "$server" 2>/dev/null || true
    server=""
    # A round of appends leaves ~700 MB behind; kept, every later round's log went to
    # blocks never written before, which cost this VM's disk twice the CPU a write
    # (BENCHMARKS.md, "Stop 34"); deleted, the next round reuses them.
    rm -rf "$data"
}

echo "cpu per request: $bin, $(nproc) cores, wrk -c$connections, ${seconds}s runs, ids by the $ids"
for round in $(seq "$rounds"); do
    measure healthz "$round"
    measure append "$round"
done
