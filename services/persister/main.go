// Command persister runs the persister: it writes the room event log to
// PostgreSQL in batches (see package persister).
package main

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/signal"
	"syscall"
	"time"

	"relay/pkg/config"
	"relay/pkg/telemetry"
	"relay/services/persister/persister"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "persister:", err)
		os.Exit(1)
	}
}

func run() error {
	cfg, err := config.Load[persister.Config]()
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	tel, err := telemetry.Setup(ctx, "persister", cfg.Telemetry)
	if err != nil {
		return err
	}
	defer func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = tel.Shutdown(ctx)
	}()
	svc, err := persister.New(ctx, cfg, tel)
	if err != nil {
		return err
	}
	defer svc.Close()
	ln, err := net.Listen("tcp", svc.Addr())
	if err != nil {
		return fmt.Errorf("listen: %w", err)
	}
	return svc.Run(ctx, ln)
}
