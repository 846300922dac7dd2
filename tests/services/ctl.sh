#!/usr/bin/env bash
# Controls a service started by tests/services/with-services.sh, to simulate outages.
#
#   ctl.sh stop SERVICE     graceful stop (no-op if not running)
#   ctl.sh kill SERVICE     kill -9 of the server process (postgres: postmaster + children)
#   ctl.sh start SERVICE    start again on the same port with the same data; returns once it
#                           answers (no-op if running)
#   ctl.sh status SERVICE   exit 0 and print "running" if it answers, else exit 1
#
# SERVICE: redis | postgres | neo4j. Needs ARBOR_TEST_SERVICES_DIR (set by with-services.sh).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=tests/services/lib.sh
. "$here/lib.sh"

if [ "$#" -ne 2 ]; then
    echo "usage: $0 stop|start|kill|status redis|postgres|neo4j" >&2
    exit 2
fi
action="$1"
service="$2"
svc_valid "$service" || svc_die "unknown service '$service' (known: $ARBOR_ALL_SERVICES)"
if [ -z "${ARBOR_TEST_SERVICES_DIR:-}" ] || [ ! -d "$ARBOR_TEST_SERVICES_DIR" ]; then
    svc_die "ARBOR_TEST_SERVICES_DIR is not set or not a directory (run under with-services.sh)"
fi
[ -f "$(svc_state "$service")/port" ] ||
    svc_die "$service was not started by with-services.sh (see ARBOR_SERVICES)"

case "$action" in
    stop) svc_stop "$service" ;;
    kill) svc_kill "$service" ;;
    start)
        svc_start "$service"
        svc_wait "$service"
        ;;
    status)
        if svc_running "$service" && svc_ready "$service"; then
            echo running
        else
            echo stopped
            exit 1
        fi
        ;;
    *)
        echo "usage: $0 stop|start|kill|status redis|postgres|neo4j" >&2
        exit 2
        ;;
esac
