// Package httpapi is the api service: the REST interface for accounts (JWT),
// users, rooms and their members, message history, search, unread counts
// and presence. It reads and writes PostgreSQL, writes member_joined and
// member_left events to a transactional outbox in the transactions of the
// membership changes, relays the outbox to the room event log in Kafka
// (one relaying instance at a time), and reads the presence service's state
// in Redis.
package httpapi

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"sync"

	"github.com/IBM/sarama"
	"github.com/go-playground/validator/v10"
	"github.com/gofiber/fiber/v2"
	"github.com/prometheus/client_golang/prometheus"
	goredis "github.com/redis/go-redis/v9"
	"gorm.io/gorm"

	"relay/pkg/auth"
	"relay/pkg/kafka"
	"relay/pkg/presence"
	"relay/pkg/ratelimit"
	"relay/pkg/redis"
	"relay/pkg/store"
	"relay/pkg/telemetry"
	"relay/pkg/web"
	"relay/services/api/diskblob"
	"relay/services/api/internal/dbbreaker"
	"relay/services/api/internal/messages"
	"relay/services/api/internal/outbox"
	"relay/services/api/internal/rest"
	"relay/services/api/internal/rooms"
	"relay/services/api/internal/uploads"
)

// EventPublisher produces room events in order and says how many of them,
// from the first, Kafka stored (outbox.Publisher).
type EventPublisher = outbox.Publisher

// BlobStore keeps the bytes of uploaded files (uploads.BlobStore).
type BlobStore = uploads.BlobStore

// Option adjusts a Service at construction; tests use it to swap neighbours.
type Option func(*Service)

// WithPublisher makes the service's outbox relay produce its events
// through p instead of a Kafka producer of its own (which is then not
// created).
func WithPublisher(p EventPublisher) Option {
	return func(s *Service) { s.events = p }
}

// WithBlobStore makes the service keep uploads in b instead of a
// diskblob.Store in cfg.UploadDir.
func WithBlobStore(b BlobStore) Option {
	return func(s *Service) { s.blobs = b }
}

// Service is a running api: its connections and its Fiber app.
type Service struct {
	cfg Config
	log *slog.Logger
	tel *telemetry.Telemetry
	db  *gorm.DB
	// replica is the hot standby's pool (nil without DATABASE_REPLICA_URL);
	// reads routes history and search between it and db.
	replica  *gorm.DB
	reads    *store.Reads
	rdb      goredis.UniversalClient
	kclient  sarama.Client
	producer *kafka.Producer
	events   EventPublisher
	// outbox relays member events from PostgreSQL to events while Run runs.
	outbox   *outbox.Relay
	presence PresenceReader
	tokens   *auth.Tokens
	// blobs holds uploaded files; closeBlobs releases it (nil when the
	// blob store came from WithBlobStore).
	blobs      BlobStore
	closeBlobs func() error
	uploads    *uploads.Handler
	rooms      *rooms.Handler
	messages   *messages.Handler
	// breaker guards every database statement and request.
	breaker  *dbbreaker.Breaker
	validate *validator.Validate
	trusted  []netip.Prefix
	origins  []string
	// limits counts per-user requests in Redis, shared by every instance.
	limits *ratelimit.Limiter
	// dummyHash is checked against when a login names no user, so the
	// response time does not tell which usernames exist.
	dummyHash string
	app       *fiber.App

	closeOnce sync.Once
	closeErr  error
}

// New applies defaults to cfg, validates it, connects to PostgreSQL (and
// migrates it when cfg.Migrate), Redis and Kafka, and builds the HTTP app.
// On error everything opened so far is closed again.
func New(ctx context.Context, cfg Config, tel *telemetry.Telemetry, opts ...Option) (svc *Service, err error) {
	if tel == nil {
		return nil, errors.New("api: telemetry required")
	}
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("api: config: %w", err)
	}
	cfg = cfg.WithDefaults()
	s := &Service{cfg: cfg, log: tel.Log, tel: tel, validate: validator.New(validator.WithRequiredStructEnabled())}
	for _, o := range opts {
		o(s)
	}
	defer func() {
		if err != nil {
			_ = s.Close()
		}
	}()
	s.trusted, _ = web.ParsePrefixes(cfg.TrustedProxies) // validated above
	s.origins, _ = web.ParseOrigins(cfg.HTTP.AllowedOrigins)
	if s.tokens, err = auth.NewTokens(cfg.JWT.Secret, cfg.JWT.TTL); err != nil {
		return nil, fmt.Errorf("api: %w", err)
	}
	if s.dummyHash, err = auth.HashPassword("relay-no-such-user-password"); err != nil {
		return nil, fmt.Errorf("api: %w", err)
	}
	if s.db, err = store.Open(ctx, cfg.Postgres.URL, store.Options{MaxConns: cfg.Postgres.MaxConns, Tracing: true}); err != nil {
		return nil, fmt.Errorf("api: %w", err)
	}
	if err := store.RegisterPool(tel.Registry, s.db); err != nil {
		return nil, fmt.Errorf("api: %w", err)
	}
	// The replica has no breaker: when it fails, its reads go to the
	// primary (store.Reads), which the breaker guards.
	var replica *gorm.DB
	if cfg.Replica.URL != "" {
		if s.replica, err = store.Open(ctx, cfg.Replica.URL, store.Options{MaxConns: cfg.Replica.MaxConns, Tracing: true, Lazy: true}); err != nil {
			return nil, fmt.Errorf("api: replica: %w", err)
		}
		replica = s.replica
	}
	s.reads = store.NewReads(s.db, replica, tel.Log)
	readsTotal := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "relay_api_db_reads_total",
		Help: "History and search reads by the database server they ran on (primary, replica).",
	}, []string{"server"})
	if err := tel.Registry.Register(readsTotal); err != nil {
		return nil, fmt.Errorf("api: metrics: %w", err)
	}
	s.reads.Observe = func(on store.Server) { readsTotal.WithLabelValues(string(on)).Inc() }
	if s.breaker, err = dbbreaker.New(cfg.DBBreakerFailures, cfg.DBBreakerOpenTimeout, tel.Log, tel.Registry); err != nil {
		return nil, fmt.Errorf("api: breaker: %w", err)
	}
	if err := s.db.Use(s.breaker); err != nil {
		return nil, fmt.Errorf("api: breaker: %w", err)
	}
	if cfg.Migrate {
		sqlDB, err := s.db.DB()
		if err != nil {
			return nil, fmt.Errorf("api: %w", err)
		}
		if err := store.Migrate(ctx, sqlDB); err != nil {
			return nil, fmt.Errorf("api: %w", err)
		}
	}
	if s.blobs == nil {
		disk, err := diskblob.New(cfg.UploadDir)
		if err != nil {
			return nil, fmt.Errorf("api: uploads: %w", err)
		}
		s.blobs, s.closeBlobs = disk, disk.Close
	}
	s.uploads = &uploads.Handler{Blobs: s.blobs, DB: s.db, Log: tel.Log, MaxBytes: cfg.UploadMaxBytes, RateLimit: cfg.UploadRateLimit}
	if s.rdb, err = redis.Open(ctx, cfg.Redis, true); err != nil {
		return nil, fmt.Errorf("api: %w", err)
	}
	if err := tel.Registry.Register(redis.NewPoolCollector(s.rdb)); err != nil {
		return nil, fmt.Errorf("api: metrics: %w", err)
	}
	if s.presence == nil {
		s.presence = presence.NewReader(s.rdb, presence.NewKeys(cfg.Redis.Prefix))
	}
	s.limits = ratelimit.New(s.rdb, ratelimit.Options{Prefix: cfg.Redis.Prefix, OnError: func(err error) {
		tel.Log.Warn("rate limits unavailable; allowing", "err", err)
	}})
	// A plain client answers /ready; the producer's own is not exposed.
	if s.kclient, err = sarama.NewClient(cfg.Kafka.Brokers, kafka.ProducerConfig("relay-api-ready")); err != nil {
		return nil, fmt.Errorf("api: kafka: %w", err)
	}
	if s.events == nil {
		if s.producer, err = kafka.NewProducer(cfg.Kafka.Brokers, cfg.Kafka.Topic, "relay-api", tel.Propagator); err != nil {
			return nil, fmt.Errorf("api: %w", err)
		}
		s.events = s.producer
	}
	if s.outbox, err = outbox.New(cfg.Postgres.URL, s.events, tel.Log, tel.Registry); err != nil {
		return nil, fmt.Errorf("api: %w", err)
	}
	s.rooms = &rooms.Handler{DB: s.db, Propagator: tel.Propagator, MaxMembers: cfg.Limits.RoomCreateMaxMembers}
	s.messages = &messages.Handler{DB: s.db, Reads: s.reads}
	s.app = s.newApp()
	return s, nil
}

// Run serves the api on ln and relays its outbox until ctx is cancelled,
// then shuts down gracefully within cfg.HTTP.ShutdownTimeout.
func (s *Service) Run(ctx context.Context, ln net.Listener) error {
	s.log.InfoContext(ctx, "api listening", "addr", ln.Addr().String())
	relayed := make(chan struct{})
	go func() {
		defer close(relayed)
		s.outbox.Run(ctx)
	}()
	err := web.ServeListener(ctx, s.app, ln, s.cfg.HTTP.ShutdownTimeout)
	// The relay lets produces in flight finish for a grace period at most.
	<-relayed
	return err
}

// App returns the HTTP app, for tests that inspect its routes.
func (s *Service) App() *fiber.App { return s.app }

// Addr is the address the service listens on, defaults applied.
func (s *Service) Addr() string { return s.cfg.HTTP.Addr }

// Close releases the connections; it is safe to call more than once.
func (s *Service) Close() error {
	s.closeOnce.Do(func() {
		var errs []error
		if s.producer != nil {
			errs = append(errs, s.producer.Close())
		}
		if s.kclient != nil {
			errs = append(errs, s.kclient.Close())
		}
		if s.rdb != nil {
			errs = append(errs, s.rdb.Close())
		}
		if s.db != nil {
			errs = append(errs, store.Close(s.db))
		}
		if s.replica != nil {
			errs = append(errs, store.Close(s.replica))
		}
		if s.closeBlobs != nil {
			errs = append(errs, s.closeBlobs())
		}
		s.closeErr = errors.Join(errs...)
	})
	return s.closeErr
}

func (s *Service) newApp() *fiber.App {
	app := web.NewApp(web.Options{
		Service:   "api",
		Telemetry: s.tel,
		BodyLimit: 64 << 10,
		// Only uploads stream their (larger) bodies; upload bounds them.
		StreamBody:     uploads.IsUploadRequest,
		StreamResponse: uploads.IsDownloadRequest,
		Pprof:          s.cfg.HTTP.Pprof,
		AllowedOrigins: s.origins,
		Checks: map[string]web.Check{
			"postgres": func(ctx context.Context) error { return store.Ping(ctx, s.db) },
			"redis":    func(ctx context.Context) error { return s.rdb.Ping(ctx).Err() },
			"kafka":    func(ctx context.Context) error { return kafka.Ping(ctx, s.kclient, s.cfg.Kafka.Topic) },
			"database_breaker": func(context.Context) error {
				if s.breaker.Open() {
					return errors.New("open")
				}
				return nil
			},
		},
	})
	s.routes(app)
	return app
}

// limitUser counts the authenticated caller's request against limit,
// shared by every api instance through Redis; over it the request is
// refused with 429 RATE_LIMITED and Retry-After.
func (s *Service) limitUser(kind string, limit ratelimit.Limit) fiber.Handler {
	return func(c *fiber.Ctx) error {
		if err := s.limits.AllowUser(c.UserContext(), kind, rest.User(c).ID, limit); err != nil {
			return err
		}
		return c.Next()
	}
}

// routes registers every endpoint; openapi.json documents exactly these
// (a test holds the two together).
func (s *Service) routes(app *fiber.App) {
	app.Get("/api/openapi.json", s.openAPI)

	app.Use("/api/auth", s.authLimiter())
	app.Post("/api/auth/register", s.register)
	app.Post("/api/auth/login", s.login)
	app.Post("/api/auth/refresh", s.refresh)
	app.Post("/api/auth/logout", s.requireAuth, s.logout)

	app.Get("/api/me", s.requireAuth, s.me)
	app.Patch("/api/me", s.requireAuth, s.updateMe)
	app.Get("/api/users", s.requireAuth, s.searchUsers)
	app.Get("/api/users/:id", s.requireAuth, s.user)
	app.Get("/api/users/:id/presence", s.requireAuth, s.userPresence)

	write := s.limitUser("rest_write", ratelimit.PerMinute(s.cfg.Limits.WritesPerMin))
	app.Post("/api/rooms", s.requireAuth, write, s.limitUser("room_create", ratelimit.PerHour(s.cfg.Limits.RoomsPerHour)), s.rooms.Create)
	app.Get("/api/rooms", s.requireAuth, s.rooms.List)
	app.Get("/api/rooms/:id", s.requireAuth, s.rooms.Get)
	app.Patch("/api/rooms/:id", s.requireAuth, write, s.rooms.Update)
	app.Post("/api/rooms/:id/join", s.requireAuth, write, s.rooms.Join)
	app.Post("/api/rooms/:id/leave", s.requireAuth, write, s.rooms.Leave)
	app.Get("/api/rooms/:id/members", s.requireAuth, s.rooms.Members)
	app.Post("/api/rooms/:id/members", s.requireAuth, write, s.rooms.AddMember)
	app.Patch("/api/rooms/:id/members/:userId", s.requireAuth, write, s.rooms.UpdateMember)
	app.Delete("/api/rooms/:id/members/:userId", s.requireAuth, write, s.rooms.RemoveMember)
	app.Post("/api/rooms/:id/uploads", s.requireAuth, s.uploads.Limiter(), s.uploads.Upload)
	app.Get("/api/uploads/:id", s.requireAuth, s.uploads.Download)
	app.Get("/api/channels", s.requireAuth, s.rooms.Channels)
	app.Get("/api/rooms/:id/messages", s.requireAuth, s.messages.History)
	app.Get("/api/rooms/:id/presence", s.requireAuth, s.roomPresence)

	app.Get("/api/search", s.requireAuth, s.limitUser("search", ratelimit.PerMinute(s.cfg.Limits.SearchesPerMin)), s.messages.Search)
}
