// Package socketio serves the Socket.IO v4 protocol (Engine.IO protocol 4,
// Socket.IO protocol 5) on Fiber, so socket.io-client 4.x applications talk
// to the gateway unchanged: HTTP long-polling with the upgrade to
// WebSocket, or WebSocket alone; Engine.IO heartbeats; the main namespace
// only; JSON events and acknowledgements; binary attachments refused.
//
// The package knows the wire protocols only. A Handler (the gateway) gets
// each connected socket on its own goroutine: the CONNECT auth payload,
// then the client's events in order (Session.Next), and it answers with
// native server frames (Session.SendNative), which the bridge maps to
// Socket.IO events and acks (see bridge.go and docs/protocol.md).
package socketio

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	fastws "github.com/fasthttp/websocket"
	"github.com/gofiber/contrib/websocket"
	"github.com/gofiber/fiber/v2"
	"github.com/prometheus/client_golang/prometheus"

	"relay/pkg/chat"
)

// Handler serves the sockets of a Server.
type Handler interface {
	// ServeSocket runs one socket on its session's goroutine, from the
	// client's CONNECT (auth is its payload, "null" when it sent none)
	// until the socket ends. To connect the client it calls s.Accept and
	// then reads s.Next until that fails. An error returned before Accept
	// reaches the client as CONNECT_ERROR (socket.io-client's
	// connect_error, with err.data.code); the session then closes.
	ServeSocket(s *Session, auth json.RawMessage) error
}

// Options configures a Server. Zero values mean the defaults given.
type Options struct {
	// Handler serves connected sockets; required.
	Handler Handler
	// PingInterval is the Engine.IO heartbeat period; zero means 25 s.
	PingInterval time.Duration
	// PingTimeout is how long a pong may take before the session is
	// closed; zero means 20 s.
	PingTimeout time.Duration
	// MaxPayload bounds a polling request body and a WebSocket message in
	// bytes (announced to clients, which split their writes by it); zero
	// means 1,000,000.
	MaxPayload int
	// ConnectTimeout closes a session whose client sent no CONNECT; zero
	// means 5 s (socket.io-client sends it right after the handshake).
	ConnectTimeout time.Duration
	// UpgradeTimeout bounds the WebSocket upgrade probe; zero means 10 s.
	UpgradeTimeout time.Duration
	// WriteTimeout bounds the server's own writes (pings, the open packet)
	// and writes given no deadline; zero means 10 s.
	WriteTimeout time.Duration
	// PollBuffer is how many packets wait for a polling client's next
	// request before writers block; zero means 256.
	PollBuffer int
	// MaxSessions bounds open sessions, connected or not; zero means no
	// bound.
	MaxSessions int
	// Admit, when set, is asked before a new session is opened; its error
	// refuses the request (the app's error handler renders it).
	Admit func(c *fiber.Ctx) error
	// CheckOrigin, when set, is asked on every request; its error refuses
	// it (a page on another site must not drive a session).
	CheckOrigin func(c *fiber.Ctx) error
	// ClientAddr is the client's address of a request (behind a trusted
	// proxy, the one it forwarded); nil means the peer's address.
	ClientAddr func(c *fiber.Ctx) string
	// AcquireAddr, when set, counts a new session against its client
	// address's connection cap; its error refuses the session, and the
	// release runs once the session is gone.
	AcquireAddr func(addr string) (release func(), err error)
	// MaxPendingPerAddr bounds the sessions of one client address that
	// have not connected a socket yet (no CONNECT accepted); zero means no
	// bound. With ConnectTimeout it bounds what requests without a token
	// can hold.
	MaxPendingPerAddr int
	// ReadBufferSize and WriteBufferSize size the WebSocket buffers; zero
	// means 1 KiB each (the write buffer is pooled).
	ReadBufferSize, WriteBufferSize int
	// Log receives debug and warning lines; nil means slog.Default().
	Log *slog.Logger
	// Registerer gets the package's metrics; nil means none are exported.
	Registerer prometheus.Registerer
}

func (o Options) withDefaults() Options {
	def := func(v *time.Duration, d time.Duration) {
		if *v == 0 {
			*v = d
		}
	}
	def(&o.PingInterval, 25*time.Second)
	def(&o.PingTimeout, 20*time.Second)
	def(&o.ConnectTimeout, 5*time.Second)
	def(&o.UpgradeTimeout, 10*time.Second)
	def(&o.WriteTimeout, 10*time.Second)
	if o.MaxPayload == 0 {
		o.MaxPayload = 1_000_000
	}
	if o.PollBuffer == 0 {
		o.PollBuffer = 256
	}
	if o.ReadBufferSize == 0 {
		o.ReadBufferSize = 1024
	}
	if o.WriteBufferSize == 0 {
		o.WriteBufferSize = 1024
	}
	if o.Log == nil {
		o.Log = slog.Default()
	}
	return o
}

func (o Options) validate() error {
	var errs []error
	if o.Handler == nil {
		errs = append(errs, errors.New("Handler is required"))
	}
	for name, d := range map[string]time.Duration{
		"PingInterval": o.PingInterval, "PingTimeout": o.PingTimeout, "ConnectTimeout": o.ConnectTimeout,
		"UpgradeTimeout": o.UpgradeTimeout, "WriteTimeout": o.WriteTimeout,
	} {
		if d < time.Millisecond {
			errs = append(errs, errors.New(name+" must be at least 1ms"))
		}
	}
	if o.MaxPayload < 1024 {
		errs = append(errs, errors.New("MaxPayload must be at least 1024 bytes"))
	}
	if o.PollBuffer < 1 || o.MaxSessions < 0 || o.MaxPendingPerAddr < 0 {
		errs = append(errs, errors.New("PollBuffer must be positive, MaxSessions and MaxPendingPerAddr not negative"))
	}
	return errors.Join(errs...)
}

// Server holds the Engine.IO sessions of one process.
type Server struct {
	opts     Options
	log      *slog.Logger
	ws       fiber.Handler
	sessions sync.Map // sid → *Session
	count    atomic.Int64
	draining atomic.Bool
	metrics  metrics

	// pending counts, per client address, the sessions whose socket has
	// not connected (Options.MaxPendingPerAddr).
	pmu     sync.Mutex
	pending map[string]int
}

// NewServer applies defaults to o and validates it.
func NewServer(o Options) (*Server, error) {
	o = o.withDefaults()
	if err := o.validate(); err != nil {
		return nil, err
	}
	m, err := newMetrics(o.Registerer)
	if err != nil {
		return nil, err
	}
	srv := &Server{opts: o, log: o.Log, metrics: m, pending: map[string]int{}}
	srv.ws = websocket.New(srv.serveWS, websocket.Config{
		ReadBufferSize:  o.ReadBufferSize,
		WriteBufferSize: o.WriteBufferSize,
		// Pooled write buffers: an idle connection holds none.
		WriteBufferPool: &sync.Pool{},
		RecoverHandler: func(c *websocket.Conn) {
			if r := recover(); r != nil {
				srv.log.Error("panic in socket.io websocket handler", "panic", r)
				_ = c.Close()
			}
		},
	})
	return srv, nil
}

// BodyLimit is the request body size the app must accept for polling.
func (srv *Server) BodyLimit() int { return srv.opts.MaxPayload }

// Mount serves the protocol at path (socket.io-client's default is
// "/socket.io").
func (srv *Server) Mount(r fiber.Router, path string) {
	r.All(path, srv.handle)
}

// Sessions returns the number of open sessions.
func (srv *Server) Sessions() int { return int(srv.count.Load()) }

// Shutdown refuses new sessions and closes those whose socket is not
// connected; connected ones are closed by their handlers.
func (srv *Server) Shutdown() {
	srv.draining.Store(true)
	srv.sessions.Range(func(_, v any) bool {
		s := v.(*Session)
		s.mu.Lock()
		accepted := s.accepted
		s.mu.Unlock()
		if !accepted {
			s.close("server shutdown", true)
		}
		return true
	})
}

// Close ends every session at once.
func (srv *Server) Close() {
	srv.draining.Store(true)
	srv.sessions.Range(func(_, v any) bool {
		v.(*Session).close("server close", false)
		return true
	})
}

// upgradeOf carries the session a WebSocket upgrades to the handler.
type upgradeOf struct{ s *Session }

const (
	localSession   = "socketio.session"
	localHandshake = "socketio.handshake"
)

// handle routes one Engine.IO request.
func (srv *Server) handle(c *fiber.Ctx) error {
	if srv.opts.CheckOrigin != nil {
		if err := srv.opts.CheckOrigin(c); err != nil {
			return err
		}
	}
	if c.Query("EIO") != "4" {
		return fail(c, errUnsupportedProtocol)
	}
	sid := c.Query("sid")
	switch c.Query("transport") {
	case "polling":
		if sid == "" {
			if c.Method() != fiber.MethodGet {
				return fail(c, errBadHandshakeMethod)
			}
			sl, err := srv.admit(c)
			if err != nil {
				return err
			}
			s := srv.newSession(transportPolling, srv.handshakeOf(c), sl)
			s.start()
			c.Set(fiber.HeaderContentType, "text/plain; charset=UTF-8")
			return c.Send(openPacket(s.id, []string{"websocket"}, srv.opts))
		}
		s := srv.lookup(sid)
		if s == nil {
			return fail(c, errUnknownSID)
		}
		switch c.Method() {
		case fiber.MethodGet:
			body, code := s.poll()
			if code != 0 {
				return fail(c, code)
			}
			c.Set(fiber.HeaderContentType, "text/plain; charset=UTF-8")
			return c.Send(body)
		case fiber.MethodPost:
			if len(c.Body()) > srv.opts.MaxPayload {
				s.close("payload too large", false)
				return c.Status(fiber.StatusRequestEntityTooLarge).JSON(fiber.Map{"code": errBadRequest, "message": "Payload too large"})
			}
			if code := s.post(append([]byte(nil), c.Body()...)); code != 0 {
				return fail(c, code)
			}
			c.Set(fiber.HeaderContentType, "text/html")
			return c.SendString("ok")
		default:
			return fail(c, errBadRequest)
		}
	case "websocket":
		if !websocket.IsWebSocketUpgrade(c) {
			return fail(c, errBadRequest)
		}
		if sid != "" {
			s := srv.lookup(sid)
			if s == nil {
				return fail(c, errUnknownSID)
			}
			if !s.canUpgrade() {
				return fail(c, errBadRequest)
			}
			// Wrapped: fasthttp closes every io.Closer among a request's
			// values when the request ends, and a Session is one.
			c.Locals(localSession, upgradeOf{s})
		} else {
			sl, err := srv.admit(c)
			if err != nil {
				return err
			}
			// The slot is the WebSocket's to take; if fasthttp never runs
			// its handler (the handshake failed, the hijack did not
			// happen), it is given back when the upgrade would have timed
			// out.
			sl.expireUnless(srv.opts.UpgradeTimeout)
			c.Locals(localHandshake, opening{hs: srv.handshakeOf(c), slot: sl})
			c.SetUserContext(context.Background()) // see the upgrade below
			if err := srv.ws(c); err != nil {
				sl.release()
				return err
			}
			return nil
		}
		// The WebSocket keeps every local, this request's trace context
		// included, for its whole life; it needs none.
		c.SetUserContext(context.Background())
		return srv.ws(c)
	default:
		return fail(c, errTransportUnknown)
	}
}

// fail answers an Engine.IO protocol error the way the reference server
// does: HTTP 400 with {"code": N, "message": "..."}.
func fail(c *fiber.Ctx, code int) error {
	c.Set(fiber.HeaderContentType, fiber.MIMEApplicationJSON)
	return c.Status(fiber.StatusBadRequest).Send(engineError(code))
}

// admit decides whether a request may open a session, and takes the
// session's slot: its place under the address's connection cap and among
// its sessions not yet connected.
func (srv *Server) admit(c *fiber.Ctx) (*slot, error) {
	if srv.draining.Load() {
		return nil, chat.Errorf(chat.CodeUnavailable, "server is shutting down; reconnect")
	}
	if srv.opts.MaxSessions > 0 && srv.count.Load() >= int64(srv.opts.MaxSessions) {
		return nil, chat.Errorf(chat.CodeServerFull, "server is full; retry later or elsewhere")
	}
	if srv.opts.Admit != nil {
		if err := srv.opts.Admit(c); err != nil {
			return nil, err
		}
	}
	addr := srv.clientAddr(c)
	srv.pmu.Lock()
	if n := srv.opts.MaxPendingPerAddr; n > 0 && srv.pending[addr] >= n {
		srv.pmu.Unlock()
		return nil, chat.Errorf(chat.CodeRateLimited, "too many Socket.IO sessions without CONNECT from this address (at most %d)", n)
	}
	srv.pending[addr]++
	srv.pmu.Unlock()
	sl := &slot{srv: srv, addr: addr}
	if srv.opts.AcquireAddr != nil {
		rel, err := srv.opts.AcquireAddr(addr)
		if err != nil {
			sl.connected()
			return nil, err
		}
		sl.releaseAddr = rel
	}
	return sl, nil
}

func (srv *Server) clientAddr(c *fiber.Ctx) string {
	if srv.opts.ClientAddr != nil {
		return srv.opts.ClientAddr(c)
	}
	return c.IP()
}

// opening is what a WebSocket that opens a session carries from its
// request to its handler.
type opening struct {
	hs   Handshake
	slot *slot
}

// slot is what one session holds against the per-address bounds.
type slot struct {
	srv         *Server
	addr        string
	releaseAddr func()
	pendingOnce sync.Once
	allOnce     sync.Once
	// expiry gives the slot back if no session took it (expireUnless).
	expiry *time.Timer
}

// connected takes the session out of its address's pending count (once).
func (sl *slot) connected() {
	sl.pendingOnce.Do(func() {
		sl.srv.pmu.Lock()
		if sl.srv.pending[sl.addr]--; sl.srv.pending[sl.addr] <= 0 {
			delete(sl.srv.pending, sl.addr)
		}
		sl.srv.pmu.Unlock()
	})
}

// release gives the whole slot back (once): the session is gone.
func (sl *slot) release() {
	sl.allOnce.Do(func() {
		sl.connected()
		if sl.releaseAddr != nil {
			sl.releaseAddr()
		}
	})
}

// expireUnless releases the slot after d unless take is called first.
func (sl *slot) expireUnless(d time.Duration) { sl.expiry = time.AfterFunc(d, sl.release) }

// take claims a slot given expireUnless; false when it expired already.
func (sl *slot) take() bool { return sl.expiry == nil || sl.expiry.Stop() }

// handshakeOf copies what a session keeps of its opening request (Fiber's
// strings are only valid during the request).
func (srv *Server) handshakeOf(c *fiber.Ctx) Handshake {
	return Handshake{
		Token:         strings.Clone(c.Query("token")),
		Authorization: strings.Clone(c.Get(fiber.HeaderAuthorization)),
		RemoteIP:      strings.Clone(srv.clientAddr(c)),
	}
}

func (srv *Server) newSession(t transportKind, hs Handshake, sl *slot) *Session {
	s := &Session{
		srv: srv, id: newID(), sockID: newID(), hs: hs, transport: t, slot: sl,
		inbox:  make(chan inbound, 16),
		closed: make(chan struct{}),
		wake:   make(chan struct{}, 1),
		space:  make(chan struct{}, 1),
	}
	srv.sessions.Store(s.id, s)
	srv.count.Add(1)
	srv.metrics.sessions.WithLabelValues(t.String()).Inc()
	return s
}

func (srv *Server) lookup(sid string) *Session {
	if v, ok := srv.sessions.Load(sid); ok {
		return v.(*Session)
	}
	return nil
}

// forget removes a closed session.
func (srv *Server) forget(s *Session) {
	if _, ok := srv.sessions.LoadAndDelete(s.id); !ok {
		return
	}
	srv.count.Add(-1)
	s.mu.Lock()
	t := s.transport
	s.mu.Unlock()
	srv.metrics.sessions.WithLabelValues(t.String()).Dec()
}

// serveWS runs a WebSocket: a new session's only transport, or the upgrade
// of a polling session.
func (srv *Server) serveWS(conn *websocket.Conn) {
	ws := conn.Conn
	// The app may keep hijacked connections open after their handler
	// (fasthttp's KeepHijackedConns, as the gateway does): whatever way the
	// handler ends, its WebSocket is done.
	defer ws.Close()
	ws.SetReadLimit(int64(srv.opts.MaxPayload))
	if u, ok := conn.Locals(localSession).(upgradeOf); ok {
		srv.upgrade(u.s, ws)
		return
	}
	op, ok := conn.Locals(localHandshake).(opening)
	if !ok || !op.slot.take() {
		// The upgrade outlived UpgradeTimeout: its slot was given back.
		return
	}
	s := srv.newSession(transportWebSocket, op.hs, op.slot)
	s.wmu.Lock()
	s.ws = ws
	s.wmu.Unlock()
	defer s.detach(ws)
	if err := s.writeWS(openPacket(s.id, []string{}, srv.opts), time.Now().Add(srv.opts.WriteTimeout)); err != nil {
		s.close("transport error", false)
		return
	}
	s.start()
	s.readWS(ws)
}

// upgrade runs the probe of a polling session's WebSocket (2probe → 3probe,
// then 5) and, once upgraded, reads the session's packets from it.
func (srv *Server) upgrade(s *Session, ws *fastws.Conn) {
	_ = ws.SetReadDeadline(time.Now().Add(srv.opts.UpgradeTimeout))
	mt, data, err := ws.ReadMessage()
	if err != nil || mt != fastws.TextMessage || string(data) != string(probePing) {
		return
	}
	_ = ws.SetWriteDeadline(time.Now().Add(srv.opts.WriteTimeout))
	if ws.WriteMessage(fastws.TextMessage, probePong) != nil || !s.beginUpgrade() {
		return
	}
	mt, data, err = ws.ReadMessage()
	if err != nil || mt != fastws.TextMessage || len(data) != 1 || data[0] != engineUpgrade {
		s.cancelUpgrade()
		return
	}
	if !s.completeUpgrade(ws) {
		return
	}
	defer s.detach(ws)
	_ = ws.SetReadDeadline(time.Time{})
	s.readWS(ws)
}

type metrics struct {
	sessions *prometheus.GaugeVec
	parked   prometheus.Gauge
	closed   *prometheus.CounterVec
	upgrades prometheus.Counter
}

func newMetrics(reg prometheus.Registerer) (metrics, error) {
	m := metrics{
		sessions: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "gateway_socketio_sessions", Help: "Open Socket.IO (Engine.IO) sessions by transport.",
		}, []string{"transport"}),
		parked: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "gateway_socketio_polls_waiting", Help: "Socket.IO long-polling requests waiting for packets.",
		}),
		closed: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "gateway_socketio_sessions_closed_total", Help: "Socket.IO sessions closed, by reason.",
		}, []string{"reason"}),
		upgrades: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "gateway_socketio_upgrades_total", Help: "Socket.IO sessions upgraded from polling to WebSocket.",
		}),
	}
	if reg != nil {
		for _, c := range []prometheus.Collector{m.sessions, m.parked, m.closed, m.upgrades} {
			if err := reg.Register(c); err != nil {
				return m, fmt.Errorf("socketio: metrics: %w", err)
			}
		}
	}
	return m, nil
}
