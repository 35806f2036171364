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
#
# `make run` (devproxy on :3000) and the cluster (nginx on :3000) exclude
# each other. State lives under .data/cluster (git-ignored).
set -euo pipefail

# shellcheck source=scripts/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

# tools installs nginx (Debian's) without letting the package start its
# own server on :80: invoke-rc.d asks policy-rc.d, and 101 means "no".
tools() {
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

case "${1:-}" in
tools) tools ;;
*)
	printf 'usage: %s tools|up|down|status\n' "$0" >&2
	exit 2
	;;
esac
