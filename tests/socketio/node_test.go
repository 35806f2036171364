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
	"crypto/sha256"
	"encoding/hex"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"relay/tests/e2e/stack"
)

var (
	buildOnce sync.Once
	binaries  stack.Binaries
	buildErr  error
)

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

// newStack builds the service binaries once per test binary and starts a
// stack for t.
func newStack(t *testing.T, opts stack.Options) *stack.Stack {
	t.Helper()
	buildOnce.Do(func() {
		var dir string
		if dir, buildErr = binDir(); buildErr != nil {
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
		defer cancel()
		binaries, buildErr = stack.Build(ctx, dir)
	})
	if buildErr != nil {
		t.Fatalf("build services: %v", buildErr)
	}
	opts.Binaries = binaries
	start := time.Now()
	s := stack.NewStack(t, opts)
	t.Logf("stack of %d processes ready in %v (log %s)", len(s.Names()), time.Since(start).Round(time.Millisecond), s.LogPath)
	return s
}

// binDir is where this package builds the services: apart from the e2e
// tests' directory, so both can build at once.
func binDir() (string, error) {
	root, err := stack.WorkspaceRoot(context.Background())
	if err != nil {
		return "", err
	}
	cache, err := os.UserCacheDir()
	if err != nil {
		cache = os.TempDir()
	}
	sum := sha256.Sum256([]byte(root))
	dir := filepath.Join(cache, "relay-socketio-bin", hex.EncodeToString(sum[:6]))
	return dir, os.MkdirAll(dir, 0o755)
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

// startDevproxy runs tools/cmd/devproxy (the local single origin, sticky
// per client) in front of the gateways and returns its base URL.
func startDevproxy(t *testing.T, api, gateways string) string {
	t.Helper()
	dir, err := binDir()
	if err != nil {
		t.Fatal(err)
	}
	root, err := stack.WorkspaceRoot(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(dir, "devproxy")
	build := exec.Command("go", "build", "-o", bin, "relay/tools/cmd/devproxy")
	build.Dir = root
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build devproxy: %v\n%s", err, out)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	_ = ln.Close()
	cmd := exec.Command(bin)
	cmd.Env = append(os.Environ(), "DEVPROXY_ADDR="+addr, "API_UPSTREAM="+api, "GATEWAY_UPSTREAMS="+gateways)
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		_ = cmd.Wait()
	})
	base := "http://" + addr
	for end := time.Now().Add(10 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		res, err := http.Get(base + "/health")
		if err == nil {
			_ = res.Body.Close()
			if res.StatusCode == http.StatusOK {
				return base
			}
		}
		if time.Now().After(end) {
			t.Fatalf("devproxy not up at %s: %v", base, err)
		}
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
	s := newStack(t, stack.Options{
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
		"RELAY_PROXY_URL":    startDevproxy(t, s.APIURL(), gatewayURLs(s, gateways)),
		"RELAY_JWT_SECRET":   stack.Secret,
	}, 4*time.Minute, args...)
}
