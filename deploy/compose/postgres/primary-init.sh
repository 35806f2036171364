#!/bin/bash
# Runs once, when the primary's data directory is created (the image's
# /docker-entrypoint-initdb.d): a replication role for the streaming
# replica, the pg_hba line that lets it in, and a physical slot so the
# primary keeps the WAL the replica has not received yet.
set -euo pipefail
: "${POSTGRES_REPLICATION_PASSWORD:?}"
psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" \
	-v pw="$POSTGRES_REPLICATION_PASSWORD" <<'SQL'
CREATE ROLE replicator WITH REPLICATION LOGIN PASSWORD :'pw';
SELECT pg_create_physical_replication_slot('replica1');
SQL
echo "host replication replicator all scram-sha-256" >>"$PGDATA/pg_hba.conf"
