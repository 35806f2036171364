#!/bin/sh
# Entry point of the hot standby: on first start, copy the primary with
# pg_basebackup (-R writes primary_conninfo and standby.signal, -S uses the
# slot the primary created), then run postgres as a read-only replica.
# max_connections must be at least the primary's for a hot standby.
set -eu
if [ ! -s "$PGDATA/PG_VERSION" ]; then
	until pg_isready -q -h postgres -p 5432; do sleep 1; done
	PGPASSWORD="$POSTGRES_REPLICATION_PASSWORD" pg_basebackup -h postgres -p 5432 -U replicator \
		-D "$PGDATA" -R -X stream -S replica1 --checkpoint=fast
	chmod 700 "$PGDATA"
fi
exec postgres -c hot_standby=on -c max_connections=200 -c hot_standby_feedback=on
