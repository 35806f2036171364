# shellcheck shell=bash
# Sourced by the other scripts (and usable by hand: `. scripts/env.sh`).
#
# Precedence, highest first: variables already in the environment, then
# KEY=VALUE lines from ./.env at the repo root, then the defaults below.
# .env is parsed, not sourced, so a stray `$(...)` in it never runs.

RELAY_ROOT="${RELAY_ROOT:-$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)}"
export RELAY_ROOT

# Load .env without overriding what the caller already exported.
if [[ -f "$RELAY_ROOT/.env" ]]; then
	while IFS= read -r _line || [[ -n "$_line" ]]; do
		_line="${_line#"${_line%%[![:space:]]*}"}" # trim leading blanks
		[[ -z "$_line" || "$_line" == \#* ]] && continue
		_line="${_line#export }"
		[[ "$_line" == *=* ]] || continue
		_key="${_line%%=*}"
		_val="${_line#*=}"
		[[ "$_key" =~ ^[A-Za-z_][A-Za-z0-9_]*$ ]] || continue
		# Strip one level of matching quotes.
		if [[ "$_val" =~ ^\"(.*)\"$ || "$_val" =~ ^\'(.*)\'$ ]]; then
			_val="${BASH_REMATCH[1]}"
		fi
		if [[ -z "${!_key+set}" ]]; then
			export "$_key=$_val"
		fi
	done <"$RELAY_ROOT/.env"
	unset _line _key _val
fi

# Go may be installed but not on PATH in non-login shells (CI, cron).
if ! command -v go >/dev/null 2>&1 && [[ -x /usr/local/go/bin/go ]]; then
	export PATH="/usr/local/go/bin:$PATH"
fi

# Local state, all git-ignored under .data/.
: "${RELAY_DATA:=$RELAY_ROOT/.data}"
: "${RELAY_LOGS:=$RELAY_DATA/logs}"
: "${RELAY_PIDS:=$RELAY_DATA/pids}"
: "${RELAY_BIN:=$RELAY_DATA/bin}"
export RELAY_DATA RELAY_LOGS RELAY_PIDS RELAY_BIN

# Connection settings the services and tests read.
: "${DATABASE_URL:=postgres://relay:relay@127.0.0.1:5432/relay?sslmode=disable}"
: "${REDIS_URL:=redis://127.0.0.1:6379/0}"
: "${KAFKA_BROKERS:=127.0.0.1:9092}"
: "${KAFKA_TOPIC:=chat.messages}"
# Well-known dev value; the services refuse it (and the development
# database password above) unless RELAY_ENV=development, which everything
# started from these scripts (make run, make test) is. A real deployment
# leaves RELAY_ENV unset and sets its own secrets (docs/security.md).
: "${JWT_SECRET:=relay-dev-secret-change-me}"
: "${RELAY_ENV:=development}"
export DATABASE_URL REDIS_URL KAFKA_BROKERS KAFKA_TOPIC JWT_SECRET RELAY_ENV
