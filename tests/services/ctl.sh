#!/usr/bin/env bash
# Controls a service started by tests/services/with-services.sh, to simulate outages.
#
#   ctl.sh stop SERVICE     graceful stop (no-op if not running)
#   ctl.sh kill SERVICE     kill -9 of the server process (postgres: postmaster + children)
#   ctl.sh start SERVICE    start again on the same port with the same data; returns once it
#                           answers (no-op if running)
#   ctl.sh status SERVICE   exit 0 and print "running" if it answers, else exit 1
#   ctl.sh new SERVICE@NAME     start an extra instance of SERVICE on a free port, with its
#                               own data, and print its URL once it answers (a test that
#                               kills its server uses one, so that no other test loses it)
#   ctl.sh remove SERVICE@NAME  stop an extra instance and delete its data
#
# SERVICE: redis | postgres | neo4j, or SERVICE@NAME for an extra instance (NAME:
# [a-z0-9_-], at most 16). Needs ARBOR_TEST_SERVICES_DIR (set by with-services.sh), which
# also stops the extra instances left at its end.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=tests/services/lib.sh
. "$here/lib.sh"

usage() {
    echo "usage: $0 stop|start|kill|status SERVICE  |  $0 new|remove SERVICE@NAME" >&2
    echo "       SERVICE: redis|postgres|neo4j[@NAME]" >&2
    exit 2
}

[ "$#" -eq 2 ] || usage
action="$1"
service="$2"
svc_valid "$service" || svc_die "unknown service '$service' (known: $ARBOR_ALL_SERVICES, each optionally @NAME)"
if [ -z "${ARBOR_TEST_SERVICES_DIR:-}" ] || [ ! -d "$ARBOR_TEST_SERVICES_DIR" ]; then
    svc_die "ARBOR_TEST_SERVICES_DIR is not set or not a directory (run under with-services.sh)"
fi

case "$action" in
    new)
        [ "$(svc_kind "$service")" != "$service" ] || svc_die "new needs SERVICE@NAME, got '$service'"
        [ ! -e "$(svc_state "$service")" ] || svc_die "$service exists already"
        svc_init "$service" "$(svc_free_ports 1)"
        svc_start "$service"
        svc_wait "$service"
        svc_prepare "$service"
        svc_url "$service"
        exit 0
        ;;
    remove)
        [ "$(svc_kind "$service")" != "$service" ] || svc_die "only an extra instance (SERVICE@NAME) can be removed"
        if [ -f "$(svc_state "$service")/port" ]; then
            svc_stop "$service"
        fi
        rm -rf "$(svc_state "$service")"
        rm -f "$ARBOR_TEST_SERVICES_DIR/$service"-*.log
        exit 0
        ;;
esac

[ -f "$(svc_state "$service")/port" ] ||
    svc_die "$service was not started by with-services.sh (see ARBOR_SERVICES) or ctl.sh new"

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
    *) usage ;;
esac
