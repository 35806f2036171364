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
	dir := os.Getenv("E2E_BIN_DIR")
	if dir == "" {
		root, err := WorkspaceRoot(context.Background())
		if err != nil {
			return "", err
		}
		cache, err := os.UserCacheDir()
		if err != nil {
			cache = os.TempDir()
		}
		sum := sha256.Sum256([]byte(root))
		dir = filepath.Join(cache, "relay-e2e-bin", hex.EncodeToString(sum[:6]))
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", fmt.Errorf("stack: %w", err)
	}
	return dir, nil
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
