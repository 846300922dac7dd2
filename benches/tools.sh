#!/usr/bin/env bash
# Installs the load generators the benchmark harness drives beside its own client:
# wrk (the HTTP floor check, and the same appends from an established client) and
# pgbench (PostgreSQL's own client). Debian packages, installed only if missing (as root
# or with sudo), through the service script's installer. Prints where each one is.
#
#   bash benches/tools.sh
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=tests/services/lib.sh
. "$here/../tests/services/lib.sh"

pgbench_bin() {
    command -v pgbench 2>/dev/null || ls /usr/lib/postgresql/*/bin/pgbench 2>/dev/null | sort -V | tail -n 1
}

pkgs=()
command -v wrk >/dev/null 2>&1 || pkgs+=(wrk)
# pgbench ships with the server package on Debian (the service script installs it too).
[ -n "$(pgbench_bin)" ] || pkgs+=(postgresql)
svc_apt_install "${pkgs[@]}"
echo "wrk: $(command -v wrk)"
echo "pgbench: $(pgbench_bin)"
