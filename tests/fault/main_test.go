// Package fault is the fault-injection suite (docs/reliability.md): steady
// chat traffic through the real services while one component at a time is
// killed, stopped or restarted, then checks that nothing acked was lost or
// duplicated, that every client ends up with its rooms' messages exactly
// once and in order, and how long the system took to take messages again.
//
// It runs on private PostgreSQL, Redis and Kafka-protocol servers that
// TestMain starts (stack.StartServers), because it stops and restarts them;
// the shared servers of `make deps` are never touched.
package fault

import (
	"context"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"relay/pkg/testenv"
	"relay/tests/e2e/stack"
)

// Set once by TestMain before any test runs, only read afterwards.
var (
	binaries stack.Binaries
	servers  *stack.Servers
)

func TestMain(m *testing.M) {
	flag.Parse() // testenv.Short reads -short
	os.Exit(run(m))
}

func run(m *testing.M) int {
	if testenv.Short() {
		return m.Run() // every test skips
	}
	if os.Geteuid() != 0 {
		// initdb must run as the postgres OS user (runuser), which needs root.
		fmt.Fprintln(os.Stderr, "fault: needs root to run a private PostgreSQL as the postgres user; skipping the suite")
		return m.Run()
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	start := time.Now()
	dir, err := stack.BinDir()
	if err != nil {
		fmt.Fprintln(os.Stderr, "fault:", err)
		return 1
	}
	// Its own directory: tests/e2e may be running the binaries of the
	// shared one while this package builds.
	dir = filepath.Join(dir, "fault")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		fmt.Fprintln(os.Stderr, "fault:", err)
		return 1
	}
	if binaries, err = stack.Build(ctx, dir); err != nil {
		fmt.Fprintln(os.Stderr, "fault:", err)
		return 1
	}
	broker, err := stack.BuildKafkabroker(ctx, dir)
	if err != nil {
		fmt.Fprintln(os.Stderr, "fault:", err)
		return 1
	}
	built := time.Since(start)

	data, err := os.MkdirTemp("", "relay-fault-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "fault:", err)
		return 1
	}
	defer os.RemoveAll(data)
	if servers, err = stack.StartServers(ctx, stack.ServersOptions{Dir: data, Kafkabroker: broker}); err != nil {
		fmt.Fprintln(os.Stderr, "fault: private servers:", err)
		return 1
	}
	defer servers.Close()
	// testenv (databases, prefixes, topics) and every stack read these.
	for k, v := range servers.Env() {
		os.Setenv(k, v)
	}
	if testing.Verbose() {
		fmt.Printf("fault: built in %v; private servers %s (postgres), %s (redis), %s (kafka) up in %v; data %s\n",
			built.Round(time.Millisecond), servers.Postgres.Addr, servers.Redis.Addr, servers.Kafka.Addr,
			(time.Since(start) - built).Round(time.Millisecond), data)
	}
	return m.Run()
}
