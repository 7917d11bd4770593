#!/usr/bin/env bash
# Run the whole test suite: build the local test images (idempotent, fast when
# they exist), then every test target. Needs a running Docker daemon and the
# packages listed in README.md (debootstrap, busybox-static, docker-registry).
#
# Environment:
#   RECONCILER_TEST_THREADS  parallel tests per test binary (default 2: the
#                            Docker-backed tests are I/O bound but share one
#                            daemon, and CI machines have 2 cores)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

THREADS="${RECONCILER_TEST_THREADS:-2}"
REGISTRY="$ROOT/tests/images/registry.sh"

# Stop the local registry at the end if a test started it (not if it was
# already running before this script).
registry_was_running=0
if "$REGISTRY" status >/dev/null 2>&1; then registry_was_running=1; fi

finish() {
    local rc=$?
    if [[ "$registry_was_running" == "0" ]]; then
        "$REGISTRY" stop >/dev/null 2>&1 || true
    fi
    # Tests must clean up after themselves: report what is left. Only a
    # report, never a removal: the Docker daemon may be shared with other
    # test runs (other checkouts) whose containers carry the same label.
    local leaked
    leaked=$(docker ps -a --filter label=io.reconciler.test=1 \
        --format '{{.ID}} {{.Names}} {{.Status}}' 2>/dev/null || true)
    if [[ -n "$leaked" ]]; then
        echo "[test.sh] WARNING: containers labelled io.reconciler.test=1 remain" \
            "(a leak, or another test run on this daemon):" >&2
        echo "$leaked" >&2
    fi
    exit "$rc"
}
trap finish EXIT

echo "[test.sh] building test images"
"$ROOT/tests/images/build.sh"

echo "[test.sh] cargo test --all-targets (test threads: $THREADS)"
cargo test --all-targets -- --test-threads="$THREADS"
