package store

import (
	"context"
	"database/sql"
	"embed"
	"fmt"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"io/fs"
	"time"

	"github.com/pressly/goose/v3"
	"github.com/pressly/goose/v3/lock"
	"gorm.io/driver/postgres"
	"gorm.io/gorm"
	"gorm.io/gorm/logger"
	"gorm.io/plugin/opentelemetry/tracing"
)

//go:embed migrations/*.sql
var migrations embed.FS

// Migrations returns the embedded SQL migrations, for tools that hash them.
func Migrations() fs.FS {
	sub, _ := fs.Sub(migrations, "migrations") // the path is a constant; cannot fail
	return sub
}

// Options configure Open.
type Options struct {
	// MaxConns bounds the connection pool; zero means 20.
	MaxConns int
	// Tracing records a span per SQL statement when true.
	Tracing bool
	// Lazy skips the connection check: for a replica, which may be down
	// when the service starts (its reads then go to the primary).
	Lazy bool
}

// Open connects to PostgreSQL through GORM and checks the connection.
func Open(ctx context.Context, url string, o Options) (*gorm.DB, error) {
	if o.MaxConns == 0 {
		o.MaxConns = 20
	}
	db, err := gorm.Open(postgres.Open(url), &gorm.Config{
		Logger:                 logger.Discard,
		SkipDefaultTransaction: true,
		PrepareStmt:            true,
		NowFunc:                func() time.Time { return time.Now().UTC() },
	})
	if err != nil {
		return nil, fmt.Errorf("store: open: %w", err)
	}
	if o.Tracing {
		// Without query variables: a statement's bound values are e-mails,
		// password hashes and message text, none of which belongs in a trace.
		if err := db.Use(tracing.NewPlugin(tracing.WithoutMetrics(), tracing.WithoutQueryVariables())); err != nil {
			return nil, fmt.Errorf("store: tracing: %w", err)
		}
	}
	sqlDB, err := db.DB()
	if err != nil {
		return nil, fmt.Errorf("store: %w", err)
	}
	sqlDB.SetMaxOpenConns(o.MaxConns)
	sqlDB.SetMaxIdleConns(o.MaxConns)
	sqlDB.SetConnMaxIdleTime(5 * time.Minute)
	if o.Lazy {
		return db, nil
	}
	if err := sqlDB.PingContext(ctx); err != nil {
		_ = sqlDB.Close()
		return nil, fmt.Errorf("store: ping: %w", err)
	}
	return db, nil
}

// Close closes the pool behind db.
func Close(db *gorm.DB) error {
	sqlDB, err := db.DB()
	if err != nil {
		return fmt.Errorf("store: %w", err)
	}
	return sqlDB.Close()
}

// Ping checks that the database answers; used by /ready.
func Ping(ctx context.Context, db *gorm.DB) error {
	sqlDB, err := db.DB()
	if err != nil {
		return fmt.Errorf("store: %w", err)
	}
	return sqlDB.PingContext(ctx)
}

// Migrate applies every pending migration. A session lock makes concurrent
// callers (several services or tests starting at once) take turns.
func Migrate(ctx context.Context, db *sql.DB) error {
	locker, err := lock.NewPostgresSessionLocker()
	if err != nil {
		return fmt.Errorf("store: migrate lock: %w", err)
	}
	p, err := goose.NewProvider(goose.DialectPostgres, db, Migrations(), goose.WithSessionLocker(locker))
	if err != nil {
		return fmt.Errorf("store: migrate: %w", err)
	}
	if _, err := p.Up(ctx); err != nil {
		return fmt.Errorf("store: migrate up: %w", err)
	}
	return nil
}

// RegisterPool registers db's connection pool statistics on reg (the
// go_sql_* series of the Prometheus client, labelled db_name="relay").
func RegisterPool(reg prometheus.Registerer, db *gorm.DB) error {
	sqlDB, err := db.DB()
	if err != nil {
		return fmt.Errorf("store: pool: %w", err)
	}
	if err := reg.Register(collectors.NewDBStatsCollector(sqlDB, "relay")); err != nil {
		return fmt.Errorf("store: pool metrics: %w", err)
	}
	return nil
}
