#!/bin/sh
# shellcheck disable=SC2317  # on_term is invoked by trap
# reconciler-test/app entrypoint (PID 1 inside the container).
#
# Behaviour switches (environment):
#   APP_VERSION=vN       override the baked-in version (/app/VERSION)
#   APP_CRASH=1          exit 1 immediately
#   APP_START_DELAY=N    sleep N seconds before listening
#   APP_FAIL_HEALTH=1    GET /health answers 500   (checked per request)
#   APP_FAIL_VERIFY=1    GET /version answers 500  (checked per request)
#   APP_PORT=N           listen port (default 8000)
#
# PID 1 ignores signals that have no handler, so TERM/INT are trapped here
# and the listener (a child process) is killed explicitly: `docker stop`
# returns at once instead of waiting for the SIGKILL timeout.
set -u

log() { echo "app[$(cat /app/VERSION)]: $*"; }

if [ "${APP_CRASH:-0}" = "1" ]; then
    log "APP_CRASH=1: exiting with status 1"
    exit 1
fi

child=""
on_term() {
    log "signal received, stopping"
    [ -n "$child" ] && kill "$child" 2>/dev/null
    exit 0
}
trap on_term TERM INT QUIT

delay="${APP_START_DELAY:-0}"
if [ "$delay" != "0" ]; then
    log "APP_START_DELAY=$delay: sleeping before listening"
    sleep "$delay" &
    child=$!
    wait "$child"
    child=""
fi

port="${APP_PORT:-8000}"
log "listening on :$port (version ${APP_VERSION:-$(cat /app/VERSION)})"
# -ll: persistent server, one forked handler per connection (concurrent).
nc -ll -p "$port" -e /app/handler.sh &
child=$!
wait "$child"
status=$?
log "listener exited with status $status"
exit "$status"
