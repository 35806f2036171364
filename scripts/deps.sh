#!/usr/bin/env bash
# Local dependencies for development and tests: PostgreSQL, Redis and the
# Kafka-protocol broker (tools/cmd/kafkabroker).
#
#   scripts/deps.sh up      make all three reachable (reuse what is already
#                           listening, otherwise install/start our own)
#   scripts/deps.sh down [postgres|redis|kafka ...]
#                           stop only what our pid files say we started
#   scripts/deps.sh status  show what is reachable and what is ours
#   scripts/deps.sh clean   down, then delete all local state (.data and
#                           /var/lib/relay-dev/<hash> if it was used)
#   scripts/deps.sh chromium
#                           install Debian's chromium (the browser tests'
#                           browser) when it is missing
#
# State lives under .data/ (git-ignored): pg, redis, kafka, logs, pids, bin.
set -euo pipefail

# shellcheck source=scripts/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

PG_HOST=127.0.0.1
PG_PORT=5432
PG_SOCKDIR=/var/run/postgresql
PG_MIN_MAJOR=15
REDIS_HOST=127.0.0.1
REDIS_PORT=6379
KAFKA_ADDR=127.0.0.1:9092
KAFKA_PARTITIONS="${KAFKA_PARTITIONS:-12}"
ALT_STATE="/var/lib/relay-dev/$(repo_hash)"

# Each dependency is only managed when its URL points at the default local
# address; anything else is treated as an external server we just check.
pg_managed() { [[ "$DATABASE_URL" == *@127.0.0.1:5432/* || "$DATABASE_URL" == *@localhost:5432/* ]]; }
redis_managed() { [[ "$REDIS_URL" == *//127.0.0.1:6379* || "$REDIS_URL" == *//localhost:6379* || "$REDIS_URL" == *@127.0.0.1:6379* || "$REDIS_URL" == *@localhost:6379* ]]; }
kafka_managed() { [[ "$KAFKA_BROKERS" == "127.0.0.1:9092" || "$KAFKA_BROKERS" == "localhost:9092" ]]; }

# elapsed T0_MS prints seconds since T0_MS with one decimal.
elapsed() {
	local ms=$(($(now_ms) - $1))
	printf '%d.%ds' $((ms / 1000)) $((ms % 1000 / 100))
}

# ---------------------------------------------------------------- postgres

# pg_bindir prints the newest /usr/lib/postgresql/<v>/bin, if any.
pg_bindir() {
	local d
	d="$(printf '%s\n' /usr/lib/postgresql/*/bin | grep -v '\*' | sort -V | tail -n1 || true)"
	[[ -n "$d" && -x "$d/pg_ctl" ]] && printf '%s\n' "$d"
}

pg_ready() {
	local isready
	isready="$(command -v pg_isready || true)"
	[[ -n "$isready" ]] || isready="${PGBIN:-}/pg_isready"
	[[ -x "$isready" ]] || return 1
	"$isready" -q -h "$PG_HOST" -p "$PG_PORT" -t 2
}

# as_postgres CMD...: run CMD as the postgres OS user from / (its cwd may be
# a directory postgres cannot read, which makes initdb/psql complain).
as_postgres() { (cd / && runuser -u postgres -- "$@"); }

# pg_cluster_dir decides where our cluster lives and prints it. Normally
# .data/pg; when the postgres user cannot reach the repo (e.g. it sits under
# /root with mode 700) the cluster goes to /var/lib/relay-dev/<hash>/pg and
# .data/pg becomes a symlink to it, so the layout looks the same either way.
pg_cluster_dir() {
	local link="$RELAY_DATA/pg"
	if [[ -L "$link" ]]; then
		readlink -f "$link"
		return 0
	fi
	mkdir -p "$link"
	chown postgres:postgres "$link"
	chmod 700 "$link"
	if runuser -u postgres -- test -w "$link" 2>/dev/null; then
		printf '%s\n' "$link"
		return 0
	fi
	rmdir "$link" 2>/dev/null || die "$link exists but the postgres user cannot reach it; move it away or run 'scripts/deps.sh clean'"
	mkdir -p "$ALT_STATE/pg"
	chown postgres:postgres "$ALT_STATE" "$ALT_STATE/pg"
	chmod 700 "$ALT_STATE/pg"
	ln -s "$ALT_STATE/pg" "$link"
	printf '%s\n' "$ALT_STATE/pg"
}

# pg_logfile DIR prints (and prepares) a log file the postgres user can
# write: .data/logs/postgres.log, or beside an out-of-repo cluster with a
# symlink from .data/logs so the logs folder stays the one place to look.
pg_logfile() {
	local dir="$1" f
	if [[ "$dir" == "$ALT_STATE/"* ]]; then
		f="$ALT_STATE/postgres.log"
		touch "$f"
		chown postgres:postgres "$f"
		ln -sfn "$f" "$RELAY_LOGS/postgres.log"
	else
		f="$RELAY_LOGS/postgres.log"
		[[ -L "$f" ]] && rm -f "$f"
		touch "$f"
		chown postgres:postgres "$f"
	fi
	printf '%s\n' "$f"
}

pg_configure() {
	local dir="$1"
	# DEV ONLY: trust authentication on loopback and the unix socket, so
	# tests and tools connect without password plumbing. The server listens
	# on 127.0.0.1 only; never copy this pg_hba.conf anywhere shared.
	cat >"$dir/pg_hba.conf" <<'EOF'
# Written by scripts/deps.sh. DEV ONLY: trust on loopback and local socket.
local   all   all                 trust
host    all   all   127.0.0.1/32  trust
host    all   all   ::1/128       trust
# pg_basebackup of the local cluster mode's hot standby (scripts/cluster.sh)
host    replication   all   127.0.0.1/32  trust
EOF
	# Rewritten every start so changes in this script take effect.
	cat >"$dir/relay.conf" <<EOF
# Written by scripts/deps.sh on every start; edit the script, not this file.
listen_addresses = '127.0.0.1'
port = $PG_PORT
unix_socket_directories = '$PG_SOCKDIR'
max_connections = 200
# Durability matches production expectations: acked commits survive a crash.
fsync = on
synchronous_commit = on
full_page_writes = on
EOF
	chown postgres:postgres "$dir/pg_hba.conf" "$dir/relay.conf"
	grep -q "^include_if_exists = 'relay.conf'" "$dir/postgresql.conf" ||
		printf "\n# Added by scripts/deps.sh\ninclude_if_exists = 'relay.conf'\n" >>"$dir/postgresql.conf"
}

# pg_psql_admin SQL: run SQL as a superuser, trying the postgres OS user over
# the unix socket (peer or trust), then user postgres over TCP (trust).
pg_psql_admin() {
	local sql="$1" psql
	psql="$(command -v psql || true)"
	[[ -n "$psql" ]] || psql="${PGBIN:-}/psql"
	[[ -x "$psql" ]] || return 1
	if id postgres >/dev/null 2>&1 &&
		printf '%s\n' "$sql" | as_postgres "$psql" -X -q -v ON_ERROR_STOP=1 -h "$PG_SOCKDIR" -p "$PG_PORT" -d postgres >/dev/null 2>&1; then
		return 0
	fi
	printf '%s\n' "$sql" | PGCONNECT_TIMEOUT=5 "$psql" -X -q -w -v ON_ERROR_STOP=1 -h "$PG_HOST" -p "$PG_PORT" -U postgres -d postgres >/dev/null 2>&1
}

pg_ensure_role_db() {
	# CREATE DATABASE cannot run inside DO, hence \gexec for the database.
	local sql
	sql="$(
		cat <<'EOF'
DO $$
BEGIN
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'relay') THEN
    CREATE ROLE relay LOGIN CREATEDB PASSWORD 'relay';
  ELSE
    ALTER ROLE relay LOGIN CREATEDB PASSWORD 'relay';
  END IF;
END
$$;
SELECT 'CREATE DATABASE relay OWNER relay' WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = 'relay')\gexec
ALTER DATABASE relay OWNER TO relay;
EOF
	)"
	pg_psql_admin "$sql"
}

pg_url_works() {
	local psql
	psql="$(command -v psql || true)"
	[[ -n "$psql" ]] || psql="${PGBIN:-}/psql"
	[[ -x "$psql" ]] || return 1
	PGCONNECT_TIMEOUT=5 "$psql" -X -q -w -At "$DATABASE_URL" -c 'select 1' >/dev/null 2>&1
}

pg_up() {
	local t0 dir log major
	t0="$(now_ms)"
	if ! pg_managed; then
		if pg_url_works; then
			say "postgres:    external, DATABASE_URL works (not managed)"
		else
			warn "postgres: DATABASE_URL points to an external server that is not reachable (or psql is missing)"
		fi
		return 0
	fi
	PGBIN="$(pg_bindir || true)"

	if port_open "$PG_HOST" "$PG_PORT"; then
		# Something listens: reuse it (may still be starting up).
		[[ -n "$PGBIN" ]] || command -v psql >/dev/null 2>&1 || { apt_install postgresql-client && PGBIN="$(pg_bindir || true)"; }
		local deadline=$((SECONDS + 30))
		until pg_ready; do
			((SECONDS < deadline)) || die "postgres: 127.0.0.1:5432 accepts TCP but is not ready after 30s (is it PostgreSQL?)"
			sleep 0.5
		done
		if ! pg_ensure_role_db && ! pg_url_works; then
			die "postgres: a server on 127.0.0.1:5432 is running, but we cannot become its superuser to create role/database 'relay' and DATABASE_URL does not work.
  Either create them yourself:   CREATE ROLE relay LOGIN CREATEDB PASSWORD 'relay'; CREATE DATABASE relay OWNER relay;
  or point the project at a database you can use:   export DATABASE_URL=postgres://USER:PASS@HOST:PORT/DB?sslmode=disable   (or put it in .env)"
		fi
		pg_url_works || die "postgres: role/database ensured but DATABASE_URL=$DATABASE_URL still cannot connect"
		if pidfile_alive postgres postgres; then
			say "postgres:    reused (our cluster in .data/pg, already running) [$(elapsed "$t0")]"
		else
			say "postgres:    reused server already listening on 127.0.0.1:5432 [$(elapsed "$t0")]"
		fi
		return 0
	fi

	if [[ -z "$PGBIN" ]]; then
		apt_install postgresql
		PGBIN="$(pg_bindir || true)"
		[[ -n "$PGBIN" ]] || die "postgres: installed but no /usr/lib/postgresql/*/bin/pg_ctl found"
	fi
	major="$(basename "$(dirname "$PGBIN")")"
	major="${major%%.*}"
	((major >= PG_MIN_MAJOR)) || die "postgres: found version $major under $PGBIN, need $PG_MIN_MAJOR+"
	id postgres >/dev/null 2>&1 || die "postgres: OS user 'postgres' missing (the Debian package creates it)"

	dir="$(pg_cluster_dir)"
	if [[ ! -f "$dir/PG_VERSION" ]]; then
		say "postgres:    initdb $dir ..."
		as_postgres "$PGBIN/initdb" -D "$dir" -U postgres -E UTF8 --locale=C.UTF-8 \
			--auth-local=trust --auth-host=trust >"$RELAY_LOGS/initdb.log" 2>&1 ||
			{ log_tail initdb; die "postgres: initdb failed"; }
	elif [[ "$(cat "$dir/PG_VERSION")" != "$major" ]]; then
		die "postgres: $dir was created by PostgreSQL $(cat "$dir/PG_VERSION") but the installed server is $major; run 'scripts/deps.sh clean' (deletes local data) or install that version"
	fi
	pg_configure "$dir"
	mkdir -p "$PG_SOCKDIR"
	chown postgres:postgres "$PG_SOCKDIR"
	chmod 2775 "$PG_SOCKDIR"
	log="$(pg_logfile "$dir")"

	as_postgres "$PGBIN/pg_ctl" -D "$dir" -l "$log" -w -t 60 -s start ||
		{ log_tail postgres; die "postgres: pg_ctl start failed (log: $log)"; }
	# Line 1: postmaster pid (ours to stop); line 2: data dir for pg_ctl stop.
	printf '%s\n%s\n' "$(head -n1 "$dir/postmaster.pid")" "$dir" >"$RELAY_PIDS/postgres.pid"

	pg_ensure_role_db || die "postgres: could not create role/database relay in our own cluster (see $log)"
	pg_url_works || die "postgres: started but DATABASE_URL=$DATABASE_URL cannot connect"
	say "postgres:    started PostgreSQL $major, cluster $dir, log .data/logs/postgres.log [$(elapsed "$t0")]"
}

pg_down() {
	local pid dir
	if ! pidfile_alive postgres postgres; then
		say "postgres:    not running from our pid file, left alone"
		return 0
	fi
	pid="$(pid_of_file "$RELAY_PIDS/postgres.pid")"
	dir="$(sed -n 2p "$RELAY_PIDS/postgres.pid")"
	[[ -n "$dir" ]] || dir="$(readlink -f "$RELAY_DATA/pg")"
	PGBIN="$(pg_bindir || true)"
	if [[ -n "$PGBIN" ]] && as_postgres "$PGBIN/pg_ctl" -D "$dir" -m fast -w -t 30 -s stop; then
		:
	else
		warn "postgres: pg_ctl stop failed, signalling pid $pid"
		stop_pids 15 "$pid"
	fi
	rm -f "$RELAY_PIDS/postgres.pid"
	say "postgres:    stopped"
}

# ------------------------------------------------------------------- redis

redis_ping() {
	if command -v redis-cli >/dev/null 2>&1; then
		[[ "$(timeout 3 redis-cli -h "$REDIS_HOST" -p "$REDIS_PORT" ping 2>/dev/null)" == PONG ]]
		return
	fi
	# No redis-cli yet (fresh machine): speak RESP over bash's /dev/tcp.
	local reply
	# shellcheck disable=SC2016 # $1/$2 expand in the inner bash
	reply="$(timeout 3 bash -c 'exec 3<>"/dev/tcp/$1/$2" && printf "PING\r\n" >&3 && IFS= read -r l <&3 && printf "%s" "$l"' _ "$REDIS_HOST" "$REDIS_PORT" 2>/dev/null)" || return 1
	[[ "$reply" == "+PONG"* ]]
}

redis_up() {
	local t0 ver
	t0="$(now_ms)"
	if ! redis_managed; then
		say "redis:       external REDIS_URL (not managed)"
		return 0
	fi
	if redis_ping; then
		if pidfile_alive redis redis-server; then
			say "redis:       reused (ours, already running) [$(elapsed "$t0")]"
		else
			say "redis:       reused server already answering on 127.0.0.1:6379 [$(elapsed "$t0")]"
		fi
		return 0
	fi
	if port_open "$REDIS_HOST" "$REDIS_PORT"; then
		die "redis: something listens on 127.0.0.1:6379 but does not answer PING (password set?); stop it or set REDIS_URL"
	fi
	if ! command -v redis-server >/dev/null 2>&1; then
		apt_install redis-server
		# The package's postinst may start its own service (it does not
		# without an init system, but if it did we use it).
		if redis_ping; then
			say "redis:       reused server started by the redis-server package [$(elapsed "$t0")]"
			return 0
		fi
	fi
	ver="$(redis-server --version | sed -n 's/.*v=\([0-9]*\)\..*/\1/p')"
	[[ -n "$ver" && "$ver" -ge 7 ]] || warn "redis: found redis-server major version '${ver:-?}', Redis 7+ is expected"
	mkdir -p "$RELAY_DATA/redis"
	printf '\n=== %s start redis ===\n' "$(date -Is)" >>"$RELAY_LOGS/redis.log"
	# AOF with everysec fsync: at most ~1s of writes lost on a crash, which
	# is fine for presence/cache data; RDB snapshots off (--save '').
	redis-server --bind "$REDIS_HOST" --port "$REDIS_PORT" --daemonize yes \
		--dir "$RELAY_DATA/redis" --appendonly yes --appendfsync everysec \
		--pidfile "$RELAY_PIDS/redis.pid" --logfile "$RELAY_LOGS/redis.log" --save '' ||
		{ log_tail redis; die "redis: redis-server failed to start"; }
	local deadline=$((SECONDS + 15))
	until redis_ping; do
		((SECONDS < deadline)) || { log_tail redis; die "redis: not answering PING after 15s"; }
		sleep 0.2
	done
	say "redis:       started redis-server $(redis-server --version | sed -n 's/.*v=\([^ ]*\).*/\1/p'), data .data/redis (AOF) [$(elapsed "$t0")]"
}

redis_down() {
	local pid
	if ! pidfile_alive redis redis-server; then
		say "redis:       not running from our pid file, left alone"
		return 0
	fi
	pid="$(pid_of_file "$RELAY_PIDS/redis.pid")"
	# SIGTERM makes redis fsync the AOF and exit cleanly (same as SHUTDOWN).
	stop_pids 15 "$pid"
	rm -f "$RELAY_PIDS/redis.pid"
	say "redis:       stopped"
}

# ------------------------------------------------------------------- kafka

kafka_up() {
	local t0 log offset pid deadline
	t0="$(now_ms)"
	if ! kafka_managed; then
		say "kafka:       external KAFKA_BROKERS=$KAFKA_BROKERS (not managed)"
		return 0
	fi
	if port_open "${KAFKA_ADDR%%:*}" "${KAFKA_ADDR##*:}"; then
		if pidfile_alive kafkabroker "$RELAY_BIN/kafkabroker"; then
			say "kafka:       reused (our kafkabroker, already running) [$(elapsed "$t0")]"
		else
			say "kafka:       reused broker already listening on $KAFKA_ADDR [$(elapsed "$t0")]"
		fi
		return 0
	fi
	command -v go >/dev/null 2>&1 || die "kafka: go not found on PATH (needed to build tools/cmd/kafkabroker)"
	# Build through the workspace as documented; if another module in go.work
	# is mid-edit and breaks workspace loading, the tools module alone still
	# builds (GOWORK=off), so tests are not blocked by unrelated breakage.
	if ! (cd "$RELAY_ROOT" && go build -o "$RELAY_BIN/kafkabroker" ./tools/cmd/kafkabroker) 2>"$RELAY_LOGS/kafkabroker-build.log"; then
		warn "kafka: workspace build failed (see .data/logs/kafkabroker-build.log); retrying with GOWORK=off"
		(cd "$RELAY_ROOT/tools" && GOWORK=off go build -o "$RELAY_BIN/kafkabroker" ./cmd/kafkabroker) ||
			{ cat "$RELAY_LOGS/kafkabroker-build.log" >&2; die "kafka: building tools/cmd/kafkabroker failed"; }
	fi
	log="$RELAY_LOGS/kafkabroker.log"
	offset="$(stat -c %s "$log" 2>/dev/null || echo 0)"
	start_bg kafkabroker "$RELAY_BIN/kafkabroker" -addr "$KAFKA_ADDR" -data-dir "$RELAY_DATA/kafka" \
		-topic "$KAFKA_TOPIC:$KAFKA_PARTITIONS"
	pid="$(pid_of_file "$RELAY_PIDS/kafkabroker.pid")"
	deadline=$((SECONDS + 30))
	# Wait for the broker's own ready line (printed after topics exist),
	# looking only at what this start appended to the log.
	until tail -c +"$((offset + 1))" "$log" 2>/dev/null | grep -q 'kafkabroker listening on'; do
		if ! proc_alive "$pid"; then
			rm -f "$RELAY_PIDS/kafkabroker.pid"
			log_tail kafkabroker
			die "kafka: kafkabroker exited during startup"
		fi
		if ((SECONDS >= deadline)); then
			log_tail kafkabroker
			stop_pids 5 "$pid"
			rm -f "$RELAY_PIDS/kafkabroker.pid"
			die "kafka: kafkabroker not ready after 30s"
		fi
		sleep 0.1
	done
	say "kafka:       started kafkabroker on $KAFKA_ADDR, topic $KAFKA_TOPIC, data .data/kafka [$(elapsed "$t0")]"
}

kafka_down() {
	local pid
	if ! pidfile_alive kafkabroker "$RELAY_BIN/kafkabroker"; then
		say "kafka:       not running from our pid file, left alone"
		return 0
	fi
	pid="$(pid_of_file "$RELAY_PIDS/kafkabroker.pid")"
	# SIGTERM: kfake persists its state on Close.
	stop_pids 15 "$pid"
	rm -f "$RELAY_PIDS/kafkabroker.pid"
	say "kafka:       stopped"
}

# ------------------------------------------------------------------ status

status() {
	local s
	if pg_ready; then s="up"; else s="down"; fi
	pidfile_alive postgres postgres && s="$s (ours)"
	say "postgres:    $s"
	if redis_ping; then s="up"; else s="down"; fi
	pidfile_alive redis redis-server && s="$s (ours)"
	say "redis:       $s"
	if port_open "${KAFKA_ADDR%%:*}" "${KAFKA_ADDR##*:}"; then s="up"; else s="down"; fi
	pidfile_alive kafkabroker "$RELAY_BIN/kafkabroker" && s="$s (ours)"
	say "kafka:       $s"
}

clean() {
	down
	rm -rf "$RELAY_DATA"
	if [[ -d "$ALT_STATE" ]]; then
		rm -rf "$ALT_STATE"
		rmdir --ignore-fail-on-non-empty "$(dirname "$ALT_STATE")" 2>/dev/null || true
		say "removed $ALT_STATE"
	fi
	say "removed $RELAY_DATA"
}

up() {
	local t0
	t0="$(now_ms)"
	PGBIN="$(pg_bindir || true)"
	pg_up
	redis_up
	kafka_up
	say "deps ready in $(elapsed "$t0")"
}

# down [postgres|redis|kafka ...]: stop ours, all three by default, in
# reverse start order.
down() {
	local want=" ${*:-postgres redis kafka} "
	[[ "$want" == *" kafka "* ]] && kafka_down
	[[ "$want" == *" redis "* ]] && redis_down
	[[ "$want" == *" postgres "* ]] && pg_down
	return 0
}

# chromium: the browser tests drive Debian's build through playwright-core
# (CHROMIUM_PATH overrides where it is); Playwright's own download is not used.
chromium() {
	local bin="${CHROMIUM_PATH:-/usr/bin/chromium}"
	[[ -x "$bin" ]] && return 0
	apt_install chromium
	[[ -x "$bin" ]] || die "chromium: installed, but $bin is missing (set CHROMIUM_PATH)"
}

case "${1:-}" in
up) up ;;
chromium) chromium ;;
down)
	shift
	down "$@"
	;;
status) PGBIN="$(pg_bindir || true)" status ;;
clean) clean ;;
*)
	printf 'usage: %s up|down|status|clean|chromium\n' "$0" >&2
	exit 2
	;;
esac
