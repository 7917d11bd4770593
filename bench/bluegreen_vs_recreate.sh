#!/usr/bin/env bash
# Failed requests during an image change (reconciler-test/app v1 -> v2) under continuous load:
#   recreate    the app's port published directly, `strategy: recreate` (what
#               `docker compose up -d` does: stop the old container, start the new one);
#   blue-green  the app behind the reconciler's nginx proxy, `strategy: blue-green`.
# Prints both failure counts side by side and the time breakdown of the blue-green apply.
#
# Load: bin reconciler-load (src/bin/reconciler-load.rs), GET /version on 127.0.0.1 only,
# bounded by MAX_DURATION and a request budget. Per variant: apply v1, start the load, wait for
# WARMUP requests, commit v2, time `reconciler apply`, keep the load running for AFTER more
# requests, stop it, read its JSON report.
#
# If blue-green is not in this build yet (the spec is rejected or its apply fails), the script
# says so and still prints the recreate figures. Everything it creates carries the release
# label and is removed on exit, however the script exits.
#
# Environment: CONCURRENCY (8), WARMUP (500), AFTER (2000), MAX_DURATION (90s),
#   VARIANTS ("recreate blue-green"), CARGO_TARGET_DIR (target),
#   BIN_DIR (unset: build with cargo; set: use the reconciler and reconciler-load binaries in
#   it as they are, e.g. a copy of an earlier release build, to compare two builds),
#   KEEP_WORK=1 (keep the temp dir with the repos, apply logs and load reports; the
#   containers are removed regardless).
# Needs: docker, cargo, git, curl, jq.
set -euo pipefail
cd "$(dirname "$0")/.."

CONCURRENCY=${CONCURRENCY:-8}
WARMUP=${WARMUP:-500}
AFTER=${AFTER:-2000}
MAX_DURATION=${MAX_DURATION:-90s}
VARIANTS=${VARIANTS:-"recreate blue-green"}
# Far more than MAX_DURATION allows at this app's ~400 req/s: the duration is the real bound.
MAX_REQUESTS=100000

log() { echo "[bench] $*" >&2; }
die() { echo "[bench] ERROR: $*" >&2; exit 1; }
ms() { echo $(($(date +%s%N) / 1000000)); }

for tool in docker cargo git curl jq; do
    command -v "$tool" >/dev/null || die "$tool is not installed (jq: apt-get install jq)"
done

work=$(mktemp -d "${TMPDIR:-/tmp}/reconciler-bench.XXXXXX")
declare -A RELEASE=([recreate]="bench-recreate-$$" [blue-green]="bench-bg-$$")
LOAD_PIDS=()

cleanup() {
    local pid rel
    # Our own load generators only, by pid (they stop by themselves anyway).
    for pid in "${LOAD_PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    for rel in "${RELEASE[@]}"; do
        docker ps -aq --filter "label=io.reconciler.release=$rel" | xargs -r docker rm -f >/dev/null 2>&1 || true
        docker network ls -q --filter "label=io.reconciler.release=$rel" | xargs -r docker network rm >/dev/null 2>&1 || true
        docker volume ls -q --filter "label=io.reconciler.release=$rel" | xargs -r docker volume rm -f >/dev/null 2>&1 || true
    done
    if [[ "${KEEP_WORK:-0}" == 1 ]]; then log "kept $work"; else rm -rf "$work"; fi
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

if [[ -n "${BIN_DIR:-}" ]]; then
    log "using the binaries in $BIN_DIR (no build); building the test images (app, nginx)"
    bin_dir=$BIN_DIR
else
    log "building (cargo build --release) and the test images (app, nginx)"
    cargo build --release --quiet --bin reconciler --bin reconciler-load
    bin_dir=${CARGO_TARGET_DIR:-target}/release
fi
RECONCILER="$bin_dir/reconciler"
LOAD="$bin_dir/reconciler-load"
[[ -x "$RECONCILER" && -x "$LOAD" ]] || die "binaries not found under $bin_dir"
tests/images/build.sh app nginx 2>"$work/images.log" || { cat "$work/images.log" >&2; die "tests/images/build.sh failed"; }

# A free port on 127.0.0.1: bind port 0 and release it (the kernel does not hand it out again
# at once).
free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

git_in() { git -C "$1" -c user.name=bench -c user.email=bench@example.invalid "${@:2}"; }

write_spec() { # variant dir port image
    local variant=$1 dir=$2 port=$3 image=$4 rel=${RELEASE[$1]}
    if [[ "$variant" == recreate ]]; then
        cat >"$dir/release.yaml" <<EOF
version: 1
release: $rel
services:
  web:
    image: $image
    ports: ["127.0.0.1:$port:8000"]
    health: { http: { port: 8000, path: /health } }
    stop_grace_period: 2s
EOF
    else
        cat >"$dir/release.yaml" <<EOF
version: 1
release: $rel
networks: { edge: {} }
proxy:
  image: reconciler-test/nginx:1
  config: nginx.conf
  ports: ["127.0.0.1:$port:80"]
  networks: [edge]
  routes: { web: { service: web, port: 8000 } }
services:
  web:
    image: $image
    strategy: blue-green
    networks: [edge]
    health: { http: { port: 8000, path: /health } }
    verify: { path: /version, body: ${image##*:} }
    drain: 5s
EOF
        # The reconciler writes upstreams.conf (upstream "web" -> the live colour).
        cat >"$dir/nginx.conf" <<'EOF'
user www-data;
worker_processes 1;
pid /run/nginx.pid;
error_log /dev/stderr warn;
events { worker_connections 1024; }
http {
    access_log off;
    include /etc/nginx/reconciler/upstreams.conf;
    server {
        listen 80;
        location / { proxy_pass http://web; }
    }
}
EOF
    fi
}

# apply variant label -> runs `reconciler apply` with JSON logs; output in $out/apply-<label>.*
apply() {
    local out=$1 label=$2 start rc=0
    start=$(ms)
    "$RECONCILER" --log-format json apply --repo "$out/repo" --state-dir "$out/state" \
        >"$out/apply-$label.out" 2>"$out/apply-$label.log" || rc=$?
    echo $(($(ms) - start)) >"$out/apply-$label.ms"
    return "$rc"
}

# Why an apply failed, in one line: the last error-ish log message, else stderr's last line.
apply_error() {
    local log=$1
    jq -Rr 'fromjson? | select(.level == "ERROR" or .level == "WARN")
            | (.fields.error // .fields.message // empty)' "$log" 2>/dev/null | tail -n 1 | grep . \
        || grep -v '^{' "$log" | tail -n 1 || true
}

progress() { jq -r ".$2 // 0" "$1/progress.json" 2>/dev/null || echo 0; }

# wait_requests out n -> waits until the load completed n requests (false if it ended first).
wait_requests() {
    local out=$1 n=$2 pid=$3
    while (($(progress "$out" total) < n)); do
        kill -0 "$pid" 2>/dev/null || return 1
        sleep 0.1
    done
}

# run_variant variant -> 0 with $work/<variant>/report.json, or 1 with the reason in .../error.
run_variant() {
    local variant=$1 out="$work/$1" port pid start_total
    mkdir -p "$out/repo"
    fail() { echo "$*" >"$out/error"; log "$variant: $*"; }
    port=$(free_port)
    git_in "$out/repo" init -q -b main || { fail "git init failed"; return 1; }
    write_spec "$variant" "$out/repo" "$port" reconciler-test/app:v1
    { git_in "$out/repo" add -A && git_in "$out/repo" commit -qm v1; } || { fail "git commit failed"; return 1; }

    log "$variant: apply v1 (127.0.0.1:$port)"
    if ! apply "$out" v1; then
        fail "apply v1 failed: $(apply_error "$out/apply-v1.log")"
        return 1
    fi
    local deadline=$(($(ms) + 30000))
    until [[ "$(curl -s --max-time 2 "http://127.0.0.1:$port/version" || true)" == v1 ]]; do
        (($(ms) < deadline)) || { fail "v1 never answered on 127.0.0.1:$port/version"; return 1; }
        sleep 0.1
    done

    local load_start
    load_start=$(ms)
    "$LOAD" --port "$port" --path /version --concurrency "$CONCURRENCY" \
        --max-requests "$MAX_REQUESTS" --max-duration "$MAX_DURATION" \
        --until-file "$out/stop" --progress-file "$out/progress.json" \
        >"$out/report.json" 2>"$out/load.err" &
    pid=$!
    LOAD_PIDS+=("$pid")
    if ! wait_requests "$out" "$WARMUP" "$pid"; then
        fail "the load stopped before $WARMUP warm-up requests: $(cat "$out/load.err")"
        return 1
    fi

    log "$variant: load running ($(progress "$out" total) requests so far); apply v2"
    write_spec "$variant" "$out/repo" "$port" reconciler-test/app:v2
    git_in "$out/repo" commit -qam v2 || { fail "git commit failed"; return 1; }
    local apply_rc=0
    # On the load's clock (its report's times are ms since it started), to line the outage up
    # with the apply.
    echo $(($(ms) - load_start)) >"$out/apply-v2.at"
    apply "$out" v2 || apply_rc=$?
    start_total=$(progress "$out" total)
    log "$variant: apply v2 exited $apply_rc after $(cat "$out/apply-v2.ms") ms; $AFTER more requests"
    wait_requests "$out" $((start_total + AFTER)) "$pid" \
        || log "$variant: the load hit its bound (MAX_DURATION=$MAX_DURATION) first"
    touch "$out/stop"
    wait "$pid" || { fail "reconciler-load failed: $(cat "$out/load.err")"; return 1; }
    jq -e . "$out/report.json" >/dev/null || { fail "no load report"; return 1; }
    if ((apply_rc != 0)); then
        fail "apply v2 failed (exit $apply_rc): $(apply_error "$out/apply-v2.log")"
        return 1
    fi
}

# r variant jq-filter -> a figure from the variant's load report, or n/a.
r() {
    local f="$work/$1/report.json"
    if [[ -s "$f" ]]; then jq -r "$2" "$f"; else echo n/a; fi
}
apply_ms() { cat "$work/$1/apply-v2.ms" 2>/dev/null || echo n/a; }
apply_ms_text() { local t; t=$(apply_ms "$1"); [[ "$t" == n/a ]] && echo n/a || echo "$t ms"; }

# steps log -> "step service duration_ms" per finished step of the apply's JSON log. Fields may
# sit on the event or on its span, depending on how the step is logged.
steps() {
    jq -Rr 'fromjson? | select((.fields.message // .message) == "step done")
        | [ (.fields.step // .span.step // .step // .fields.action // .span.action // "?"),
            (.fields.service // .span.service // .service // "-"),
            (.fields.duration_ms // .duration_ms // 0) ] | @tsv' "$1"
}

per_step() { # variant
    local log="$work/$1/apply-v2.log"
    [[ -s "$log" ]] || return 0
    echo
    echo "$1 apply v2, per step (from the JSON log):"
    steps "$log" | awk -F'\t' '{ printf "  %-16s %-8s %7d ms\n", $1, $2, $3 }'
}

breakdown() { # variant
    local log="$work/$1/apply-v2.log" total
    total=$(apply_ms "$1")
    [[ -s "$log" ]] || return 0
    echo
    echo "$1 apply v2, time breakdown:"
    # Classify by step name; the blue-green step names are matched loosely on purpose, as the
    # feature is still being built.
    steps "$log" | awk -F'\t' -v total="$total" '
        function add(k, v) { sum[k] += v }
        { s = tolower($1); d = $3 + 0 }
        s ~ /pull/                          { add("pull", d); next }
        s ~ /^(create|start)$/ || s ~ /start/ { add("start", d); next }
        s ~ /gate|verify|health/            { add("gate", d); next }
        s ~ /switch|route|reload|proxy/     { add("switch", d); next }
        s ~ /drain/                         { add("drain", d); next }
        s ~ /stop|remove|rename/            { add("old", d); next }
                                            { add("other", d) }
        END {
            printf "  container start (create+start) %7d ms\n", sum["start"]
            printf "  gate passed (health + verify)  %7d ms\n", sum["gate"]
            printf "  switched (proxy)               %7d ms\n", sum["switch"]
            printf "  drained                        %7d ms\n", sum["drain"]
            printf "  old removed (stop+remove)      %7d ms\n", sum["old"]
            if (sum["pull"] + sum["other"] > 0)
                printf "  pull / other steps             %7d ms\n", sum["pull"] + sum["other"]
            printf "  apply wall time                %7d ms\n", total
            printf "  reconciler overhead            %7d ms  (wall time - gate wait - drain)\n",
                total - sum["gate"] - sum["drain"]
        }'
}

declare -A STATUS
for variant in $VARIANTS; do
    [[ -n "${RELEASE[$variant]:-}" ]] || die "unknown variant '$variant' (recreate, blue-green)"
    if run_variant "$variant"; then
        STATUS[$variant]=ok
    else
        STATUS[$variant]="FAILED: $(cat "$work/$variant/error" 2>/dev/null || echo unknown)"
    fi
    # Free the host port and the CPU before the next variant.
    docker ps -aq --filter "label=io.reconciler.release=${RELEASE[$variant]}" | xargs -r docker rm -f >/dev/null 2>&1 || true
done

echo
echo "== image change v1 -> v2 under load: GET /version on 127.0.0.1, concurrency $CONCURRENCY =="
printf '%-34s' ""
for v in $VARIANTS; do printf '%-22s' "$v"; done
echo
row() { # label jq-filter
    printf '%-34s' "$1"
    for v in $VARIANTS; do printf '%-22s' "$(r "$v" "$2")"; done
    echo
}
row "requests" '.total'
row "failures" '"\(.failures) (\(if .total > 0 then (.failures * 10000 / .total | floor) / 100 else 0 end)%)"'
row "  non-2xx" '.non_2xx'
row "  connection errors" '.connect_errors'
row "  other (empty/reset/timeout)" '.other_errors'
row "    of which timeouts (5 s)" '.timeouts'
row "failed sends (load clock)" 'if .first_failure_ms then "\(.first_failure_ms)..\(.last_failure_ms) ms" else "-" end'
row "responses v1" '.by_body.v1 // 0'
row "responses v2" '.by_body.v2 // 0'
row "v2 first answered at" 'if .first_seen_ms.v2 then "\(.first_seen_ms.v2) ms" else "-" end'
row "load req/s" '.requests_per_sec'
printf '%-34s' "apply v2 wall time"
for v in $VARIANTS; do printf '%-22s' "$(apply_ms_text "$v")"; done
echo
printf '%-34s' "apply v2 ran at (load clock)"
for v in $VARIANTS; do
    if [[ -s "$work/$v/apply-v2.at" && -s "$work/$v/apply-v2.ms" ]]; then
        at=$(cat "$work/$v/apply-v2.at")
        printf '%-22s' "$at..$((at + $(cat "$work/$v/apply-v2.ms"))) ms"
    else
        printf '%-22s' n/a
    fi
done
echo

for v in $VARIANTS; do
    if [[ "${STATUS[$v]}" != ok ]]; then
        echo
        if [[ "$v" == blue-green ]]; then
            echo "blue-green: NOT MEASURED. This build of reconciler cannot deploy it yet:"
        else
            echo "$v: NOT MEASURED:"
        fi
        echo "  ${STATUS[$v]#FAILED: }"
    fi
done
for v in $VARIANTS; do
    [[ "${STATUS[$v]}" == ok ]] || continue
    per_step "$v"
    if [[ "$v" == blue-green ]]; then breakdown "$v"; fi
done
for v in $VARIANTS; do
    if [[ "${STATUS[$v]}" == ok ]] && [[ "$(r "$v" .failures)" != 0 ]]; then
        echo
        echo "$v failure samples:"
        r "$v" '.first_failures[]' | sed 's/^/  /'
    fi
done
