// Package testenv gives integration tests their own isolated slice of the
// real servers started by `make test` (scripts/deps.sh): a fresh PostgreSQL
// database cloned from a migrated template, a Redis key prefix, and a Kafka
// topic. Tests can run in parallel and never see each other's data.
package testenv

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"database/sql"
	"encoding/hex"
	"io/fs"
	"net/url"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/IBM/sarama"
	_ "github.com/jackc/pgx/v5/stdlib" // database/sql driver "pgx"
	goredis "github.com/redis/go-redis/v9"
	"gorm.io/gorm"

	"relay/pkg/config"
	"relay/pkg/kafka"
	"relay/pkg/store"
)

// init puts every test binary that uses testenv in development mode
// (config.Mode): the local servers are reached with the development
// credentials, which config.Load refuses otherwise. A RELAY_ENV already set
// is kept.
func init() {
	if _, ok := os.LookupEnv(config.EnvVar); !ok {
		_ = os.Setenv(config.EnvVar, string(config.Development))
	}
}

// Env returns the configuration the test servers are reached with: the
// same variables and defaults as the services.
func Env(t testing.TB) (config.Postgres, config.Redis, config.Kafka) {
	t.Helper()
	type all struct {
		PG    config.Postgres
		Redis config.Redis
		Kafka config.Kafka
	}
	c, err := config.Load[all]()
	if err != nil {
		t.Fatalf("testenv: %v", err)
	}
	return c.PG, c.Redis, c.Kafka
}

// RandomName returns prefix followed by 12 random hex characters.
func RandomName(prefix string) string {
	var b [6]byte
	_, _ = rand.Read(b[:])
	return prefix + hex.EncodeToString(b[:])
}

// Database creates a fresh, migrated database for the test, dropped when
// the test ends, and returns its URL.
func Database(t testing.TB) string {
	t.Helper()
	pg, _, _ := Env(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	admin, err := sql.Open("pgx", pg.URL)
	if err != nil {
		t.Fatalf("testenv: %v", err)
	}
	defer admin.Close()
	if err := admin.PingContext(ctx); err != nil {
		t.Fatalf("testenv: PostgreSQL at %s unreachable (run `make deps`): %v", redact(pg.URL), err)
	}
	tmpl, err := template(ctx, admin, pg.URL)
	if err != nil {
		t.Fatalf("testenv: template: %v", err)
	}
	name := RandomName("relay_t_")
	if _, err := admin.ExecContext(ctx, "CREATE DATABASE "+name+" TEMPLATE "+tmpl); err != nil {
		t.Fatalf("testenv: create database: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		db, err := sql.Open("pgx", pg.URL)
		if err != nil {
			return
		}
		defer db.Close()
		if _, err := db.ExecContext(ctx, "DROP DATABASE IF EXISTS "+name+" WITH (FORCE)"); err != nil {
			t.Logf("testenv: drop %s: %v", name, err)
		}
	})
	return withDatabase(pg.URL, name)
}

// DB is Database opened through GORM; the pool is closed when the test ends.
func DB(t testing.TB) *gorm.DB {
	t.Helper()
	u := Database(t)
	db, err := store.Open(context.Background(), u, store.Options{MaxConns: 10})
	if err != nil {
		t.Fatalf("testenv: %v", err)
	}
	t.Cleanup(func() { _ = store.Close(db) })
	return db
}

// template returns the name of a database holding the current migrations,
// creating it once per migration set; an advisory lock serialises test
// packages that start at the same time.
func template(ctx context.Context, admin *sql.DB, baseURL string) (string, error) {
	h := sha256.New()
	err := fs.WalkDir(store.Migrations(), ".", func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := fs.ReadFile(store.Migrations(), p)
		if err != nil {
			return err
		}
		h.Write([]byte(p))
		h.Write(b)
		return nil
	})
	if err != nil {
		return "", err
	}
	name := "relay_tmpl_" + hex.EncodeToString(h.Sum(nil))[:12]
	conn, err := admin.Conn(ctx)
	if err != nil {
		return "", err
	}
	defer conn.Close()
	if _, err := conn.ExecContext(ctx, "SELECT pg_advisory_lock(727274)"); err != nil {
		return "", err
	}
	defer conn.ExecContext(context.Background(), "SELECT pg_advisory_unlock(727274)") //nolint:errcheck
	var exists bool
	if err := conn.QueryRowContext(ctx, "SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)", name).Scan(&exists); err != nil {
		return "", err
	}
	if exists {
		return name, nil
	}
	building := name + "_build"
	if _, err := conn.ExecContext(ctx, "DROP DATABASE IF EXISTS "+building+" WITH (FORCE)"); err != nil {
		return "", err
	}
	if _, err := conn.ExecContext(ctx, "CREATE DATABASE "+building); err != nil {
		return "", err
	}
	db, err := sql.Open("pgx", withDatabase(baseURL, building))
	if err != nil {
		return "", err
	}
	err = store.Migrate(ctx, db)
	db.Close()
	if err != nil {
		return "", err
	}
	// Renamed only when complete, so a crash never leaves a half-migrated template.
	if _, err := conn.ExecContext(ctx, "ALTER DATABASE "+building+" RENAME TO "+name); err != nil {
		return "", err
	}
	return name, nil
}

func withDatabase(rawURL, name string) string {
	u, err := url.Parse(rawURL)
	if err != nil {
		return rawURL
	}
	u.Path = "/" + name
	return u.String()
}

func redact(rawURL string) string {
	u, err := url.Parse(rawURL)
	if err != nil {
		return "(unparsable url)"
	}
	return u.Redacted()
}

// Redis returns a client on the test server and a key prefix of the test's
// own; keys under the prefix are deleted when the test ends.
func Redis(t testing.TB) (*goredis.Client, string) {
	t.Helper()
	_, rc, _ := Env(t)
	opt, err := goredis.ParseURL(rc.URL)
	if err != nil {
		t.Fatalf("testenv: %v", err)
	}
	c := goredis.NewClient(opt)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := c.Ping(ctx).Err(); err != nil {
		t.Fatalf("testenv: Redis at %s unreachable (run `make deps`): %v", rc.URL, err)
	}
	prefix := RandomName("test:") + ":"
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		iter := c.Scan(ctx, 0, prefix+"*", 500).Iterator()
		for iter.Next(ctx) {
			c.Del(ctx, iter.Val())
		}
		_ = c.Close()
	})
	return c, prefix
}

// Kafka creates a topic of its own for the test, with the given
// partitions, deleted when the test ends; it returns the brokers and topic.
func Kafka(t testing.TB, partitions int32) ([]string, string) {
	t.Helper()
	_, _, kc := Env(t)
	topic := RandomName("test.")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := kafka.EnsureTopic(ctx, kc.Brokers, topic, partitions); err != nil {
		t.Fatalf("testenv: Kafka at %s (run `make deps`): %v", strings.Join(kc.Brokers, ","), err)
	}
	t.Cleanup(func() {
		cfg := sarama.NewConfig()
		cfg.Version = sarama.V3_6_0_0
		admin, err := sarama.NewClusterAdmin(kc.Brokers, cfg)
		if err != nil {
			return
		}
		defer admin.Close()
		_ = admin.DeleteTopic(topic)
	})
	return kc.Brokers, topic
}

// Short reports whether integration tests should be skipped (go test -short
// or RELAY_UNIT_ONLY=1).
func Short() bool {
	return testing.Short() || os.Getenv("RELAY_UNIT_ONLY") == "1"
}
