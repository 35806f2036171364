// Command migrate applies the PostgreSQL migrations of pkg/store to
// DATABASE_URL. `make run` and the compose deployment run it before the
// services start.
package main

import (
	"context"
	"database/sql"
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"time"

	_ "github.com/jackc/pgx/v5/stdlib"

	"relay/pkg/config"
	"relay/pkg/store"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "migrate:", err)
		os.Exit(1)
	}
}

func run() error {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	cfg, err := config.Load[config.Postgres]()
	if err != nil {
		return err
	}
	db, err := sql.Open("pgx", cfg.URL)
	if err != nil {
		return err
	}
	defer db.Close()
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	if err := store.Migrate(ctx, db); err != nil {
		return err
	}
	fmt.Println("migrations applied")
	return nil
}
