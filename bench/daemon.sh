#!/usr/bin/env bash
# The daemon's reaction time and idle cost, with the release build:
#   webhook -> apply start   a commit, then a signed webhook (curl + openssl); time from just
#                            before the request to the daemon's `applying` log line;
#   commit -> apply start    `run --watch`: time from the end of `git commit` to `applying`;
#   idle CPU and RSS         `run` on examples/quickstart (interval 30 s, endpoint on) after its
#                            first apply, over IDLE seconds: CPU seconds (utime + stime from
#                            /proc) and resident memory (VmRSS, peak VmHWM).
# Latencies are the median (and min/max) of ROUNDS commits; each commit changes the app's
# environment, so each one is a real apply (recreate), and the next round starts after the
# previous apply finished. Apply-start times come from the daemon's JSON logs
# (`--log-format json`), whose clock is this host's.
#
# Environment: ROUNDS (5), IDLE (180, seconds), PROFILE (release; `dev` to skip the release
#   build), CARGO_TARGET_DIR (target), KEEP_WORK=1 (keep logs and repos).
# Everything runs on 127.0.0.1; containers carry the release label and are removed on exit.
# Needs: docker, cargo, git, curl, openssl, jq, python3.
set -euo pipefail
cd "$(dirname "$0")/.."

ROUNDS=${ROUNDS:-5}
IDLE=${IDLE:-180}
PROFILE=${PROFILE:-release}

log() { echo "[bench] $*" >&2; }
die() { echo "[bench] ERROR: $*" >&2; exit 1; }

for tool in docker cargo git curl openssl jq python3; do
    command -v "$tool" >/dev/null || die "$tool is not installed"
done

work=$(mktemp -d "${TMPDIR:-/tmp}/reconciler-bench-daemon.XXXXXX")
RELEASES=("bench-hook-$$" "bench-watch-$$" "bench-idle-$$")
PIDS=()

cleanup() {
    local pid rel
    # Only the daemons this script started, by pid.
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
    for rel in "${RELEASES[@]}"; do
        docker ps -aq --filter "label=io.reconciler.release=$rel" | xargs -r docker rm -f >/dev/null 2>&1 || true
        docker network ls -q --filter "label=io.reconciler.release=$rel" | xargs -r docker network rm >/dev/null 2>&1 || true
        docker volume ls -q --filter "label=io.reconciler.release=$rel" | xargs -r docker volume rm -f >/dev/null 2>&1 || true
    done
    if [[ "${KEEP_WORK:-0}" == 1 ]]; then log "kept $work"; else rm -rf "$work"; fi
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

target_dir=${CARGO_TARGET_DIR:-target}
if [[ "$PROFILE" == release ]]; then
    log "building (cargo build --release)"
    cargo build --release --quiet --bin reconciler
    BIN="$target_dir/release/reconciler"
else
    cargo build --quiet --bin reconciler
    BIN="$target_dir/debug/reconciler"
fi
[[ -x "$BIN" ]] || die "$BIN not found"
tests/images/build.sh busybox app 2>"$work/images.log" || { cat "$work/images.log" >&2; die "tests/images/build.sh failed"; }

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}
now_ms() { echo $(($(date +%s%N) / 1000000)); }
ts_ms() { echo $(($(date -d "$1" +%s%N) / 1000000)); }
git_in() { git -C "$1" -c user.name=bench -c user.email=bench@example.invalid "${@:2}"; }

# The JSON log's first `message` line for `revision`, as its timestamp; waits up to 60 s.
wait_line() { # log message revision
    local file=$1 msg=$2 rev=$3 ts="" i
    for ((i = 0; i < 600; i++)); do
        ts=$(jq -rR --arg m "$msg" --arg r "$rev" \
            'fromjson? | select(.fields.message == $m and (.fields.revision // .span.revision) == $r) | .timestamp' \
            "$file" 2>/dev/null | head -n1 || true)
        [[ -n "$ts" ]] && { echo "$ts"; return 0; }
        sleep 0.1
    done
    tail -n 20 "$file" >&2
    die "no '$msg' for $rev in $file"
}

stats() { # numbers... -> "median min max"
    printf '%s\n' "$@" | sort -n | awk '{ v[NR] = $1 } END { m = (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2; printf "%s %s %s", m, v[1], v[NR] }'
}

app_spec() { # release port round
    cat <<EOF
version: 1
release: $1
services:
  web:
    image: reconciler-test/app:v1
    ports: ["127.0.0.1:$2:8000"]
    environment: { ROUND: "$3" }
    stop_grace_period: 1s
    health: { http: { port: 8000, path: /health }, interval: 100ms, deadline: 10s }
EOF
}

start_daemon() { # name args...
    local name=$1
    shift
    "$BIN" run --state-dir "$work/$name/state" --log-format json "$@" 2>"$work/$name.log" >/dev/null &
    PIDS+=($!)
    echo $!
}

# ---- webhook -> apply start -------------------------------------------------------------
secret_file="$work/webhook.secret"
openssl rand -hex 32 >"$secret_file"
hook_repo="$work/hook-repo"
mkdir -p "$hook_repo"
git_in "$hook_repo" init -q -b main
app_port=$(free_port)
app_spec "${RELEASES[0]}" "$app_port" 0 >"$hook_repo/release.yaml"
git_in "$hook_repo" add -A && git_in "$hook_repo" commit -qm round0
port=$(free_port)
start_daemon hook --repo "$hook_repo" --ref main --interval 1h --listen "127.0.0.1:$port" \
    --webhook-secret-file "$secret_file" >/dev/null
wait_line "$work/hook.log" applied "$(git_in "$hook_repo" rev-parse HEAD)" >/dev/null
hook_ms=()
for ((r = 1; r <= ROUNDS; r++)); do
    app_spec "${RELEASES[0]}" "$app_port" "$r" >"$hook_repo/release.yaml"
    git_in "$hook_repo" commit -qam "round $r"
    rev=$(git_in "$hook_repo" rev-parse HEAD)
    body='{"ref":"refs/heads/main"}'
    sig=$(printf '%s' "$body" | openssl dgst -sha256 -hmac "$(cat "$secret_file")" | sed 's/^.*= //')
    t0=$(now_ms)
    curl -sS --fail-with-body -o /dev/null -X POST "http://127.0.0.1:$port/webhook" \
        -H 'Content-Type: application/json' -H 'X-GitHub-Event: push' \
        -H "X-Hub-Signature-256: sha256=$sig" --data "$body"
    t1=$(ts_ms "$(wait_line "$work/hook.log" applying "$rev")")
    hook_ms+=($((t1 - t0)))
    wait_line "$work/hook.log" applied "$rev" >/dev/null
    log "webhook round $r: $((t1 - t0)) ms"
done

# ---- commit -> apply start with --watch -------------------------------------------------
watch_repo="$work/watch-repo"
mkdir -p "$watch_repo"
git_in "$watch_repo" init -q -b main
app_port=$(free_port)
app_spec "${RELEASES[1]}" "$app_port" 0 >"$watch_repo/release.yaml"
git_in "$watch_repo" add -A && git_in "$watch_repo" commit -qm round0
start_daemon watch --repo "$watch_repo" --interval 1h --watch --listen off >/dev/null
wait_line "$work/watch.log" applied "$(git_in "$watch_repo" rev-parse HEAD)" >/dev/null
watch_ms=()
for ((r = 1; r <= ROUNDS; r++)); do
    app_spec "${RELEASES[1]}" "$app_port" "$r" >"$watch_repo/release.yaml"
    git_in "$watch_repo" add -A
    git_in "$watch_repo" commit -qm "round $r"
    t0=$(now_ms)
    rev=$(git_in "$watch_repo" rev-parse HEAD)
    t1=$(ts_ms "$(wait_line "$work/watch.log" applying "$rev")")
    watch_ms+=($((t1 - t0)))
    wait_line "$work/watch.log" applied "$rev" >/dev/null
    log "watch round $r: $((t1 - t0)) ms"
done

# ---- idle CPU and memory on the quickstart ----------------------------------------------
idle_repo="$work/idle-repo"
mkdir -p "$idle_repo"
git_in "$idle_repo" init -q -b main
web_port=$(free_port)
cp -r examples/quickstart/. "$idle_repo/"
sed -i -e "s/^release: quickstart/release: ${RELEASES[2]}/" -e "s/127.0.0.1:18080:8000/127.0.0.1:$web_port:8000/" "$idle_repo/release.yaml"
git_in "$idle_repo" add -A && git_in "$idle_repo" commit -qm quickstart
port=$(free_port)
pid=$(start_daemon idle --repo "$idle_repo" --interval 30s --listen "127.0.0.1:$port")
wait_line "$work/idle.log" applied "$(git_in "$idle_repo" rev-parse HEAD)" >/dev/null
hz=$(getconf CLK_TCK)
cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$pid/stat"; }
c0=$(cpu_ticks)
log "idle: measuring for ${IDLE}s (the quickstart applied; polls every 30 s, /metrics scraped every 15 s)"
for ((s = 0; s < IDLE; s += 15)); do
    sleep 15
    curl -sS -o /dev/null "http://127.0.0.1:$port/metrics"
done
c1=$(cpu_ticks)
rss_kb=$(awk '/^VmRSS/ { print $2 }' "/proc/$pid/status")
hwm_kb=$(awk '/^VmHWM/ { print $2 }' "/proc/$pid/status")
cycles=$(curl -sS "http://127.0.0.1:$port/metrics" | awk '/^reconciler_reconcile_total\{/ { n += $2 } END { print n + 0 }')

read -r hm hmin hmax <<<"$(stats "${hook_ms[@]}")"
read -r wm wmin wmax <<<"$(stats "${watch_ms[@]}")"
cpu_s=$(awk -v t=$((c1 - c0)) -v hz="$hz" 'BEGIN { printf "%.2f", t / hz }')
cpu_pct=$(awk -v t=$((c1 - c0)) -v hz="$hz" -v d="$IDLE" 'BEGIN { printf "%.3f", 100 * t / hz / d }')
echo "reconciler run ($PROFILE build), $ROUNDS rounds each"
printf '  webhook -> apply start:   median %s ms (min %s, max %s)\n' "$hm" "$hmin" "$hmax"
printf '  commit -> apply start:    median %s ms (min %s, max %s) with --watch\n' "$wm" "$wmin" "$wmax"
printf '  idle over %ss on examples/quickstart (interval 30s, endpoint on, %s cycles in all):\n' "$IDLE" "$cycles"
printf '    CPU %s s (%s%% of one core), RSS %s MiB (peak %s MiB)\n' "$cpu_s" "$cpu_pct" \
    "$(awk -v k="$rss_kb" 'BEGIN { printf "%.1f", k / 1024 }')" "$(awk -v k="$hwm_kb" 'BEGIN { printf "%.1f", k / 1024 }')"
