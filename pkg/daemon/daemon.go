// Package daemon runs a relay service as a process: configuration from the
// environment, telemetry, SIGINT/SIGTERM handling, the listener, and an
// orderly shutdown. Every service's main is one call to Main, so the
// services start and stop the same way.
package daemon

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"relay/pkg/config"
	"relay/pkg/telemetry"
	"relay/pkg/web"
)

// Service is what every relay service provides (docs/architecture.md,
// "How the code is shaped").
type Service interface {
	// Addr is the address to listen on, defaults applied.
	Addr() string
	// Run serves on ln until ctx is cancelled, then shuts down gracefully.
	Run(ctx context.Context, ln net.Listener) error
	// Close releases every resource; safe to call more than once.
	Close() error
}

// Builder makes a service from its configuration.
type Builder[C any] func(ctx context.Context, cfg C, tel *telemetry.Telemetry) (Service, error)

// Main runs the named service until SIGINT or SIGTERM and exits the
// process, with status 1 and the error on stderr if it failed.
//
// Two arguments turn the binary into a tool instead, for deployments:
//
//	-env-vars  print the environment variables the service reads, as JSON
//	           ([{"name":..,"default":..}]); the compose test checks a
//	           deployment against it
//	-ready     GET /ready on HTTP_ADDR and exit 0 on a 200: the container
//	           health check of an image that has no curl
func Main[C any](name string, telemetryOf func(C) config.Telemetry, build Builder[C]) {
	if len(os.Args) == 2 {
		switch os.Args[1] {
		case "-env-vars":
			exit(name, PrintVars[C](os.Stdout))
		case "-ready":
			exit(name, Probe(context.Background(), os.Getenv("HTTP_ADDR"), 3*time.Second))
		}
	}
	exit(name, Run(name, telemetryOf, build))
}

func exit(name string, err error) {
	if err != nil {
		fmt.Fprintf(os.Stderr, "%s: %v\n", name, err)
		os.Exit(1)
	}
	os.Exit(0)
}

// PrintVars writes config.Vars[C] to w as JSON.
func PrintVars[C any](w io.Writer) error {
	vars, err := config.Vars[C]()
	if err != nil {
		return err
	}
	return json.NewEncoder(w).Encode(vars)
}

// Probe asks the service listening on addr (HTTP_ADDR; a wildcard host
// such as 0.0.0.0 is reached on loopback) whether it is ready.
func Probe(ctx context.Context, addr string, timeout time.Duration) error {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("-ready needs HTTP_ADDR as host:port: %w", err)
	}
	if ip := net.ParseIP(host); host == "" || (ip != nil && ip.IsUnspecified()) {
		host = "127.0.0.1"
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+net.JoinHostPort(host, port)+"/ready", nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return fmt.Errorf("ready: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		return fmt.Errorf("ready: %s %s", resp.Status, body)
	}
	return nil
}

// Run is Main without the exit: it loads C from the environment, sets up
// telemetry, builds the service, listens on its address and runs it until a
// signal arrives, then closes it and flushes pending spans.
func Run[C any](name string, telemetryOf func(C) config.Telemetry, build Builder[C]) error {
	cfg, err := config.Load[C]()
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	tel, err := telemetry.Setup(ctx, name, telemetryOf(cfg))
	if err != nil {
		return err
	}
	defer func() {
		// Spans of the shutdown itself are flushed too; bounded so a dead
		// collector cannot hold the exit.
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = tel.Shutdown(sctx)
	}()
	svc, err := build(ctx, cfg, tel)
	if err != nil {
		return err
	}
	defer svc.Close()
	ln, err := net.Listen("tcp", svc.Addr())
	if err != nil {
		return fmt.Errorf("listen %s: %w", svc.Addr(), err)
	}
	tel.Log.Info(name+" listening", "addr", ln.Addr().String())
	err = svc.Run(ctx, ln)
	if errors.Is(err, web.ErrShutdownTimeout) {
		// The deadline is what SHUTDOWN_TIMEOUT promises: past it, the
		// remaining connections end with the process. Not a failure.
		tel.Log.Warn("shutdown deadline passed with connections still open", "timeout", "SHUTDOWN_TIMEOUT")
		return nil
	}
	return err
}
