// Package gateway is the WebSocket edge of the chat (docs/protocol.md): it
// authenticates connections with the api's JWT, validates and rate-limits
// client frames, produces room events to Kafka (acking only what Kafka
// stored), and fans the rendered events that the delivery worker publishes
// on Redis room channels out to the local members of each room.
package gateway

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/IBM/sarama"
	"github.com/fasthttp/websocket"
	"github.com/gofiber/fiber/v2"
	"github.com/hashicorp/golang-lru/v2/expirable"
	goredis "github.com/redis/go-redis/v9"
	"github.com/sony/gobreaker/v2"
	"github.com/valyala/fasthttp"
	"gorm.io/gorm"

	"relay/pkg/auth"
	"relay/pkg/chat"
	"relay/pkg/events"
	"relay/pkg/kafka"
	"relay/pkg/presence"
	"relay/pkg/protocol"
	"relay/pkg/redis"
	"relay/pkg/store"
	"relay/pkg/telemetry"
	"relay/pkg/web"
	"relay/services/gateway/gateway/hub"
	"relay/services/gateway/netpoll"
	"relay/services/gateway/socketio"
)

// producer is the Kafka side the gateway needs; *kafka.Producer is it.
type producer interface {
	Publish(ctx context.Context, e *events.Event) (partition int32, seq int64, err error)
	Close() error
}

var _ producer = (*kafka.Producer)(nil)

// memberKey identifies a cached membership.
type memberKey struct{ room, user int64 }

// Service is a running gateway instance.
type Service struct {
	cfg     Config
	tel     *telemetry.Telemetry
	log     *slog.Logger
	db      *gorm.DB
	rdb     *goredis.Client
	keys    redis.Keys
	prod    producer
	kclient sarama.Client
	breaker *gobreaker.CircuitBreaker[int64]
	tokens  *auth.Tokens
	// roles caches positive membership checks: (room, user) → role.
	roles  *expirable.LRU[memberKey, chat.Role]
	hub    *hub.Hub
	broker *roomBroker
	// acks records the acks of sends with a clientMsgId (acks.go).
	acks    *ackRecorder
	api     *http.Client
	app     *fiber.App
	metrics *metrics
	bufs    bufferPool
	routes  map[string]handler
	// sio serves Socket.IO clients at /socket.io/ (socketio.go).
	sio *socketio.Server

	// gatewayID names this instance in presence commands.
	gatewayID string
	// pub sends connects, disconnects, heartbeats and typing to presence.
	pub *presence.Publisher
	// users indexes the local connections by user, for presence_update.
	users  *userIndex
	router *presenceRouter
	// connSeq numbers connections for their presence ids.
	connSeq atomic.Uint64

	// active counts open connections (MAX_CONNECTIONS).
	active    atomic.Int64
	clientsMu sync.Mutex
	// draining is set, under clientsMu, once shutdown began.
	draining bool
	clients  map[*client]struct{}
	conns    sync.WaitGroup
	// frames tracks client frames in flight for the shutdown.
	frames flights

	// base is cancelled by Close; connection work derives from it.
	base      context.Context
	cancel    context.CancelFunc
	closeOnce sync.Once
	closeErr  error

	// upgrader upgrades /ws requests (built with the app).
	upgrader *websocket.FastHTTPUpgrader
	// poller runs the readers of native connections when they have input;
	// nil where there is no epoll (then each has a reading goroutine).
	poller *netpoll.Poller
}

// session is who an upgraded connection belongs to.
type session struct {
	claims auth.Claims
	token  string
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
	s = &Service{
		cfg: cfg, tel: tel, log: tel.Log, tokens: tokens,
		keys:      redis.Keys{Prefix: cfg.Redis.Prefix},
		roles:     expirable.NewLRU[memberKey, chat.Role](cfg.MembershipCacheSize, nil, cfg.MembershipTTL),
		api:       &http.Client{Timeout: cfg.APITimeout},
		clients:   make(map[*client]struct{}),
		gatewayID: cfg.InstanceID,
		users:     newUserIndex(),
	}
	if s.gatewayID == "" {
		s.gatewayID = defaultInstanceID()
	}
	if cfg.PongTimeout > cfg.PresenceTimeout {
		tel.Log.Warn("WS_PONG_TIMEOUT exceeds PRESENCE_TIMEOUT: a pulled cable keeps its user online until the pong timeout",
			"pong_timeout", cfg.PongTimeout, "presence_timeout", cfg.PresenceTimeout)
	}
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
	if s.rdb, err = redis.Open(ctx, cfg.Redis.URL, tracing); err != nil {
		return nil, fmt.Errorf("gateway: %w", err)
	}
	if err = kafka.EnsureTopic(ctx, cfg.Kafka.Brokers, cfg.Kafka.Topic, cfg.Kafka.Partitions); err != nil {
		return nil, fmt.Errorf("gateway: %w", err)
	}
	kp, err := kafka.NewProducer(cfg.Kafka.Brokers, cfg.Kafka.Topic, "gateway", tel.Propagator)
	if err != nil {
		return nil, fmt.Errorf("gateway: %w", err)
	}
	s.prod = kp
	// A separate metadata client answers /ready without touching the producer.
	if s.kclient, err = sarama.NewClient(cfg.Kafka.Brokers, kafka.ConsumerConfig("gateway-ready")); err != nil {
		return nil, fmt.Errorf("gateway: kafka client: %w", err)
	}
	s.breaker = gobreaker.NewCircuitBreaker[int64](gobreaker.Settings{
		Name:        "kafka-produce",
		MaxRequests: 1,
		Timeout:     cfg.BreakerOpenTimeout,
		ReadyToTrip: func(c gobreaker.Counts) bool { return c.ConsecutiveFailures >= cfg.BreakerFailures },
		OnStateChange: func(_ string, from, to gobreaker.State) {
			tel.Log.Warn("produce breaker changed state", "breaker", "kafka-produce", "from", from.String(), "to", to.String())
			if to == gobreaker.StateOpen {
				s.metrics.breakerOpen.Inc()
			}
			s.metrics.setBreaker("kafka-produce", to)
		},
	})
	s.metrics = newMetrics(tel.Registry, func() float64 { return float64(len(s.hub.Rooms())) },
		func() float64 { return float64(s.frames.count()) })
	s.metrics.setBreaker("kafka-produce", gobreaker.StateClosed)
	pkeys := presence.NewKeys(cfg.Redis.Prefix)
	if s.pub, err = presence.NewPublisher(s.rdb, pkeys, s.gatewayID, presence.PublisherOptions{Registerer: tel.Registry, Log: tel.Log}); err != nil {
		return nil, fmt.Errorf("gateway: %w", err)
	}
	s.router = newPresenceRouter(s, pkeys)
	s.broker = newRoomBroker(s)
	s.acks = newAckRecorder(s.rdb, cfg.DedupeTTL, tel.Log)
	s.hub = hub.New(s.broker, hub.Options{MaxBuffered: cfg.QueueSize})
	s.routes = s.handlers()
	if s.sio, err = s.newSocketIO(); err != nil {
		return nil, fmt.Errorf("gateway: %w", err)
	}
	s.poller, err = netpoll.New()
	if err != nil {
		tel.Log.Info("no poller: each WebSocket connection gets a reading goroutine", "err", err)
		s.poller, err = nil, nil
	}
	s.app = s.newApp()
	return s, nil
}

func (s *Service) newApp() *fiber.App {
	app := web.NewApp(web.Options{
		Service:   "gateway",
		Telemetry: s.tel,
		BodyLimit: s.bodyLimit(),
		Pprof:     s.cfg.HTTP.Pprof,
		Checks: map[string]web.Check{
			"postgres": func(ctx context.Context) error { return store.Ping(ctx, s.db) },
			"redis":    func(ctx context.Context) error { return s.rdb.Ping(ctx).Err() },
			"kafka":    func(ctx context.Context) error { return kafka.Ping(ctx, s.kclient, s.cfg.Kafka.Topic) },
			"produce_breaker": func(context.Context) error {
				if s.breaker.State() == gobreaker.StateOpen {
					return errors.New("open")
				}
				return nil
			},
			// A draining instance takes no new connections.
			"draining": func(context.Context) error {
				s.clientsMu.Lock()
				defer s.clientsMu.Unlock()
				if s.draining {
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
	s.upgrader = &websocket.FastHTTPUpgrader{
		ReadBufferSize:  s.cfg.ReadBufferSize,
		WriteBufferSize: s.cfg.WriteBufferSize,
		// Pooled write buffers: an idle connection holds none.
		WriteBufferPool: &sync.Pool{},
		// Browsers authenticate with a token, not cookies: any origin.
		CheckOrigin: func(*fasthttp.RequestCtx) bool { return true },
	}
	app.Get("/ws", s.upgrade)
	s.sio.Mount(app, "/socket.io")
	return app
}

// admit refuses new connections, native and Socket.IO, while draining or
// full (the exact check is made when the socket connects).
func (s *Service) admit() error {
	s.clientsMu.Lock()
	draining := s.draining
	s.clientsMu.Unlock()
	if draining {
		return chat.Errorf(chat.CodeUnavailable, "server is shutting down; reconnect")
	}
	if s.active.Load() >= int64(s.cfg.MaxConnections) {
		return chat.Errorf(chat.CodeServerFull, "server is full; retry later or elsewhere")
	}
	return nil
}

// upgrade authenticates a WebSocket upgrade before it happens: a missing,
// invalid or expired token is refused with 401 and the JSON error body.
func (s *Service) upgrade(c *fiber.Ctx) error {
	if !websocket.FastHTTPIsWebSocketUpgrade(c.Context()) {
		return chat.Errorf(chat.CodeBadRequest, "WebSocket upgrade required")
	}
	token := c.Query("token")
	if token == "" {
		if h := c.Get(fiber.HeaderAuthorization); len(h) > 7 && (h[:7] == "Bearer " || h[:7] == "bearer ") {
			token = h[7:]
		}
	}
	claims, err := s.tokens.Verify(token)
	if err != nil {
		return err
	}
	if err := s.admit(); err != nil {
		return err
	}
	// fasthttp reuses the request's buffers once the hijack handler
	// returned: keep a copy of the token.
	sess := &session{claims: claims, token: strings.Clone(token)}
	fctx := c.Context()
	// On a bad handshake the upgrader has written its 4xx response itself.
	_ = s.upgrader.Upgrade(fctx, func(ws *websocket.Conn) {
		defer func() {
			if r := recover(); r != nil {
				s.log.Error("panic in connection handler", "panic", fmt.Sprint(r))
				_ = ws.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseInternalServerErr, "internal error"), time.Now().Add(time.Second))
				_ = ws.Close()
			}
		}()
		s.serveConn(ws, sess)
	})
	return nil
}

// serveConn takes over an upgraded connection. The library did the
// handshake; from here on frames are read and written on the raw TCP
// connection (wsconn.go, reader.go). With the poller it returns at once,
// and with it the goroutine fasthttp started for the hijack, which
// releases the request context (KeepHijackedConns keeps the connection
// open): a silent connection then holds no goroutine and no fasthttp
// state, only its client.
func (s *Service) serveConn(ws *websocket.Conn, sess *session) {
	hj := ws.NetConn()
	nc := hj
	if u, ok := hj.(interface{ UnsafeConn() net.Conn }); ok {
		nc = u.UnsafeConn()
	}
	// Frames the client sent right behind its upgrade request may be in
	// fasthttp's reader, which goes back to its pool when this returns.
	early := drainBuffered(hj, nc)
	wc := newWSConn(nc)
	// The upgrade check is racy under a burst; this one is exact.
	if s.active.Add(1) > int64(s.cfg.MaxConnections) {
		s.active.Add(-1)
		_ = wc.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(protocol.CloseTryAgainLater, "server full"), time.Now().Add(time.Second))
		wc.release()
		return
	}
	c := newClient(s, wc, sess.claims, sess.token)
	if !s.register(c) {
		c.stopPings()
		_ = wc.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(protocol.CloseServiceRestart, "server restarting"), time.Now().Add(time.Second))
		wc.release()
		s.active.Add(-1)
		return
	}
	s.metrics.connections.Inc()
	r := &connReader{s: s, c: c, ws: wc, frames: frameReader{limit: s.cfg.ReadLimit}}
	r.expiry = time.AfterFunc(time.Until(sess.claims.ExpiresAt), func() {
		c.close(protocol.CloseAuthExpired, "token expired")
	})
	if len(early) > 0 && !r.first(early) {
		return
	}
	if s.poller != nil && wc.pollable() {
		// Under pmu, so that a turn ending the connection at once waits
		// for the registration it must undo.
		wc.pmu.Lock()
		pc, err := s.poller.Add(nc.(syscall.Conn), r.turn)
		wc.pc = pc
		wc.pmu.Unlock()
		if err == nil {
			return
		}
		s.log.Warn("connection not watched by the poller; reading it with a goroutine", "err", err)
	}
	r.block()
}

// drainBuffered returns what fasthttp read past the upgrade request: the
// hijacked conn reads from fasthttp's buffer first. With a read deadline
// in the past, the buffer is emptied without waiting on the socket.
func drainBuffered(hj, nc net.Conn) []byte {
	if hj == nc {
		return nil
	}
	if err := nc.SetReadDeadline(time.Unix(1, 0)); err != nil {
		return nil
	}
	defer func() { _ = nc.SetReadDeadline(time.Time{}) }()
	var early []byte
	bp := readBufs.Get().(*[]byte)
	defer readBufs.Put(bp)
	for {
		n, err := hj.Read(*bp)
		early = append(early, (*bp)[:n]...)
		if err != nil || n == 0 {
			return early
		}
	}
}

// register adds c to the instance and tells presence (in the same
// critical section as the heartbeat snapshot, so no heartbeat of c
// precedes its connect).
func (s *Service) register(c *client) bool {
	s.clientsMu.Lock()
	defer s.clientsMu.Unlock()
	if s.draining {
		return false
	}
	s.clients[c] = struct{}{}
	s.conns.Add(1)
	s.users.add(c)
	s.hello(s.base, c)
	return true
}

// release undoes register once c's socket closed: it leaves c's rooms,
// ends its typing and tells presence it is gone. It runs on c's reader
// (the turn that saw the end of input).
func (s *Service) release(c *client) {
	defer s.conns.Done()
	s.clientsMu.Lock()
	delete(s.clients, c)
	s.clientsMu.Unlock()
	s.users.remove(c)
	ctx, cancel := context.WithTimeout(context.WithoutCancel(s.base), 5*time.Second)
	defer cancel()
	c.leaveAll(ctx)
	for room := range c.typing {
		s.stopTyping(ctx, c, room)
	}
	s.goodbye(ctx, c)
}

// Run serves the HTTP app (WebSocket, /health, /ready, /metrics) on ln,
// fans out room publications and presence_update events, and heartbeats
// the live connections to presence until ctx is cancelled. Then it stops
// accepting, closes every client with 1012 after flushing its queue, tells
// presence each one is gone, and returns within cfg.HTTP.ShutdownTimeout.
func (s *Service) Run(ctx context.Context, ln net.Listener) error {
	brokerDone := make(chan struct{})
	go func() {
		defer close(brokerDone)
		s.broker.run()
	}()
	go s.acks.run()
	routerDone := make(chan struct{})
	go func() {
		defer close(routerDone)
		s.router.run(s.base)
	}()
	followCtx, stopFollowing := context.WithCancel(s.base)
	defer stopFollowing()
	followed := s.router.follow(followCtx)
	hbCtx, stopHeartbeats := context.WithCancel(s.base)
	defer stopHeartbeats()
	heartbeatsDone := make(chan struct{})
	go func() {
		defer close(heartbeatsDone)
		s.heartbeatLoop(hbCtx)
	}()
	errc := make(chan error, 1)
	go func() { errc <- s.app.Listener(ln) }()
	var serveErr error
	select {
	case serveErr = <-errc:
		if serveErr != nil {
			serveErr = fmt.Errorf("gateway: serve: %w", serveErr)
		}
	case <-ctx.Done():
	}
	s.log.Info("gateway shutting down")
	deadline := time.Now().Add(s.cfg.HTTP.ShutdownTimeout)
	// Part of the budget is kept for sending the presence disconnects.
	flushBy := deadline.Add(-min(2*time.Second, s.cfg.HTTP.ShutdownTimeout/4))
	stopHeartbeats()
	<-heartbeatsDone

	s.clientsMu.Lock()
	s.draining = true
	s.clientsMu.Unlock()
	// Frames being handled finish first, so a send Kafka stored gets its
	// ack before the 1012; frames arriving from now on are refused.
	drainBy := time.Now().Add(s.cfg.SendTimeout + time.Second)
	if flushBy.Before(drainBy) {
		drainBy = flushBy
	}
	select {
	case <-s.frames.drain():
	case <-time.After(time.Until(drainBy)):
		s.log.Warn("client frames still in flight at the drain deadline", "in_flight", s.frames.count())
	}
	s.clientsMu.Lock()
	clients := make([]*client, 0, len(s.clients))
	for c := range s.clients {
		clients = append(clients, c)
	}
	s.clientsMu.Unlock()
	for _, c := range clients {
		c.close(protocol.CloseServiceRestart, "server restarting")
	}
	// Ends Socket.IO long-polls of sessions without a client, so the app's
	// shutdown does not wait for them.
	s.sio.Shutdown()
	if err := s.app.ShutdownWithTimeout(time.Until(deadline)); err != nil && serveErr == nil {
		serveErr = fmt.Errorf("gateway: shutdown: %w", err)
	}
	if serveErr == nil {
		serveErr = <-errc
	}
	waited := make(chan struct{})
	go func() {
		s.conns.Wait()
		close(waited)
	}()
	select {
	case <-waited:
	case <-time.After(time.Until(flushBy)):
		s.log.Warn("connections still open at shutdown deadline")
	}
	s.sio.Close()
	s.acks.close()
	s.sayGoodbyeToAll()
	pctx, cancel := context.WithDeadline(context.WithoutCancel(s.base), deadline)
	if err := s.pub.Close(pctx); err != nil {
		s.log.Warn("presence commands lost at shutdown; those users go offline by timeout", "err", err)
	}
	cancel()
	_ = s.broker.close()
	<-brokerDone
	stopFollowing()
	<-followed
	<-routerDone
	return serveErr
}

// sayGoodbyeToAll disconnects, towards presence, the connections still
// open at the end of a shutdown (their readers have not finished).
func (s *Service) sayGoodbyeToAll() {
	s.clientsMu.Lock()
	left := make([]*client, 0, len(s.clients))
	for c := range s.clients {
		left = append(left, c)
	}
	s.clientsMu.Unlock()
	for _, c := range left {
		s.goodbye(s.base, c)
	}
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
		if s.broker != nil {
			_ = s.broker.close()
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
		if s.poller != nil {
			errs = append(errs, s.poller.Close())
			// Connections still open now (Run gave up on them, or never
			// ran) have no reader left: close their sockets.
			s.clientsMu.Lock()
			for c := range s.clients {
				if wc, ok := c.ws.(*wsConn); ok {
					_ = wc.nc.Close()
				}
			}
			s.clientsMu.Unlock()
		}
		s.closeErr = errors.Join(errs...)
	})
	return s.closeErr
}

// App returns the HTTP app, for tests that drive it without a listener.
func (s *Service) App() *fiber.App { return s.app }

func roomString(id int64) string { return strconv.FormatInt(id, 10) }
