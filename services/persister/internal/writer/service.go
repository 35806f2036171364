package writer

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sort"
	"strconv"
	"sync"
	"time"

	"github.com/cenkalti/backoff/v5"
	"github.com/gofiber/fiber/v2"
	"github.com/sony/gobreaker/v2"
	"golang.org/x/sync/errgroup"
	"gorm.io/gorm"

	"relay/pkg/kafka"
	"relay/pkg/store"
	"relay/pkg/telemetry"
	"relay/pkg/web"
)

// clientID names this service to the brokers.
const clientID = "relay-persister"

// Service is a running persister.
type Service struct {
	cfg Config
	tel *telemetry.Telemetry
	log *slog.Logger
	db  *gorm.DB

	kafka   *kafka.Consumer
	dlq     *kafka.DeadLetters
	breaker *gobreaker.CircuitBreaker[store.BatchResult]
	app     *fiber.App
	m       *metrics
	lag     *kafka.LagTracker

	// in hands records from the claims to the batcher. Unbuffered: while
	// the batcher is writing or retrying, the claims block and stop
	// fetching (backpressure).
	in chan item
	// release asks the batcher to settle a partition whose claim ends.
	release chan releaseReq

	closeOnce sync.Once
	closeErr  error
}

// New applies defaults, validates cfg, connects to PostgreSQL and Kafka
// (creating the topic and the dead-letter topic when missing); consuming
// starts with Run.
func New(ctx context.Context, cfg Config, tel *telemetry.Telemetry) (*Service, error) {
	if tel == nil {
		return nil, errors.New("persister: telemetry required")
	}
	cfg = cfg.withDefaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	s := &Service{cfg: cfg, tel: tel, log: tel.Log, lag: kafka.NewLagTracker("persister_consumer_lag", "Records in the partition not yet persisted (high water mark - next offset to persist)."), in: make(chan item), release: make(chan releaseReq)}
	ok := false
	defer func() {
		if !ok {
			_ = s.Close()
		}
	}()
	var err error
	if s.m, err = newMetrics(tel.Registry, s.lag); err != nil {
		return nil, err
	}
	if s.db, err = store.Open(ctx, cfg.Postgres.URL, store.Options{MaxConns: cfg.Postgres.MaxConns, Tracing: cfg.Telemetry.OTLPEndpoint != ""}); err != nil {
		return nil, fmt.Errorf("persister: %w", err)
	}
	if err := store.RegisterPool(tel.Registry, s.db); err != nil {
		return nil, fmt.Errorf("persister: %w", err)
	}
	if s.kafka, err = kafka.NewConsumer(ctx, kafka.ConsumerOptions{
		Brokers: cfg.Kafka.Brokers, Topic: cfg.Kafka.Topic, Partitions: cfg.Kafka.Partitions,
		ReplicationFactor: cfg.Kafka.ReplicationFactor, MinInsyncReplicas: cfg.Kafka.MinInsyncReplicas,
		Group: cfg.Group, DLQTopic: cfg.DLQTopic, ClientID: clientID, InstanceID: cfg.Kafka.GroupInstanceID,
		FetchWait: cfg.FetchWait, Metrics: tel.Registry,
	}); err != nil {
		return nil, fmt.Errorf("persister: %w", err)
	}
	s.dlq = s.kafka.DeadLetters
	s.breaker = gobreaker.NewCircuitBreaker[store.BatchResult](gobreaker.Settings{
		Name:        "postgres",
		MaxRequests: 1,
		Timeout:     cfg.BreakerOpenTimeout,
		ReadyToTrip: func(c gobreaker.Counts) bool { return c.ConsecutiveFailures >= cfg.BreakerFailures },
		// A constraint violation means the database works; the record is
		// dead-lettered, not the database blamed.
		IsSuccessful: func(err error) bool { return err == nil || store.IsPermanent(err) },
		// A write abandoned for shutdown says nothing about the database.
		IsExcluded: func(err error) bool { return errors.Is(err, context.Canceled) },
		OnStateChange: func(name string, from, to gobreaker.State) {
			s.log.Warn("database breaker state changed", "breaker", name, "from", from.String(), "to", to.String())
			s.m.setBreaker(to)
		},
	})
	s.app = web.NewApp(web.Options{Service: "persister", Telemetry: tel, Pprof: cfg.HTTP.Pprof, Checks: map[string]web.Check{
		"postgres": func(ctx context.Context) error { return store.Ping(ctx, s.db) },
		"breaker": func(context.Context) error {
			if st := s.breaker.State(); st == gobreaker.StateOpen {
				return errors.New("database breaker open")
			}
			return nil
		},
		"kafka": s.kafka.Ping,
	}})
	s.app.Get("/lag", s.handleLag)
	ok = true
	return s, nil
}

// Addr is the HTTP listen address after defaults.
func (s *Service) Addr() string { return s.cfg.HTTP.Addr }

// App is the service's HTTP app (/health, /ready, /metrics, /lag).
func (s *Service) App() *fiber.App { return s.app }

// LagReport is the body of GET /lag: records not yet persisted per
// claimed partition (keys are partition numbers) and their sum.
type LagReport struct {
	Partitions map[string]int64 `json:"partitions"`
	Total      int64            `json:"total"`
}

func (s *Service) handleLag(c *fiber.Ctx) error {
	r := LagReport{Partitions: map[string]int64{}}
	snap := s.lag.Snapshot()
	ids := make([]int, 0, len(snap))
	for p := range snap {
		ids = append(ids, int(p))
	}
	sort.Ints(ids)
	for _, p := range ids {
		lag := snap[int32(p)]
		r.Partitions[strconv.Itoa(p)] = lag
		r.Total += lag
	}
	return c.JSON(r)
}

// Run consumes, batches and writes, and serves HTTP on ln, until ctx is
// cancelled. Then every claim flushes what is pending (or, if the
// database is down, leaves it unmarked for redelivery), the last offsets
// are committed, the group is left and the server stops, within the
// shutdown timeout.
func (s *Service) Run(ctx context.Context, ln net.Listener) error {
	// The batcher outlives ctx: claims ending on shutdown still need it to
	// flush. It stops once the group loop is over, or when the shutdown
	// timeout expires.
	bctx, stopBatcher := context.WithCancel(context.WithoutCancel(ctx))
	defer stopBatcher()
	stopTimer := context.AfterFunc(ctx, func() { time.AfterFunc(s.cfg.HTTP.ShutdownTimeout, stopBatcher) })
	defer stopTimer()
	batcherDone := make(chan struct{})
	go func() {
		defer close(batcherDone)
		s.batchLoop(bctx)
	}()

	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error {
		err := s.kafka.Consume(gctx, &handler{s: s, batcherDone: batcherDone}, s.log)
		stopBatcher()
		<-batcherDone
		s.kafka.Leave(s.log)
		return err
	})
	g.Go(func() error {
		return web.ServeListener(gctx, s.app, ln, s.cfg.HTTP.ShutdownTimeout)
	})
	s.log.InfoContext(ctx, "persister running", "topic", s.cfg.Kafka.Topic, "group", s.cfg.Group,
		"batch_size", s.cfg.BatchSize, "flush_interval", s.cfg.FlushInterval, "addr", ln.Addr().String())
	err := g.Wait()
	s.log.Info("persister stopped")
	return err
}

// Close releases every connection; it is safe to call more than once and
// after Run returned.
func (s *Service) Close() error {
	s.closeOnce.Do(func() {
		errs := []error{s.kafka.Close()}
		if s.db != nil {
			errs = append(errs, store.Close(s.db))
		}
		s.closeErr = errors.Join(errs...)
	})
	return s.closeErr
}

// newBackoff returns the retry schedule for failed writes and Kafka calls.
func (s *Service) newBackoff() *backoff.ExponentialBackOff {
	b := backoff.NewExponentialBackOff()
	b.InitialInterval, b.MaxInterval = s.cfg.RetryMin, s.cfg.RetryMax
	return b
}

// retry runs op until it succeeds or ctx ends, backing off between failures.
func (s *Service) retry(ctx context.Context, what string, op func() error) error {
	var b *backoff.ExponentialBackOff
	for {
		err := op()
		if err == nil {
			return nil
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if b == nil {
			b = s.newBackoff()
		}
		wait := b.NextBackOff()
		s.log.WarnContext(ctx, what+" failed; retrying", "err", err, "retry_in", wait)
		if !sleep(ctx, wait) {
			return ctx.Err()
		}
	}
}

// sleep waits d or until ctx ends; it reports whether d elapsed.
func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}
