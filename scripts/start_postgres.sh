#!/usr/bin/env bash
# Start a throwaway PostgreSQL server on 127.0.0.1 for the tests, and print its URL.
#
#   eval "$(scripts/start_postgres.sh)"        # exports OPTIMIST_TEST_POSTGRES_URL (and _DIR)
#   scripts/start_postgres.sh stop [DIR]       # stops it and removes DIR (default: $OPTIMIST_TEST_POSTGRES_DIR)
#
# Installs Debian's postgresql package when no server binaries are found (needs root for
# apt-get). The cluster lives in a new temporary folder owned by the `postgres` user (the server
# refuses to run as root, so root starts it through runuser), listens on 127.0.0.1 only, on a
# free port, with trust authentication and fsync off: a test database, not a place for data.
# Only `export ...` lines go to stdout; progress goes to stderr. The same lines are written to
# $DIR/env, and to $OPTIMIST_PG_ENV_FILE when that is set.
set -euo pipefail

say() { echo "start_postgres: $*" >&2; }

find_bin() {
    local dir
    for dir in $(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V -r); do
        if [[ -x "$dir/initdb" && -x "$dir/pg_ctl" ]]; then
            echo "$dir"
            return 0
        fi
    done
    return 1
}

as_owner() {
    # Run a command as the cluster's owner: `postgres` when we are root, else ourselves.
    if [[ $(id -u) -eq 0 ]]; then
        runuser -u postgres -- "$@"
    else
        "$@"
    fi
}

if [[ ${1:-} == stop ]]; then
    dir=${2:-${OPTIMIST_TEST_POSTGRES_DIR:-}}
    [[ -n "$dir" && -d "$dir/data" ]] || { say "no cluster folder given"; exit 1; }
    bin=$(find_bin) || { say "no PostgreSQL binaries"; exit 1; }
    as_owner "$bin/pg_ctl" -D "$dir/data" -m fast -w stop >&2 || true
    rm -rf "$dir"
    say "stopped and removed $dir"
    exit 0
fi

if ! bin=$(find_bin); then
    say "installing Debian's postgresql package"
    if [[ $(id -u) -ne 0 ]]; then
        say "need root to apt-get install postgresql"
        exit 1
    fi
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >&2
    apt-get install -y -qq --no-install-recommends postgresql >&2
    bin=$(find_bin) || { say "postgresql installed but initdb/pg_ctl not found"; exit 1; }
fi

if [[ $(id -u) -eq 0 ]] && ! id postgres >/dev/null 2>&1; then
    say "no 'postgres' user to run the server as (the postgresql package creates it)"
    exit 1
fi

PYTHON=${PYTHON:-python3}
port=$("$PYTHON" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()')
dir=$(mktemp -d "${TMPDIR:-/tmp}/optimist-pg.XXXXXX")
chmod 755 "$dir"
if [[ $(id -u) -eq 0 ]]; then
    chown postgres: "$dir"
fi

say "initdb in $dir/data"
as_owner "$bin/initdb" -D "$dir/data" -U postgres -A trust -E UTF8 --no-sync >"$dir/initdb.log" 2>&1 \
    || { cat "$dir/initdb.log" >&2; exit 1; }
say "starting the server on 127.0.0.1:$port"
as_owner "$bin/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 60 \
    -o "-c listen_addresses=127.0.0.1 -p $port -k $dir -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=100" \
    start >&2 || { cat "$dir/server.log" >&2; exit 1; }
as_owner "$bin/createdb" -h 127.0.0.1 -p "$port" -U postgres optimist_test

url="postgresql://postgres@127.0.0.1:$port/optimist_test"
lines="export OPTIMIST_TEST_POSTGRES_URL=$url
export OPTIMIST_TEST_POSTGRES_DIR=$dir"
echo "$lines" > "$dir/env"
if [[ -n ${OPTIMIST_PG_ENV_FILE:-} ]]; then
    echo "$lines" > "$OPTIMIST_PG_ENV_FILE"
fi
say "ready: $url (stop with: scripts/start_postgres.sh stop $dir)"
echo "$lines"
