#!/usr/bin/env bash
# Run the whole platform locally.
#
#   scripts/run.sh            deps up, migrate, build, start every service and
#                             devproxy, then stay in the foreground showing the
#                             logs; Ctrl-C / SIGTERM stops what it started
#   scripts/run.sh --detach   same, but return once everything is ready
#   scripts/run.sh stop       stop what a previous run started
#   scripts/run.sh status     show which instances are running
#
# Every directory services/<name>/ with a main.go is built to .data/bin/<name>
# and started with HTTP_ADDR (listen address) and INSTANCE_ID (unique per
# process, e.g. gateway-2) in its environment, plus everything from env.sh.
# Ports: api 8080, gateway 8090.. (GATEWAY_INSTANCES, default 2), delivery
# 8100, persister 8110, presence 8120, devproxy 3000 (DEVPROXY_ADDR).
#
# OBSERVABILITY=1 also starts a local Jaeger (built from the Go module proxy
# on first use) and Prometheus scraping every instance with the alert rules
# (scripts/observability.sh), and points the services' trace export at
# Jaeger (OTEL_EXPORTER_OTLP_ENDPOINT, unless already set). `stop` stops
# them too. See docs/operations.md.
set -euo pipefail

# shellcheck source=scripts/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

GATEWAY_INSTANCES="${GATEWAY_INSTANCES:-2}"
DEVPROXY_ADDR="${DEVPROXY_ADDR:-127.0.0.1:3000}"
READY_TIMEOUT="${READY_TIMEOUT:-60}"
STOP_TIMEOUT=15
RUN_SERVICES_FILE="$RELAY_PIDS/run.services" # instance names this run started
RUN_DEPS_FILE="$RELAY_PIDS/run.deps"         # deps this run started (deps.sh names)

if ! [[ "$GATEWAY_INSTANCES" =~ ^[0-9]+$ ]] || ((GATEWAY_INSTANCES < 1 || GATEWAY_INSTANCES > 10)); then
	die "GATEWAY_INSTANCES must be 1..10 (ports 8090..8099), got '$GATEWAY_INSTANCES'"
fi

# Parallel arrays describing every process to run.
INST=()  # instance name: pid/log file name and INSTANCE_ID
BINS=()  # binary name in .data/bin
ADDRS=() # listen address
PATHS=() # readiness path

base_port() {
	case "$1" in
	api) echo 8080 ;;
	gateway) echo 8090 ;;
	delivery) echo 8100 ;;
	persister) echo 8110 ;;
	presence) echo 8120 ;;
	*) echo "" ;;
	esac
}

plan() {
	local dir svc port next=8130 i
	for dir in "$RELAY_ROOT"/services/*/; do
		[[ -f "$dir/main.go" ]] || continue
		svc="$(basename "$dir")"
		port="$(base_port "$svc")"
		if [[ -z "$port" ]]; then
			# A service this script does not know yet still runs; it gets the
			# next free slot and a note so someone adds it to the table.
			port=$next
			next=$((next + 10))
			warn "service '$svc' has no fixed port in scripts/run.sh; using 127.0.0.1:$port"
		fi
		if [[ "$svc" == gateway ]]; then
			for ((i = 1; i <= GATEWAY_INSTANCES; i++)); do
				if ((i == 1)); then INST+=(gateway); else INST+=("gateway-$i"); fi
				BINS+=(gateway)
				ADDRS+=("127.0.0.1:$((port + i - 1))")
				PATHS+=(/ready)
			done
		else
			INST+=("$svc")
			BINS+=("$svc")
			ADDRS+=("127.0.0.1:$port")
			PATHS+=(/ready)
		fi
	done
	INST+=(devproxy)
	BINS+=(devproxy)
	ADDRS+=("$DEVPROXY_ADDR")
	PATHS+=(/health)
}

# service_env BIN prints the environment one service gets on top of
# env.sh's, one VAR=value per line. On a small machine seven Go runtimes
# that each run one P per core contend for the same cores: the services
# off the message path (api, persister, presence, devproxy) get one P, the
# gateway and the delivery worker one per core. An exported GOMAXPROCS
# applies to every service instead. The persister's broker fetch wait is
# 50 ms: it only bounds how long a fetch may gather a batch (a record for
# the database waits its 20 ms flush interval anyway), and at the
# persister's 10 ms default an idle stack polled the broker 100 times a
# second (docs/performance.md). PERSIST_FETCH_WAIT set by the caller wins.
# The gateways get a larger Redis connection pool (below) unless REDIS_URL
# already sets pool_size.
service_env() {
	if [[ -n "${GOMAXPROCS:-}" ]]; then
		echo "GOMAXPROCS=$GOMAXPROCS"
	else
		case "$1" in
		gateway | delivery) echo "GOMAXPROCS=$(nproc)" ;;
		*) echo "GOMAXPROCS=1" ;;
		esac
	fi
	[[ "$1" == persister ]] && echo "PERSIST_FETCH_WAIT=${PERSIST_FETCH_WAIT:-50ms}"
	if [[ "$1" == gateway && "$REDIS_URL" != *pool_size=* ]]; then
		# Every send makes a Redis round trip before it is produced; with
		# go-redis's default pool (10 per P) a gateway at 500 sends/s on a
		# busy machine had ~300 sends queued for a connection (goroutine
		# profile, docs/performance.md).
		local sep='?'
		[[ "$REDIS_URL" == *\?* ]] && sep='&'
		echo "REDIS_URL=${REDIS_URL}${sep}pool_size=128"
	fi
	return 0
}

gateway_upstreams() {
	local i out=""
	for i in "${!INST[@]}"; do
		[[ "${BINS[$i]}" == gateway ]] && out+="${out:+,}http://${ADDRS[$i]}"
	done
	printf '%s' "${out:-http://127.0.0.1:8090}"
}

api_upstream() {
	local i
	for i in "${!INST[@]}"; do
		[[ "${BINS[$i]}" == api ]] && { printf 'http://%s' "${ADDRS[$i]}"; return; }
	done
	printf 'http://127.0.0.1:8080'
}

# running_instances prints the instances from the last run that are alive.
running_instances() {
	local name bin
	[[ -f "$RUN_SERVICES_FILE" ]] || return 0
	while read -r name bin; do
		[[ -n "$name" ]] || continue
		pidfile_alive "$name" "$RELAY_BIN/$bin" && printf '%s\n' "$name"
	done <"$RUN_SERVICES_FILE"
	return 0
}

# stop_services stops every instance recorded in run.services at once.
stop_services() {
	local name bin pids=() names=()
	[[ -f "$RUN_SERVICES_FILE" ]] || return 0
	while read -r name bin; do
		[[ -n "$name" ]] || continue
		if pidfile_alive "$name" "$RELAY_BIN/$bin"; then
			pids+=("$(pid_of_file "$RELAY_PIDS/$name.pid")")
			names+=("$name")
		fi
		rm -f "$RELAY_PIDS/$name.pid"
	done <"$RUN_SERVICES_FILE"
	if ((${#pids[@]})); then
		say "stopping ${names[*]} ..."
		stop_pids "$STOP_TIMEOUT" "${pids[@]}"
	fi
	rm -f "$RUN_SERVICES_FILE"
}

# stop_deps stops the dependencies this run started (not reused ones, and
# not ones an earlier `deps.sh up` started: those keep serving tests).
stop_deps() {
	[[ -f "$RUN_DEPS_FILE" ]] || return 0
	local deps
	deps="$(tr '\n' ' ' <"$RUN_DEPS_FILE")"
	if [[ -n "${deps// /}" ]]; then
		# shellcheck disable=SC2086 # word splitting intended
		"$RELAY_ROOT/scripts/deps.sh" down $deps || warn "stopping deps failed"
	fi
	rm -f "$RUN_DEPS_FILE"
}

# record_deps KEPT BEFORE: write run.deps = KEPT + deps that are ours now
# but were not before this run called deps.sh up.
record_deps() {
	{
		[[ -n "$1" ]] && printf '%s\n' "$1"
		comm -13 <(sort -u <<<"$2") <(deps_ours | sort -u)
	} | grep -v '^$' | sort -u >"$RUN_DEPS_FILE" || true
}

stop_all() {
	stop_services
	"$RELAY_ROOT/scripts/observability.sh" down || warn "stopping Jaeger/Prometheus failed"
	stop_deps
}

# observability_up starts Jaeger and Prometheus (scraping every planned
# instance but devproxy) before the services, so their first spans land.
observability_up() {
	local i targets=()
	for i in "${!INST[@]}"; do
		[[ "${BINS[$i]}" == devproxy ]] || targets+=("${BINS[$i]}=${ADDRS[$i]}")
	done
	"$RELAY_ROOT/scripts/observability.sh" up "${targets[@]}"
	export OTEL_EXPORTER_OTLP_ENDPOINT="${OTEL_EXPORTER_OTLP_ENDPOINT:-http://127.0.0.1:4318}"
}

# deps_ours prints which deps currently run from our pid files.
deps_ours() {
	pidfile_alive postgres postgres && echo postgres
	pidfile_alive redis redis-server && echo redis
	pidfile_alive kafkabroker "$RELAY_BIN/kafkabroker" && echo kafka
	return 0
}

# instance_running NAME PATTERN: like pidfile_alive, with bash builtins only.
# The foreground loop checks every instance each second; pidfile_alive runs
# head, tr and awk for each, ~28 processes a second for the default stack,
# which measured 0.45 s of CPU per pass on the loaded 2-core dev machine
# (docs/performance.md). A stale pid file is left for stop to remove.
instance_running() {
	local pid stat args=()
	read -r pid 2>/dev/null <"$RELAY_PIDS/$1.pid" || return 1
	[[ "$pid" =~ ^[0-9]+$ ]] || return 1
	read -r stat 2>/dev/null <"/proc/$pid/stat" || return 1
	stat="${stat##*) }"
	stat="${stat%% *}"
	[[ -n "$stat" && "$stat" != Z && "$stat" != X ]] || return 1
	mapfile -d '' args 2>/dev/null <"/proc/$pid/cmdline" || return 1
	[[ " ${args[*]} " == *"$2"* ]]
}

# who_listens PORT: a hint about the process holding PORT.
who_listens() {
	ss -ltnpH "sport = :$1" 2>/dev/null | sed -n 's/.*users:(("\([^"]*\)",pid=\([0-9]*\).*/\1 (pid \2)/p' | head -n1
}

wait_ready() {
	local deadline=$((SECONDS + READY_TIMEOUT)) i pending failed=() code pid
	while :; do
		pending=()
		for i in "${!INST[@]}"; do
			[[ -n "${READY[$i]:-}" ]] && continue
			code="$(http_status "http://${ADDRS[$i]}${PATHS[$i]}")"
			if [[ "$code" == 200 ]]; then
				READY[i]=1
				say "  ready: ${INST[$i]} on ${ADDRS[$i]}"
				continue
			fi
			pid="$(pid_of_file "$RELAY_PIDS/${INST[$i]}.pid" || true)"
			if [[ -z "$pid" ]] || ! proc_alive "$pid"; then
				failed+=("${INST[$i]}")
				READY[i]=dead
				continue
			fi
			pending+=("${INST[$i]}")
		done
		((${#failed[@]})) && break
		((${#pending[@]} == 0)) && return 0
		((SECONDS >= deadline)) && {
			failed=("${pending[@]}")
			break
		}
		sleep 0.3
	done
	for i in "${failed[@]}"; do
		printf 'error: %s did not become ready (exited, or GET /ready != 200 within %ss)\n' "$i" "$READY_TIMEOUT" >&2
		log_tail "$i" 40
	done
	return 1
}

fail_and_stop() {
	printf 'error: %s\n' "$*" >&2
	say "stopping everything this run started ..."
	stop_all
	exit 1
}

up() {
	local detach="$1" t0 before i port alive
	t0="$(now_ms)"
	plan

	mapfile -t alive < <(running_instances)
	if ((${#alive[@]})); then
		say "already running: ${alive[*]} (pids in .data/pids)."
		say "open http://localhost:${DEVPROXY_ADDR##*:}/ ; stop with 'make stop' or 'scripts/run.sh stop'."
		# --detach is used by scripts; treat "already up" as success for it.
		[[ "$detach" == 1 ]] && ((${#alive[@]} == ${#INST[@]})) && exit 0
		exit 1
	fi

	# Ports must be free before we start anything, or a stale process would
	# answer /ready on behalf of a service that failed to bind.
	for i in "${!INST[@]}"; do
		port="${ADDRS[$i]##*:}"
		if port_open "${ADDRS[$i]%:*}" "$port"; then
			die "${ADDRS[$i]} (for ${INST[$i]}) is already in use by $(who_listens "$port" || echo 'another process'); stop it first"
		fi
	done

	# Stop whatever we started if we are interrupted during startup.
	trap 'fail_and_stop "interrupted during startup"' INT TERM

	# Deps a previous run started and that still run stay ours to stop.
	local kept=""
	if [[ -f "$RUN_DEPS_FILE" ]]; then
		kept="$(comm -12 <(sort -u "$RUN_DEPS_FILE") <(deps_ours | sort -u))"
	fi
	before="$(deps_ours)"
	if ! "$RELAY_ROOT/scripts/deps.sh" up; then
		record_deps "$kept" "$before"
		fail_and_stop "dependencies did not come up"
	fi
	record_deps "$kept" "$before"

	if [[ -d "$RELAY_ROOT/tools/cmd/migrate" ]]; then
		say "migrating: go run ./tools/cmd/migrate ${MIGRATE_ARGS:-} (log .data/logs/migrate.log)"
		# shellcheck disable=SC2086 # MIGRATE_ARGS is a word list by design
		if ! (cd "$RELAY_ROOT" && go run ./tools/cmd/migrate ${MIGRATE_ARGS:-}) >>"$RELAY_LOGS/migrate.log" 2>&1; then
			log_tail migrate 40
			fail_and_stop "migrations failed"
		fi
	fi

	# One go build for everything: the build cache makes a rebuild of
	# unchanged code take about a second.
	local pkgs=() seen=" "
	for i in "${!INST[@]}"; do
		[[ "$seen" == *" ${BINS[$i]} "* ]] && continue
		seen+="${BINS[$i]} "
		if [[ "${BINS[$i]}" == devproxy ]]; then pkgs+=(./tools/cmd/devproxy); else pkgs+=("./services/${BINS[$i]}"); fi
	done
	say "building ${pkgs[*]} -> .data/bin/"
	(cd "$RELAY_ROOT" && go build -o "$RELAY_BIN/" "${pkgs[@]}") ||
		fail_and_stop "build failed (is every services/<name> module listed in go.work?)"

	if [[ "${OBSERVABILITY:-0}" == 1 ]]; then
		observability_up || fail_and_stop "Jaeger/Prometheus did not start (logs .data/logs/jaeger.log, prometheus.log)"
	fi

	: >"$RUN_SERVICES_FILE"
	local gws api
	gws="$(gateway_upstreams)"
	api="$(api_upstream)"
	local extra
	for i in "${!INST[@]}"; do
		printf '%s %s\n' "${INST[$i]}" "${BINS[$i]}" >>"$RUN_SERVICES_FILE"
		mapfile -t extra < <(service_env "${BINS[$i]}")
		start_bg "${INST[$i]}" env "${extra[@]}" \
			HTTP_ADDR="${ADDRS[$i]}" INSTANCE_ID="${INST[$i]}" SERVICE_NAME="${BINS[$i]}" \
			KAFKA_GROUP_INSTANCE_ID="${KAFKA_GROUP_INSTANCE_ID:-${INST[$i]}}" \
			DEVPROXY_ADDR="$DEVPROXY_ADDR" API_UPSTREAM="$api" GATEWAY_UPSTREAMS="$gws" \
			"$RELAY_BIN/${BINS[$i]}"
	done

	say "waiting for /ready (timeout ${READY_TIMEOUT}s) ..."
	READY=()
	wait_ready || fail_and_stop "startup failed; logs in .data/logs/"
	trap - INT TERM

	local port3000="${DEVPROXY_ADDR##*:}"
	cat <<EOF

relay is running ($(($(now_ms) - t0)) ms):
  web app     http://localhost:$port3000/
  API         http://localhost:$port3000/api
  WebSocket   ws://localhost:$port3000/ws
  health      http://localhost:$port3000/health
  instances   ${INST[*]}
  logs        $RELAY_LOGS/
  stop        make stop   (or Ctrl-C here)
EOF
	if [[ "${OBSERVABILITY:-0}" == 1 ]]; then
		cat <<EOF
  traces      Jaeger query API http://127.0.0.1:16686/api (make trace ID=<message id>)
  metrics     Prometheus http://127.0.0.1:9090 (targets, alerts)
EOF
	fi
	[[ "$detach" == 1 ]] && return 0

	foreground
}

foreground() {
	local tail_pid="" i warned=() alive
	trap 'say ""; say "stopping ..."; [[ -n "$tail_pid" ]] && kill "$tail_pid" 2>/dev/null; stop_all; exit 0' INT TERM
	if [[ "${RUN_TAIL:-1}" == 1 ]]; then
		local logs=()
		for i in "${!INST[@]}"; do logs+=("$RELAY_LOGS/${INST[$i]}.log"); done
		tail -n 0 -F "${logs[@]}" &
		tail_pid=$!
	fi
	while :; do
		# sleep in the background + wait, so a signal runs the trap at once.
		sleep 1 &
		wait $! || true
		alive=0
		for i in "${!INST[@]}"; do
			if instance_running "${INST[$i]}" "$RELAY_BIN/${BINS[$i]}"; then
				alive=$((alive + 1))
			elif [[ -z "${warned[$i]:-}" && -f "$RUN_SERVICES_FILE" ]]; then
				warned[i]=1
				warn "${INST[$i]} exited unexpectedly"
				log_tail "${INST[$i]}" 20
			fi
		done
		if ((alive == 0)); then
			# Someone ran `run.sh stop` (or everything crashed): nothing left
			# to supervise, and stop already handled the deps.
			[[ -n "$tail_pid" ]] && kill "$tail_pid" 2>/dev/null
			say "all instances have stopped; exiting"
			exit 0
		fi
	done
}

status() {
	local name bin any=0
	if [[ -f "$RUN_SERVICES_FILE" ]]; then
		while read -r name bin; do
			[[ -n "$name" ]] || continue
			any=1
			if pidfile_alive "$name" "$RELAY_BIN/$bin"; then
				say "$name: running (pid $(pid_of_file "$RELAY_PIDS/$name.pid"))"
			else
				say "$name: not running"
			fi
		done <"$RUN_SERVICES_FILE"
	fi
	((any)) || say "no run in progress"
	"$RELAY_ROOT/scripts/deps.sh" status
}

case "${1:-}" in
"") up 0 ;;
--detach | -d) up 1 ;;
stop)
	stop_all
	say "stopped"
	;;
status) status ;;
*)
	printf 'usage: %s [--detach | stop | status]\n' "$0" >&2
	exit 2
	;;
esac
