#!/usr/bin/env bash
# What a webhook receiver costs `reconciler apply`: wall time of one apply of a one-service
# release (reconciler-test/busybox:1) with
#   none    no `notifications:`;
#   live    one JSON target on 127.0.0.1 that answers 200 at once;
#   dead    the same target, but it accepts the connection and never answers.
# Delivery never blocks the deploy; the only cost of a dead receiver is apply's flush at exit,
# bounded by NOTIFY_FLUSH_DEADLINE (5 s, src/defaults.rs).
#
# Each variant applies a fresh release (labelled io.reconciler.test=1, removed on exit however
# the script exits). The receiver is a small Python server bound to 127.0.0.1 only.
# Environment: RUNS (3) applies per variant; the median is printed. Needs: docker, cargo, git,
# python3. Uses the debug build (timings are dominated by the engine and the flush).
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${RUNS:-3}
tests/images/build.sh busybox >/dev/null
cargo build --quiet --bin reconciler
bin="$PWD/target/debug/reconciler"
work=$(mktemp -d)
releases=()
pids=()
cleanup() {
  for r in "${releases[@]}"; do
    docker ps -aq --filter "label=io.reconciler.release=$r" | xargs -r docker rm -f >/dev/null 2>&1 || true
    docker network ls -q --filter "label=io.reconciler.release=$r" | xargs -r docker network rm >/dev/null 2>&1 || true
  done
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT

receiver() { # MODE PORTFILE: live answers 200, dead never answers
  python3 - "$1" "$2" <<'PY' &
import sys, time, socket, threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
mode, portfile = sys.argv[1], sys.argv[2]
class H(BaseHTTPRequestHandler):
    def log_message(self, *a): pass
    def do_POST(self):
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        if mode == "dead":
            time.sleep(3600)
        self.send_response(200); self.send_header("Content-Length", "0"); self.end_headers()
s = ThreadingHTTPServer(("127.0.0.1", 0), H)
s.daemon_threads = True
open(portfile, "w").write(str(s.server_address[1]))
s.serve_forever()
PY
  pids+=($!)
  for _ in $(seq 1 100); do [ -s "$2" ] && return; sleep 0.05; done
  echo "receiver did not start" >&2; exit 1
}

median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }

printf 'variant  median apply wall time (s) over %s runs\n' "$RUNS"
for variant in none live dead; do
  hook=""
  if [ "$variant" != none ]; then
    receiver "$variant" "$work/port-$variant"
    hook="http://127.0.0.1:$(cat "$work/port-$variant")/hook"
  fi
  times=()
  for i in $(seq 1 "$RUNS"); do
    rel="bench-notify-$variant-$i-$$"; rel=${rel:0:31}
    releases+=("$rel")
    repo="$work/$rel/ops"; mkdir -p "$repo"
    git -C "$repo" init -q -b main
    {
      printf 'version: 1\nrelease: %s\nservices:\n' "$rel"
      printf '  a: { image: "reconciler-test/busybox:1", command: [sleep, "600"], labels: { io.reconciler.test: "1" }, stop_grace_period: 1s }\n'
      if [ -n "$hook" ]; then
        printf 'notifications:\n  - { name: bench, format: json, url_env: BENCH_HOOK_URL }\n'
      fi
    } >"$repo/release.yaml"
    git -C "$repo" add -A
    git -C "$repo" -c user.name=bench -c user.email=bench@example.invalid commit -qm bench
    start=$(date +%s.%N)
    BENCH_HOOK_URL="$hook" RECONCILER_LOG=warn "$bin" --state-dir "$work/$rel/state" apply --repo "$repo" >/dev/null 2>"$work/$rel/stderr"
    end=$(date +%s.%N)
    times+=("$(echo "$end - $start" | bc -l)")
  done
  printf '%-7s  %.2f\n' "$variant" "$(printf '%s\n' "${times[@]}" | median)"
done
