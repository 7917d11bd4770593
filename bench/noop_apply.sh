#!/usr/bin/env bash
# Wall time of a no-op `reconciler apply` against a 10-service release (every service already
# converged): what each poll of `reconciler run` costs when nothing changed.
# Prints: first apply time, then min/median/max of RUNS no-op applies.
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${RUNS:-10}
release="bench-noop-$$"
work=$(mktemp -d)
cleanup() {
  docker ps -aq --filter "label=io.reconciler.release=$release" | xargs -r docker rm -f >/dev/null
  docker network ls -q --filter "label=io.reconciler.release=$release" | xargs -r docker network rm >/dev/null
  docker volume ls -q --filter "label=io.reconciler.release=$release" | xargs -r docker volume rm >/dev/null
  rm -rf "$work"
}
trap cleanup EXIT

tests/images/build.sh busybox >/dev/null
cargo build --release --quiet
bin=target/release/reconciler

mkdir -p "$work/repo"
{
  echo "version: 1"
  echo "release: $release"
  echo "networks: { app: {} }"
  echo "services:"
  for i in $(seq 1 10); do
    echo "  svc$i:"
    echo "    image: reconciler-test/busybox:1"
    echo "    command: [sleep, '3600']"
    echo "    networks: [app]"
    echo "    environment: { INDEX: '$i' }"
    echo "    stop_grace_period: 1s"
  done
} >"$work/repo/release.yaml"
git -C "$work/repo" init -q -b main
git -C "$work/repo" add -A
git -C "$work/repo" -c user.name=bench -c user.email=bench@example.invalid commit -qm bench

ms() { echo $(( $(date +%s%N) / 1000000 )); }
t0=$(ms)
RECONCILER_LOG=warn "$bin" apply --repo "$work/repo" --state-dir "$work/state" >/dev/null
echo "first apply (10 services from nothing): $(( $(ms) - t0 )) ms"

times=()
for _ in $(seq 1 "$RUNS"); do
  t0=$(ms)
  RECONCILER_LOG=warn "$bin" apply --repo "$work/repo" --state-dir "$work/state" >/dev/null
  times+=($(( $(ms) - t0 )))
done
sorted=$(printf '%s\n' "${times[@]}" | sort -n)
min=$(echo "$sorted" | head -1); max=$(echo "$sorted" | tail -1)
median=$(echo "$sorted" | sed -n "$(( (RUNS + 1) / 2 ))p")
echo "no-op apply, 10 services, $RUNS runs: min ${min} ms, median ${median} ms, max ${max} ms"
