// Package server is the gateway service: it wires the transports, the
// connection lifecycle, the command handlers, the fan-out and presence to
// PostgreSQL, Redis and Kafka, serves them over HTTP, and shuts them down
// in order.
//
// A client frame's path: transport/ws (or transport/socketio) reads it →
// commands checks, routes and handles it, through adapters (membership,
// messages, producer) → Kafka; the delivery worker publishes the event on
// Redis → fanout receives it and queues it to each local member's
// conn.Client → the client's writer writes it on its transport.
package server

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/IBM/sarama"
	"github.com/gofiber/fiber/v2"
	goredis "github.com/redis/go-redis/v9"
	"gorm.io/gorm"

	"relay/pkg/auth"
	"relay/pkg/chat"
	"relay/pkg/dedupe"
	"relay/pkg/kafka"
	"relay/pkg/presence"
	"relay/pkg/ratelimit"
	"relay/pkg/redis"
	"relay/pkg/store"
	"relay/pkg/telemetry"
	"relay/pkg/web"
	"relay/services/gateway/internal/adapters"
	"relay/services/gateway/internal/commands"
	"relay/services/gateway/internal/conn"
	"relay/services/gateway/internal/fanout"
	"relay/services/gateway/internal/fanout/hub"
	"relay/services/gateway/internal/frame"
	"relay/services/gateway/internal/metrics"
	gwpresence "relay/services/gateway/internal/presence"
	"relay/services/gateway/internal/transport/socketio"
	"relay/services/gateway/internal/transport/ws"
)

// Service is a running gateway instance.
type Service struct {
	cfg     Config
	tel     *telemetry.Telemetry
	log     *slog.Logger
	db      *gorm.DB
	rdb     goredis.UniversalClient
	kclient sarama.Client
	metrics *metrics.Metrics

	// The adapters the commands work through.
	prod     *adapters.Producer
	members  *adapters.Membership
	messages *adapters.Messages
	// pub sends connects, disconnects, heartbeats and typing to presence.
	pub *presence.Publisher

	lc   *conn.Lifecycle
	cmds *commands.Handler
	fan  *fanout.Fanout
	hub  *hub.Hub
	pres *gwpresence.Presence
	ws   *ws.Server
	// sio serves Socket.IO clients at /socket.io/.
	sio *socketio.Server
	// caps bounds the connections per user and per client address, both
	// protocols; trusted are the proxies believed about the client's
	// address; origins the browser origins allowed besides our own.
	caps    *ratelimit.ConnCaps
	trusted []netip.Prefix
	origins []string
	app     *fiber.App

	// base is cancelled by Close; connection work derives from it.
	base      context.Context
	cancel    context.CancelFunc
	closeOnce sync.Once
	closeErr  error
	// limiterLogged is when a limiter failure was last logged (unix ns).
	limiterLogged atomic.Int64
}

// New applies defaults, validates cfg, and connects to PostgreSQL, Redis
// and Kafka. It returns errors and never panics.
func New(ctx context.Context, cfg Config, tel *telemetry.Telemetry) (s *Service, err error) {
	if tel == nil {
		return nil, errors.New("gateway: telemetry required")
	}
	cfg = cfg.withDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("gateway: config: %w", err)
	}
	cfg.JWT.WarnIfDev(tel.Log)
	tokens, err := auth.NewTokens(cfg.JWT.Secret, cfg.JWT.TTL)
	if err != nil {
		return nil, fmt.Errorf("gateway: %w", err)
	}
	if cfg.InstanceID == "" {
		cfg.InstanceID = defaultInstanceID()
	}
	if cfg.PongTimeout > cfg.PresenceTimeout {
		tel.Log.Warn("WS_PONG_TIMEOUT exceeds PRESENCE_TIMEOUT: a pulled cable keeps its user online until the pong timeout",
			"pong_timeout", cfg.PongTimeout, "presence_timeout", cfg.PresenceTimeout)
	}
	s = &Service{cfg: cfg, tel: tel, log: tel.Log}
	s.base, s.cancel = context.WithCancel(context.WithoutCancel(ctx))
	defer func() {
		if err != nil {
			_ = s.Close()
		}
	}()
	tracing := cfg.Telemetry.OTLPEndpoint != ""
	if s.db, err = store.Open(ctx, cfg.Postgres.URL, store.Options{MaxConns: cfg.Postgres.MaxConns, Tracing: tracing}); err != nil {
		return nil, fmt.Errorf("gateway: %w", err)
	}
	if s.rdb, err = redis.Open(ctx, cfg.Redis, tracing); err != nil {
		return nil, fmt.Errorf("gateway: %w", err)
	}
	if err := store.RegisterPool(tel.Registry, s.db); err != nil {
		return nil, fmt.Errorf("gateway: %w", err)
	}
	if err := tel.Registry.Register(redis.NewPoolCollector(s.rdb)); err != nil {
		return nil, fmt.Errorf("gateway: metrics: %w", err)
	}
	if err = kafka.EnsureTopic(ctx, cfg.Kafka.Brokers, cfg.Kafka.Topic, cfg.Kafka.Partitions,
		kafka.Replication(cfg.Kafka.ReplicationFactor, cfg.Kafka.MinInsyncReplicas)); err != nil {
		return nil, fmt.Errorf("gateway: %w", err)
	}
	kp, err := kafka.NewProducer(cfg.Kafka.Brokers, cfg.Kafka.Topic, "gateway", tel.Propagator)
	if err != nil {
		return nil, fmt.Errorf("gateway: %w", err)
	}
	s.metrics = metrics.New(tel.Registry, func() float64 { return float64(len(s.hub.Rooms())) },
		func() float64 { return float64(s.cmds.InFlight()) })
	s.prod = adapters.NewProducer(kp, adapters.ProducerOptions{
		SendTimeout: cfg.SendTimeout, BreakerFailures: cfg.BreakerFailures, BreakerOpenTimeout: cfg.BreakerOpenTimeout,
		Metrics: s.metrics, Log: tel.Log,
	})
	// A separate metadata client answers /ready without touching the producer.
	if s.kclient, err = sarama.NewClient(cfg.Kafka.Brokers, kafka.ConsumerConfig("gateway-ready")); err != nil {
		return nil, fmt.Errorf("gateway: kafka client: %w", err)
	}
	dd, err := dedupe.New(s.rdb, dedupe.Options{
		Keys: dedupe.Keys{Prefix: cfg.Redis.Prefix}, TTL: cfg.DedupeTTL, PendingTTL: cfg.DedupePendingTTL,
	})
	if err != nil {
		return nil, fmt.Errorf("gateway: %w", err)
	}
	pkeys := presence.NewKeys(cfg.Redis.Prefix)
	if s.pub, err = presence.NewPublisher(s.rdb, pkeys, cfg.InstanceID, presence.PublisherOptions{Registerer: tel.Registry, Log: tel.Log}); err != nil {
		return nil, fmt.Errorf("gateway: %w", err)
	}
	s.wire(tokens, pkeys, dd)
	if s.sio, err = socketio.NewServer(s.socketIOOptions(tokens)); err != nil {
		return nil, fmt.Errorf("gateway: socket.io: %w", err)
	}
	s.app = s.newApp()
	return s, nil
}

// wire builds the gateway's parts on the connections New opened.
func (s *Service) wire(tokens *auth.Tokens, pkeys presence.Keys, dd *dedupe.Store) {
	cfg := s.cfg
	s.caps = &ratelimit.ConnCaps{PerUser: cfg.MaxConnsPerUser, PerAddr: cfg.MaxConnsPerIP}
	s.trusted, _ = web.ParsePrefixes(cfg.TrustedProxies) // validated by New
	s.origins, _ = web.ParseOrigins(cfg.HTTP.AllowedOrigins)
	limiter := ratelimit.New(s.rdb, ratelimit.Options{Prefix: cfg.Redis.Prefix, OnError: s.limiterFailed})
	frames := &frame.Encoder{Metrics: s.metrics, Log: s.log, ResyncRetryAfter: cfg.ResyncRetryAfter}
	s.members = adapters.NewMembership(s.db, cfg.MembershipCacheSize, cfg.MembershipTTL)
	s.messages = adapters.NewMessages(s.rdb, s.db, adapters.MessagesOptions{
		Keys: redis.Keys{Prefix: cfg.Redis.Prefix}, AuthorTTL: cfg.AuthorTTL, Dedupe: dd, Log: s.log,
	})
	s.lc = conn.NewLifecycle(s.base, conn.Options{
		MaxConnections: cfg.MaxConnections, QueueSize: cfg.QueueSize, OutboundBudget: cfg.OutboundBudget, Rate: cfg.Rate, Burst: cfg.Burst,
		ReplayRate: cfg.ReplayRate, ReplayBurst: cfg.ReplayBurst,
		PingInterval: cfg.PingInterval, PongTimeout: cfg.PongTimeout, WriteTimeout: cfg.WriteTimeout,
		Metrics: s.metrics, Log: s.log, Hooks: connHooks{s},
	})
	s.pres = gwpresence.New(s.base, gwpresence.Options{
		Publisher: s.pub, Lifecycle: s.lc, Redis: s.rdb, Keys: pkeys, DB: s.db, Tel: s.tel, Metrics: s.metrics,
		HeartbeatInterval: cfg.HeartbeatInterval, PongTimeout: cfg.PongTimeout, TypingTTL: cfg.TypingTTL,
		SendTimeout: cfg.SendTimeout, MaxRooms: cfg.MaxRooms, CacheTTL: cfg.PresenceCacheTTL,
		CacheSize: cfg.PresenceCacheSize, QueueSize: cfg.PresenceQueueSize, MaxRoomMembers: cfg.PresenceMaxRoomMembers,
	})
	s.fan = fanout.New(fanout.Options{
		Redis: s.rdb, DB: s.db, Keys: redis.Keys{Prefix: cfg.Redis.Prefix}, Tel: s.tel, Metrics: s.metrics,
		Frames: frames, QueueSize: cfg.QueueSize, ReplayLimit: cfg.ReplayLimit, RepairHold: cfg.RepairHold,
		RepairWait: cfg.RepairWait, SendTimeout: cfg.SendTimeout, Watcher: s.pres, Roles: s.members, Typing: s.pub,
	})
	s.hub = s.fan.Hub()
	s.cmds = commands.New(s.base, commands.Options{
		Membership: s.members, Messages: s.messages, Producer: s.prod,
		Channels: &adapters.Channels{APIURL: cfg.APIURL, Client: &http.Client{Timeout: cfg.APITimeout}, Propagator: s.tel.Propagator},
		Rooms:    s.fan, Typing: s.pres, Frames: frames, Metrics: s.metrics, Tracer: s.tel.Tracer, Log: s.log,
		Sends:         ratelimit.NewLeased(limiter, "send", ratelimit.Limit{Rate: cfg.SendRate, Period: time.Second, Burst: cfg.SendBurst}, ratelimit.LeaseOptions{}),
		Joins:         ratelimit.NewLeased(limiter, "join", ratelimit.Limit{Rate: cfg.JoinRate, Period: time.Second, Burst: cfg.JoinBurst}, ratelimit.LeaseOptions{}),
		MaxFrameBytes: cfg.MaxFrameBytes, MaxRooms: cfg.MaxRooms, ReplayLimit: cfg.ReplayLimit, SendTimeout: cfg.SendTimeout,
	})
	s.ws = ws.NewServer(ws.Options{
		Lifecycle: s.lc, Handler: s.cmds, Tokens: tokens, ReadLimit: cfg.ReadLimit,
		Caps: s.caps, AllowedOrigins: s.origins, TrustedProxies: s.trusted,
		ReadBufferSize: cfg.ReadBufferSize, WriteBufferSize: cfg.WriteBufferSize, Log: s.log,
	})
}

// limiterFailed logs that Redis could not be asked for a per-user limit
// (the event was allowed), at most once per 10 s: an outage would
// otherwise log every send.
func (s *Service) limiterFailed(err error) {
	now := time.Now().UnixNano()
	last := s.limiterLogged.Load()
	if now-last < int64(10*time.Second) || !s.limiterLogged.CompareAndSwap(last, now) {
		return
	}
	s.log.Warn("per-user rate limit not checked (allowed): Redis failed", "err", err)
}

// connHooks is what the gateway does around a connection's life.
type connHooks struct{ s *Service }

// Opened indexes the connection for presence_update and tells presence.
func (h connHooks) Opened(c *conn.Client) { h.s.pres.Opened(c) }

// Closed takes the connection out of presence routing, its rooms and its
// typing, then tells presence it is gone.
func (h connHooks) Closed(ctx context.Context, c *conn.Client) {
	h.s.pres.Forget(c)
	h.s.cmds.LeaveAll(ctx, c)
	h.s.pres.Closed(ctx, c)
}

// socketIOOptions configure the Socket.IO server whose sockets are gateway
// connections like the /ws ones.
func (s *Service) socketIOOptions(tokens *auth.Tokens) socketio.Options {
	c := s.cfg.SocketIO
	return socketio.Options{
		Handler: &socketio.Gateway{Lifecycle: s.lc, Tokens: tokens, Frames: s.cmds, Caps: s.caps},
		CheckOrigin: func(c *fiber.Ctx) error {
			if origin := c.Get(fiber.HeaderOrigin); !web.OriginAllowed(origin, string(c.Request().Host()), s.origins) {
				return chat.Errorf(chat.CodeForbidden, "origin %q may not open connections (CORS_ALLOWED_ORIGINS)", conn.TruncateUTF8(origin, 100))
			}
			return nil
		},
		ClientAddr:        func(c *fiber.Ctx) string { return web.ClientIP(c, s.trusted) },
		AcquireAddr:       s.caps.AcquireAddr,
		MaxPendingPerAddr: c.MaxPendingPerIP,
		PingInterval:      c.PingInterval,
		PingTimeout:       c.PingTimeout,
		MaxPayload:        c.MaxPayload,
		ConnectTimeout:    c.ConnectTimeout,
		WriteTimeout:      s.cfg.WriteTimeout,
		PollBuffer:        s.cfg.QueueSize,
		MaxSessions:       s.cfg.MaxConnections,
		Admit:             func(*fiber.Ctx) error { return s.lc.Admit() },
		ReadBufferSize:    s.cfg.ReadBufferSize,
		WriteBufferSize:   s.cfg.WriteBufferSize,
		Log:               s.log,
		Registerer:        s.tel.Registry,
	}
}

func (s *Service) newApp() *fiber.App {
	app := web.NewApp(web.Options{
		Service:   "gateway",
		Telemetry: s.tel,
		// Polling clients send up to the announced maxPayload in one request.
		BodyLimit: s.sio.BodyLimit(),
		Pprof:     s.cfg.HTTP.Pprof,
		Checks: map[string]web.Check{
			"postgres": func(ctx context.Context) error { return store.Ping(ctx, s.db) },
			"redis":    func(ctx context.Context) error { return s.rdb.Ping(ctx).Err() },
			"kafka":    func(ctx context.Context) error { return kafka.Ping(ctx, s.kclient, s.cfg.Kafka.Topic) },
			"produce_breaker": func(context.Context) error {
				if s.prod.Open() {
					return errors.New("open")
				}
				return nil
			},
			// A draining instance takes no new connections.
			"draining": func(context.Context) error {
				if s.lc.Draining() {
					return errors.New("shutting down")
				}
				return nil
			},
		},
	})
	// Release fasthttp's 4 KiB request reader before the upgrade instead of
	// handing it to the hijacked connection for its whole life: this
	// server mostly holds idle WebSockets, where memory per connection
	// matters more than the CPU of plain HTTP requests.
	app.Server().ReduceMemoryUsage = true
	// A hijack handler returns as soon as the connection is handed to the
	// poller, which then owns it: fasthttp must not close it then (its
	// request context and goroutine are released). Socket.IO closes its
	// WebSockets itself when their handler returns.
	app.Server().KeepHijackedConns = true
	app.Get("/ws", s.ws.Upgrade)
	s.sio.Mount(app, "/socket.io")
	return app
}

// Run serves the HTTP app (WebSocket, Socket.IO, /health, /ready,
// /metrics) on ln, fans out room publications and presence_update events,
// and heartbeats the live connections to presence until ctx is cancelled.
// Then it shuts down (shutdown) within cfg.HTTP.ShutdownTimeout.
func (s *Service) Run(ctx context.Context, ln net.Listener) error {
	// Every goroutine started here is waited for by shutdown.
	fanDone := goDone(s.fan.Run)
	acksDone := goDone(s.messages.Run)
	routerDone := goDone(func() { s.pres.Route(s.base) })
	followCtx, stopFollowing := context.WithCancel(s.base)
	defer stopFollowing()
	followed := s.pres.Follow(followCtx)
	hbCtx, stopHeartbeats := context.WithCancel(s.base)
	defer stopHeartbeats()
	heartbeatsDone := goDone(func() { s.pres.Heartbeats(hbCtx) })
	errc := make(chan error, 1)
	go func() { errc <- s.app.Listener(ln) }()
	var serveErr error
	select {
	case serveErr = <-errc:
		if serveErr != nil {
			serveErr = fmt.Errorf("gateway: serve: %w", serveErr)
		}
		errc = nil
	case <-ctx.Done():
	}
	s.log.Info("gateway shutting down")
	return s.shutdown(serveErr, errc, running{
		stopHeartbeats: stopHeartbeats, heartbeats: heartbeatsDone,
		fan: fanDone, acks: acksDone,
		stopFollowing: stopFollowing, followed: followed, router: routerDone,
	})
}

// running are the goroutines Run started, and how to stop them.
type running struct {
	stopHeartbeats, stopFollowing context.CancelFunc
	heartbeats, fan, acks         <-chan struct{}
	followed, router              <-chan struct{}
}

// shutdown is the one ordered list of the gateway's shutdown: stop
// renewing presence, refuse new work, let the frames in flight finish (a
// send Kafka stored gets its ack), close every connection with 1012 after
// its queue, stop serving HTTP, wait for the connections' ends, then stop
// the background work and flush presence. serveErr is the listener's
// error if it ended first (errc is then nil).
func (s *Service) shutdown(serveErr error, errc <-chan error, r running) error {
	deadline := time.Now().Add(s.cfg.HTTP.ShutdownTimeout)
	// Part of the budget is kept for sending the presence disconnects.
	flushBy := deadline.Add(-min(2*time.Second, s.cfg.HTTP.ShutdownTimeout/4))

	// 1. No heartbeat renews a connection that is about to close.
	r.stopHeartbeats()
	<-r.heartbeats
	// 2. New connections and frames are refused from now on.
	s.lc.StartDraining()
	drained := s.cmds.Drain()
	// 3. Frames being handled finish first, so a send Kafka stored gets its
	// ack before the 1012.
	drainBy := time.Now().Add(s.cfg.SendTimeout + time.Second)
	if flushBy.Before(drainBy) {
		drainBy = flushBy
	}
	t := time.NewTimer(time.Until(drainBy))
	select {
	case <-drained:
	case <-t.C:
		s.log.Warn("client frames still in flight at the drain deadline", "in_flight", s.cmds.InFlight())
	}
	t.Stop()
	// 4. Every connection closes with 1012 once its queue is written.
	s.lc.CloseAll(conn.DisconnectRestart)
	// 5. Socket.IO long-polls of sessions without a client end, so the
	// app's shutdown does not wait for them; then HTTP stops.
	s.sio.Shutdown()
	if err := s.app.ShutdownWithTimeout(time.Until(deadline)); err != nil && serveErr == nil {
		serveErr = fmt.Errorf("gateway: shutdown: %w", err)
	}
	if errc != nil && serveErr == nil {
		serveErr = <-errc
	}
	// 6. The connections' ends (leave rooms, presence disconnect) run.
	if !s.lc.Wait(flushBy) {
		s.log.Warn("connections still open at shutdown deadline")
	}
	s.sio.Close()
	// 7. The queued clientMsgId acks are written.
	s.messages.Close()
	<-r.acks
	// 8. Presence hears of the connections that did not end in time, and
	// its queued commands are flushed.
	s.sayGoodbyeToAll()
	pctx, cancel := context.WithDeadline(context.WithoutCancel(s.base), deadline)
	if err := s.pub.Close(pctx); err != nil {
		s.log.Warn("presence commands lost at shutdown; those users go offline by timeout", "err", err)
	}
	cancel()
	// 9. The room subscriptions, gap repairs and presence routing stop.
	_ = s.fan.Close()
	<-r.fan
	r.stopFollowing()
	<-r.followed
	<-r.router
	return serveErr
}

// sayGoodbyeToAll disconnects, towards presence, the connections still
// open at the end of a shutdown (their readers have not finished).
func (s *Service) sayGoodbyeToAll() {
	for _, c := range s.lc.Clients() {
		s.pres.Goodbye(s.base, c)
	}
}

// goDone runs f on a goroutine and returns a channel closed when it
// returned, for its owner to wait on.
func goDone(f func()) <-chan struct{} {
	done := make(chan struct{})
	go func() {
		defer close(done)
		f()
	}()
	return done
}

// Addr is the address the service listens on, defaults applied.
func (s *Service) Addr() string { return s.cfg.HTTP.Addr }

// Close flushes and closes the producer and every connection pool. It is
// idempotent.
func (s *Service) Close() error {
	s.closeOnce.Do(func() {
		if s.cancel != nil {
			s.cancel()
		}
		var errs []error
		if s.fan != nil {
			_ = s.fan.Close()
		}
		if s.pub != nil {
			// Run closed it already when it ran; otherwise flush briefly.
			ctx, cancel := context.WithTimeout(context.Background(), time.Second)
			if err := s.pub.Close(ctx); err != nil {
				errs = append(errs, err)
			}
			cancel()
		}
		if s.prod != nil {
			errs = append(errs, s.prod.Close())
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
		if s.ws != nil && s.ws.Poller() != nil {
			errs = append(errs, s.ws.Close())
			// Connections still open now (Run gave up on them, or never
			// ran) have no reader left: close their sockets.
			s.lc.CloseSockets()
		}
		s.closeErr = errors.Join(errs...)
	})
	return s.closeErr
}

// App returns the HTTP app, for tests that drive it without a listener.
func (s *Service) App() *fiber.App { return s.app }
