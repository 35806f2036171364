// Package socketio runs the Node.js tests of the gateway's Socket.IO
// endpoint (tests/socketio/*.test.mjs: the real socket.io-client from npm,
// and the native protocol through the ws package) and the seed's Artillery
// scenario (tests/artillery) against a stack of the real services started
// for each test (relay/tests/e2e/stack, on the test's own database, Redis
// prefix and Kafka topic).
//
// They need Node.js 20 and the npm packages installed, so they run only
// when asked: `make test-socketio` (RELAY_SOCKETIO_IT=1) and `make
// artillery` (RELAY_ARTILLERY_IT=1) install the packages and run them.
package socketio

import (
	"bufio"
	"context"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"relay/tests/e2e/stack"
)

// stacks builds the services apart from the e2e tests' directory, so both
// can build at once.
var stacks = stack.Starter{
	Dir:     func() (string, error) { return stack.CacheBinDir("relay-socketio-bin") },
	Timeout: 5 * time.Minute,
}

// requireIT skips t unless env is "1".
func requireIT(t *testing.T, env, target string) {
	t.Helper()
	if os.Getenv(env) != "1" {
		t.Skipf("Node.js integration test: run `make %s` (sets %s=1 after installing the npm packages)", target, env)
	}
}

// requireNode returns the node executable, failing t when node or the npm
// package pkg (under dir/node_modules) is missing.
func requireNode(t *testing.T, dir, pkg string) string {
	t.Helper()
	node, err := exec.LookPath("node")
	if err != nil {
		t.Fatalf("node not found on PATH (Node.js 20 is required): %v", err)
	}
	if _, err := os.Stat(filepath.Join(dir, "node_modules", pkg, "package.json")); err != nil {
		t.Fatalf("npm package %s is not installed in %s: run `npm ci` there (make does it): %v", pkg, dir, err)
	}
	return node
}

// runNode runs node with args in dir and env added, streaming its output
// to the test log; a non-zero exit fails t.
func runNode(t *testing.T, node, dir string, env map[string]string, timeout time.Duration, args ...string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, node, args...)
	cmd.Dir = dir
	cmd.Env = os.Environ()
	for k, v := range env {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	pr, pw := io.Pipe()
	cmd.Stdout, cmd.Stderr = pw, pw
	done := make(chan struct{})
	go func() {
		defer close(done)
		sc := bufio.NewScanner(pr)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			t.Log(sc.Text())
		}
	}()
	err := cmd.Run()
	_ = pw.Close()
	<-done
	if ctx.Err() != nil {
		t.Fatalf("node %s: timed out after %v", strings.Join(args, " "), timeout)
	}
	if err != nil {
		t.Fatalf("node %s: %v", strings.Join(args, " "), err)
	}
}

// gatewayURLs lists the stack's gateways as http:// base URLs.
func gatewayURLs(s *stack.Stack, n int) string {
	urls := make([]string, n)
	for i := range n {
		urls[i] = s.HTTPURL(stack.GatewayName(i))
	}
	return strings.Join(urls, ",")
}

// TestSocketIOClients runs tests/socketio/*.test.mjs against two gateways:
// the seed's client flow over both transports, socket.io-client and native
// users in one room across instances, recovery with lastSeq, bad tokens and
// binary data.
func TestSocketIOClients(t *testing.T) {
	requireIT(t, "RELAY_SOCKETIO_IT", "test-socketio")
	dir, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	node := requireNode(t, dir, "socket.io-client")
	files, err := filepath.Glob(filepath.Join(dir, "*.test.mjs"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no *.test.mjs in %s (%v)", dir, err)
	}
	const gateways = 2
	s := stacks.Start(t, stack.Options{
		Gateways:   gateways,
		Partitions: 2,
		ServiceEnv: map[string]map[string]string{"gateway": {
			// Short heartbeats, so every test sees several ping/pong rounds
			// on both transports.
			"SOCKETIO_PING_INTERVAL": "1s",
			"SOCKETIO_PING_TIMEOUT":  "2s",
		}},
	})
	args := []string{"--test", "--test-concurrency=1", "--test-reporter=spec"}
	// RELAY_SOCKETIO_GREP runs only the tests whose name matches it.
	if p := os.Getenv("RELAY_SOCKETIO_GREP"); p != "" {
		args = append(args, "--test-name-pattern="+p)
	}
	for _, f := range files {
		args = append(args, filepath.Base(f))
	}
	runNode(t, node, dir, map[string]string{
		"RELAY_API_URL":      s.APIURL(),
		"RELAY_GATEWAY_URLS": gatewayURLs(s, gateways),
		"RELAY_PROXY_URL":    stack.StartDevproxy(t, map[string]string{"API_UPSTREAM": s.APIURL(), "GATEWAY_UPSTREAMS": gatewayURLs(s, gateways)}),
		"RELAY_JWT_SECRET":   stack.Secret,
	}, 4*time.Minute, args...)
}
