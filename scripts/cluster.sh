#!/usr/bin/env bash
# Local cluster mode: the production topology of deploy/compose on loopback,
# from Debian's packages (docs/deployment.md#local-cluster-mode).
#
#   scripts/cluster.sh tools   install what the cluster and its tests need
#                              (nginx) when missing
#   scripts/cluster.sh up      nginx on :3000 (ip_hash) in front of three
#                              gateways, PostgreSQL primary (:5432) + hot
#                              standby (:5433), a Redis Cluster of three
#                              masters with a replica each (:7001-7006), the
#                              dev Kafka broker (:9092) as Kafka's stand-in,
#                              and every service configured for all of it
#   scripts/cluster.sh down    stop what `up` started
#   scripts/cluster.sh status
#   scripts/cluster.sh replica-down|replica-up|start INSTANCE
#                              stop/start the standby, restart one instance
#                              (the cluster tests' faults)
#   scripts/cluster.sh redis-start PORT
#                              start a stopped Redis Cluster node again (it
#                              rejoins, as a replica if it lost its master
#                              role meanwhile)
#
# `make run` (devproxy on :3000) and the cluster (nginx on :3000) exclude
# each other. State lives under .data/cluster (git-ignored).
set -euo pipefail

# shellcheck source=scripts/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

# tools installs nginx (Debian's) without letting the package start its
# own server on :80: invoke-rc.d asks policy-rc.d, and 101 means "no".
tools() {
	# redis-server (with redis-cli, from redis-tools) for the Redis
	# Cluster; deps.sh installs it only when it manages the local Redis.
	command -v redis-server >/dev/null 2>&1 && command -v redis-cli >/dev/null 2>&1 ||
		apt_install redis-server redis-tools
	command -v nginx >/dev/null 2>&1 && return 0
	[[ -x /usr/sbin/nginx ]] && return 0
	local policy=/usr/sbin/policy-rc.d ours=""
	if [[ ! -e "$policy" ]]; then
		printf '#!/bin/sh\nexit 101\n' >"$policy"
		chmod +x "$policy"
		ours=1
	fi
	apt_install nginx || { [[ -n "$ours" ]] && rm -f "$policy"; exit 1; }
	[[ -n "$ours" ]] && rm -f "$policy"
	say "nginx:       installed $(/usr/sbin/nginx -v 2>&1)"
}


# Ports. CLUSTER_PORT_OFFSET shifts every service port and the edge (not
# PostgreSQL's), so a cluster can run beside another stack on one machine.
OFF="${CLUSTER_PORT_OFFSET:-0}"
EDGE_PORT=$((3000 + OFF))
API_PORT=$((8080 + OFF))
GW_PORT=$((8090 + OFF)) # gateways: GW_PORT, +1, +2
DELIVERY_PORT=$((8100 + OFF))
PERSISTER_PORT=$((8110 + OFF))
PRESENCE_PORT=$((8120 + OFF))
REPLICA_PORT="${CLUSTER_REPLICA_PORT:-5433}"
# Redis Cluster nodes: REDIS_CLUSTER_PORT .. +5 (7001-7006); redis-cli
# --cluster create makes the first three masters and gives each a replica.
REDIS_BASE="${REDIS_CLUSTER_PORT:-7001}"
REDIS_NODES=6
CLUSTER_DIR="$RELAY_DATA/cluster"
READY_TIMEOUT="${READY_TIMEOUT:-90}"
# Instances in start order; stopped in reverse.
INSTANCES=(api gateway-1 gateway-2 gateway-3 delivery persister presence)

pg_bin() { printf '%s\n' /usr/lib/postgresql/*/bin | grep -v '\*' | sort -V | tail -n1; }
as_postgres() { (cd / && runuser -u postgres -- "$@"); }

# replica_dir: where the standby's data lives. Under .data when the
# postgres user can reach it, else under /var/lib/relay-dev/<hash> (as
# deps.sh does for the primary), .data/cluster/pg-replica linking to it.
replica_dir() {
	local link="$CLUSTER_DIR/pg-replica" alt
	if [[ -L "$link" ]]; then
		readlink -f "$link"
		return
	fi
	mkdir -p "$link"
	chown postgres:postgres "$link"
	chmod 700 "$link"
	if runuser -u postgres -- test -w "$link" 2>/dev/null; then
		printf '%s\n' "$link"
		return
	fi
	rmdir "$link"
	alt="/var/lib/relay-dev/$(repo_hash)/pg-replica"
	mkdir -p "$alt"
	chown postgres:postgres "$alt"
	chmod 700 "$alt"
	ln -s "$alt" "$link"
	printf '%s\n' "$alt"
}

# The primary is DATABASE_URL's server (deps.sh's on 127.0.0.1:5432 by
# default); the replica's URL is the same with the replica's port.
primary_hostport() {
	local rest="${DATABASE_URL#*@}"
	printf '%s\n' "${rest%%/*}"
}
replica_url() {
	local hp
	hp="$(primary_hostport)"
	printf '%s\n' "${DATABASE_URL/@$hp\//@127.0.0.1:$REPLICA_PORT/}"
}

# replica_up: a hot standby of the primary, made once
# with pg_basebackup -R (standby.signal + primary_conninfo), on $REPLICA_PORT.
replica_up() {
	local bin dir
	bin="$(pg_bin)"
	[[ -x "$bin/pg_basebackup" ]] || die "replica: no pg_basebackup under /usr/lib/postgresql (run make deps)"
	if pidfile_alive pg-replica postgres; then
		say "replica:     running on 127.0.0.1:$REPLICA_PORT"
		return
	fi
	port_open 127.0.0.1 "$REPLICA_PORT" && die "replica: port $REPLICA_PORT is taken (CLUSTER_REPLICA_PORT picks another)"
	dir="$(replica_dir)"
	if [[ ! -f "$dir/standby.signal" ]]; then
		find "$dir" -mindepth 1 -delete
		local hp
		hp="$(primary_hostport)"
		say "replica:     pg_basebackup from $hp into $dir ..."
		as_postgres "$bin/pg_basebackup" -h "${hp%:*}" -p "${hp##*:}" -U postgres -D "$dir" -R -X stream -c fast \
			>"$RELAY_LOGS/pg-basebackup.log" 2>&1 || {
			log_tail pg-basebackup
			die "replica: pg_basebackup failed; the primary's pg_hba.conf needs 'host replication all 127.0.0.1/32 trust' (scripts/deps.sh writes it for its own cluster)"
		}
	fi
	# Command-line settings win over the primary's copied relay.conf. The
	# server log is written by the postgres user, so it lives in its
	# directory (.data/cluster/pg-replica/server.log).
	as_postgres "$bin/pg_ctl" -D "$dir" -l "$dir/server.log" -w -t 60 -s start \
		-o "-p $REPLICA_PORT -k $dir -c listen_addresses=127.0.0.1 -c hot_standby=on -c max_connections=200" ||
		{ tail -n 30 "$dir/server.log" >&2; die "replica: pg_ctl start failed"; }
	printf '%s\n%s\n' "$(head -n1 "$dir/postmaster.pid")" "$dir" >"$RELAY_PIDS/pg-replica.pid"
	say "replica:     hot standby on 127.0.0.1:$REPLICA_PORT"
}

replica_down() {
	local dir
	pidfile_alive pg-replica postgres || return 0
	dir="$(sed -n 2p "$RELAY_PIDS/pg-replica.pid")"
	as_postgres "$(pg_bin)/pg_ctl" -D "$dir" -m fast -w -t 30 -s stop || stop_pids 15 "$(pid_of_file "$RELAY_PIDS/pg-replica.pid")"
	rm -f "$RELAY_PIDS/pg-replica.pid"
	say "replica:     stopped"
}

# ------------------------------------------------------------ Redis Cluster

redis_ports() { seq "$REDIS_BASE" $((REDIS_BASE + REDIS_NODES - 1)); }

# redis_url: what every service gets as REDIS_URL (with REDIS_CLUSTER=true):
# the first node as the host and the others as seeds.
redis_url() {
	local url="redis://127.0.0.1:$REDIS_BASE" sep="?" p
	for p in $(redis_ports); do
		((p == REDIS_BASE)) && continue
		url="$url${sep}addr=127.0.0.1:$p"
		sep="&"
	done
	printf '%s
' "$url"
}

rcli() { timeout 10 redis-cli -h 127.0.0.1 -p "$1" "${@:2}"; }

# redis_node_up PORT: one cluster node, AOF on (everysec, as compose), its
# nodes.conf and data under .data/cluster/redis-PORT. A short node timeout
# (2 s) makes a failover take seconds, not the default 15 s.
redis_node_up() {
	local port="$1" dir="$CLUSTER_DIR/redis-$1"
	pidfile_alive "cluster-redis-$port" redis-server && return 0
	port_open 127.0.0.1 "$port" && die "redis: port $port is taken (REDIS_CLUSTER_PORT picks another base)"
	mkdir -p "$dir"
	start_bg "cluster-redis-$port" redis-server --bind 127.0.0.1 --port "$port" --dir "$dir" \
		--cluster-enabled yes --cluster-config-file nodes.conf --cluster-node-timeout 2000 \
		--appendonly yes --appendfsync everysec --save '' --repl-diskless-sync-delay 0 --daemonize no
}

# redis_wait_ok: every node up, the cluster's state ok (every slot served)
# and every replica in sync with its master (only then can it take over).
redis_wait_ok() {
	local deadline=$((SECONDS + 60)) p pending info
	while :; do
		pending=""
		for p in $(redis_ports); do
			info="$(rcli "$p" cluster info 2>/dev/null || true)"
			[[ "$info" == *cluster_state:ok* ]] || { pending="$pending $p"; continue; }
			info="$(rcli "$p" info replication 2>/dev/null || true)"
			[[ "$info" == *role:master* || "$info" == *master_link_status:up* ]] || pending="$pending $p(sync)"
		done
		[[ -z "$pending" ]] && return 0
		((SECONDS < deadline)) || die "redis cluster: not ok after 60 s:$pending (logs .data/logs/cluster-redis-*.log)"
		sleep 0.3
	done
}

redis_cluster_up() {
	local p addrs=()
	for p in $(redis_ports); do
		redis_node_up "$p"
		addrs+=("127.0.0.1:$p")
	done
	for p in $(redis_ports); do
		local deadline=$((SECONDS + 15))
		until [[ "$(rcli "$p" ping 2>/dev/null)" == PONG ]]; do
			pidfile_alive "cluster-redis-$p" || { log_tail "cluster-redis-$p"; die "redis: node $p exited"; }
			((SECONDS < deadline)) || die "redis: node $p does not answer"
			sleep 0.1
		done
	done
	# A node that knows only itself has never been part of the cluster:
	# create it (first run). Later runs find the cluster in nodes.conf.
	if [[ "$(rcli "$REDIS_BASE" cluster info)" == *cluster_known_nodes:1$'\r'* ]]; then
		say "redis:       creating the cluster (3 masters, a replica each) ..."
		redis-cli --cluster create "${addrs[@]}" --cluster-replicas 1 --cluster-yes >>"$RELAY_LOGS/cluster-redis-create.log" 2>&1 ||
			{ log_tail cluster-redis-create; die "redis: redis-cli --cluster create failed"; }
	fi
	redis_wait_ok
	say "redis:       cluster ok on 127.0.0.1:$REDIS_BASE-$((REDIS_BASE + REDIS_NODES - 1))"
}

redis_cluster_down() {
	local p pids=()
	for p in $(redis_ports); do
		pidfile_alive "cluster-redis-$p" redis-server && pids+=("$(pid_of_file "$RELAY_PIDS/cluster-redis-$p.pid")")
	done
	((${#pids[@]})) && stop_pids 20 "${pids[@]}"
	rm -f "$RELAY_PIDS"/cluster-redis-*.pid
	return 0
}

# edge_conf writes deploy/compose/nginx.conf with the compose host names
# replaced by the loopback ports: the same routing (ip_hash, headers,
# /health) as in production.
edge_conf() {
	local out="$CLUSTER_DIR/nginx.conf" web="$RELAY_ROOT/web/dist"
	sed -e "s/server api:8080/server 127.0.0.1:$API_PORT/" \
		-e "s/server gateway-1:8090/server 127.0.0.1:$GW_PORT/" \
		-e "s/server gateway-2:8090/server 127.0.0.1:$((GW_PORT + 1))/" \
		-e "s/server gateway-3:8090/server 127.0.0.1:$((GW_PORT + 2))/" \
		-e "s/listen 3000;/listen 127.0.0.1:$EDGE_PORT;/" \
		-e "s#root /usr/share/nginx/html;#root $web;#" \
		-e "s#^http {#http {\n  access_log $RELAY_LOGS/nginx-access.log;\n  client_body_temp_path $CLUSTER_DIR/nginx-body;\n  proxy_temp_path $CLUSTER_DIR/nginx-proxy;#" \
		"$RELAY_ROOT/deploy/compose/nginx.conf" >"$out"
	grep -q "server api:\|server gateway-" "$out" && die "edge: $out still names compose hosts (nginx.conf changed?)"
	printf '%s\n' "$out"
}

start_instance() {
	local inst="$1" bin addr
	case "$inst" in
	api) bin=api addr="127.0.0.1:$API_PORT" ;;
	gateway-*) bin=gateway addr="127.0.0.1:$((GW_PORT + ${inst#gateway-} - 1))" ;;
	delivery) bin=delivery addr="127.0.0.1:$DELIVERY_PORT" ;;
	persister) bin=persister addr="127.0.0.1:$PERSISTER_PORT" ;;
	presence) bin=presence addr="127.0.0.1:$PRESENCE_PORT" ;;
	esac
	port_open "${addr%:*}" "${addr#*:}" && die "$inst: $addr is taken (make run? CLUSTER_PORT_OFFSET shifts the cluster's ports)"
	local -a envs=("HTTP_ADDR=$addr" "REDIS_URL=$(redis_url)" "REDIS_CLUSTER=true")
	case "$inst" in
	api) envs+=("DATABASE_REPLICA_URL=$(replica_url)" "DATABASE_REPLICA_MAX_CONNS=20") ;;
	gateway-*) envs+=("INSTANCE_ID=$inst" "API_URL=http://127.0.0.1:$API_PORT") ;;
	esac
	start_bg "cluster-$inst" env "${envs[@]}" "$RELAY_BIN/$bin"
	printf '%s %s\n' "$inst" "$addr" >>"$CLUSTER_DIR/instances"
}

wait_ready() {
	local deadline=$((SECONDS + READY_TIMEOUT)) inst addr pending
	while :; do
		pending=""
		while read -r inst addr; do
			[[ "$(http_status "http://$addr/ready")" == 200 ]] && continue
			pidfile_alive "cluster-$inst" || { log_tail "cluster-$inst"; die "$inst exited during startup"; }
			pending="$pending $inst"
		done <"$CLUSTER_DIR/instances"
		[[ -z "$pending" && "$(http_status "http://127.0.0.1:$EDGE_PORT/health")" == 200 ]] && return 0
		((SECONDS < deadline)) || die "not ready after ${READY_TIMEOUT}s:${pending:- edge}"
		sleep 0.5
	done
}

up() {
	local t0 conf
	t0="$(now_ms)"
	tools
	"$RELAY_ROOT/scripts/deps.sh" up
	mkdir -p "$CLUSTER_DIR"
	[[ -s "$CLUSTER_DIR/instances" ]] && die "a cluster is already running (scripts/cluster.sh down first)"
	port_open 127.0.0.1 "$EDGE_PORT" && die "edge: 127.0.0.1:$EDGE_PORT is taken: make run (devproxy) and make cluster (nginx) both use :3000; make stop first"
	say "build ..."
	(cd "$RELAY_ROOT" && go build -o "$RELAY_BIN/" ./services/api ./services/gateway ./services/delivery \
		./services/persister ./services/presence ./tools/cmd/migrate) || die "build failed"
	"$RELAY_BIN/migrate" >/dev/null || die "migrate failed"
	replica_up
	redis_cluster_up
	: >"$CLUSTER_DIR/instances"
	for inst in "${INSTANCES[@]}"; do start_instance "$inst"; done
	conf="$(edge_conf)"
	/usr/sbin/nginx -t -q -p "$CLUSTER_DIR" -e "$RELAY_LOGS/nginx.log" -c "$conf" || die "edge: nginx -t failed on $conf"
	start_bg cluster-edge /usr/sbin/nginx -p "$CLUSTER_DIR" -e "$RELAY_LOGS/nginx.log" -c "$conf" \
		-g "daemon off; pid $CLUSTER_DIR/nginx.pid;"
	wait_ready
	say "cluster ready in $(elapsed "$t0"): http://127.0.0.1:$EDGE_PORT (nginx, ip_hash over 3 gateways);" \
		"replica 127.0.0.1:$REPLICA_PORT; Redis Cluster 127.0.0.1:$REDIS_BASE-$((REDIS_BASE + REDIS_NODES - 1)); logs .data/logs/cluster-*.log"
}

down() {
	local i inst pids=()
	for ((i = ${#INSTANCES[@]} - 1; i >= -1; i--)); do
		if ((i < 0)); then inst=edge; else inst="${INSTANCES[$i]}"; fi
		pidfile_alive "cluster-$inst" && pids+=("$(pid_of_file "$RELAY_PIDS/cluster-$inst.pid")")
	done
	((${#pids[@]})) && stop_pids 20 "${pids[@]}"
	rm -f "$RELAY_PIDS"/cluster-{api,gateway-*,delivery,persister,presence,edge}.pid "$CLUSTER_DIR/instances"
	redis_cluster_down
	replica_down
	say "cluster stopped (deps left running: scripts/deps.sh down stops them)"
}

status() {
	local inst
	for inst in edge "${INSTANCES[@]}"; do
		if pidfile_alive "cluster-$inst"; then say "$inst: running"; else say "$inst: stopped"; fi
	done
	if pidfile_alive pg-replica postgres; then say "replica: running"; else say "replica: stopped"; fi
	for p in $(redis_ports); do
		if pidfile_alive "cluster-redis-$p" redis-server; then say "redis $p: running"; else say "redis $p: stopped"; fi
	done
}

elapsed() {
	local ms=$(($(now_ms) - $1))
	printf '%d.%ds' $((ms / 1000)) $((ms % 1000 / 100))
}

case "${1:-}" in
tools) tools ;;
up) up ;;
down) down ;;
status) status ;;
replica-up) replica_up ;;
start)
	# start INSTANCE: start one stopped instance again (the cluster tests
	# kill a gateway, then bring it back).
	[[ -n "${2:-}" && " ${INSTANCES[*]} " == *" $2 "* ]] || die "start: one of ${INSTANCES[*]}"
	pidfile_alive "cluster-$2" && die "$2 is running"
	sed -i "/^$2 /d" "$CLUSTER_DIR/instances"
	start_instance "$2"
	wait_ready
	;;
replica-down) replica_down ;;
redis-start)
	[[ "${2:-}" =~ ^[0-9]+$ ]] || die "redis-start: a node's port"
	redis_node_up "$2"
	redis_wait_ok
	;;
*)
	printf 'usage: %s tools|up|down|status|replica-up|replica-down|start INSTANCE|redis-start PORT\n' "$0" >&2
	exit 2
	;;
esac
