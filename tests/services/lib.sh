# shellcheck shell=bash
# Shared functions of tests/services/with-services.sh and tests/services/ctl.sh.
#
# Source it; it changes no shell options. Every service keeps its whole state below
# "$ARBOR_TEST_SERVICES_DIR/<service>/" (port, pid file, data, log), so that ctl.sh, run
# later from inside a test, can stop, kill and start it again on the same port with the
# same data:
#
#   redis/     port  redis.pid  redis.log  data/
#   postgres/  port  pgbin  data/ (PGDATA, owned by user postgres)  sock/  postgres.log
#              (+ postgres-initdb.log, postgres-pg_ctl.log beside it: files root writes;
#              an extra instance KIND@NAME has the same layout in KIND@NAME/)
#   neo4j/     port  password  classpath  pid  ready  neo4j.log  home/ (Neo4j home: data, logs)
#
# Services only ever listen on 127.0.0.1.

ARBOR_SERVICES_HOME="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck disable=SC2034 # used by the scripts that source this file
ARBOR_ALL_SERVICES="redis postgres neo4j"
: "${ARBOR_CACHE_DIR:=${XDG_CACHE_HOME:-${HOME:-/root}/.cache}/arbor}"
: "${ARBOR_NEO4J_HEAP:=1g}"
# Neo4j page cache in MiB (the store's pages kept in memory, outside the heap).
: "${ARBOR_NEO4J_PAGECACHE_MB:=256}"
# Extra JVM flags for Neo4j, word-split (e.g. "-XX:TieredStopAtLevel=4" for the C2 JIT,
# which the default -XX:TieredStopAtLevel=1 leaves out: ~40% less CPU to start on 2 cores).
: "${ARBOR_NEO4J_JAVA_OPTS:=}"
ARBOR_NEO4J_PASSWORD="arbor-test-password"
# shellcheck disable=SC2034
ARBOR_POSTGRES_DB="arbor_test"

svc_log() { printf '[arbor-services] %s\n' "$*" >&2; }
svc_die() {
    printf '[arbor-services] ERROR: %s\n' "$*" >&2
    exit 1
}

svc_state() {
    [ -n "${ARBOR_TEST_SERVICES_DIR:-}" ] || svc_die "ARBOR_TEST_SERVICES_DIR is not set"
    printf '%s/%s' "$ARBOR_TEST_SERVICES_DIR" "$1"
}

# A service instance is named KIND (the one with-services.sh starts, shared by every test)
# or KIND@NAME (an extra instance a test starts for itself with `ctl.sh new`, e.g.
# postgres@a1b2c3d4, so that killing it disturbs no other test). NAME: [a-z0-9_-]{1,16}.
svc_valid() {
    local name="${1#*@}"
    case "$(svc_kind "$1")" in
        redis | postgres | neo4j) ;;
        *) return 1 ;;
    esac
    [ "$name" = "$1" ] && return 0
    [ -n "$name" ] && [ "${#name}" -le 16 ] && [ -z "${name//[a-z0-9_-]/}" ]
}

# The kind of instance $1: redis, postgres or neo4j.
svc_kind() { printf '%s' "${1%%@*}"; }

svc_timeout() {
    case "$(svc_kind "$1")" in
        neo4j) echo "${ARBOR_NEO4J_TIMEOUT:-120}" ;;
        *) echo "${ARBOR_SERVICE_TIMEOUT:-30}" ;;
    esac
}

# True if process $1 exists and is not a zombie (daemons are children of init, which may
# take a while to reap them; a zombie holds no port and no lock).
svc_pid_alive() {
    local st
    [ -n "${1:-}" ] || return 1
    st="$(ps -o stat= -p "$1" 2>/dev/null)" || return 1
    [ -n "$st" ] && [ "${st#Z}" = "$st" ]
}

# Prints N distinct free TCP ports on 127.0.0.1, one a line (all held open while chosen).
svc_free_ports() {
    python3 - "$1" <<'PY'
import socket, sys
socks = []
for _ in range(int(sys.argv[1])):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.bind(("127.0.0.1", 0))
    socks.append(s)
for s in socks:
    print(s.getsockname()[1])
for s in socks:
    s.close()
PY
}

# Succeeds when a Bolt server on 127.0.0.1:$1 agrees on a protocol version.
svc_bolt_handshake() {
    python3 - "$1" <<'PY'
import socket, sys
port = int(sys.argv[1])
# magic, then four proposals [reserved, range, minor, major]: 5.8..5.0, 4.4, none, none
hello = bytes.fromhex("6060b017" "00080805" "00000404" "00000000" "00000000")
buf = b""
try:
    with socket.create_connection(("127.0.0.1", port), timeout=3) as s:
        s.settimeout(3)
        s.sendall(hello)
        while len(buf) < 4:
            chunk = s.recv(4 - len(buf))
            if not chunk:
                break
            buf += chunk
except OSError:
    sys.exit(1)
sys.exit(0 if len(buf) == 4 and buf != b"\0\0\0\0" else 1)
PY
}

svc_tail_logs() {
    local f
    for f in "$@"; do
        [ -f "$f" ] || continue
        printf '[arbor-services] ---- last lines of %s ----\n' "$f" >&2
        tail -n 40 "$f" >&2 || true
    done
}

# ---------------------------------------------------------------------------------------
# Installing what is missing (packages once per machine, Neo4j jars once per cache dir)
# ---------------------------------------------------------------------------------------

svc_pg_bin() {
    local d best=""
    for d in /usr/lib/postgresql/*/bin; do
        if [ ! -x "$d/initdb" ] || [ ! -x "$d/pg_ctl" ]; then continue; fi
        best="$(printf '%s\n%s\n' "$best" "$d" | sed '/^$/d' | sort -V | tail -n 1)"
    done
    printf '%s' "$best"
}

svc_as_root() {
    if [ "$(id -u)" -eq 0 ]; then
        "$@"
    elif command -v sudo >/dev/null 2>&1; then
        sudo "$@"
    else
        svc_die "need root (or sudo) to run: $*"
    fi
}

# Installs the Debian packages the given services need, if anything is missing.
svc_ensure_packages() {
    local s pkgs=()
    command -v python3 >/dev/null 2>&1 || pkgs+=(python3)
    command -v ps >/dev/null 2>&1 || pkgs+=(procps)
    for s in "$@"; do
        case "$s" in
            redis)
                command -v redis-server >/dev/null 2>&1 && command -v redis-cli >/dev/null 2>&1 ||
                    pkgs+=(redis-server redis-tools)
                ;;
            postgres)
                [ -n "$(svc_pg_bin)" ] || pkgs+=(postgresql)
                ;;
            neo4j)
                command -v java >/dev/null 2>&1 && command -v javac >/dev/null 2>&1 ||
                    pkgs+=(openjdk-17-jdk-headless)
                command -v mvn >/dev/null 2>&1 || pkgs+=(maven)
                ;;
        esac
    done
    svc_apt_install "${pkgs[@]}"
    if printf '%s\n' "$@" | grep -qx postgres && [ -z "$(svc_pg_bin)" ]; then
        svc_die "postgresql installed but no /usr/lib/postgresql/*/bin/initdb found"
    fi
}

# Installs the given Debian packages (none: nothing to do), without starting their system
# services.
svc_apt_install() {
    local pkgs=("$@")
    [ "${#pkgs[@]}" -gt 0 ] || return 0

    svc_log "installing missing packages: ${pkgs[*]}"
    # Keep the packages' own system services (Debian's cluster on 5432, redis on 6379)
    # from starting, unless the machine already has a policy: we never use them.
    local policy=/usr/sbin/policy-rc.d made_policy=0
    if [ ! -e "$policy" ]; then
        if printf '#!/bin/sh\nexit 101\n' | svc_as_root tee "$policy" >/dev/null &&
            svc_as_root chmod 755 "$policy"; then
            made_policy=1
        fi
    fi
    local rc=0
    svc_as_root env DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=300 -qq update || rc=$?
    if [ "$rc" -eq 0 ]; then
        svc_as_root env DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=300 -qq \
            install -y --no-install-recommends "${pkgs[@]}" >/dev/null || rc=$?
    fi
    [ "$made_policy" -eq 0 ] || svc_as_root rm -f "$policy"
    [ "$rc" -eq 0 ] || svc_die "apt-get failed (exit $rc) installing: ${pkgs[*]}"
}

# svc_cache_fill DEST DESCRIPTION CMD...: unless DEST/.complete exists, runs CMD with $1 = a
# fresh temp dir next to DEST (CMD fills it), then renames it to DEST. Concurrent runs are
# safe: the first rename wins, later ones drop their copy.
svc_cache_fill() {
    local dest="$1" what="$2"
    shift 2
    [ -f "$dest/.complete" ] && return 0
    mkdir -p "$(dirname "$dest")"
    local tmp
    tmp="$(mktemp -d "$dest.tmp.XXXXXX")"
    svc_log "$what"
    if ! "$@" "$tmp" >"$tmp/.log" 2>&1; then
        svc_tail_logs "$tmp/.log"
        rm -rf "$tmp"
        svc_die "failed: $what"
    fi
    touch "$tmp/.complete"
    if ! mv -T "$tmp" "$dest" 2>/dev/null; then
        rm -rf "$tmp"
        [ -f "$dest/.complete" ] || svc_die "could not create $dest"
    fi
}

# svc_venv VENV REQUIREMENTS: makes VENV a Python venv with exactly the pip packages of
# the REQUIREMENTS file, unless it already is (its .requirements holds the file's text):
# the test tools of tests/browser and tests/openapi. Extra pip environment (e.g.
# PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1) passes through.
svc_venv() {
    local venv="$1" requirements="$2" want
    want="$(cat "$requirements")"
    if [ -x "$venv/bin/python" ] && [ "$(cat "$venv/.requirements" 2>/dev/null)" = "$want" ]; then
        return 0
    fi
    svc_log "creating $venv (pip: $(tr '\n' ' ' <"$requirements"))"
    rm -rf "$venv"
    mkdir -p "$(dirname "$venv")"
    python3 -m venv "$venv" || svc_die "python3 -m venv failed (Debian: apt-get install python3-venv)"
    "$venv/bin/pip" install -q --disable-pip-version-check -r "$requirements" >&2 ||
        svc_die "pip install failed"
    printf '%s' "$want" >"$venv/.requirements"
}

svc_neo4j_fetch_jars() { # POM OUT
    mvn -B -q -f "$1" dependency:copy-dependencies -DincludeScope=runtime -DoutputDirectory="$2"
}

svc_neo4j_compile() { # LIB JAVA OUT
    javac --release 17 -nowarn -cp "$1/*" -d "$3" "$2"
}

# Prints the Java class path of the Neo4j launcher, first fetching the Neo4j jars with Maven
# (keyed by the contents of pom.xml) and compiling Launcher.java with javac (keyed by both
# files) into $ARBOR_CACHE_DIR, unless a previous run already did. Nothing is written into
# the repo (no target/).
svc_neo4j_prepare() {
    local src="$ARBOR_SERVICES_HOME/neo4j"
    local pom="$src/pom.xml"
    local java="$src/src/main/java/arbor/testservices/Launcher.java"
    local pom_key all_key lib classes
    pom_key="$(sha256sum <"$pom" | cut -c1-16)"
    all_key="$(cat "$pom" "$java" | sha256sum | cut -c1-16)"
    lib="$ARBOR_CACHE_DIR/neo4j-lib-$pom_key"
    classes="$ARBOR_CACHE_DIR/neo4j-launcher-$all_key"
    svc_cache_fill "$lib" "fetching Neo4j jars with Maven into $lib (once per machine; may take minutes)" \
        svc_neo4j_fetch_jars "$pom"
    svc_cache_fill "$classes" "compiling the Neo4j launcher into $classes" \
        svc_neo4j_compile "$lib" "$java"
    printf '%s' "$classes:$lib/*"
}

# ---------------------------------------------------------------------------------------
# Per-service: init (once per state dir), start, running, ready, wait, stop, kill
# ---------------------------------------------------------------------------------------

# svc_init SERVICE PORT: creates the service's state (data dir, config) for PORT.
svc_init() {
    local s="$1" port="$2" d
    d="$(svc_state "$s")"
    mkdir -p "$d"
    printf '%s\n' "$port" >"$d/port"
    case "$(svc_kind "$s")" in
        redis)
            mkdir -p "$d/data"
            ;;
        postgres)
            local pgbin
            pgbin="$(svc_pg_bin)"
            [ -n "$pgbin" ] || svc_die "PostgreSQL binaries not found under /usr/lib/postgresql"
            printf '%s\n' "$pgbin" >"$d/pgbin"
            mkdir -p "$d/sock"
            if [ "$(id -u)" -eq 0 ]; then
                # PostgreSQL refuses to run as root: its files belong to user postgres.
                chown -R postgres:postgres "$d"
            fi
            if ! (cd / && svc_as_postgres "$pgbin/initdb" -D "$d/data" -A trust -U postgres \
                -E UTF8 --locale=C --no-sync) >"$ARBOR_TEST_SERVICES_DIR/$s-initdb.log" 2>&1; then
                svc_tail_logs "$ARBOR_TEST_SERVICES_DIR/$s-initdb.log"
                svc_die "initdb failed"
            fi
            cat >>"$d/data/postgresql.conf" <<EOF

# --- arbor test services ---
listen_addresses = '127.0.0.1'
port = $port
unix_socket_directories = '$d/sock'
max_connections = 200
# throwaway data: skip fsync (a killed server still recovers everything whose WAL was
# written, as the OS keeps it). The server's synchronous_commit stays on; the sink's own
# sessions turn it off (a killed server may then lose the last commits, cursor and rows
# alike, which the sink sends again: the outage tests kill it under load).
fsync = off
full_page_writes = off
EOF
            ;;
        neo4j)
            local classpath
            classpath="$(svc_neo4j_prepare)"
            printf '%s\n' "$classpath" >"$d/classpath"
            printf '%s\n' "$ARBOR_NEO4J_PASSWORD" >"$d/password"
            mkdir -p "$d/home"
            ;;
    esac
}

# Runs a command as user postgres when we are root, as ourselves otherwise.
svc_as_postgres() {
    if [ "$(id -u)" -eq 0 ]; then
        runuser -u postgres -- "$@"
    else
        "$@"
    fi
}

svc_port() { cat "$(svc_state "$1")/port"; }

# Prints the pid of the service's main process (empty if unknown).
svc_pid() {
    local d
    d="$(svc_state "$1")"
    case "$(svc_kind "$1")" in
        redis) [ -f "$d/redis.pid" ] && head -n 1 "$d/redis.pid" ;;
        postgres) [ -f "$d/data/postmaster.pid" ] && head -n 1 "$d/data/postmaster.pid" ;;
        neo4j) [ -f "$d/pid" ] && head -n 1 "$d/pid" ;;
    esac
    return 0
}

svc_running() { svc_pid_alive "$(svc_pid "$1")"; }

svc_logs() {
    local d
    d="$(svc_state "$1")"
    case "$(svc_kind "$1")" in
        redis) echo "$d/redis.log" ;;
        postgres) printf '%s\n' "$ARBOR_TEST_SERVICES_DIR/$1-pg_ctl.log" "$d/postgres.log" ;;
        neo4j) printf '%s\n' "$d/neo4j.log" "$d/home/logs/debug.log" ;;
    esac
}

# Launches the service in the background (returns at once; see svc_wait).
svc_start() {
    local s="$1" d port
    d="$(svc_state "$s")"
    [ -f "$d/port" ] || svc_die "$s was not set up in $ARBOR_TEST_SERVICES_DIR"
    port="$(svc_port "$s")"
    if svc_running "$s"; then
        svc_log "$s is already running (pid $(svc_pid "$s"), port $port)"
        return 0
    fi
    svc_log "starting $s on 127.0.0.1:$port"
    case "$(svc_kind "$s")" in
        redis)
            rm -f "$d/redis.pid"
            redis-server --bind 127.0.0.1 --port "$port" --dir "$d/data" --save '' --appendonly no \
                --daemonize yes --pidfile "$d/redis.pid" --logfile "$d/redis.log" </dev/null ||
                {
                    svc_tail_logs "$d/redis.log"
                    svc_die "redis-server failed to start"
                }
            ;;
        postgres)
            local pgbin
            pgbin="$(cat "$d/pgbin")"
            # The lock files a killed server leaves (postmaster.pid, and the socket's
            # .lock): nothing runs (checked above, children die with it), so drop them. A
            # killed postmaster is nobody's child here and stays a zombie until PID 1 reaps
            # it; PostgreSQL's own check, kill(pid, 0), takes a zombie for a live server
            # and refuses to start ("lock file … already exists").
            rm -f "$d/data/postmaster.pid" "$d/sock/.s.PGSQL.$port.lock"
            # -W: don't wait here, svc_wait does. pg_ctl puts the server in its own session.
            (cd / && svc_as_postgres "$pgbin/pg_ctl" -D "$d/data" -l "$d/postgres.log" -W -s start) \
                </dev/null >>"$ARBOR_TEST_SERVICES_DIR/$s-pg_ctl.log" 2>&1 ||
                {
                    svc_tail_logs "$ARBOR_TEST_SERVICES_DIR/$s-pg_ctl.log" "$d/postgres.log"
                    svc_die "pg_ctl start failed"
                }
            ;;
        neo4j)
            rm -f "$d/ready" "$d/pid"
            # Started from a subshell that exits at once, so the JVM is nobody's child job (like
            # the daemons redis-server and pg_ctl start). setsid: its own session, so a
            # terminal's Ctrl-C reaches with-services.sh (which then stops Neo4j cleanly), not
            # the JVM. All output goes to the log file so no caller's pipe is held open.
            (
                cd "$d" || exit 1
                # shellcheck disable=SC2086 # ARBOR_NEO4J_JAVA_OPTS is a list of flags
                setsid java \
                    -Xms256m "-Xmx$ARBOR_NEO4J_HEAP" -XX:+UseG1GC -XX:+ExitOnOutOfMemoryError \
                    -XX:TieredStopAtLevel=1 "-Darbor.neo4j.pagecache.mb=$ARBOR_NEO4J_PAGECACHE_MB" \
                    -XX:-OmitStackTraceInFastThrow -XX:+DisableExplicitGC \
                    --add-opens=java.base/java.nio=ALL-UNNAMED --add-opens=java.base/java.io=ALL-UNNAMED \
                    --add-opens=java.base/sun.nio.ch=ALL-UNNAMED -Dio.netty.tryReflectionSetAccessible=true \
                    -Djdk.nio.maxCachedBufferSize=1024 -Dlog4j2.disable.jmx=true -Dfile.encoding=UTF-8 \
                    ${ARBOR_NEO4J_JAVA_OPTS:-} \
                    -cp "$(cat "$d/classpath")" arbor.testservices.Launcher \
                        "$d/home" "$port" "$(cat "$d/password")" "$d/ready" \
                        </dev/null >>"$d/neo4j.log" 2>&1 &
                printf '%s\n' "$!" >"$d/pid"
            )
            ;;
    esac
}

# Succeeds when the service answers.
svc_ready() {
    local s="$1" d port
    d="$(svc_state "$s")"
    port="$(svc_port "$s")"
    case "$(svc_kind "$s")" in
        redis)
            [ "$(redis-cli -h 127.0.0.1 -p "$port" ping 2>/dev/null)" = "PONG" ]
            ;;
        postgres)
            "$(cat "$d/pgbin")/pg_isready" -q -h 127.0.0.1 -p "$port" -U postgres -d postgres
            ;;
        neo4j)
            [ -f "$d/ready" ] && svc_bolt_handshake "$port"
            ;;
    esac
}

# Waits until the service answers; on timeout or if its process died, prints its log and fails.
svc_wait() {
    local s="$1" timeout start now pid
    timeout="$(svc_timeout "$s")"
    start="$(date +%s)"
    while :; do
        if svc_ready "$s"; then
            svc_log "$s is up on 127.0.0.1:$(svc_port "$s") ($(($(date +%s) - start)) s)"
            return 0
        fi
        now="$(date +%s)"
        pid="$(svc_pid "$s")"
        # postgres writes its pid file a moment after pg_ctl returns; the others before.
        if [ -n "$pid" ] && ! svc_pid_alive "$pid"; then
            # shellcheck disable=SC2046
            svc_tail_logs $(svc_logs "$s")
            svc_die "$s (pid $pid) died while starting"
        fi
        if [ $((now - start)) -ge "$timeout" ]; then
            # shellcheck disable=SC2046
            svc_tail_logs $(svc_logs "$s")
            svc_die "$s did not answer on 127.0.0.1:$(svc_port "$s") within $timeout s"
        fi
        sleep 0.2
    done
}

# Waits up to $2 seconds for pid $1 to exit.
svc_wait_exit() {
    local pid="$1" i
    for ((i = 0; i < $2 * 10; i++)); do
        svc_pid_alive "$pid" || return 0
        sleep 0.1
    done
    ! svc_pid_alive "$pid"
}

# Graceful stop (no-op if not running).
svc_stop() {
    local s="$1" d pid
    d="$(svc_state "$s")"
    pid="$(svc_pid "$s")"
    if ! svc_pid_alive "$pid"; then
        svc_log "$s is not running"
        return 0
    fi
    svc_log "stopping $s (pid $pid)"
    case "$(svc_kind "$s")" in
        postgres)
            (cd / && svc_as_postgres "$(cat "$d/pgbin")/pg_ctl" -D "$d/data" -m fast -w -t 60 -s stop) \
                </dev/null >/dev/null 2>&1 || true
            ;;
        *)
            kill -TERM "$pid" 2>/dev/null || true
            ;;
    esac
    if ! svc_wait_exit "$pid" 60; then
        svc_log "$s (pid $pid) did not stop within 60 s; killing it"
        svc_kill "$s"
    fi
}

# kill -9 of the service's process (for postgres: the postmaster and its children).
svc_kill() {
    local s="$1" pid pids
    pid="$(svc_pid "$s")"
    if ! svc_pid_alive "$pid"; then
        svc_log "$s is not running"
        return 0
    fi
    pids="$pid"
    if [ "$(svc_kind "$s")" = postgres ]; then
        pids="$pid $(ps -o pid= --ppid "$pid" | tr '\n' ' ')"
    fi
    svc_log "killing $s (kill -9 $pids)"
    # shellcheck disable=SC2086
    kill -9 $pids 2>/dev/null || true
    svc_wait_exit "$pid" 10 || svc_die "$s (pid $pid) survived kill -9"
    if [ "$(svc_kind "$s")" = postgres ]; then
        local p
        for p in $pids; do svc_wait_exit "$p" 10 || true; done
    fi
}

# After the first start of instance $1: creates what the tests expect in it (postgres: the
# database $ARBOR_POSTGRES_DB).
svc_prepare() {
    local s="$1" d
    d="$(svc_state "$s")"
    case "$(svc_kind "$s")" in
        postgres)
            "$(cat "$d/pgbin")/psql" -X -q -v ON_ERROR_STOP=1 \
                -h 127.0.0.1 -p "$(svc_port "$s")" -U postgres -d postgres \
                -c "CREATE DATABASE $ARBOR_POSTGRES_DB" >/dev/null ||
                svc_die "could not create database $ARBOR_POSTGRES_DB in $s"
            ;;
    esac
}

# Prints the URL the tests connect to for instance $1 (Neo4j: user neo4j, password
# $ARBOR_NEO4J_PASSWORD).
svc_url() {
    local port
    port="$(svc_port "$1")"
    case "$(svc_kind "$1")" in
        redis) printf 'redis://127.0.0.1:%s/\n' "$port" ;;
        postgres) printf 'postgres://postgres@127.0.0.1:%s/%s\n' "$port" "$ARBOR_POSTGRES_DB" ;;
        neo4j) printf 'bolt://127.0.0.1:%s\n' "$port" ;;
    esac
}

# The extra instances (KIND@NAME) set up in $ARBOR_TEST_SERVICES_DIR, one a line.
svc_instances() {
    local f
    for f in "$ARBOR_TEST_SERVICES_DIR"/*@*/port; do
        [ -f "$f" ] || continue
        basename "$(dirname "$f")"
    done
}
