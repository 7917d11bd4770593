#!/usr/bin/env bash
# A local container registry for tests that exercise real pulls.
#
# Usage: tests/images/registry.sh start|stop|status|port
#
# Runs Debian's `docker-registry` (distribution v2) on 127.0.0.1:PORT only.
# Docker allows plain-HTTP registries on 127.0.0.0/8, so a test can do
#   docker tag reconciler-test/app:v1 127.0.0.1:5959/reconciler-test/app:v1
#   docker push 127.0.0.1:5959/reconciler-test/app:v1
# and have the reconciler pull it back.
#
# Environment:
#   RECONCILER_TEST_REGISTRY_PORT  listen port (default 5959)
#   RECONCILER_TEST_REGISTRY_DIR   state dir: config, storage, pid, log
#                                  (default $RECONCILER_TEST_CACHE/registry-PORT)
#   RECONCILER_TEST_CACHE          (default /var/cache/reconciler-test)
set -euo pipefail

PORT="${RECONCILER_TEST_REGISTRY_PORT:-5959}"
CACHE="${RECONCILER_TEST_CACHE:-/var/cache/reconciler-test}"
DIR="${RECONCILER_TEST_REGISTRY_DIR:-$CACHE/registry-$PORT}"
PIDFILE="$DIR/registry.pid"
LOGFILE="$DIR/registry.log"
CONFIG="$DIR/config.yml"
URL="http://127.0.0.1:$PORT/v2/"
START_TIMEOUT_S=15

log() { echo "[registry] $*" >&2; }
die() { echo "[registry] ERROR: $*" >&2; exit 1; }

# answers: the registry API answers on $URL
answers() {
    curl -fsS --max-time 2 -o /dev/null "$URL" 2>/dev/null
}

running_pid() {
    local pid
    [[ -f "$PIDFILE" ]] || return 1
    pid=$(cat "$PIDFILE")
    [[ -n "$pid" ]] && kill -0 "$pid" 2>/dev/null || return 1
    echo "$pid"
}

start() {
    if answers; then
        log "already answering on $URL"
        echo "$PORT"
        return 0
    fi
    command -v docker-registry >/dev/null || die "docker-registry is not installed (apt-get install docker-registry)"
    mkdir -p "$DIR/storage"
    exec 9>"$DIR/start.lock"
    flock 9
    if answers; then  # started by a concurrent caller while we waited
        echo "$PORT"
        return 0
    fi
    if pid=$(running_pid); then
        log "pid $pid exists but does not answer yet; waiting for it"
    else
        cat >"$CONFIG" <<EOF
version: 0.1
log:
  level: warn
storage:
  filesystem:
    rootdirectory: $DIR/storage
  delete:
    enabled: true
http:
  addr: 127.0.0.1:$PORT
EOF
        # Detach fully (own session, no inherited stdio) so a caller that
        # captures our output (a test's Command::output) does not hang.
        setsid docker-registry serve "$CONFIG" </dev/null >>"$LOGFILE" 2>&1 &
        echo $! >"$PIDFILE"
        log "started docker-registry (pid $!) on 127.0.0.1:$PORT, storage $DIR/storage"
    fi
    local deadline=$((SECONDS + START_TIMEOUT_S))
    until answers; do
        if ! running_pid >/dev/null; then
            tail -n 20 "$LOGFILE" >&2 || true
            die "docker-registry exited during start (log: $LOGFILE)"
        fi
        ((SECONDS < deadline)) || die "registry did not answer on $URL within ${START_TIMEOUT_S}s (log: $LOGFILE)"
        sleep 0.1
    done
    log "ready: $URL"
    echo "$PORT"
}

stop() {
    local pid
    if ! pid=$(running_pid); then
        log "not running (no live pid in $PIDFILE)"
        rm -f "$PIDFILE"
        return 0
    fi
    kill "$pid"
    local deadline=$((SECONDS + 10))
    while kill -0 "$pid" 2>/dev/null; do
        if ((SECONDS >= deadline)); then
            log "pid $pid did not exit on SIGTERM; sending SIGKILL"
            kill -9 "$pid" 2>/dev/null || true
            break
        fi
        sleep 0.1
    done
    rm -f "$PIDFILE"
    log "stopped (pid $pid)"
}

status() {
    if answers; then
        log "answering on $URL"
    else
        log "not answering on $URL"
        return 1
    fi
}

case "${1:-}" in
    start) start ;;
    stop) stop ;;
    status) status ;;
    port) echo "$PORT" ;;
    *) echo "usage: $0 start|stop|status|port" >&2; exit 2 ;;
esac
