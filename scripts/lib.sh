# shellcheck shell=bash
# Helpers shared by deps.sh and run.sh. Sourced, never executed.

# shellcheck source=scripts/env.sh
. "$(dirname "${BASH_SOURCE[0]}")/env.sh"

mkdir -p "$RELAY_LOGS" "$RELAY_PIDS" "$RELAY_BIN"

say() { printf '%s\n' "$*"; }
warn() { printf 'warning: %s\n' "$*" >&2; }
die() {
	printf 'error: %s\n' "$*" >&2
	exit 1
}

# now_ms prints a monotonic-enough wall clock in milliseconds (for timings).
now_ms() { date +%s%3N; }

# port_open HOST PORT: true if something accepts TCP there. The timeout
# guards against a filtered port hanging the connect.
port_open() {
	# shellcheck disable=SC2016 # $1/$2 expand in the inner bash
	timeout 2 bash -c 'exec 3<>"/dev/tcp/$1/$2"' _ "$1" "$2" 2>/dev/null
}

# http_status URL: prints the HTTP status code, 000 if unreachable. Falls
# back to a raw HTTP/1.0 request when curl is not installed.
http_status() {
	if command -v curl >/dev/null 2>&1; then
		curl -s -o /dev/null -m 2 -w '%{http_code}' "$1" 2>/dev/null || true
		return 0
	fi
	local rest="${1#http://}" hostport path code
	hostport="${rest%%/*}"
	path="/${rest#"$hostport"}"
	path="/${path#/}"
	# shellcheck disable=SC2016 # $1..$3 expand in the inner bash
	code="$(timeout 3 bash -c 'exec 3<>"/dev/tcp/$1/$2" && printf "GET %s HTTP/1.0\r\nHost: %s\r\n\r\n" "$3" "$1:$2" >&3 && IFS= read -r l <&3 && printf "%s" "$l"' \
		_ "${hostport%%:*}" "${hostport##*:}" "$path" 2>/dev/null | awk '{print $2}')" || true
	printf '%s' "${code:-000}"
}

# repo_hash: a stable short id for this checkout, used to name state kept
# outside the repo (/var/lib/relay-dev/<hash>).
repo_hash() { printf '%s' "$RELAY_ROOT" | sha256sum | cut -c1-16; }

# pid_of_file FILE: prints the pid stored in FILE (first line) if any.
pid_of_file() {
	[[ -f "$1" ]] || return 1
	local pid
	pid="$(head -n1 "$1" 2>/dev/null | tr -dc '0-9')"
	[[ -n "$pid" ]] || return 1
	printf '%s\n' "$pid"
}

# proc_alive PID [PATTERN]: the process exists, is not a zombie, and (if
# PATTERN is given) its command line contains PATTERN. The pattern check
# protects against a recycled pid after a reboot or a long pause.
proc_alive() {
	local pid="$1" pattern="${2:-}" state cmdline
	[[ -r "/proc/$pid/stat" ]] || return 1
	state="$(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null || true)"
	[[ -n "$state" && "$state" != Z && "$state" != X ]] || return 1
	if [[ -n "$pattern" ]]; then
		cmdline="$(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null || true)"
		[[ "$cmdline" == *"$pattern"* ]] || return 1
	fi
}

# pidfile_alive NAME [PATTERN]: the process recorded in .data/pids/NAME.pid
# is alive. Removes the pid file when it is stale.
pidfile_alive() {
	local file="$RELAY_PIDS/$1.pid" pid
	pid="$(pid_of_file "$file")" || return 1
	if proc_alive "$pid" "${2:-}"; then
		return 0
	fi
	rm -f "$file"
	return 1
}

# stop_pids TIMEOUT_S PID...: SIGTERM all, wait up to TIMEOUT_S for them to
# exit, then SIGKILL what is left. All are signalled at once so N services
# cost one grace period, not N.
stop_pids() {
	local timeout="$1"
	shift
	local pid left deadline
	for pid in "$@"; do
		kill -TERM "$pid" 2>/dev/null || true
	done
	deadline=$((SECONDS + timeout))
	while :; do
		left=()
		for pid in "$@"; do
			proc_alive "$pid" && left+=("$pid")
		done
		((${#left[@]} == 0)) && return 0
		((SECONDS >= deadline)) && break
		sleep 0.2
	done
	warn "still running after ${timeout}s, sending SIGKILL: ${left[*]}"
	kill -KILL "${left[@]}" 2>/dev/null || true
}

# log_tail NAME [LINES]: the end of .data/logs/NAME.log for error messages.
log_tail() {
	local f="$RELAY_LOGS/$1.log"
	if [[ -f "$f" ]]; then
		printf -- '--- last %s lines of %s ---\n' "${2:-30}" "$f" >&2
		tail -n "${2:-30}" "$f" >&2
		printf -- '---\n' >&2
	fi
}

# start_bg NAME CMD...: start CMD detached in its own session (so a Ctrl-C
# in the terminal does not hit it; run.sh stops things in order instead),
# appending to .data/logs/NAME.log and recording the pid.
start_bg() {
	local name="$1"
	shift
	local log="$RELAY_LOGS/$name.log"
	printf '\n=== %s start %s ===\n' "$(date -Is)" "$name" >>"$log"
	# setsid/nohup exec the command without forking here (the background
	# child is not a group leader), so $! is the command's own pid.
	setsid nohup "$@" >>"$log" 2>&1 </dev/null &
	printf '%s\n' "$!" >"$RELAY_PIDS/$name.pid"
}

# apt_install PKG...: install Debian packages, running `apt-get update` at
# most once per script run.
_apt_updated=""
apt_install() {
	command -v apt-get >/dev/null 2>&1 || die "apt-get not found; install $* by hand"
	((EUID == 0)) || die "installing $* needs root (re-run as root or install them yourself)"
	if [[ -z "$_apt_updated" ]]; then
		say "apt-get update (once) ..."
		DEBIAN_FRONTEND=noninteractive apt-get update -qq >>"$RELAY_LOGS/apt.log" 2>&1 ||
			{ log_tail apt; die "apt-get update failed"; }
		_apt_updated=1
	fi
	say "apt-get install $* ..."
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >>"$RELAY_LOGS/apt.log" 2>&1 ||
		{ log_tail apt; die "apt-get install $* failed (log .data/logs/apt.log)"; }
}
