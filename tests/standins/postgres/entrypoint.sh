#!/bin/sh
# A first start initializes $PGDATA the way the official image does: superuser
# $POSTGRES_USER (default postgres) with the password from $POSTGRES_PASSWORD or
# $POSTGRES_PASSWORD_FILE (then password auth from other hosts, else trust), and the database
# $POSTGRES_DB. Then the server runs as the postgres user, listening on every interface
# unless the arguments say otherwise.
set -eu
user="${POSTGRES_USER:-postgres}"
db="${POSTGRES_DB:-$user}"
password="${POSTGRES_PASSWORD:-}"
if [ -n "${POSTGRES_PASSWORD_FILE:-}" ]; then
    password="$(cat "$POSTGRES_PASSWORD_FILE")"
fi
as_postgres() { setpriv --reuid=postgres --regid=postgres --init-groups "$@"; }

install -d -o postgres -g postgres -m 0700 "$PGDATA"
install -d -o postgres -g postgres -m 2775 /var/run/postgresql
if [ ! -s "$PGDATA/PG_VERSION" ]; then
    pwfile="$(mktemp)"
    printf '%s' "$password" >"$pwfile"
    chown postgres "$pwfile"
    if [ -n "$password" ]; then auth=scram-sha-256; else auth=trust; fi
    as_postgres initdb -D "$PGDATA" -U "$user" -E UTF8 --auth-local=trust \
        --auth-host="$auth" ${password:+--pwfile="$pwfile"} >/dev/null
    rm -f "$pwfile"
    echo "host all all all $auth" >>"$PGDATA/pg_hba.conf"
    if [ "$db" != postgres ]; then
        echo "CREATE DATABASE \"$db\" OWNER \"$user\"" \
            | as_postgres postgres --single -D "$PGDATA" postgres >/dev/null
    fi
fi
if [ "$1" = postgres ]; then
    shift
    exec setpriv --reuid=postgres --regid=postgres --init-groups \
        postgres -c listen_addresses='*' "$@"
fi
exec "$@"
