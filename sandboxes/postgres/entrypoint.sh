#!/bin/bash
# Starts the sandbox database server: initialises the data folder on first start (the
# superuser's password comes from the file the harness mounts), then serves only a Unix
# socket in /var/run/postgresql (no TCP at all). The data is a throwaway copy, so
# durability is traded for speed.
set -euo pipefail
data=/var/lib/postgresql/data
# The one major version the image holds.
bin=$(ls -d /usr/lib/postgresql/*/bin | tail -n 1)
if [ ! -s "$data/PG_VERSION" ]; then
    "$bin/initdb" -D "$data" -U postgres --pwfile=/run/harness/superuser-password \
        --auth-local=scram-sha-256 --auth-host=reject --encoding=UTF8 --locale=C.UTF-8 >/dev/null
fi
exec "$bin/postgres" -D "$data" \
    -c listen_addresses='' \
    -c unix_socket_directories=/var/run/postgresql \
    -c unix_socket_permissions=0777 \
    -c fsync=off -c synchronous_commit=off -c full_page_writes=off \
    -c max_connections=200 \
    -c shared_buffers=256MB \
    -c max_prepared_transactions=64 \
    "$@"
