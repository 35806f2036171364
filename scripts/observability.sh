#!/usr/bin/env bash
# Local observability: Jaeger (traces) and Prometheus (metrics, alerts).
#
#   scripts/observability.sh check          promtool check/test the alert rules
#                                           (installs Debian's prometheus package
#                                           when promtool is missing)
#   scripts/observability.sh up JOB=ADDR..  build (once) and start Jaeger, and
#                                           Prometheus scraping each ADDR as JOB
#                                           with deploy/prometheus/alerts.yml
#   scripts/observability.sh down           stop what `up` started
#
# scripts/run.sh calls up/down when OBSERVABILITY=1. Everything listens on
# 127.0.0.1 only: Jaeger OTLP/HTTP :4318 (OTLP/gRPC :4317), its query API
# :16686; Prometheus :9090. Jaeger is built from the Go module proxy
# (JAEGER_VERSION); that build serves the query API but not the UI assets.
set -euo pipefail

# shellcheck source=scripts/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

JAEGER_VERSION="${JAEGER_VERSION:-v1.76.0}"
JAEGER_BIN="$RELAY_BIN/jaeger-$JAEGER_VERSION"
PROM_DIR="$RELAY_DATA/prometheus"
PROM_ADDR="${PROMETHEUS_ADDR:-127.0.0.1:9090}"
JAEGER_QUERY="${JAEGER_QUERY_ADDR:-127.0.0.1:16686}"

ensure_promtool() {
	command -v promtool >/dev/null 2>&1 || apt_install prometheus
}

check() {
	ensure_promtool
	local dir="$RELAY_ROOT/deploy/prometheus"
	promtool check rules "$dir/alerts.yml"
	promtool test rules "$dir"/tests/*.yml
}

# build_jaeger: `go install module@version` refuses Jaeger's go.mod (it has
# replace directives), so build the downloaded module as its own main module.
build_jaeger() {
	[[ -x "$JAEGER_BIN" ]] && return 0
	say "building Jaeger $JAEGER_VERSION from the Go module proxy (first run only; a few minutes) ..."
	local dir
	dir="$(cd /tmp && GOWORK=off GOFLAGS=-mod=mod go mod download -json "github.com/jaegertracing/jaeger@$JAEGER_VERSION" |
		sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')"
	[[ -n "$dir" ]] || die "could not download github.com/jaegertracing/jaeger@$JAEGER_VERSION"
	(cd "$dir" && GOWORK=off GOFLAGS=-mod=readonly go build -o "$JAEGER_BIN.tmp" ./cmd/jaeger) >>"$RELAY_LOGS/jaeger-build.log" 2>&1 ||
		{ log_tail jaeger-build 30; die "building Jaeger failed (log .data/logs/jaeger-build.log)"; }
	mv "$JAEGER_BIN.tmp" "$JAEGER_BIN"
}

# wait_http URL NAME: wait up to 30 s for URL to answer 200.
wait_http() {
	local deadline=$((SECONDS + 30))
	until [[ "$(http_status "$1")" == 200 ]]; do
		((SECONDS < deadline)) || { log_tail "$2" 30; die "$2 did not start (GET $1)"; }
		sleep 0.3
	done
}

prometheus_config() {
	local target job addr jobs=()
	for target in "$@"; do
		job="${target%%=*}"
		[[ " ${jobs[*]} " == *" $job "* ]] || jobs+=("$job")
	done
	cat <<EOC
# Written by scripts/observability.sh for OBSERVABILITY=1 make run.
global:
  scrape_interval: 5s
  evaluation_interval: 5s
rule_files:
  - $RELAY_ROOT/deploy/prometheus/alerts.yml
scrape_configs:
EOC
	for job in "${jobs[@]}"; do
		printf '  - job_name: %s\n    static_configs:\n      - targets:\n' "$job"
		for target in "$@"; do
			addr="${target#*=}"
			[[ "${target%%=*}" == "$job" ]] && printf '          - "%s"\n' "$addr"
		done
	done
}

up() {
	ensure_promtool
	build_jaeger
	if ! pidfile_alive jaeger "$JAEGER_BIN"; then
		start_bg jaeger "$JAEGER_BIN" --config "$RELAY_ROOT/deploy/jaeger/jaeger.yaml"
	fi
	mkdir -p "$PROM_DIR/data"
	prometheus_config "$@" >"$PROM_DIR/prometheus.yml"
	promtool check config "$PROM_DIR/prometheus.yml" >>"$RELAY_LOGS/prometheus.log" 2>&1 ||
		{ log_tail prometheus 20; die "generated Prometheus config is invalid"; }
	if pidfile_alive prometheus prometheus; then
		# Pick up the new targets without losing the data.
		kill -HUP "$(pid_of_file "$RELAY_PIDS/prometheus.pid")"
	else
		start_bg prometheus prometheus --config.file="$PROM_DIR/prometheus.yml" \
			--storage.tsdb.path="$PROM_DIR/data" --storage.tsdb.retention.time=2d \
			--web.listen-address="$PROM_ADDR"
	fi
	wait_http "http://$JAEGER_QUERY/api/services" jaeger
	wait_http "http://$PROM_ADDR/-/ready" prometheus
	say "  ready: jaeger (OTLP http://127.0.0.1:4318, query API http://$JAEGER_QUERY/api)"
	say "  ready: prometheus http://$PROM_ADDR (targets /targets, alerts /alerts)"
}

down() {
	local name pids=()
	for name in jaeger prometheus; do
		if pidfile_alive "$name"; then
			pids+=("$(pid_of_file "$RELAY_PIDS/$name.pid")")
		fi
		rm -f "$RELAY_PIDS/$name.pid"
	done
	((${#pids[@]} == 0)) || stop_pids 10 "${pids[@]}"
}

case "${1:-}" in
check) check ;;
up)
	shift
	up "$@"
	;;
down) down ;;
*)
	printf 'usage: %s check | up JOB=ADDR... | down\n' "$0" >&2
	exit 2
	;;
esac
