// Package presence is the presence service: it applies the commands
// gateways append to the presence commands stream (connects, disconnects,
// heartbeat batches, typing), sweeps expired connections and typists,
// publishes each online/offline and typing transition exactly once, and
// writes users.is_online / users.last_seen to PostgreSQL in batches.
// Names, payloads and the gateway client are in relay/pkg/presence.
//
// Several instances may run at once: they share the consumer group
// "presence", every transition is decided by an atomic Lua script, and only
// the call that caused it publishes. All state is in Redis, so a restart
// loses nothing; commands sent meanwhile wait in the stream.
//
// The service writes PostgreSQL itself (the first design had presence talk only to
// Redis): users.is_online / last_seen must follow presence, and the only
// component that knows when they change is this one. It writes only users
// whose state changed, in batches, never per heartbeat.
package tracker

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"sync"

	"github.com/gofiber/fiber/v2"
	goredis "github.com/redis/go-redis/v9"
	"golang.org/x/sync/errgroup"
	"gorm.io/gorm"

	"relay/pkg/presence"
	"relay/pkg/redis"
	"relay/pkg/store"
	"relay/pkg/telemetry"
	"relay/pkg/web"
)

// Service is a running presence service.
type Service struct {
	cfg      Config
	tel      *telemetry.Telemetry
	log      *slog.Logger
	rdb      goredis.UniversalClient
	db       *gorm.DB
	keys     presence.Keys
	state    *State
	reader   *presence.Reader
	consumer string
	app      *fiber.App
	m        *metrics

	closeOnce sync.Once
	closeErr  error
}

// New applies defaults, validates cfg and connects to Redis and
// PostgreSQL; the consumer group is joined by Run.
func New(ctx context.Context, cfg Config, tel *telemetry.Telemetry) (*Service, error) {
	if tel == nil {
		return nil, errors.New("presence: telemetry required")
	}
	cfg = cfg.withDefaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	keys := presence.NewKeys(cfg.Redis.Prefix)
	s := &Service{cfg: cfg, tel: tel, log: tel.Log, keys: keys, consumer: cfg.Consumer}
	if s.consumer == "" {
		s.consumer = defaultConsumer()
	}
	ok := false
	defer func() {
		if !ok {
			_ = s.Close()
		}
	}()
	var err error
	if s.m, err = newMetrics(tel.Registry); err != nil {
		return nil, err
	}
	tracing := cfg.Telemetry.OTLPEndpoint != ""
	if s.rdb, err = redis.Open(ctx, cfg.Redis, tracing); err != nil {
		return nil, fmt.Errorf("presence: %w", err)
	}
	if err := tel.Registry.Register(redis.NewPoolCollector(s.rdb)); err != nil {
		return nil, fmt.Errorf("presence: metrics: %w", err)
	}
	if s.db, err = store.Open(ctx, cfg.Postgres.URL, store.Options{MaxConns: cfg.Postgres.MaxConns, Tracing: tracing}); err != nil {
		return nil, fmt.Errorf("presence: %w", err)
	}
	if err := store.RegisterPool(tel.Registry, s.db); err != nil {
		return nil, fmt.Errorf("presence: %w", err)
	}
	s.state = NewState(s.rdb, keys, cfg.PresenceTimeout, cfg.TypingTTL)
	s.reader = presence.NewReader(s.rdb, keys)
	s.app = web.NewApp(web.Options{Service: "presence", Telemetry: tel, Pprof: cfg.HTTP.Pprof, Checks: map[string]web.Check{
		"redis":    func(ctx context.Context) error { return s.rdb.Ping(ctx).Err() },
		"postgres": func(ctx context.Context) error { return store.Ping(ctx, s.db) },
	}})
	ok = true
	return s, nil
}

// defaultConsumer is unique per process: the host name plus random bytes.
func defaultConsumer() string {
	host, err := os.Hostname()
	if err != nil || host == "" {
		host = "presence"
	}
	var b [4]byte
	_, _ = rand.Read(b[:])
	return host + "-" + hex.EncodeToString(b[:])
}

// Addr is the HTTP listen address after defaults.
func (s *Service) Addr() string { return s.cfg.HTTP.Addr }

// App is the service's HTTP app (/health, /ready, /metrics).
func (s *Service) App() *fiber.App { return s.app }

// Consumer is this instance's name in the consumer group.
func (s *Service) Consumer() string { return s.consumer }

// Run applies commands, sweeps, syncs PostgreSQL and serves HTTP on ln
// until ctx is cancelled; then it finishes the command batch in hand,
// writes pending PostgreSQL changes and stops the server within the
// shutdown timeout.
func (s *Service) Run(ctx context.Context, ln net.Listener) error {
	if err := s.ensureGroup(ctx); err != nil {
		_ = ln.Close()
		return err
	}
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { return s.consume(gctx) })
	g.Go(func() error { return s.sweepLoop(gctx) })
	g.Go(func() error { return s.flushLoop(gctx) })
	g.Go(func() error { return web.ServeListener(gctx, s.app, ln, s.cfg.HTTP.ShutdownTimeout) })
	s.log.InfoContext(ctx, "presence running", "consumer", s.consumer, "stream", s.keys.Commands(),
		"addr", ln.Addr().String(), "timeout", s.cfg.PresenceTimeout, "typing_ttl", s.cfg.TypingTTL)
	err := g.Wait()
	s.log.Info("presence stopped")
	return err
}

// Close releases the connections; it is idempotent and safe after Run.
func (s *Service) Close() error {
	s.closeOnce.Do(func() {
		var errs []error
		if s.db != nil {
			errs = append(errs, store.Close(s.db))
		}
		if s.rdb != nil {
			errs = append(errs, s.rdb.Close())
		}
		s.closeErr = errors.Join(errs...)
	})
	return s.closeErr
}
