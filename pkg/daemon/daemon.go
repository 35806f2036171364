// Package daemon runs a relay service as a process: configuration from the
// environment, telemetry, SIGINT/SIGTERM handling, the listener, and an
// orderly shutdown. Every service's main is one call to Main, so the
// services start and stop the same way.
package daemon

import (
	"context"
	"errors"
	"fmt"
	"net"
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
func Main[C any](name string, telemetryOf func(C) config.Telemetry, build Builder[C]) {
	if err := Run(name, telemetryOf, build); err != nil {
		fmt.Fprintf(os.Stderr, "%s: %v\n", name, err)
		os.Exit(1)
	}
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
