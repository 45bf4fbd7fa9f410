#!/bin/bash
# First start: initdb into $PGDATA with POSTGRES_USER as superuser (password auth from any
# address), create POSTGRES_DB; then run the server. Later starts run the server directly.
set -euo pipefail

if [[ ${1:-} == -* ]]; then set -- postgres "$@"; fi
if [[ ${1:-} != postgres ]]; then exec "$@"; fi

: "${POSTGRES_PASSWORD:?POSTGRES_PASSWORD must be set}"
user=${POSTGRES_USER:-postgres}
database=${POSTGRES_DB:-$user}

if [[ ! -s $PGDATA/PG_VERSION ]]; then
    mkdir -p "$PGDATA"
    chmod 0700 "$PGDATA"
    initdb --username="$user" --pwfile=<(printf '%s\n' "$POSTGRES_PASSWORD") \
        --auth-local=trust --auth-host=scram-sha-256 --encoding=UTF8 --locale=C.UTF-8 >/dev/null
    printf "host all all all scram-sha-256\n" >>"$PGDATA/pg_hba.conf"
    pg_ctl --wait --silent --options="-c listen_addresses=''" start
    if [[ $database != postgres ]]; then
        psql --username="$user" --dbname=postgres --set=ON_ERROR_STOP=1 --quiet \
            --command="CREATE DATABASE \"$database\""
    fi
    pg_ctl --wait --silent --mode=fast stop
    echo "initialized $PGDATA: user $user, database $database"
fi
exec "$@" -c listen_addresses='*'
