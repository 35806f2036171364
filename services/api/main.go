// Command api serves the REST api: accounts, users, rooms, members, history
// and search. Configuration comes from the environment (httpapi/config.go).
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
	"relay/pkg/kafka"
	"relay/pkg/telemetry"
	"relay/services/api/httpapi"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "api:", err)
		os.Exit(1)
	}
}

func run() error {
	cfg, err := config.Load[httpapi.Config]()
	if err != nil {
		return err
	}
	cfg = cfg.WithDefaults()
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()

	tel, err := telemetry.Setup(ctx, "api", cfg.Telemetry)
	if err != nil {
		return err
	}
	defer func() {
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = tel.Shutdown(sctx)
	}()
	cfg.JWT.WarnIfDev(tel.Log)

	if err := kafka.EnsureTopic(ctx, cfg.Kafka.Brokers, cfg.Kafka.Topic, cfg.Kafka.Partitions); err != nil {
		return err
	}
	svc, err := httpapi.New(ctx, cfg, tel)
	if err != nil {
		return err
	}
	defer svc.Close()

	ln, err := net.Listen("tcp", cfg.HTTP.Addr)
	if err != nil {
		return fmt.Errorf("listen %s: %w", cfg.HTTP.Addr, err)
	}
	return svc.Run(ctx, ln)
}
