#!/bin/bash
# Entrypoint of reconciler-test/postgres:15 (Debian's postgresql-15), in the
# manner of the official postgres image:
#   POSTGRES_PASSWORD (or POSTGRES_PASSWORD_FILE)  password of POSTGRES_USER;
#       required unless POSTGRES_HOST_AUTH_METHOD=trust
#   POSTGRES_USER  superuser to create (default postgres)
#   POSTGRES_DB    database to create (default: $POSTGRES_USER)
#   PGDATA         data directory (default /var/lib/postgresql/data; mount a volume there)
# The data directory is initialised only when empty, so a replacement
# container on the same volume keeps the data and ignores these variables.
# `postgres` runs as PID 1 (stop signal SIGINT: fast shutdown, exit 0);
# any other command (psql, pg_dump, bash) runs as given.
set -euo pipefail

PGDATA="${PGDATA:-/var/lib/postgresql/data}"
export PGDATA

log() { echo "entrypoint: $*" >&2; }

init_cluster() {
    local user="${POSTGRES_USER:-postgres}"
    local db="${POSTGRES_DB:-$user}"
    local method="${POSTGRES_HOST_AUTH_METHOD:-scram-sha-256}"
    local password="${POSTGRES_PASSWORD:-}"
    if [[ -n "${POSTGRES_PASSWORD_FILE:-}" ]]; then
        password=$(<"$POSTGRES_PASSWORD_FILE")
    fi
    if [[ -z "$password" && "$method" != "trust" ]]; then
        log "the data directory $PGDATA is empty and POSTGRES_PASSWORD is not set;"
        log "set POSTGRES_PASSWORD (or POSTGRES_PASSWORD_FILE), or POSTGRES_HOST_AUTH_METHOD=trust"
        exit 1
    fi
    log "initialising $PGDATA (superuser $user, database $db)"
    # The password goes through a file descriptor, never the command line.
    initdb --username="$user" --pwfile=<(printf '%s\n' "$password") \
        --encoding=UTF8 --locale=C.UTF-8 \
        --auth-local=trust --auth-host="$method" >/dev/null
    printf 'host all all all %s\n' "$method" >>"$PGDATA/pg_hba.conf"
    printf "listen_addresses = '*'\n" >>"$PGDATA/postgresql.conf"

    # A socket-only server for the setup, so nobody connects half-way.
    pg_ctl -D "$PGDATA" -o "-c listen_addresses=''" -w start >/dev/null
    if [[ "$db" != "postgres" ]]; then
        psql -v ON_ERROR_STOP=1 --username "$user" --dbname postgres -q \
            --set db="$db" <<<'CREATE DATABASE :"db";'
    fi
    local f
    for f in /docker-entrypoint-initdb.d/*.sql; do
        [[ -e "$f" ]] || continue
        log "running $f"
        psql -v ON_ERROR_STOP=1 --username "$user" --dbname "$db" -q -f "$f"
    done
    pg_ctl -D "$PGDATA" -m fast -w stop >/dev/null
    log "initialised"
}

if [[ "${1:-}" == "postgres" ]]; then
    if [[ "$(id -u)" == "0" ]]; then
        # A fresh volume or bind mount may be root-owned: hand it to postgres.
        mkdir -p "$PGDATA" /var/run/postgresql
        chown postgres:postgres "$PGDATA" /var/run/postgresql
        chmod 0700 "$PGDATA"
        exec setpriv --reuid=postgres --regid=postgres --init-groups "$0" "$@"
    fi
    if [[ ! -s "$PGDATA/PG_VERSION" ]]; then
        init_cluster
    fi
    exec "$@"
fi
exec "$@"
