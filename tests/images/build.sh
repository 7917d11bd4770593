#!/usr/bin/env bash
# Build the local test images used by reconciler's integration tests, the CI
# script and the quickstart example. No container registry is needed: root
# filesystems are assembled from Debian packages and `docker import`ed, and
# derived images are made with `docker create` + `docker cp` + `docker commit`
# (no builder, no BuildKit).
#
# Usage: tests/images/build.sh [IMAGE...]
#   IMAGE is one of: busybox app debian nginx packages prometheus
#   alertmanager postgres redis   (default: all)
#
# prometheus, alertmanager, postgres and redis are tagged from one shared
# image, reconciler-test/packages:bookworm-2 (the debian image plus Debian's
# prometheus, prometheus-alertmanager, postgresql-15 and redis-server packages,
# installed by apt-get in a container: one download, one layer on disk).
#
# Idempotent: an image that already exists (`docker image inspect`) is
# skipped. Set RECONCILER_TEST_REBUILD=1 to rebuild the named images anyway.
# Concurrent runs (parallel test binaries) serialize on a lock file.
#
# Environment:
#   RECONCILER_TEST_CACHE   cache dir (default /var/cache/reconciler-test);
#                           keeps the Debian rootfs tarball so a re-import
#                           after `docker rmi` needs no debootstrap, and
#                           the downloaded .debs (apt-archives/) so a
#                           rebuild of the packages image downloads nothing.
#   RECONCILER_TEST_REBUILD=1  rebuild even if the image exists.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
CACHE="${RECONCILER_TEST_CACHE:-/var/cache/reconciler-test}"
REBUILD="${RECONCILER_TEST_REBUILD:-0}"
TEST_LABEL="io.reconciler.test=1"
ALL_IMAGES=(busybox app debian nginx packages prometheus alertmanager postgres redis)

IMG_BUSYBOX="reconciler-test/busybox:1"
IMG_APP="reconciler-test/app"      # tags v1 v2 v3
APP_VERSIONS=(v1 v2 v3)
IMG_DEBIAN="reconciler-test/debian:bookworm"
IMG_NGINX="reconciler-test/nginx:1"
# The tag changes with SERVICE_PACKAGES: images are rebuilt only when their tag is missing.
IMG_PACKAGES="reconciler-test/packages:bookworm-2"
IMG_PROMETHEUS="reconciler-test/prometheus:1"
IMG_ALERTMANAGER="reconciler-test/alertmanager:1"
IMG_POSTGRES="reconciler-test/postgres:15"
IMG_REDIS="reconciler-test/redis:7"
# Debian packages in $IMG_PACKAGES (no recommends).
SERVICE_PACKAGES=(prometheus prometheus-alertmanager postgresql-15 redis-server)

log() { echo "[images] $*" >&2; }

# Things to remove when the script exits, however it exits.
CLEANUP_PATHS=()
CLEANUP_CIDS=()
cleanup() {
    local c p
    for c in "${CLEANUP_CIDS[@]}"; do docker rm -f "$c" >/dev/null 2>&1 || true; done
    for p in "${CLEANUP_PATHS[@]}"; do rm -rf "$p"; done
}
trap cleanup EXIT

# scratch_dir -> a new temporary directory, removed at exit
scratch_dir() {
    local d
    d=$(mktemp -d "${TMPDIR:-/tmp}/reconciler-images.XXXXXX")
    CLEANUP_PATHS+=("$d")
    echo "$d"
}
die() { echo "[images] ERROR: $*" >&2; exit 1; }

image_exists() { docker image inspect "$1" >/dev/null 2>&1; }

# need_build IMAGE -> 0 if IMAGE must be built
need_build() {
    if [[ "$REBUILD" == "1" ]] || ! image_exists "$1"; then
        return 0
    fi
    log "$1: present, skipping"
    return 1
}

image_size() {
    docker image inspect -f '{{.Size}}' "$1" | awk '{ printf "%.1f MB", $1 / 1000000 }'
}

# timed NAME FUNCTION: run FUNCTION and print how long it took.
timed() {
    local name="$1" fn="$2" start end
    start=$(date +%s.%N)
    "$fn"
    end=$(date +%s.%N)
    log "$name: done in $(awk -v a="$start" -v b="$end" 'BEGIN { printf "%.1f s", b - a }')"
}

# derive_image BASE IMAGE SRC_DIR [CREATE_ARGS...] -- [CHANGES...]
# Makes IMAGE from BASE plus the files under SRC_DIR (copied to /), with the
# given `docker commit --change` instructions, without running anything.
derive_image() {
    local base="$1" image="$2" src="$3"
    shift 3
    local -a create_args=() changes=()
    while (($#)); do
        if [[ "$1" == "--" ]]; then shift; break; fi
        create_args+=("$1"); shift
    done
    for c in "$@"; do changes+=(--change "$c"); done
    local cid
    cid=$(docker create --label "$TEST_LABEL" "${create_args[@]}" "$base")
    CLEANUP_CIDS+=("$cid")
    docker cp "$src/." "$cid:/"
    docker commit "${changes[@]}" --change "LABEL $TEST_LABEL" "$cid" "$image" >/dev/null
    docker rm -f "$cid" >/dev/null
}

# Debian mirror as configured on this host (never hard-coded here).
debian_mirror() {
    local uri=""
    if [[ -f /etc/apt/sources.list.d/debian.sources ]]; then
        # deb822: first stanza whose Suites are not *-security.
        uri=$(awk '
            function flush() { if (uris != "" && suites !~ /-security/ && out == "") { split(uris, u, " "); out = u[1] } uris = ""; suites = "" }
            /^[[:space:]]*$/ { flush(); next }
            /^URIs:/   { sub(/^URIs:[[:space:]]*/, ""); uris = $0 }
            /^Suites:/ { sub(/^Suites:[[:space:]]*/, ""); suites = $0 }
            END { flush(); print out }
        ' /etc/apt/sources.list.d/debian.sources)
    fi
    if [[ -z "$uri" && -f /etc/apt/sources.list ]]; then
        uri=$(awk '$1 == "deb" {
                i = 2; if ($2 ~ /^\[/) { while ($i !~ /\]$/) i++; i++ }
                if ($(i+1) !~ /-security/) { print $i; exit }
            }' /etc/apt/sources.list)
    fi
    [[ -n "$uri" ]] || die "cannot find a Debian mirror in /etc/apt/sources.list.d/debian.sources or /etc/apt/sources.list"
    echo "$uri"
}

# Path to a statically linked busybox binary (from Debian's busybox-static).
static_busybox() {
    if dpkg-query -W -f '${Status}' busybox-static 2>/dev/null | grep -q 'ok installed' \
        && [[ -x /bin/busybox ]]; then
        echo /bin/busybox
        return
    fi
    # Not installed: fetch the .deb into the cache and extract it.
    local dir="$CACHE/busybox-static"
    if [[ ! -x "$dir/bin/busybox" ]]; then
        log "busybox-static not installed; downloading the .deb with apt-get download"
        mkdir -p "$dir"
        (cd "$dir" && apt-get download busybox-static >&2)
        dpkg-deb -x "$dir"/busybox-static_*.deb "$dir"
    fi
    echo "$dir/bin/busybox"
}

# Lay out a minimal busybox root filesystem in $1.
busybox_rootfs() {
    local root="$1" bb applet
    bb=$(static_busybox)
    if ldd "$bb" >/dev/null 2>&1; then
        die "$bb is dynamically linked; install busybox-static"
    fi
    mkdir -p "$root"/{bin,sbin,usr/bin,usr/sbin,etc,tmp,root,proc,sys,dev,var/tmp,var/run,data}
    chmod 1777 "$root/tmp" "$root/var/tmp"
    install -m 0755 "$bb" "$root/bin/busybox"
    while read -r applet; do
        [[ "$applet" == "bin/busybox" ]] && continue
        ln -sf /bin/busybox "$root/$applet"
    done < <("$bb" --list-full)
    cat >"$root/etc/passwd" <<'EOF'
root:x:0:0:root:/root:/bin/sh
nobody:x:65534:65534:nobody:/nonexistent:/bin/false
EOF
    cat >"$root/etc/group" <<'EOF'
root:x:0:
nogroup:x:65534:
EOF
}

# --- images -----------------------------------------------------------------

build_busybox() {
    need_build "$IMG_BUSYBOX" || return 0
    log "$IMG_BUSYBOX: assembling rootfs from the busybox-static binary"
    local tmp
    tmp=$(scratch_dir)
    busybox_rootfs "$tmp/root"
    tar -C "$tmp/root" --numeric-owner --owner=0 --group=0 -cf "$tmp/rootfs.tar" .
    docker import \
        --change "LABEL $TEST_LABEL" \
        --change 'CMD ["sh"]' \
        --message "reconciler test busybox" \
        "$tmp/rootfs.tar" "$IMG_BUSYBOX" >/dev/null
    log "$IMG_BUSYBOX: $(image_size "$IMG_BUSYBOX")"
}

build_app() {
    local v missing=0
    for v in "${APP_VERSIONS[@]}"; do
        if [[ "$REBUILD" == "1" ]] || ! image_exists "$IMG_APP:$v"; then missing=1; fi
    done
    if [[ "$missing" == "0" ]]; then
        log "$IMG_APP:{${APP_VERSIONS[*]}}: present, skipping"
        return 0
    fi
    image_exists "$IMG_BUSYBOX" || build_busybox
    local tmp
    tmp=$(scratch_dir)
    for v in "${APP_VERSIONS[@]}"; do
        need_build "$IMG_APP:$v" || continue
        log "$IMG_APP:$v: deriving from $IMG_BUSYBOX"
        rm -rf "$tmp/files"
        mkdir -p "$tmp/files/app"
        install -m 0755 "$HERE/app/entrypoint.sh" "$HERE/app/handler.sh" "$tmp/files/app/"
        printf '%s' "$v" >"$tmp/files/app/VERSION"
        derive_image "$IMG_BUSYBOX" "$IMG_APP:$v" "$tmp/files" -- \
            'CMD ["/app/entrypoint.sh"]' \
            'EXPOSE 8000' \
            "LABEL io.reconciler.test.app.version=$v"
        log "$IMG_APP:$v: $(image_size "$IMG_APP:$v")"
    done
}

build_debian() {
    need_build "$IMG_DEBIAN" || return 0
    local tarball="$CACHE/debian-bookworm-minbase.tar"
    if [[ ! -s "$tarball" ]]; then
        command -v debootstrap >/dev/null || die "debootstrap is not installed (apt-get install debootstrap)"
        local mirror work
        mirror=$(debian_mirror)
        work="$CACHE/debootstrap.$$"
        log "$IMG_DEBIAN: debootstrap bookworm (minbase + nginx-light, busybox, ca-certificates); takes about a minute"
        mkdir -p "$CACHE"
        rm -rf "$work"
        CLEANUP_PATHS+=("$work")
        if ! debootstrap --variant=minbase --include=nginx-light,busybox,ca-certificates \
            bookworm "$work/root" "$mirror" >"$work.log" 2>&1; then
            tail -n 30 "$work.log" >&2
            die "debootstrap failed (full log: $work.log)"
        fi
        rm -f "$work.log"
        # Trim what a container does not need; docker provides /dev, /proc, /sys.
        rm -rf "$work/root"/var/cache/apt/archives/*.deb \
            "$work/root"/var/lib/apt/lists/* \
            "$work/root"/var/log/*.log \
            "$work/root"/dev/*
        tar -C "$work/root" --numeric-owner -cf "$tarball.tmp" .
        mv "$tarball.tmp" "$tarball"
        log "$IMG_DEBIAN: cached rootfs at $tarball ($(du -h "$tarball" | cut -f1))"
    else
        log "$IMG_DEBIAN: importing cached rootfs $tarball (no debootstrap)"
    fi
    docker import \
        --change "LABEL $TEST_LABEL" \
        --change 'CMD ["bash"]' \
        --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
        --message "reconciler test debian bookworm minbase" \
        "$tarball" "$IMG_DEBIAN" >/dev/null
    log "$IMG_DEBIAN: $(image_size "$IMG_DEBIAN")"
}

build_nginx() {
    need_build "$IMG_NGINX" || return 0
    image_exists "$IMG_DEBIAN" || build_debian
    local tmp
    tmp=$(scratch_dir)
    mkdir -p "$tmp/files/etc/nginx/conf.d"
    install -m 0644 "$HERE/nginx/nginx.conf" "$tmp/files/etc/nginx/nginx.conf"
    log "$IMG_NGINX: deriving from $IMG_DEBIAN"
    # STOPSIGNAL is not accepted by `docker commit --change`; the stop signal
    # of the container we commit from becomes the image's.
    derive_image "$IMG_DEBIAN" "$IMG_NGINX" "$tmp/files" --stop-signal SIGQUIT -- \
        'CMD ["nginx", "-g", "daemon off;"]' \
        'EXPOSE 80'
    local sig
    sig=$(docker image inspect -f '{{.Config.StopSignal}}' "$IMG_NGINX")
    [[ "$sig" == "SIGQUIT" ]] || die "$IMG_NGINX: stop signal is '$sig', expected SIGQUIT"
    log "$IMG_NGINX: $(image_size "$IMG_NGINX")"
}

# The debian image plus SERVICE_PACKAGES, installed with apt-get in a
# throwaway container (the Debian mirror is the one debootstrap used) and
# committed. Services are not started (policy-rc.d) and postgresql-common
# makes no cluster: the postgres image initialises its own on a volume.
build_packages() {
    need_build "$IMG_PACKAGES" || return 0
    image_exists "$IMG_DEBIAN" || build_debian
    local archives="$CACHE/apt-archives" cid
    mkdir -p "$archives/partial"
    log "$IMG_PACKAGES: apt-get install ${SERVICE_PACKAGES[*]} (.debs cached in $archives)"
    cid=$(docker create --label "$TEST_LABEL" \
        -v "$archives:/var/cache/apt/archives" \
        -e DEBIAN_FRONTEND=noninteractive \
        "$IMG_DEBIAN" bash -euo pipefail -c '
            # No fsync per unpacked file: a throwaway container, committed after.
            echo force-unsafe-io >/etc/dpkg/dpkg.cfg.d/unsafe-io
            printf "#!/bin/sh\nexit 101\n" >/usr/sbin/policy-rc.d
            chmod 0755 /usr/sbin/policy-rc.d
            mkdir -p /etc/postgresql-common/createcluster.d
            echo "create_main_cluster = false" >/etc/postgresql-common/createcluster.d/no-main.conf
            apt-get update -q >/tmp/apt.log 2>&1 || { cat /tmp/apt.log; exit 1; }
            apt-get install -y -q --no-install-recommends "$@" >>/tmp/apt.log 2>&1 \
                || { tail -n 40 /tmp/apt.log; exit 1; }
            # Service directories, owned by the users the packages created.
            install -d -o prometheus -g prometheus /prometheus /alertmanager
            install -d -o postgres -g postgres -m 0700 /var/lib/postgresql/data
            install -d -o postgres -g postgres -m 2775 /var/run/postgresql
            # moment-timezone/data is 200 MB of raw time zone sources that
            # Prometheus web UI never loads (it uses the prebuilt *.min.js):
            # a quarter of the image, and of every commit of it.
            rm -rf /usr/sbin/policy-rc.d /etc/dpkg/dpkg.cfg.d/unsafe-io /var/lib/apt/lists/* \
                /var/cache/apt/*.bin /tmp/apt.log /usr/share/doc/* /usr/share/man/* \
                /usr/share/javascript/moment-timezone/data
        ' install "${SERVICE_PACKAGES[@]}")
    CLEANUP_CIDS+=("$cid")
    if ! docker start -a "$cid" >&2; then
        die "$IMG_PACKAGES: apt-get install in a $IMG_DEBIAN container failed (output above)"
    fi
    docker commit --change "LABEL $TEST_LABEL" --change 'CMD ["bash"]' \
        "$cid" "$IMG_PACKAGES" >/dev/null
    docker rm -f "$cid" >/dev/null
    log "$IMG_PACKAGES: $(image_size "$IMG_PACKAGES")"
}

build_prometheus() {
    need_build "$IMG_PROMETHEUS" || return 0
    image_exists "$IMG_PACKAGES" || build_packages
    local tmp
    tmp=$(scratch_dir)
    mkdir -p "$tmp/files/etc/prometheus"
    install -m 0644 "$HERE/prometheus/prometheus.yml" "$tmp/files/etc/prometheus/prometheus.yml"
    log "$IMG_PROMETHEUS: deriving from $IMG_PACKAGES"
    # Flags as in the upstream image; tests override CMD to point
    # --config.file / --storage.tsdb.path elsewhere. The lifecycle API
    # (POST /-/reload) is on: config reloads are what the tests exercise.
    derive_image "$IMG_PACKAGES" "$IMG_PROMETHEUS" "$tmp/files" -- \
        'USER prometheus' \
        'WORKDIR /prometheus' \
        'ENTRYPOINT ["/usr/bin/prometheus"]' \
        'CMD ["--config.file=/etc/prometheus/prometheus.yml", "--storage.tsdb.path=/prometheus", "--web.listen-address=:9090", "--web.enable-lifecycle"]' \
        'EXPOSE 9090'
    log "$IMG_PROMETHEUS: $(image_size "$IMG_PROMETHEUS")"
}

build_alertmanager() {
    need_build "$IMG_ALERTMANAGER" || return 0
    image_exists "$IMG_PACKAGES" || build_packages
    local tmp
    tmp=$(scratch_dir)
    mkdir -p "$tmp/files/etc/prometheus"
    install -m 0644 "$HERE/alertmanager/alertmanager.yml" "$tmp/files/etc/prometheus/alertmanager.yml"
    log "$IMG_ALERTMANAGER: deriving from $IMG_PACKAGES"
    # An empty --cluster.listen-address: one instance, no gossip port.
    derive_image "$IMG_PACKAGES" "$IMG_ALERTMANAGER" "$tmp/files" -- \
        'USER prometheus' \
        'WORKDIR /alertmanager' \
        'ENTRYPOINT ["/usr/bin/prometheus-alertmanager"]' \
        'CMD ["--config.file=/etc/prometheus/alertmanager.yml", "--storage.path=/alertmanager", "--web.listen-address=:9093", "--cluster.listen-address="]' \
        'EXPOSE 9093'
    log "$IMG_ALERTMANAGER: $(image_size "$IMG_ALERTMANAGER")"
}

build_postgres() {
    need_build "$IMG_POSTGRES" || return 0
    image_exists "$IMG_PACKAGES" || build_packages
    local tmp
    tmp=$(scratch_dir)
    mkdir -p "$tmp/files/usr/local/bin" "$tmp/files/docker-entrypoint-initdb.d"
    install -m 0755 "$HERE/postgres/entrypoint.sh" "$tmp/files/usr/local/bin/docker-entrypoint.sh"
    log "$IMG_POSTGRES: deriving from $IMG_PACKAGES"
    # SIGINT is PostgreSQL's fast shutdown (SIGTERM would wait for every
    # client to disconnect). Root at start: the entrypoint fixes the data
    # directory's owner, then runs postgres as the postgres user.
    derive_image "$IMG_PACKAGES" "$IMG_POSTGRES" "$tmp/files" --stop-signal SIGINT -- \
        'ENV PATH=/usr/lib/postgresql/15/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
        'ENV PGDATA=/var/lib/postgresql/data' \
        'ENTRYPOINT ["/usr/local/bin/docker-entrypoint.sh"]' \
        'CMD ["postgres"]' \
        'EXPOSE 5432'
    local sig
    sig=$(docker image inspect -f '{{.Config.StopSignal}}' "$IMG_POSTGRES")
    [[ "$sig" == "SIGINT" ]] || die "$IMG_POSTGRES: stop signal is '$sig', expected SIGINT"
    log "$IMG_POSTGRES: $(image_size "$IMG_POSTGRES")"
}

build_redis() {
    need_build "$IMG_REDIS" || return 0
    image_exists "$IMG_PACKAGES" || build_packages
    local tmp
    tmp=$(scratch_dir)
    mkdir -p "$tmp/files"
    log "$IMG_REDIS: deriving from $IMG_PACKAGES"
    # Listens on every interface of its container only: no port is published unless a test
    # publishes one on 127.0.0.1. Data in /var/lib/redis (a volume in the examples).
    derive_image "$IMG_PACKAGES" "$IMG_REDIS" "$tmp/files" -- \
        'USER redis' \
        'WORKDIR /var/lib/redis' \
        'ENTRYPOINT ["/usr/bin/redis-server"]' \
        'CMD ["--bind", "0.0.0.0", "--protected-mode", "no", "--dir", "/var/lib/redis"]' \
        'EXPOSE 6379'
    log "$IMG_REDIS: $(image_size "$IMG_REDIS")"
}

# --- main -------------------------------------------------------------------

main() {
    local -a wanted=("$@")
    ((${#wanted[@]})) || wanted=("${ALL_IMAGES[@]}")
    local name known
    for name in "${wanted[@]}"; do
        known=0
        for k in "${ALL_IMAGES[@]}"; do [[ "$k" == "$name" ]] && known=1; done
        ((known)) || die "unknown image '$name' (known: ${ALL_IMAGES[*]})"
    done

    command -v docker >/dev/null || die "docker CLI not found"
    docker version >/dev/null 2>&1 || die "cannot reach the Docker daemon"

    mkdir -p "$CACHE"
    # Serialize concurrent builds (e.g. test binaries running in parallel).
    exec 9>"$CACHE/build.lock"
    if ! flock -n 9; then
        log "another build is running; waiting for $CACHE/build.lock"
        flock 9
    fi

    local start=$SECONDS
    for name in "${wanted[@]}"; do
        timed "$name" "build_$name"
    done
    log "all of ${wanted[*]}: $((SECONDS - start)) s"
}

main "$@"
