// Package stack runs the relay services as real child processes for
// end-to-end tests: every service binary built once (Build), then per test
// a Stack of api, delivery, persister, presence and N gateways on free
// ports, each pointed at the test's own PostgreSQL database, Redis key
// prefix and Kafka topic (pkg/testenv). It also holds the test clients: a
// WebSocket client (Conn) and a REST client (API).
package stack

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// ServiceNames are the services a stack runs, by module directory under
// services/ (the gateway may run several times).
func ServiceNames() []string {
	return []string{"api", "delivery", "gateway", "persister", "presence"}
}

// Binaries is a directory holding one executable per service, named after it.
type Binaries struct {
	// Dir is where Build wrote the executables.
	Dir string
}

// Path returns the executable of service.
func (b Binaries) Path(service string) string { return filepath.Join(b.Dir, service) }

// Build compiles every service into dir with one `go build` run from the
// workspace root, so the build cache makes reruns quick.
func Build(ctx context.Context, dir string) (Binaries, error) {
	root, err := WorkspaceRoot(ctx)
	if err != nil {
		return Binaries{}, err
	}
	args := []string{"build", "-o", dir + string(filepath.Separator)}
	for _, s := range ServiceNames() {
		args = append(args, "relay/services/"+s)
	}
	cmd := exec.CommandContext(ctx, "go", args...)
	cmd.Dir = root
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		return Binaries{}, fmt.Errorf("stack: go %s: %w\n%s", strings.Join(args, " "), err, out.String())
	}
	return Binaries{Dir: dir}, nil
}

// BinDir returns the directory the binaries of this checkout are built
// into: $E2E_BIN_DIR, or one under the user cache directory named after the
// workspace root. It persists across runs because `go build` does not relink
// an executable whose build ID is current, which makes a rerun's build take
// a fraction of a second instead of linking five binaries again.
func BinDir() (string, error) {
	if dir := os.Getenv("E2E_BIN_DIR"); dir != "" {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return "", fmt.Errorf("stack: %w", err)
		}
		return dir, nil
	}
	return CacheBinDir("relay-e2e-bin")
}

// CacheBinDir returns (creating it) the directory name/<hash of the
// workspace root> under the user cache directory: a test package that
// builds binaries of its own gives its own name, so packages run at once
// do not write the same executables.
func CacheBinDir(name string) (string, error) {
	root, err := WorkspaceRoot(context.Background())
	if err != nil {
		return "", err
	}
	cache, err := os.UserCacheDir()
	if err != nil {
		cache = os.TempDir()
	}
	sum := sha256.Sum256([]byte(root))
	dir := filepath.Join(cache, name, hex.EncodeToString(sum[:6]))
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", fmt.Errorf("stack: %w", err)
	}
	return dir, nil
}

// Starter builds the service binaries once per test binary (on its first
// Start) and starts a stack on them for each test. A test package keeps
// one in a package variable.
type Starter struct {
	// Dir returns the directory to build into (BinDir, or CacheBinDir of
	// the package's own name).
	Dir func() (string, error)
	// Timeout bounds the build.
	Timeout time.Duration

	once sync.Once
	bins Binaries
	err  error
}

// Start builds the binaries the first time and starts a stack for t with
// opts (its Binaries set to them); a failed build fails t.
func (s *Starter) Start(t testing.TB, opts Options) *Stack {
	t.Helper()
	s.once.Do(func() {
		var dir string
		if dir, s.err = s.Dir(); s.err != nil {
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), s.Timeout)
		defer cancel()
		s.bins, s.err = Build(ctx, dir)
	})
	if s.err != nil {
		t.Fatalf("build services: %v", s.err)
	}
	opts.Binaries = s.bins
	start := time.Now()
	st := NewStack(t, opts)
	t.Logf("stack of %d processes ready in %v (log %s)", len(st.Names()), time.Since(start).Round(time.Millisecond), st.LogPath)
	return st
}

// WorkspaceRoot returns the directory of the go.work file in use.
func WorkspaceRoot(ctx context.Context) (string, error) {
	out, err := exec.CommandContext(ctx, "go", "env", "GOWORK").Output()
	if err != nil {
		return "", fmt.Errorf("stack: go env GOWORK: %w", err)
	}
	work := strings.TrimSpace(string(out))
	if work == "" || work == "off" {
		return "", fmt.Errorf("stack: no go.work in use (GOWORK=%q); run from inside the repository", work)
	}
	return filepath.Dir(work), nil
}

// BuildKafkabroker compiles tools/cmd/kafkabroker into dir and returns
// the executable's path.
func BuildKafkabroker(ctx context.Context, dir string) (string, error) {
	root, err := WorkspaceRoot(ctx)
	if err != nil {
		return "", err
	}
	out := filepath.Join(dir, "kafkabroker")
	cmd := exec.CommandContext(ctx, "go", "build", "-o", out, "relay/tools/cmd/kafkabroker")
	cmd.Dir = root
	var buf bytes.Buffer
	cmd.Stdout, cmd.Stderr = &buf, &buf
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("stack: go build relay/tools/cmd/kafkabroker: %w\n%s", err, buf.String())
	}
	return out, nil
}
