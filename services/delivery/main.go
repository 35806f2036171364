// Command delivery runs the delivery worker: it publishes the room event
// log to the rooms' Redis channels and recent histories (see package
// delivery).
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
	"relay/services/delivery/delivery"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "delivery:", err)
		os.Exit(1)
	}
}

func run() error {
	cfg, err := config.Load[delivery.Config]()
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	tel, err := telemetry.Setup(ctx, "delivery", cfg.Telemetry)
	if err != nil {
		return err
	}
	defer func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = tel.Shutdown(ctx)
	}()
	svc, err := delivery.New(ctx, cfg, tel)
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
