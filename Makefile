# Local development entry points. Everything runs on this machine: the
# scripts install/start PostgreSQL, Redis and the embedded Kafka broker on
# first use and keep their state in .data/ (git-ignored).

SHELL := bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help
MAKEFLAGS += --no-print-directory

# Every module of the workspace (go.work), as directories.
MODULE_DIRS = $(shell go list -m -f '{{.Dir}}')

.PHONY: help run stop deps test test-short build vet fmt tidy clean-data

help: ## list targets
	@echo "usage: make <target>"
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{ printf "  %-12s %s\n", $$1, $$2 }'

run: ## start deps + all services + devproxy on http://localhost:3000 (foreground; Ctrl-C stops)
	@scripts/run.sh

stop: ## stop what `make run` / `scripts/run.sh --detach` started
	@scripts/run.sh stop

deps: ## start (or reuse) PostgreSQL, Redis and the Kafka broker
	@scripts/deps.sh up

# -race=false keeps the suite inside CI's time budget on 2 cores; run
# `go test -race` on a package when chasing a data race.
test: deps ## all tests of every workspace module, then test-socketio (needs deps; starts them)
	@. scripts/env.sh && go test -count=1 -race=false -timeout 20m $(addsuffix /...,$(MODULE_DIRS))
	@$(MAKE) test-socketio

test-short: ## unit tests only (-short), no deps needed
	@. scripts/env.sh && go test -count=1 -short -timeout 10m $(addsuffix /...,$(MODULE_DIRS))

build: ## compile every module
	@go build $(addsuffix /...,$(MODULE_DIRS))

vet: ## go vet every module
	@go vet $(addsuffix /...,$(MODULE_DIRS))

fmt: ## gofmt -w all Go files
	@gofmt -l -w $(MODULE_DIRS)

tidy: ## go mod tidy in each module
	@for d in $(MODULE_DIRS); do echo "tidy $$d"; (cd "$$d" && go mod tidy); done

clean-data: ## stop everything and delete all local state (.data, /var/lib/relay-dev/<hash>)
	@scripts/run.sh stop
	@scripts/deps.sh clean

# Load test (tools/cmd/chatbench; results and method in docs/performance.md).
# Starts the stack when it is not running (scripts/run.sh --detach is a no-op
# when everything already runs) with AUTH_RATE_LIMIT raised, because the
# bench signs in up to 1,000 users through /api/auth/* (tokens are then
# cached in .data/bench/). A stack already running with the default limit
# makes the first run fail with a 429 message saying so. The per-user REST
# limits and the room-creation cap are raised the same way: the bench
# creates rooms of up to 1,000 members as one user.
BENCH_SCENARIO ?= chat
BENCH_ARGS ?=
.PHONY: bench
bench: ## load-test the stack with chatbench (starts it if needed); BENCH_SCENARIO=chat|fanout|idle|max|artillery BENCH_ARGS="--duration 30s ..."
	@. scripts/env.sh && AUTH_RATE_LIMIT="$${AUTH_RATE_LIMIT:-100000}" RATE_WRITES_PER_MIN="$${RATE_WRITES_PER_MIN:-100000}" \
		RATE_ROOMS_PER_HOUR="$${RATE_ROOMS_PER_HOUR:-100000}" ROOM_CREATE_MAX_MEMBERS="$${ROOM_CREATE_MAX_MEMBERS:-1000}" scripts/run.sh --detach
	@. scripts/env.sh && go run ./tools/cmd/chatbench --scenario $(BENCH_SCENARIO) $(BENCH_ARGS)

# Fuzzing (docs/security.md). Each target's committed corpus
# (testdata/fuzz/<Target>/) and seeds run as ordinary tests in `make test`;
# `make fuzz` runs every target for FUZZTIME, one after the other, at one
# worker each. New crashers land in testdata/fuzz/: commit them with the fix.
FUZZTIME ?= 1m
FUZZ_TARGETS = \
	./pkg/protocol:FuzzCheckMetadata \
	./pkg/events:FuzzUnmarshal \
	./services/api/httpapi:FuzzDecodeBody \
	./services/api/httpapi:FuzzSearchCursor \
	./services/gateway/internal/transport/ws:FuzzFrameReader
.PHONY: fuzz
fuzz: ## run every go fuzz target for FUZZTIME (default 1m) each
	@. scripts/env.sh && for t in $(FUZZ_TARGETS); do \
		pkg="$${t%%:*}"; name="$${t##*:}"; echo "fuzz $$name ($$pkg) for $(FUZZTIME)"; \
		RELAY_UNIT_ONLY=1 go test -vet=off -run '^$$' -fuzz "^$$name$$" -fuzztime $(FUZZTIME) -parallel 1 "$$pkg" || exit 1; \
	done

# Socket.IO compatibility (docs/protocol.md#socketio). The Node.js side runs
# the real npm clients; tests/socketio/*_test.go starts a stack of its own
# (tests/e2e/stack: fresh database, Redis prefix and Kafka topic) and runs
# them against it. Needs Node.js >= 20 and npm (Debian: apt install nodejs
# npm). Packages are installed from the committed lock files into
# tests/*/node_modules when a lock file changed.
NODE_CHECK = command -v node >/dev/null && command -v npm >/dev/null || \
	{ echo "Node.js >= 20 and npm are required (Debian: apt install nodejs npm)" >&2; exit 1; }
.PHONY: test-socketio artillery

tests/socketio/node_modules/.relay-installed: tests/socketio/package-lock.json
	@$(NODE_CHECK)
	@cd tests/socketio && npm ci --no-audit --no-fund
	@touch $@

# Artillery 2.0.21 is the newest release that runs on Node.js 20; no browser
# is downloaded (its Playwright engine is not used).
tests/artillery/node_modules/.relay-installed: tests/artillery/package-lock.json
	@$(NODE_CHECK)
	@cd tests/artillery && PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm ci --no-audit --no-fund --ignore-scripts
	@touch $@

test-socketio: deps tests/socketio/node_modules/.relay-installed ## socket.io-client 4 (both transports) and native clients against two gateways
	@. scripts/env.sh && RELAY_SOCKETIO_IT=1 go test -count=1 -run '^TestSocketIOClients$$' -timeout 10m ./tests/socketio/

# ARTILLERY_ENVIRONMENT=seed runs the seed's full phases (60 s + 300 s);
# ARTILLERY_ARGS adds flags to `artillery run` (e.g. -s for one user).
artillery: deps tests/artillery/node_modules/.relay-installed ## the seed's Artillery Socket.IO scenario (phases shortened to 10 s + 20 s) against a gateway; zero errors required
	@. scripts/env.sh && RELAY_ARTILLERY_IT=1 go test -count=1 -v -run '^TestArtillery$$' -timeout 15m ./tests/socketio/
