// Package browser runs the JavaScript clients against a stack of the real
// services (relay/tests/e2e/stack: its own database, Redis prefix and Kafka
// topic) behind the real devproxy:
//
//   - TestClientLibrary: clients/js/test/integration/*.test.mjs, the
//     relay-client package in Node.js (a gateway is killed mid-conversation
//     and both clients must converge with no gap and no duplicate);
//   - TestWebApp: tests/browser/*.test.mjs, the web app (web/dist) in
//     Debian's Chromium driven by playwright-core: two users in two browser
//     contexts.
//
// The Node.js side asks the Go side to kill and restart processes through a
// small control endpoint (RELAY_CONTROL_URL); the requests are carried out
// on the test's goroutine.
//
// They need Node.js 20, the npm packages and (for TestWebApp) chromium and
// a built web app, so they run only when asked: `make test-web` installs
// and builds everything and sets RELAY_BROWSER_IT=1.
package browser

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"relay/tests/e2e/stack"
)

// stacks builds the services into the e2e tests' directory: after `make
// test`'s Go tests the binaries there are current and the build only
// checks them.
var stacks = stack.Starter{Dir: stack.BinDir, Timeout: 10 * time.Minute}

func requireIT(t *testing.T) {
	t.Helper()
	if os.Getenv("RELAY_BROWSER_IT") != "1" {
		t.Skip("browser and client-library integration tests: run `make test-web` (installs the npm packages and chromium, builds the web app, sets RELAY_BROWSER_IT=1)")
	}
}

// repoRoot is the workspace root (where go.work is).
func repoRoot(t *testing.T) string {
	t.Helper()
	root, err := stack.WorkspaceRoot(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return root
}

// newStack starts a stack for t, the api's uploads in t's own directory.
func newStack(t *testing.T, opts stack.Options) *stack.Stack {
	t.Helper()
	// The api keeps uploads under its data directory: the test's own, not
	// the package directory it runs in.
	if opts.ServiceEnv == nil {
		opts.ServiceEnv = map[string]map[string]string{}
	}
	if opts.ServiceEnv["api"] == nil {
		opts.ServiceEnv["api"] = map[string]string{}
	}
	opts.ServiceEnv["api"]["RELAY_DATA"] = t.TempDir()
	return stacks.Start(t, opts)
}

// startDevproxy runs tools/cmd/devproxy (the single origin: web app, api,
// gateways) and returns its base URL.
func startDevproxy(t *testing.T, s *stack.Stack, gateways int, webDir string) string {
	t.Helper()
	ups := make([]string, gateways)
	for i := range gateways {
		ups[i] = s.HTTPURL(stack.GatewayName(i))
	}
	return stack.StartDevproxy(t, map[string]string{
		"API_UPSTREAM": s.APIURL(), "GATEWAY_UPSTREAMS": strings.Join(ups, ","), "WEB_DIR": webDir,
	})
}

// controlRequest is one order from the Node.js side, carried out on the
// test goroutine (stack.Kill and Start may fail the test).
type controlRequest struct {
	action string // kill, start
	name   string // process name, or "preferred-gateway"
	reply  chan controlReply
}

type controlReply struct {
	Name  string `json:"name,omitempty"`
	Error string `json:"error,omitempty"`
}

// controller serves POST /kill?name=... and POST /start?name=... on a
// loopback port and hands them to the test goroutine through reqs.
func controller(t *testing.T) (string, <-chan controlRequest) {
	t.Helper()
	reqs := make(chan controlRequest)
	mux := http.NewServeMux()
	for _, action := range []string{"kill", "start"} {
		mux.HandleFunc("POST /"+action, func(w http.ResponseWriter, r *http.Request) {
			req := controlRequest{action: action, name: r.URL.Query().Get("name"), reply: make(chan controlReply, 1)}
			select {
			case reqs <- req:
			case <-r.Context().Done():
				return
			}
			rep := <-req.reply
			w.Header().Set("Content-Type", "application/json")
			if rep.Error != "" {
				w.WriteHeader(http.StatusBadRequest)
			}
			_ = json.NewEncoder(w).Encode(rep)
		})
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = srv.Serve(ln)
	}()
	t.Cleanup(func() {
		_ = srv.Close()
		<-done
	})
	return "http://" + ln.Addr().String(), reqs
}

// preferredGateway asks the devproxy which gateway it sends this host's
// clients to (its X-Relay-Upstream header) and returns that process name.
func preferredGateway(s *stack.Stack, proxy string, gateways int) (string, error) {
	res, err := http.Get(proxy + "/ws")
	if err != nil {
		return "", err
	}
	_ = res.Body.Close()
	host := res.Header.Get("X-Relay-Upstream")
	for i := range gateways {
		name := stack.GatewayName(i)
		if strings.TrimPrefix(s.HTTPURL(name), "http://") == host {
			return name, nil
		}
	}
	return "", fmt.Errorf("devproxy answered from %q, not a gateway of the stack", host)
}

// runNode runs node with args in dir, streaming its output to the test log
// and serving control requests meanwhile; a non-zero exit fails t.
func runNode(t *testing.T, s *stack.Stack, proxy string, gateways int, dir string, env map[string]string, timeout time.Duration, args ...string) {
	t.Helper()
	node, err := exec.LookPath("node")
	if err != nil {
		t.Fatalf("node not found on PATH (Node.js 20 is required): %v", err)
	}
	controlURL, reqs := controller(t)
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, node, args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "RELAY_CONTROL_URL="+controlURL, "RELAY_PROXY_URL="+proxy)
	for k, v := range env {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	pr, pw := io.Pipe()
	cmd.Stdout, cmd.Stderr = pw, pw
	logged := make(chan struct{})
	go func() {
		defer close(logged)
		sc := bufio.NewScanner(pr)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			t.Log(sc.Text())
		}
	}()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	killed := map[string]bool{}
	for {
		select {
		case req := <-reqs:
			req.reply <- control(t, s, proxy, gateways, req, killed)
			continue
		case err = <-exited:
		}
		break
	}
	_ = pw.Close()
	<-logged
	// Leave the stack whole for its own shutdown checks.
	for name := range killed {
		s.Start(name)
	}
	if ctx.Err() != nil {
		t.Fatalf("node %s: timed out after %v", strings.Join(args, " "), timeout)
	}
	if err != nil {
		t.Fatalf("node %s: %v", strings.Join(args, " "), err)
	}
}

func control(t *testing.T, s *stack.Stack, proxy string, gateways int, req controlRequest, killed map[string]bool) controlReply {
	name := req.name
	if name == "preferred-gateway" {
		var err error
		if name, err = preferredGateway(s, proxy, gateways); err != nil {
			return controlReply{Error: err.Error()}
		}
	}
	if !slicesContains(s.Names(), name) {
		return controlReply{Error: fmt.Sprintf("no process %q", name)}
	}
	switch req.action {
	case "kill":
		if killed[name] {
			return controlReply{Error: name + " is not running"}
		}
		s.Kill(name)
		killed[name] = true
	case "start":
		if !killed[name] {
			return controlReply{Error: name + " was not killed here"}
		}
		s.Start(name)
		delete(killed, name)
	}
	t.Logf("control: %s %s", req.action, name)
	return controlReply{Name: name}
}

func slicesContains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// TestClientLibrary runs relay-client's integration tests in Node.js
// against two gateways behind the devproxy.
func TestClientLibrary(t *testing.T) {
	requireIT(t)
	root := repoRoot(t)
	dir := filepath.Join(root, "clients", "js")
	if _, err := os.Stat(filepath.Join(dir, "dist", "index.js")); err != nil {
		t.Fatalf("relay-client is not built (make builds it: cd clients/js && npm ci && npm run build): %v", err)
	}
	const gateways = 2
	s := newStack(t, stack.Options{Gateways: gateways, Partitions: 2})
	proxy := startDevproxy(t, s, gateways, "")
	files, err := filepath.Glob(filepath.Join(dir, "test", "integration", "*.test.mjs"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no integration tests in %s (%v)", dir, err)
	}
	args := []string{"--experimental-websocket", "--no-warnings", "--test", "--test-concurrency=1", "--test-reporter=spec"}
	for _, f := range files {
		rel, _ := filepath.Rel(dir, f)
		args = append(args, rel)
	}
	runNode(t, s, proxy, gateways, dir, nil, 3*time.Minute, args...)
}

// TestClientTokenExpiry runs relay-client with access tokens of 4 s: the
// gateway closes expired sessions with 4001 and the client refreshes and
// resumes (clients/js/test/integration/token-expiry.expiry.mjs).
func TestClientTokenExpiry(t *testing.T) {
	requireIT(t)
	dir := filepath.Join(repoRoot(t), "clients", "js")
	if _, err := os.Stat(filepath.Join(dir, "dist", "index.js")); err != nil {
		t.Fatalf("relay-client is not built (make builds it): %v", err)
	}
	s := newStack(t, stack.Options{ServiceEnv: map[string]map[string]string{"api": {"JWT_TTL": "4s"}}})
	proxy := startDevproxy(t, s, 1, "")
	runNode(t, s, proxy, 1, dir, nil, 2*time.Minute, "--experimental-websocket", "--no-warnings", "--test", "--test-reporter=spec",
		filepath.Join("test", "integration", "token-expiry.expiry.mjs"))
}

// TestWebApp drives the web app in Chromium: two users sign up, find each
// other, chat, and so on (tests/browser/webapp.test.mjs).
func TestWebApp(t *testing.T) {
	requireIT(t)
	root := repoRoot(t)
	web := filepath.Join(root, "web", "dist")
	if _, err := os.Stat(filepath.Join(web, "index.html")); err != nil {
		t.Fatalf("the web app is not built (make web): %v", err)
	}
	here, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(here, "node_modules", "playwright-core", "package.json")); err != nil {
		t.Fatalf("playwright-core is not installed in %s (make test-web runs npm ci): %v", here, err)
	}
	// One gateway: killing it leaves the page without a connection until it
	// is back, so the reconnect banner shows for certain.
	const gateways = 1
	s := newStack(t, stack.Options{Gateways: gateways, Partitions: 2})
	proxy := startDevproxy(t, s, gateways, web)
	shots := os.Getenv("RELAY_SCREENSHOT_DIR")
	if shots == "" {
		shots = t.TempDir()
	}
	env := map[string]string{"RELAY_SCREENSHOT_DIR": shots}
	args := []string{"--no-warnings", "--test", "--test-concurrency=1", "--test-reporter=spec"}
	if p := os.Getenv("RELAY_BROWSER_GREP"); p != "" {
		args = append(args, "--test-name-pattern="+p)
	}
	args = append(args, "webapp.test.mjs")
	runNode(t, s, proxy, gateways, here, env, 4*time.Minute, args...)
}
