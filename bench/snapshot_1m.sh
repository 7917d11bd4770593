#!/usr/bin/env bash
# Snapshot and restore times for a Postgres database of 1,000,000 rows, through the
# reconciler's own code path.
#
# `db` (reconciler-test/postgres:15, `snapshot: pg_dump -Fc`) and `web`, which depends on it,
# are applied; ROWS rows are loaded into `db`; a commit that changes only `web` is applied,
# so the release takes a snapshot of `db` first (exec, stdout streamed to the state dir and
# hashed). The table is then dropped (the migration gone wrong) and brought back with
# `reconciler snapshots restore` (pg_restore --clean --single-transaction, file on stdin).
# Prints the snapshot's size and duration (as recorded), `snapshots verify` time (sha256 +
# pg_restore --list) and the restore time. No network: everything is local containers.
set -euo pipefail
cd "$(dirname "$0")/.."
ROWS=${ROWS:-1000000}
release="bench-snap-$$"
work=$(mktemp -d)
cleanup() {
  docker ps -aq --filter "label=io.reconciler.release=$release" | xargs -r docker rm -f >/dev/null
  docker network ls -q --filter "label=io.reconciler.release=$release" | xargs -r docker network rm >/dev/null
  docker volume ls -q --filter "label=io.reconciler.release=$release" | xargs -r docker volume rm -f >/dev/null
  rm -rf "$work"
}
trap cleanup EXIT

tests/images/build.sh postgres app >/dev/null
# RECONCILER_BIN=path skips the release build (e.g. to time a debug build; say so when quoting).
if [ -n "${RECONCILER_BIN:-}" ]; then
  bin=$RECONCILER_BIN
else
  cargo build --release --quiet
  bin=target/release/reconciler
fi
state="$work/state"
repo="$work/repo"
mkdir -p "$repo"
git -C "$repo" init -q -b main
commit() {
  cat >"$repo/release.yaml" <<YAML
version: 1
release: $release
volumes: { pgdata: {} }
services:
  db:
    image: reconciler-test/postgres:15
    environment: { POSTGRES_HOST_AUTH_METHOD: trust, POSTGRES_DB: app }
    volumes: ["pgdata:/var/lib/postgresql/data"]
    stop_grace_period: 30s
    health: { exec: { command: [pg_isready, -h, 127.0.0.1, -U, postgres, -d, app] }, interval: 300ms, deadline: 120s }
    snapshot:
      exec: [pg_dump, -Fc, -U, postgres, app]
      format: postgres-custom
      timeout: 30m
  web:
    image: reconciler-test/app:v1
    depends_on: [db]
    environment: { MODE: "$1" }
    stop_grace_period: 2s
    health: { http: { port: 8000, path: /health }, interval: 200ms, deadline: 30s }
YAML
  git -C "$repo" add -A
  git -C "$repo" -c user.name=bench -c user.email=bench@example.invalid commit -qm "$1"
}
rc() { "$bin" --state-dir "$state" "$@"; }
now() { date +%s.%N; }
secs() { python3 -c "print(f'{$2 - $1:.2f}')"; }
psql() { docker exec "$release-db" psql -U postgres -d app -v ON_ERROR_STOP=1 -qtAc "$1"; }

commit one
rc apply --repo "$repo" >/dev/null 2>&1
t0=$(now)
psql "CREATE TABLE events (id bigint PRIMARY KEY, at timestamptz NOT NULL, kind text NOT NULL, payload text NOT NULL)"
psql "INSERT INTO events SELECT g, now() - g * interval '1 second', 'kind-' || (g % 17), md5(g::text) FROM generate_series(1, $ROWS) g"
t1=$(now)
db_size=$(psql "SELECT pg_size_pretty(pg_database_size('app'))")
echo "loaded $ROWS rows in $(secs "$t0" "$t1") s (database $db_size)"

commit two
t0=$(now)
rc apply --repo "$repo" >/dev/null 2>&1
t1=$(now)
read -r id size ms <<<"$(rc snapshots list --output json | python3 -c '
import json, sys
s = json.load(sys.stdin)["snapshots"][-1]
print(s["id"], s["size"], s["duration_ms"])')"
echo "snapshot $id: $size bytes ($(python3 -c "print(f'{$size/1048576:.1f}')") MiB) in $(python3 -c "print(f'{$ms/1000:.2f}')") s (the whole apply: $(secs "$t0" "$t1") s)"

t0=$(now)
rc snapshots verify "$id" >"$work/verify.txt" || { cat "$work/verify.txt"; exit 1; }
t1=$(now)
echo "verify (sha256 + pg_restore --list): $(secs "$t0" "$t1") s"

psql "DROP TABLE events"
t0=$(now)
rc snapshots restore "$id" -- -U postgres -d app >/dev/null
t1=$(now)
count=$(psql "SELECT count(*) FROM events")
echo "restore (pg_restore --clean --single-transaction): $(secs "$t0" "$t1") s; rows back: $count"
[ "$count" = "$ROWS" ] || { echo "restore lost rows: $count of $ROWS" >&2; exit 1; }
