package ws

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/fasthttp/websocket"
	"github.com/gofiber/fiber/v2"
	"github.com/valyala/fasthttp"

	"relay/pkg/auth"
	"relay/pkg/chat"
	"relay/pkg/ratelimit"
	"relay/pkg/web"
	"relay/services/gateway/internal/conn"
	"relay/services/gateway/internal/transport/ws/netpoll"
)

// Handler handles the messages of native connections.
type Handler interface {
	// Text handles one client text message; payload is only valid during
	// the call.
	Text(c *conn.Client, payload []byte)
	// Binary answers a binary message (the protocol is JSON text).
	Binary(c *conn.Client)
}

// Options configure NewServer; every field is required but Caps,
// AllowedOrigins and TrustedProxies.
type Options struct {
	// Lifecycle opens and ends the connections.
	Lifecycle *conn.Lifecycle
	// Handler gets the client messages.
	Handler Handler
	// Tokens verifies the JWT of an upgrade.
	Tokens *auth.Tokens
	// Caps bounds the connections per user and per client address; nil
	// means no caps.
	Caps *ratelimit.ConnCaps
	// AllowedOrigins are the browser origins besides the gateway's own
	// that may open a connection (web.OriginAllowed); nil: same origin.
	AllowedOrigins []string
	// TrustedProxies are the proxies whose X-Forwarded-For names the
	// client (web.ClientAddr).
	TrustedProxies []netip.Prefix
	// ReadLimit closes a connection (1009) sending a larger message.
	ReadLimit int64
	// ReadBufferSize is the read buffer of a connection read without the
	// poller; WriteBufferSize the upgrader's pooled write buffer.
	ReadBufferSize, WriteBufferSize int
	// Log gets connection-level failures.
	Log *slog.Logger
}

// Server serves the native protocol's upgrades at /ws.
type Server struct {
	o        Options
	upgrader *websocket.FastHTTPUpgrader
	// poller runs the readers of native connections when they have input;
	// nil where there is no epoll (then each has a reading goroutine).
	poller *netpoll.Poller
}

// NewServer makes the server and its poller (when the platform has one).
func NewServer(o Options) *Server {
	s := &Server{o: o}
	s.upgrader = &websocket.FastHTTPUpgrader{
		ReadBufferSize:  o.ReadBufferSize,
		WriteBufferSize: o.WriteBufferSize,
		// Pooled write buffers: an idle connection holds none.
		WriteBufferPool: &sync.Pool{},
		// Checked by Upgrade, before the token, with an error body.
		CheckOrigin: func(*fasthttp.RequestCtx) bool { return true },
	}
	p, err := netpoll.New()
	if err != nil {
		o.Log.Info("no poller: each WebSocket connection gets a reading goroutine", "err", err)
		p = nil
	}
	s.poller = p
	return s
}

// Poller is the poller watching the connections, nil without epoll.
func (s *Server) Poller() *netpoll.Poller { return s.poller }

// Close stops the poller; connections it watched have no reader left
// (Lifecycle.CloseSockets closes them).
func (s *Server) Close() error {
	if s.poller == nil {
		return nil
	}
	return s.poller.Close()
}

// Upgrade checks a WebSocket upgrade before it happens, each refusal with
// the JSON error body: an Origin that is neither the gateway's own nor
// allowed is 403 FORBIDDEN (a page on another site cannot use a token it
// got hold of); a missing, invalid or expired token 401; a user or client
// address at its connection cap 429 RATE_LIMITED.
func (s *Server) Upgrade(c *fiber.Ctx) error {
	if !websocket.FastHTTPIsWebSocketUpgrade(c.Context()) {
		return chat.Errorf(chat.CodeBadRequest, "WebSocket upgrade required")
	}
	if origin := c.Get(fiber.HeaderOrigin); !web.OriginAllowed(origin, string(c.Request().Host()), s.o.AllowedOrigins) {
		return chat.Errorf(chat.CodeForbidden, "origin %q may not open connections (CORS_ALLOWED_ORIGINS)", conn.TruncateUTF8(origin, 100))
	}
	token := c.Query("token")
	if token == "" {
		if h := c.Get(fiber.HeaderAuthorization); len(h) > 7 && (h[:7] == "Bearer " || h[:7] == "bearer ") {
			token = h[7:]
		}
	}
	claims, err := s.o.Tokens.Verify(token)
	if err != nil {
		return err
	}
	if err := s.o.Lifecycle.Admit(); err != nil {
		return err
	}
	addr := web.ClientIP(c, s.o.TrustedProxies)
	release := func() {}
	if s.o.Caps != nil {
		if release, err = s.o.Caps.Acquire(claims.UserID, addr); err != nil {
			return err
		}
	}
	// fasthttp reuses the request's buffers once the hijack handler
	// returned: keep a copy of the token.
	token = strings.Clone(token)
	fctx := c.Context()
	// On a bad handshake the upgrader has written its 4xx response itself.
	if err := s.upgrader.Upgrade(fctx, func(ws *websocket.Conn) {
		defer func() {
			if r := recover(); r != nil {
				s.o.Log.Error("panic in connection handler", "panic", fmt.Sprint(r))
				_ = ws.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseInternalServerErr, "internal error"), time.Now().Add(time.Second))
				_ = ws.Close()
				release()
			}
		}()
		s.serve(ws, claims, token, addr, release)
	}); err != nil {
		release()
	}
	return nil
}

// serve takes over an upgraded connection. The library did the
// handshake; from here on frames are read and written on the raw TCP
// connection (conn.go, reader.go). With the poller it returns at once,
// and with it the goroutine fasthttp started for the hijack, which
// releases the request context (KeepHijackedConns keeps the connection
// open): a silent connection then holds no goroutine and no fasthttp
// state, only its client.
func (s *Server) serve(ws *websocket.Conn, claims auth.Claims, token, addr string, release func()) {
	hj := ws.NetConn()
	nc := hj
	if u, ok := hj.(interface{ UnsafeConn() net.Conn }); ok {
		nc = u.UnsafeConn()
	}
	// Frames the client sent right behind its upgrade request may be in
	// fasthttp's reader, which goes back to its pool when this returns.
	early := drainBuffered(hj, nc)
	wc := newConn(nc)
	c, err := s.o.Lifecycle.Open(wc, claims, token, conn.OpenOptions{Watchdog: true, Addr: addr, Release: release})
	if errors.Is(err, conn.ErrFull) {
		s.o.Lifecycle.Refuse(wc, conn.DisconnectFull)
	}
	if err != nil {
		return
	}
	r := &reader{srv: s, c: c, ws: wc, frames: frameReader{limit: s.o.ReadLimit}}
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
		s.o.Log.Warn("connection not watched by the poller; reading it with a goroutine", "err", err)
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
