#!/usr/bin/env bash
# Requests/s of the test app (reconciler-test/app:v1, a shell per connection) at concurrency 4,
# 8 and 16, 3,000 requests each, with reconciler-load on 127.0.0.1: the ceiling the blue-green
# load tests run under.
set -euo pipefail
cd "$(dirname "$0")/.."
tests/images/build.sh app >/dev/null
cargo build --release --quiet --bin reconciler-load
name="bench-throughput-$$"
trap 'docker rm -f "$name" >/dev/null 2>&1 || true' EXIT
docker run -d --name "$name" --label io.reconciler.test=1 -p 127.0.0.1::8000 reconciler-test/app:v1 >/dev/null
port=$(docker port "$name" 8000/tcp | head -1 | sed 's/.*://')
for _ in $(seq 1 100); do
  curl -sf "http://127.0.0.1:$port/health" >/dev/null && break
  sleep 0.1
done
printf 'concurrency  requests  failures  req/s\n'
for c in 4 8 16; do
  target/release/reconciler-load --port "$port" --path /version --concurrency "$c" \
    --max-requests 3000 --max-duration 60s |
    python3 -c 'import json,sys; r=json.load(sys.stdin); print(f"{sys.argv[1]:>11}  {r["total"]:>8}  {r["failures"]:>8}  {r["requests_per_sec"]:>5.0f}")' "$c"
done
