package worker

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"time"

	"github.com/cenkalti/backoff/v5"
	"github.com/gofiber/fiber/v2"
	goredis "github.com/redis/go-redis/v9"
	"golang.org/x/sync/errgroup"

	"relay/pkg/dedupe"
	"relay/pkg/kafka"
	"relay/pkg/redis"
	"relay/pkg/telemetry"
	"relay/pkg/web"
)

// clientID names this service to the brokers.
const clientID = "relay-delivery"

// Service is a running delivery worker.
type Service struct {
	cfg  Config
	tel  *telemetry.Telemetry
	log  *slog.Logger
	rdb  goredis.UniversalClient
	keys redis.Keys
	// dedupe fills the acks of senders whose gateway could not.
	dedupe *dedupe.Store

	kafka *kafka.Consumer
	dlq   *kafka.DeadLetters
	app   *fiber.App
	m     *metrics
	lag   *kafka.LagTracker

	closeOnce sync.Once
	closeErr  error
}

// New applies defaults, validates cfg, connects to Redis and Kafka
// (creating the topic and the dead-letter topic when missing) and joins
// nothing yet: consuming starts with Run.
func New(ctx context.Context, cfg Config, tel *telemetry.Telemetry) (*Service, error) {
	if tel == nil {
		return nil, errors.New("delivery: telemetry required")
	}
	cfg = cfg.withDefaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	s := &Service{cfg: cfg, tel: tel, log: tel.Log, keys: redis.Keys{Prefix: cfg.Redis.Prefix}, lag: kafka.NewLagTracker("delivery_consumer_lag", "Records in the partition not yet published (high water mark - next offset to publish).")}
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
	if s.rdb, err = redis.Open(ctx, cfg.Redis, cfg.Telemetry.OTLPEndpoint != ""); err != nil {
		return nil, fmt.Errorf("delivery: %w", err)
	}
	if err := tel.Registry.Register(redis.NewPoolCollector(s.rdb)); err != nil {
		return nil, fmt.Errorf("delivery: metrics: %w", err)
	}
	if s.dedupe, err = dedupe.New(s.rdb, dedupe.Options{Keys: dedupe.Keys{Prefix: cfg.Redis.Prefix}, TTL: cfg.DedupeTTL}); err != nil {
		return nil, fmt.Errorf("delivery: %w", err)
	}
	// Loaded up front so the first batches take the pipelined path; a
	// failure here is only slower (publish loads them on NOSCRIPT).
	s.loadScripts(ctx)
	if s.kafka, err = kafka.NewConsumer(ctx, kafka.ConsumerOptions{
		Brokers: cfg.Kafka.Brokers, Topic: cfg.Kafka.Topic, Partitions: cfg.Kafka.Partitions,
		ReplicationFactor: cfg.Kafka.ReplicationFactor, MinInsyncReplicas: cfg.Kafka.MinInsyncReplicas,
		Group: cfg.Group, DLQTopic: cfg.DLQTopic, ClientID: clientID, InstanceID: cfg.Kafka.GroupInstanceID,
		FetchWait: cfg.FetchWait, Metrics: tel.Registry,
	}); err != nil {
		return nil, fmt.Errorf("delivery: %w", err)
	}
	s.dlq = s.kafka.DeadLetters
	s.app = web.NewApp(web.Options{Service: "delivery", Telemetry: tel, Pprof: cfg.HTTP.Pprof, Checks: map[string]web.Check{
		"redis": func(ctx context.Context) error { return s.rdb.Ping(ctx).Err() },
		"kafka": s.kafka.Ping,
	}})
	ok = true
	return s, nil
}

// loadScripts loads the Lua scripts the pipelines run by SHA. A failure
// is only logged: the scripts are loaded again on NOSCRIPT.
func (s *Service) loadScripts(ctx context.Context) {
	if err := errors.Join(redis.LoadScripts(ctx, s.rdb), dedupe.LoadScripts(ctx, s.rdb)); err != nil {
		s.log.WarnContext(ctx, "load scripts", "err", err)
	}
}

// Addr is the HTTP listen address after defaults.
func (s *Service) Addr() string { return s.cfg.HTTP.Addr }

// App is the service's HTTP app (/health, /ready, /metrics).
func (s *Service) App() *fiber.App { return s.app }

// Run consumes and publishes, and serves HTTP on ln, until ctx is
// cancelled; then it stops consuming (offsets of published records are
// committed as the session ends), leaves the group and stops the server
// within the shutdown timeout.
func (s *Service) Run(ctx context.Context, ln net.Listener) error {
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error {
		err := s.kafka.Consume(gctx, &handler{s: s}, s.log)
		s.kafka.Leave(s.log)
		return err
	})
	g.Go(func() error {
		return web.ServeListener(gctx, s.app, ln, s.cfg.HTTP.ShutdownTimeout)
	})
	s.log.InfoContext(ctx, "delivery running", "topic", s.cfg.Kafka.Topic, "group", s.cfg.Group, "addr", ln.Addr().String())
	err := g.Wait()
	s.log.Info("delivery stopped")
	return err
}

// Close releases every connection; it is safe to call more than once and
// after Run returned.
func (s *Service) Close() error {
	s.closeOnce.Do(func() {
		errs := []error{s.kafka.Close()}
		if s.rdb != nil {
			errs = append(errs, s.rdb.Close())
		}
		s.closeErr = errors.Join(errs...)
	})
	return s.closeErr
}

// retry runs op until it succeeds or ctx ends, backing off exponentially
// between failures. Nothing is ever skipped: a record whose publish keeps
// failing holds its partition until the dependency is back.
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
			b = backoff.NewExponentialBackOff()
			b.InitialInterval, b.MaxInterval = s.cfg.RetryMin, s.cfg.RetryMax
		}
		wait := b.NextBackOff()
		s.log.WarnContext(ctx, what+" failed; retrying", "err", err, "retry_in", wait)
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		case <-t.C:
		}
	}
}
