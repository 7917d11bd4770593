#!/bin/sh
# shellcheck disable=SC3045  # busybox ash supports read -t
# One HTTP/1.x request on stdin/stdout (spawned per connection by `nc -ll -e`).
# Reads the whole request head before answering so the client never sees a
# connection reset for unread data.
CR=$(printf '\r')

respond() { # status-line body
    body="$2"
    printf 'HTTP/1.1 %s\r\nContent-Type: text/plain\r\nContent-Length: %s\r\nConnection: close\r\n\r\n%s' \
        "$1" "${#body}" "$body"
}

read -r -t 10 method path _proto || exit 0
while read -r -t 10 line; do
    line="${line%"$CR"}"
    [ -z "$line" ] && break
done
path="${path%%\?*}"

case "$method $path" in
    "GET /version")
        if [ "${APP_FAIL_VERIFY:-0}" = "1" ]; then
            respond "500 Internal Server Error" "verify failure (APP_FAIL_VERIFY=1)"
        else
            respond "200 OK" "${APP_VERSION:-$(cat /app/VERSION)}"
        fi ;;
    "GET /health")
        if [ "${APP_FAIL_HEALTH:-0}" = "1" ]; then
            respond "500 Internal Server Error" "unhealthy (APP_FAIL_HEALTH=1)"
        else
            respond "200 OK" "ok"
        fi ;;
    "GET /" )
        respond "200 OK" "reconciler-test app ${APP_VERSION:-$(cat /app/VERSION)}" ;;
    *)
        respond "404 Not Found" "not found" ;;
esac
