#!/usr/bin/env bash
# The reconciler's own overhead in a blue-green deploy, without load, against the floor the
# engine and nginx set for the same work.
#
# Part 1 (reconciler): ROUNDS applies of alternating image changes (reconciler-test/app v1 <->
# v2) behind the reconciler's nginx proxy, `strategy: blue-green`. Per apply: wall time, the
# step durations from the JSON log, and overhead = wall - gate wait (health + verify) - drain,
# as bench/bluegreen_vs_recreate.sh computes it under load.
#
# Part 2 (floor, bench/bluegreen_floor.py): the same engine and nginx operations done by hand,
# ROUNDS times, each request timed alone: create + start the
# new color on the network, upload the upstream file into nginx, `nginx -t` (exec create, start,
# inspect), the process listing before SIGHUP, SIGHUP, listings until a new worker runs and
# no old one accepts (what the reconciler waits for), then stop + remove the old color. The
# gate and the drain are left out, as in the overhead. What the reconciler spends above this
# floor is its own: starting the process, reading git, parsing and validating the spec,
# observing, planning, the journal and history, and the gaps between requests.
#
# Prints both medians and their difference. Everything carries the release label and is
# removed on exit. Probes and requests go only to the engine's socket and 127.0.0.1.
#
# Environment: ROUNDS (9), RECONCILER_BIN (unset: cargo build --release), DOCKER_SOCK
#   (/var/run/docker.sock), KEEP_WORK=1 keeps the temp dir with the logs.
# Needs: docker, jq, git, python3.
set -euo pipefail
cd "$(dirname "$0")/.."

ROUNDS=${ROUNDS:-9}
SOCK=${DOCKER_SOCK:-/var/run/docker.sock}
REL="bench-overhead-$$"
LABEL="io.reconciler.release=$REL"
log() { echo "[bench] $*" >&2; }
die() { echo "[bench] ERROR: $*" >&2; exit 1; }
for tool in docker jq git python3; do command -v "$tool" >/dev/null || die "$tool is not installed"; done

work=$(mktemp -d "${TMPDIR:-/tmp}/reconciler-overhead.XXXXXX")
cleanup() {
    docker ps -aq --filter "label=$LABEL" | xargs -r docker rm -f >/dev/null 2>&1 || true
    docker network ls -q --filter "label=$LABEL" | xargs -r docker network rm >/dev/null 2>&1 || true
    if [[ "${KEEP_WORK:-0}" == 1 ]]; then log "kept $work"; else rm -rf "$work"; fi
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

if [[ -n "${RECONCILER_BIN:-}" ]]; then
    RECONCILER=$RECONCILER_BIN
else
    log "building (cargo build --release)"
    cargo build --release --quiet --bin reconciler
    RECONCILER=${CARGO_TARGET_DIR:-target}/release/reconciler
fi
[[ -x "$RECONCILER" ]] || die "no reconciler binary at $RECONCILER"
tests/images/build.sh app nginx 2>"$work/images.log" || { cat "$work/images.log" >&2; die "tests/images/build.sh failed"; }

median() { sort -n | awk '{ v[NR] = $1 } END { if (NR == 0) print "n/a"; else print v[int((NR + 1) / 2)] }'; }
ms_now() { echo $(($(date +%s%N) / 1000000)); }

# ---- part 1: the reconciler ---------------------------------------------------------------
port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
repo="$work/repo"
mkdir -p "$repo"
git_in() { git -C "$repo" -c user.name=bench -c user.email=bench@example.invalid "$@"; }
git_in init -q -b main
cat >"$repo/nginx.conf" <<'EOF'
user www-data;
worker_processes 1;
pid /run/nginx.pid;
error_log /dev/stderr warn;
events { worker_connections 1024; }
http {
    access_log off;
    include /etc/nginx/reconciler/upstreams.conf;
    server { listen 80; location / { proxy_pass http://web; } }
}
EOF
commit_version() {
    cat >"$repo/release.yaml" <<EOF
version: 1
release: $REL
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
    health: { http: { port: 8000, path: /health } }
    verify: { path: /version, body: $1 }
    drain: 5s
EOF
    git_in add -A
    git_in commit -qm "$1"
}
apply() { # label
    "$RECONCILER" --log-format json apply --repo "$repo" --state-dir "$work/state" \
        >"$work/apply-$1.out" 2>"$work/apply-$1.log"
}
commit_version v1
apply v1-initial || die "the first apply failed: $(tail -n 3 "$work/apply-v1-initial.log")"

printf '%-8s %7s %7s %7s %7s %7s %7s %7s %7s  %s\n' apply wall start gate switch drain remove other overhead "(ms; start = create+start, gate = health+verify, other = wall - steps)" \
    >"$work/reconciler.txt"
for i in $(seq 1 "$ROUNDS"); do
    version=v$(((i % 2) + 1))
    commit_version "$version"
    t0=$(ms_now)
    apply "$i" || die "apply $i failed: $(tail -n 3 "$work/apply-$i.log")"
    wall=$(($(ms_now) - t0))
    jq -Rr 'fromjson? | select(.fields.message == "step done") | [.span.step, .fields.duration_ms] | @tsv' \
        "$work/apply-$i.log" | awk -F'\t' -v wall="$wall" -v i="$i" '
        { d[$1] += $2; sum += $2 }
        END {
            start = d["create"] + d["start"]; gate = d["gate"] + d["verify"]
            printf "%-8s %7d %7d %7d %7d %7d %7d %7d %7d\n", i, wall, start, gate, d["switch"],
                d["drain"], d["remove"], wall - sum, wall - gate - d["drain"]
        }' >>"$work/reconciler.txt"
done

# ---- part 2: the floor ----------------------------------------------------------------------
# In Python (bench/bluegreen_floor.py): one process, so what is timed is the engine's answers,
# not the start-up of a curl and a jq per request.
cp "$repo/nginx.conf" "$work/floor-nginx.conf"
python3 bench/bluegreen_floor.py "$SOCK" "$REL" "$ROUNDS" "$work/floor-nginx.conf" >"$work/floor.txt" \
    || die "the floor run failed"

echo
echo "== blue-green apply without load, $ROUNDS rounds (reconciler $("$RECONCILER" --version)) =="
cat "$work/reconciler.txt"
echo
echo "== the same engine and nginx work done by hand (the floor), $ROUNDS rounds =="
cat "$work/floor.txt"
overhead=$(awk 'NR > 1 { print $9 }' "$work/reconciler.txt" | median)
floor=$(awk 'NR > 1 { print $8 }' "$work/floor.txt" | median)
echo
printf 'median reconciler overhead (wall - gate - drain)  %5s ms\n' "$overhead"
printf 'median engine + nginx floor for the same work     %5s ms\n' "$floor"
printf "the reconciler's own share (difference)           %5s ms\n" "$((overhead - floor))"
