# Local development entry points. Everything runs on this machine: the
# scripts install/start PostgreSQL, Redis and the embedded Kafka broker on
# first use and keep their state in .data/ (git-ignored).

SHELL := bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help
MAKEFLAGS += --no-print-directory

# Every module of the workspace (go.work), as directories.
MODULE_DIRS = $(shell go list -m -f '{{.Dir}}')

.PHONY: help run stop deps test test-short build vet fmt tidy clean-data web test-js test-web chromium screenshots

help: ## list targets
	@echo "usage: make <target>"
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{ printf "  %-12s %s\n", $$1, $$2 }'

run: web ## build the web app, start deps + all services + devproxy on http://localhost:3000 (foreground; Ctrl-C stops)
	@WEB_DIR="$(CURDIR)/web/dist" scripts/run.sh

stop: ## stop what `make run` / `scripts/run.sh --detach` started
	@scripts/run.sh stop

deps: ## start (or reuse) PostgreSQL, Redis and the Kafka broker
	@scripts/deps.sh up

# -race=false keeps the suite inside CI's time budget on 2 cores; run
# `go test -race` on a package when chasing a data race.
test: deps cluster-tools ## all tests of every workspace module, then test-socketio, test-alerts, test-js and test-web (needs deps; starts them)
	@. scripts/env.sh && go test -count=1 -race=false -timeout 20m $(addsuffix /...,$(MODULE_DIRS))
	@$(MAKE) test-socketio
	@$(MAKE) test-alerts
	@$(MAKE) test-js
	@$(MAKE) test-web

# nginx (Debian's): tests/deploy runs `nginx -t` on deploy/compose/nginx.conf,
# and the cluster mode runs it on :3000.
.PHONY: cluster-tools cluster cluster-stop
cluster-tools:
	@scripts/cluster.sh tools

# Local cluster mode (docs/deployment.md#local-cluster-mode): nginx on :3000
# in front of three gateways, PostgreSQL primary + hot standby on :5433,
# every service. Excludes `make run` (devproxy also wants :3000).
cluster: ## the production topology on loopback: nginx :3000 (ip_hash) + 3 gateways, PostgreSQL replica :5433, all services (detached)
	@scripts/cluster.sh up

cluster-stop: ## stop what `make cluster` started (deps stay up)
	@scripts/cluster.sh down

# tests/cluster against a cluster of its own: started here, stopped after.
.PHONY: test-cluster
test-cluster: deps cluster-tools ## cluster mode tests (tests/cluster): message path through nginx, replica stopped, gateway killed
	@scripts/cluster.sh up
	@. scripts/env.sh && rc=0 && { RELAY_CLUSTER_IT=1 go test -count=1 -v -timeout 10m ./tests/cluster/ || rc=$$?; }; scripts/cluster.sh down; exit $$rc

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
# creates rooms of up to 1,000 members as one user; so are the gateway's
# per-address connection caps (every bench client comes from 127.0.0.1) and
# its per-user send and join limits.
BENCH_SCENARIO ?= chat
BENCH_ARGS ?=
.PHONY: bench
bench: ## load-test the stack with chatbench (starts it if needed); BENCH_SCENARIO=chat|fanout|idle|max|artillery BENCH_ARGS="--duration 30s ..."
	@. scripts/env.sh && AUTH_RATE_LIMIT="$${AUTH_RATE_LIMIT:-100000}" RATE_WRITES_PER_MIN="$${RATE_WRITES_PER_MIN:-100000}" \
		RATE_ROOMS_PER_HOUR="$${RATE_ROOMS_PER_HOUR:-100000}" ROOM_CREATE_MAX_MEMBERS="$${ROOM_CREATE_MAX_MEMBERS:-1000}" \
		MAX_CONNECTIONS_PER_IP="$${MAX_CONNECTIONS_PER_IP:-100000}" SOCKETIO_MAX_PENDING_PER_IP="$${SOCKETIO_MAX_PENDING_PER_IP:-100000}" \
		RATE_SENDS_PER_SEC="$${RATE_SENDS_PER_SEC:-100000}" RATE_JOINS_PER_SEC="$${RATE_JOINS_PER_SEC:-100000}" scripts/run.sh --detach
	@. scripts/env.sh && go run ./tools/cmd/chatbench --scenario $(BENCH_SCENARIO) $(BENCH_ARGS)

# Fuzzing (docs/security.md). Each target's committed corpus
# (testdata/fuzz/<Target>/) and seeds run as ordinary tests in `make test`;
# `make fuzz` runs every target for FUZZTIME, one after the other, at one
# worker each. New crashers land in testdata/fuzz/: commit them with the fix.
FUZZTIME ?= 1m
FUZZ_TARGETS = \
	./pkg/protocol:FuzzCheckMetadata \
	./pkg/events:FuzzUnmarshal \
	./services/api/internal/rest:FuzzDecodeBody \
	./services/api/internal/messages:FuzzSearchCursor \
	./services/gateway/internal/transport/ws:FuzzFrameReader \
	./services/gateway/internal/transport/socketio:FuzzEnginePayload \
	./services/gateway/internal/transport/socketio/packet:FuzzDecode \
	./services/gateway/internal/commands:FuzzDecodeEnvelope
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

# Observability (docs/operations.md). The alert rules' unit tests need
# promtool, from Debian's prometheus package (installed when missing).
.PHONY: test-alerts trace
test-alerts: ## promtool check + unit tests of deploy/prometheus/alerts.yml
	@scripts/observability.sh check

# ID is a message id (the ack's id); JAEGER defaults to the local Jaeger
# that OBSERVABILITY=1 make run starts.
trace: ## print a message's trace as a tree from Jaeger: make trace ID=<message id>
	@go run ./tools/cmd/tracetree $(if $(JAEGER),--jaeger $(JAEGER)) "$(ID)"

# Web client: the relay-client package (clients/js), the web app (web/,
# built into web/dist and served at / by the devproxy) and their tests
# against a real stack (tests/browser: relay-client in Node.js, the app in
# Debian's Chromium through playwright-core; docs/client.md). npm installs
# from the committed lock files when they change; no browser is downloaded
# (scripts/deps.sh chromium installs Debian's).
WEB_SOURCES = $(shell find web/src -type f 2>/dev/null) web/index.html web/vite.config.ts web/tsconfig.json
CLIENT_SOURCES = $(wildcard clients/js/src/*.ts) clients/js/tsconfig.json

clients/js/node_modules/.relay-installed: clients/js/package-lock.json
	@$(NODE_CHECK)
	@cd clients/js && npm ci --no-audit --no-fund
	@touch $@

clients/js/dist/index.js: clients/js/node_modules/.relay-installed $(CLIENT_SOURCES)
	@cd clients/js && npm run --silent build
	@touch $@

web/node_modules/.relay-installed: web/package-lock.json clients/js/package.json
	@$(NODE_CHECK)
	@cd web && npm ci --no-audit --no-fund
	@touch $@

web/dist/index.html: web/node_modules/.relay-installed clients/js/dist/index.js $(WEB_SOURCES)
	@cd web && npm run --silent build
	@touch $@

tests/browser/node_modules/.relay-installed: tests/browser/package-lock.json
	@$(NODE_CHECK)
	@cd tests/browser && PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm ci --no-audit --no-fund --ignore-scripts
	@touch $@

web: web/dist/index.html ## build relay-client and the web app (web/dist, served at / by `make run`)

chromium: ## install Debian's chromium for the browser tests when it is missing
	@scripts/deps.sh chromium

test-js: clients/js/dist/index.js ## relay-client's unit tests (node --test)
	@cd clients/js && npm test --silent

# RELAY_SCREENSHOT_DIR keeps the browser tests' screenshots (default: a
# temporary directory); `make screenshots` writes them into docs/images.
test-web: deps chromium web tests/browser/node_modules/.relay-installed ## relay-client and the web app (Chromium) against a real stack
	@. scripts/env.sh && RELAY_BROWSER_IT=1 go test -count=1 -timeout 10m ./tests/browser/

screenshots: ## run the browser tests and keep their screenshots in docs/images
	@RELAY_SCREENSHOT_DIR="$(CURDIR)/docs/images" $(MAKE) test-web
