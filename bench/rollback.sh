#!/usr/bin/env bash
# How long `reconciler rollback` takes to restore the previous release, with the git remote
# unreachable (the commit is read from the cache under --state-dir/git/).
#
# A blue-green `web` behind nginx: v1 applied, then v2; the repo is moved away; then RUNS times:
# time `reconciler rollback` (v2 -> v1: start the other color, gate, switch, verify, drain,
# remove) and the time until 127.0.0.1:PORT/version first answers v1 (the switch); then the
# repo is put back, `resume` + `apply` roll forward to v2, and the repo is moved away again.
# Prints min/median/max of both. All traffic goes to 127.0.0.1.
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${RUNS:-5}
release="bench-rb-$$"
work=$(mktemp -d)
poller=""
cleanup() {
  [ -n "$poller" ] && kill "$poller" 2>/dev/null || true
  docker ps -aq --filter "label=io.reconciler.release=$release" | xargs -r docker rm -f >/dev/null
  docker network ls -q --filter "label=io.reconciler.release=$release" | xargs -r docker network rm >/dev/null
  rm -rf "$work"
}
trap cleanup EXIT

tests/images/build.sh app nginx >/dev/null
# RECONCILER_BIN=path skips the release build (e.g. to time a debug build; say so when quoting).
if [ -n "${RECONCILER_BIN:-}" ]; then
  bin=$RECONCILER_BIN
else
  cargo build --release --quiet
  bin=target/release/reconciler
fi
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')

repo="$work/repo"
mkdir -p "$repo"
cp examples/bluegreen/nginx.conf "$repo/nginx.conf"
spec() {
  cat <<YAML
version: 1
release: $release
networks: { edge: {} }
proxy:
  image: reconciler-test/nginx:1
  config: nginx.conf
  ports: ["127.0.0.1:$port:80"]
  networks: [edge]
  routes: { web: { service: web, port: 8000 } }
services:
  web:
    image: reconciler-test/app:$1
    strategy: blue-green
    networks: [edge]
    stop_grace_period: 2s
    health: { http: { port: 8000, path: /health }, interval: 200ms, deadline: 30s }
    verify: { path: /version, body: $1, deadline: 5s }
    drain: 5s
YAML
}
git -C "$repo" init -q -b main
commit() { spec "$1" >"$repo/release.yaml"; git -C "$repo" add -A; git -C "$repo" -c user.name=bench -c user.email=bench@example.invalid commit -qm "$1"; }
rc() { RECONCILER_LOG=warn RECONCILER_ACTOR=bench "$bin" "$@" --state-dir "$work/state"; }

commit v1
rc apply --repo "$repo" >/dev/null
commit v2
rc apply --repo "$repo" >/dev/null

ms() { echo $(( $(date +%s%N) / 1000000 )); }
rollback_ms=(); answer_ms=()
for _ in $(seq 1 "$RUNS"); do
  mv "$repo" "$work/gone"
  [ "$(curl -s --max-time 2 "http://127.0.0.1:$port/version")" = v2 ] || { echo "v2 is not serving" >&2; exit 1; }
  t0=$(ms)
  # First v1 answer, polled every ~20 ms for at most 60 s.
  ( end=$(( t0 + 60000 ))
    while [ "$(ms)" -lt "$end" ]; do
      if [ "$(curl -s --max-time 1 "http://127.0.0.1:$port/version")" = v1 ]; then
        echo $(( $(ms) - t0 )) >"$work/answer"; exit 0
      fi
      sleep 0.02
    done ) &
  poller=$!
  rc rollback >/dev/null
  rollback_ms+=($(( $(ms) - t0 )))
  wait "$poller"; poller=""
  answer_ms+=("$(cat "$work/answer")")
  mv "$work/gone" "$repo"
  rc resume >/dev/null
  rc apply --repo "$repo" >/dev/null
done

stats() {
  local sorted n
  sorted=$(printf '%s\n' "$@" | sort -n); n=$#
  echo "min $(echo "$sorted" | head -1) ms, median $(echo "$sorted" | sed -n "$(( (n + 1) / 2 ))p") ms, max $(echo "$sorted" | tail -1) ms"
}
echo "reconciler rollback v2 -> v1 (blue-green, remote unreachable), $RUNS runs: $(stats "${rollback_ms[@]}")"
echo "time until v1 answers through nginx, $RUNS runs: $(stats "${answer_ms[@]}")"
