#!/usr/bin/env bash
# Build a container image of reconciler itself, without a registry or a
# builder: the project's Debian bookworm rootfs (tests/images/build.sh debian,
# a cached debootstrap) plus git and ca-certificates (apt-get in a throwaway
# container, kept as the image reconciler-runtime:bookworm), plus the binary,
# committed as the image.
#
# Usage: scripts/image.sh [BINARY]
#   BINARY  the reconciler binary to put in the image (default: the release
#           build, target/release/reconciler; run `cargo build --release`).
#
# Environment:
#   RECONCILER_IMAGE        tag to build (default reconciler:local)
#   RECONCILER_IMAGE_LABEL  an extra key=value label on the image (tests use it)
#   RECONCILER_TEST_CACHE   cache of the rootfs and .debs (as tests/images/build.sh)
#   RECONCILER_TEST_REBUILD=1  rebuild reconciler-runtime:bookworm too
#   CARGO_TARGET_DIR        honoured when locating the default binary
#
# Run it (the state dir on a volume, the release repo by URL or mounted):
#   docker run -d --name reconciler \
#       -v /var/run/docker.sock:/var/run/docker.sock \
#       -v reconciler-state:/var/lib/reconciler \
#       reconciler:local run --repo https://git.example/ops/shop.git
# Mounting the Docker socket gives the container full control of the engine,
# which is root on the host: treat this container as you would root.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
TARGET="${CARGO_TARGET_DIR:-$ROOT/target}"
BINARY="${1:-$TARGET/release/reconciler}"
IMAGE="${RECONCILER_IMAGE:-reconciler:local}"
EXTRA_LABEL="${RECONCILER_IMAGE_LABEL:-}"
CACHE="${RECONCILER_TEST_CACHE:-/var/cache/reconciler-test}"
REBUILD="${RECONCILER_TEST_REBUILD:-0}"
DEBIAN="reconciler-test/debian:bookworm"
RUNTIME="reconciler-runtime:bookworm"
RUNTIME_PACKAGES=(git ca-certificates)

log() { echo "[image] $*" >&2; }
die() { echo "[image] ERROR: $*" >&2; exit 1; }

CIDS=()
cleanup() {
    local c
    for c in "${CIDS[@]}"; do docker rm -f "$c" >/dev/null 2>&1 || true; done
}
trap cleanup EXIT

image_exists() { docker image inspect "$1" >/dev/null 2>&1; }

[[ -f "$BINARY" ]] || die "no binary at $BINARY (fix: cargo build --release, or pass the binary's path)"
[[ -x "$BINARY" ]] || die "$BINARY is not executable"
command -v docker >/dev/null || die "docker CLI not found"
docker version >/dev/null 2>&1 || die "cannot reach the Docker daemon"

start=$(date +%s.%N)

"$ROOT/tests/images/build.sh" debian

if [[ "$REBUILD" == "1" ]] || ! image_exists "$RUNTIME"; then
    archives="$CACHE/apt-archives"
    mkdir -p "$archives/partial"
    log "$RUNTIME: apt-get install ${RUNTIME_PACKAGES[*]} on $DEBIAN"
    cid=$(docker create --label io.reconciler.build=1 \
        -v "$archives:/var/cache/apt/archives" \
        -e DEBIAN_FRONTEND=noninteractive \
        "$DEBIAN" bash -euo pipefail -c '
            # No fsync per unpacked file: a throwaway container, committed after.
            echo force-unsafe-io >/etc/dpkg/dpkg.cfg.d/unsafe-io
            apt-get update -q >/tmp/apt.log 2>&1 || { cat /tmp/apt.log; exit 1; }
            apt-get install -y -q --no-install-recommends "$@" >>/tmp/apt.log 2>&1 \
                || { tail -n 40 /tmp/apt.log; exit 1; }
            # Repositories are mounted from the host, owned by some other uid;
            # git and libgit2 would refuse them as "dubious ownership".
            git config --system --add safe.directory "*"
            rm -rf /etc/dpkg/dpkg.cfg.d/unsafe-io /var/lib/apt/lists/* /var/cache/apt/*.bin /tmp/apt.log
        ' install "${RUNTIME_PACKAGES[@]}")
    CIDS+=("$cid")
    docker start -a "$cid" >&2 || die "apt-get install in a $DEBIAN container failed (output above)"
    docker commit --change "LABEL io.reconciler.image=runtime" "$cid" "$RUNTIME" >/dev/null
    docker rm -f "$cid" >/dev/null
else
    log "$RUNTIME: present, skipping"
fi

version=$("$BINARY" --version 2>/dev/null | awk '{ print $2 }') || version=""
revision=$(git -C "$ROOT" rev-parse HEAD 2>/dev/null) || revision=""
changes=(
    --change 'ENTRYPOINT ["/usr/local/bin/reconciler"]'
    --change 'CMD ["--help"]'
    --change 'WORKDIR /'
    --change "LABEL org.opencontainers.image.title=reconciler"
    --change "LABEL org.opencontainers.image.version=${version:-unknown}"
    --change "LABEL org.opencontainers.image.revision=${revision:-unknown}"
)
[[ -n "$EXTRA_LABEL" ]] && changes+=(--change "LABEL $EXTRA_LABEL")

log "$IMAGE: adding $BINARY"
cid=$(docker create --label io.reconciler.build=1 "$RUNTIME")
CIDS+=("$cid")
docker cp "$BINARY" "$cid:/usr/local/bin/reconciler"
docker commit "${changes[@]}" "$cid" "$IMAGE" >/dev/null
docker rm -f "$cid" >/dev/null

# The binary's shared libraries must resolve in the image.
docker run --rm --label io.reconciler.build=1 "$IMAGE" --version >&2 \
    || die "$IMAGE: the binary does not run in the image (missing libraries? see above)"

end=$(date +%s.%N)
size=$(docker image inspect -f '{{.Size}}' "$IMAGE" | awk '{ printf "%.1f MB", $1 / 1000000 }')
log "$IMAGE: $size, built in $(awk -v a="$start" -v b="$end" 'BEGIN { printf "%.1f s", b - a }')"
echo "$IMAGE"
