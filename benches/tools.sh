#!/usr/bin/env bash
# Installs the load generators the benchmark harness drives beside its own client:
# wrk (the HTTP floor check and the same appends from an established client) and
# pgbench (PostgreSQL's own client). Debian packages, installed only if missing; run as
# root or with sudo. Prints where each one is.
#
#   bash benches/tools.sh
set -euo pipefail

as_root() {
    if [ "$(id -u)" -eq 0 ]; then
        "$@"
    elif command -v sudo >/dev/null 2>&1; then
        sudo "$@"
    else
        echo "benches/tools.sh: need root (or sudo) to run: $*" >&2
        exit 1
    fi
}

pgbench_bin() {
    command -v pgbench 2>/dev/null || ls /usr/lib/postgresql/*/bin/pgbench 2>/dev/null | sort -V | tail -n 1
}

pkgs=()
command -v wrk >/dev/null 2>&1 || pkgs+=(wrk)
# pgbench ships with the server package on Debian (the service script installs it too).
[ -n "$(pgbench_bin)" ] || pkgs+=(postgresql)
if [ "${#pkgs[@]}" -gt 0 ]; then
    echo "benches/tools.sh: installing ${pkgs[*]}" >&2
    # Keep a new PostgreSQL package from starting Debian's own cluster.
    policy=/usr/sbin/policy-rc.d made_policy=0
    if [ ! -e "$policy" ]; then
        printf '#!/bin/sh\nexit 101\n' | as_root tee "$policy" >/dev/null && as_root chmod 755 "$policy" && made_policy=1
    fi
    rc=0
    as_root env DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=300 -qq update || rc=$?
    if [ "$rc" -eq 0 ]; then
        as_root env DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=300 -qq \
            install -y --no-install-recommends "${pkgs[@]}" >/dev/null || rc=$?
    fi
    [ "$made_policy" -eq 0 ] || as_root rm -f "$policy"
    [ "$rc" -eq 0 ] || { echo "benches/tools.sh: apt-get failed (exit $rc)" >&2; exit 1; }
fi
echo "wrk: $(command -v wrk)"
echo "pgbench: $(pgbench_bin)"
