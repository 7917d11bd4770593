#!/usr/bin/env bash
# Quickstart: converge this Docker host to examples/quickstart/release.yaml,
# the GitOps way. It
#   1. builds the demo images locally (no registry needed),
#   2. turns examples/quickstart/ into a git repository under the state dir,
#   3. builds reconciler (release),
#   4. runs `reconciler apply` against that repository, then `reconciler diff`
#      to show the host is in sync.
# Re-running is safe: images are kept, the repository gets a new commit only
# when the example changed, and apply is idempotent.
#
# Environment:
#   RECONCILER_STATE_DIR  state dir (default ~/.local/state/reconciler)
#   CARGO_TARGET_DIR      honoured when locating the built binary
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
STATE_DIR="${RECONCILER_STATE_DIR:-$HOME/.local/state/reconciler}"
REPO="$STATE_DIR/quickstart-repo"
EXAMPLE="$ROOT/examples/quickstart"

step() { echo; echo "==> $*"; }
die() { echo "quickstart: ERROR: $*" >&2; exit 1; }

command -v docker >/dev/null || die "docker CLI not found"
docker version >/dev/null 2>&1 || die "cannot reach the Docker daemon"
command -v cargo >/dev/null || die "cargo not found (install the Rust toolchain)"
command -v git >/dev/null || die "git not found"
[[ -f "$EXAMPLE/release.yaml" ]] || die "missing $EXAMPLE/release.yaml"

step "Building demo images (reconciler-test/busybox:1, reconciler-test/app:v1..v3)"
"$ROOT/tests/images/build.sh" busybox app

step "Preparing the GitOps repository $REPO"
mkdir -p "$REPO"
if [[ ! -d "$REPO/.git" ]]; then
    git init --quiet "$REPO"
fi
# The example is the desired state: mirror it (tracked files only, no .git).
find "$REPO" -mindepth 1 -maxdepth 1 ! -name .git -exec rm -rf {} +
cp -R "$EXAMPLE/." "$REPO/"
git -C "$REPO" add -A
if git -C "$REPO" diff --cached --quiet && git -C "$REPO" rev-parse --verify -q HEAD >/dev/null; then
    echo "repository already at the example's content ($(git -C "$REPO" rev-parse --short HEAD))"
else
    git -C "$REPO" \
        -c user.name="reconciler quickstart" -c user.email="quickstart@localhost" \
        commit --quiet -m "quickstart: release from examples/quickstart"
    echo "committed $(git -C "$REPO" rev-parse --short HEAD)"
fi

step "Building reconciler (cargo build --release)"
(cd "$ROOT" && cargo build --release)
BIN="${CARGO_TARGET_DIR:-$ROOT/target}/release/reconciler"
[[ -x "$BIN" ]] || die "built binary not found at $BIN"

step "reconciler apply --repo $REPO"
"$BIN" --state-dir "$STATE_DIR" apply --repo "$REPO"

step "reconciler diff --repo $REPO (expect: in sync)"
"$BIN" --state-dir "$STATE_DIR" diff --repo "$REPO"

cat <<MSG

Done. The host now runs release 'quickstart':
  curl http://127.0.0.1:18080/version     # -> v1
  docker ps --filter label=io.reconciler.release=quickstart
Try a GitOps change: edit $REPO/release.yaml (e.g. image reconciler-test/app:v2),
commit it, and run:
  $BIN --state-dir $STATE_DIR diff --repo $REPO
  $BIN --state-dir $STATE_DIR apply --repo $REPO
MSG
