#!/usr/bin/env bash
# Time from `reconciler apply` start to a changed Prometheus rule being active (`configs:`
# pushed into the running container, POST /-/reload, `ready:`), and the apply's own time.
#
# reconciler-test/prometheus:1 with a rules directory; v0 applied, then RUNS times: commit a
# new recording rule, start `apply`, poll 127.0.0.1:PORT/api/v1/rules every ~20 ms until the
# new rule is listed. Prints min/median/max of both. All traffic goes to 127.0.0.1.
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${RUNS:-5}
release="bench-cfg-$$"
work=$(mktemp -d)
cleanup() {
  docker ps -aq --filter "label=io.reconciler.release=$release" | xargs -r docker rm -f >/dev/null
  docker volume ls -q --filter "label=io.reconciler.release=$release" | xargs -r docker volume rm >/dev/null
  docker network ls -q --filter "label=io.reconciler.release=$release" | xargs -r docker network rm >/dev/null
  rm -rf "$work"
}
trap cleanup EXIT

tests/images/build.sh prometheus >/dev/null
# RECONCILER_BIN=path skips the release build (e.g. to time a debug build; say so when quoting).
if [ -n "${RECONCILER_BIN:-}" ]; then
  bin=$RECONCILER_BIN
else
  cargo build --release --quiet
  bin=target/release/reconciler
fi
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')

repo="$work/repo"
mkdir -p "$repo/monitoring/rules"
cat >"$repo/release.yaml" <<YAML
version: 1
release: $release
volumes: { prom-data: {} }
services:
  prometheus:
    image: reconciler-test/prometheus:1
    ports: ["127.0.0.1:$port:9090"]
    volumes: ["prom-data:/prometheus"]
    health: { http: { port: 9090, path: /-/ready }, interval: 200ms, deadline: 60s }
    configs:
      - { source: monitoring/prometheus.yml, target: /etc/prometheus/prometheus.yml, kind: prometheus }
      - { source: monitoring/rules/, target: /etc/prometheus/rules/, kind: prometheus-rules }
    reload: { http: { port: 9090, path: /-/reload } }
    ready: { http: { port: 9090, path: /-/ready }, interval: 100ms, deadline: 30s }
YAML
cat >"$repo/monitoring/prometheus.yml" <<'YAML'
global: { scrape_interval: 5s, evaluation_interval: 5s }
rule_files: ["/etc/prometheus/rules/*.yml"]
scrape_configs:
  - job_name: prometheus
    static_configs: [{ targets: ["localhost:9090"] }]
YAML
rules() { printf 'groups:\n  - name: bench\n    rules:\n      - record: bench:up:%s\n        expr: up\n' "$1" >"$repo/monitoring/rules/bench.yml"; }
git -C "$repo" init -q -b main
commit() { rules "$1"; git -C "$repo" add -A; git -C "$repo" -c user.name=bench -c user.email=bench@example.invalid commit -qm "$1"; }
rc() { RECONCILER_LOG=warn RECONCILER_ACTOR=bench "$bin" "$@" --state-dir "$work/state"; }

commit r0
rc apply --repo "$repo" >/dev/null

ms() { echo $(( $(date +%s%N) / 1000000 )); }
active_ms=(); apply_ms=()
for i in $(seq 1 "$RUNS"); do
  commit "r$i"
  rm -f "$work/active"
  t0=$(ms)
  ( end=$(( t0 + 60000 ))
    while [ "$(ms)" -lt "$end" ]; do
      if curl -s --max-time 1 "http://127.0.0.1:$port/api/v1/rules" | grep -q "bench:up:r$i\""; then
        echo $(( $(ms) - t0 )) >"$work/active"; exit 0
      fi
      sleep 0.02
    done ) &
  poller=$!
  rc apply --repo "$repo" >/dev/null
  apply_ms+=( $(( $(ms) - t0 )) )
  wait "$poller" || true
  [ -s "$work/active" ] || { echo "run $i: rule bench:up:r$i never became active" >&2; exit 1; }
  active_ms+=( "$(cat "$work/active")" )
done

stats() { printf '%s\n' "$@" | sort -n | awk '{a[NR]=$1} END {printf "min %d ms, median %d ms, max %d ms", a[1], a[int((NR+1)/2)], a[NR]}'; }
echo "config reload, $RUNS runs ($bin):"
echo "  apply start -> new rule active in Prometheus: $(stats "${active_ms[@]}")"
echo "  whole apply (push, reload, ready):           $(stats "${apply_ms[@]}")"
