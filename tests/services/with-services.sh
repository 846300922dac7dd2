#!/usr/bin/env bash
# Runs a command with throwaway Redis, PostgreSQL and Neo4j servers on 127.0.0.1.
#
#   tests/services/with-services.sh CMD [ARGS...]
#
# Installs what the machine lacks (Debian packages via apt-get; Neo4j jars via Maven into
# ${ARBOR_CACHE_DIR:-~/.cache/arbor}, once), starts each service on a free loopback port with
# its state in a fresh temp dir, waits until each answers, runs CMD with these variables:
#
#   ARBOR_TEST_REDIS_URL        redis://127.0.0.1:PORT/
#   ARBOR_TEST_POSTGRES_URL     postgres://postgres@127.0.0.1:PORT/arbor_test   (trust auth)
#   ARBOR_TEST_NEO4J_URL        bolt://127.0.0.1:PORT
#   ARBOR_TEST_NEO4J_USER       neo4j
#   ARBOR_TEST_NEO4J_PASSWORD   arbor-test-password
#   ARBOR_TEST_SERVICES_DIR     the temp state dir
#   ARBOR_TEST_SERVICES_CTL     absolute path of ctl.sh (stop|start|kill|status SERVICE, and
#                               new|remove SERVICE@NAME: an extra instance for one test)
#   ARBOR_BENCH_PIDS_REDIS, ARBOR_BENCH_PIDS_POSTGRES, ARBOR_BENCH_PIDS_NEO4J
#                               the server's pid (the postmaster, the JVM), whose process
#                               tree the `catchup` example counts as the server's CPU
#
# then stops every service, removes the temp dir and exits with CMD's exit code.
#
# Optional environment:
#   ARBOR_SERVICES=redis,postgres,neo4j   which services to start (default: all three);
#                                         variables of services not started are not set
#   ARBOR_CACHE_DIR                       cache of Neo4j jars (default ~/.cache/arbor)
#   ARBOR_NEO4J_HEAP=1g                   Neo4j's -Xmx
#   ARBOR_NEO4J_PAGECACHE_MB=256          Neo4j's page cache
#   ARBOR_NEO4J_JAVA_OPTS                 extra JVM flags (e.g. -XX:TieredStopAtLevel=4: C2 JIT)
#   ARBOR_NEO4J_TIMEOUT=120, ARBOR_SERVICE_TIMEOUT=30   start-up timeouts in seconds
#   ARBOR_SERVICES_KEEP_DIR=1             keep the temp state dir (logs) after the run
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=tests/services/lib.sh
. "$here/lib.sh"

if [ "$#" -eq 0 ]; then
    echo "usage: $0 CMD [ARGS...]" >&2
    exit 2
fi

services=()
IFS=',' read -r -a requested <<<"${ARBOR_SERVICES:-redis,postgres,neo4j}"
for s in "${requested[@]}"; do
    s="${s//[[:space:]]/}"
    [ -n "$s" ] || continue
    svc_valid "$s" || svc_die "unknown service '$s' in ARBOR_SERVICES (known: $ARBOR_ALL_SERVICES)"
    services+=("$s")
done

has() {
    local x
    for x in "${services[@]}"; do [ "$x" = "$1" ] && return 0; done
    return 1
}

started=()
state_dir=""
# shellcheck disable=SC2317 # invoked by the trap below
cleanup() {
    local rc=$? s
    set +e
    # Not interruptible: a second Ctrl-C must not leave servers behind (each stop is bounded).
    trap - EXIT
    trap '' INT TERM HUP
    if [ -n "$state_dir" ]; then
        # Extra instances a test started (ctl.sh new) and did not remove, e.g. because
        # its process died: they go too.
        for s in "${started[@]}" $(svc_instances); do
            (svc_stop "$s")
        done
        if [ "${ARBOR_SERVICES_KEEP_DIR:-0}" = 1 ]; then
            svc_log "kept state dir $state_dir"
        else
            rm -rf "$state_dir"
        fi
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
trap 'exit 129' HUP

if [ "${#services[@]}" -gt 0 ]; then
    svc_ensure_packages "${services[@]}"

    state_dir="$(mktemp -d "${TMPDIR:-/tmp}/arbor-services.XXXXXX")"
    # user postgres must be able to reach its data dir below it
    chmod 711 "$state_dir"
    export ARBOR_TEST_SERVICES_DIR="$state_dir"

    mapfile -t ports < <(svc_free_ports "${#services[@]}")
    [ "${#ports[@]}" -eq "${#services[@]}" ] || svc_die "could not pick free ports"

    # Neo4j first: its JVM boots while the others are set up.
    i=0
    for s in neo4j redis postgres; do
        has "$s" || continue
        svc_init "$s" "${ports[$i]}"
        i=$((i + 1))
        started+=("$s")
        svc_start "$s"
    done
    for s in redis postgres neo4j; do
        has "$s" || continue
        svc_wait "$s"
    done

    if has redis; then
        ARBOR_TEST_REDIS_URL="$(svc_url redis)"
        export ARBOR_TEST_REDIS_URL
    fi
    if has postgres; then
        svc_prepare postgres
        ARBOR_TEST_POSTGRES_URL="$(svc_url postgres)"
        export ARBOR_TEST_POSTGRES_URL
    fi
    if has neo4j; then
        ARBOR_TEST_NEO4J_URL="$(svc_url neo4j)"
        export ARBOR_TEST_NEO4J_URL
        export ARBOR_TEST_NEO4J_USER="neo4j"
        export ARBOR_TEST_NEO4J_PASSWORD="$ARBOR_NEO4J_PASSWORD"
    fi
    export ARBOR_TEST_SERVICES_CTL="$here/ctl.sh"
    for s in "${services[@]}"; do
        export "ARBOR_BENCH_PIDS_${s^^}=$(svc_pid "$s")"
    done
fi

set +e
"$@"
rc=$?
set -e
exit "$rc"
