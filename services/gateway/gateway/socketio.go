package gateway

import (
	"encoding/json"
	"fmt"
	"strings"
	"time"

	"github.com/fasthttp/websocket"
	"github.com/gofiber/fiber/v2"

	"relay/pkg/chat"
	"relay/pkg/protocol"
	"relay/services/gateway/socketio"
)

// SocketIOConfig configures the Socket.IO endpoint at /socket.io/
// (docs/protocol.md#socketio). The defaults are socket.io's own.
type SocketIOConfig struct {
	// PingInterval is the Engine.IO heartbeat period; zero means 25 s.
	PingInterval time.Duration `env:"SOCKETIO_PING_INTERVAL" envDefault:"25s"`
	// PingTimeout closes a session whose pong is this late; zero means 20 s.
	PingTimeout time.Duration `env:"SOCKETIO_PING_TIMEOUT" envDefault:"20s"`
	// MaxPayload bounds a polling request body and a WebSocket message;
	// zero means 1,000,000 bytes.
	MaxPayload int `env:"SOCKETIO_MAX_PAYLOAD" envDefault:"1000000"`
	// ConnectTimeout closes a session that sent no CONNECT; zero means 45 s.
	ConnectTimeout time.Duration `env:"SOCKETIO_CONNECT_TIMEOUT" envDefault:"45s"`
}

// newSocketIO builds the Socket.IO server whose sockets are gateway
// clients like the /ws ones: same hub, rate limits, queues and presence.
func (s *Service) newSocketIO() (*socketio.Server, error) {
	c := s.cfg.SocketIO
	srv, err := socketio.NewServer(socketio.Options{
		Handler:         sioHandler{s},
		PingInterval:    c.PingInterval,
		PingTimeout:     c.PingTimeout,
		MaxPayload:      c.MaxPayload,
		ConnectTimeout:  c.ConnectTimeout,
		WriteTimeout:    s.cfg.WriteTimeout,
		PollBuffer:      s.cfg.QueueSize,
		MaxSessions:     s.cfg.MaxConnections,
		Admit:           func(*fiber.Ctx) error { return s.admit() },
		ReadBufferSize:  s.cfg.ReadBufferSize,
		WriteBufferSize: s.cfg.WriteBufferSize,
		Log:             s.log,
		Registerer:      s.tel.Registry,
	})
	if err != nil {
		return nil, fmt.Errorf("socket.io: %w", err)
	}
	return srv, nil
}

// bodyLimit is the request body limit of the app: polling clients send up
// to the announced maxPayload in one request.
func (s *Service) bodyLimit() int {
	if s.sio == nil {
		return 0
	}
	return s.sio.BodyLimit()
}

// sioHandler serves connected Socket.IO sockets.
type sioHandler struct{ s *Service }

// sioAuth is the CONNECT payload socket.io-client sends from its `auth`
// option.
type sioAuth struct {
	Token json.RawMessage `json:"token"`
}

// sioToken finds the JWT: auth.token, else the handshake's ?token= or
// Authorization: Bearer (what the seed accepted too).
func sioToken(sess *socketio.Session, auth json.RawMessage) (string, error) {
	var a sioAuth
	if len(auth) > 0 && string(auth) != "null" {
		if err := json.Unmarshal(auth, &a); err != nil {
			return "", chat.Errorf(chat.CodeUnauthorized, "auth must be an object like {token: \"<jwt>\"}")
		}
	}
	if len(a.Token) > 0 && string(a.Token) != "null" {
		var t string
		if err := json.Unmarshal(a.Token, &t); err != nil {
			return "", chat.Errorf(chat.CodeUnauthorized, "auth.token must be a string")
		}
		return t, nil
	}
	hs := sess.Handshake()
	if hs.Token != "" {
		return hs.Token, nil
	}
	if h := hs.Authorization; len(h) > 7 && strings.EqualFold(h[:7], "Bearer ") {
		return h[7:], nil
	}
	return "", nil
}

// ServeSocket implements socketio.Handler: the Socket.IO counterpart of
// serveConn, with the session's event stream in place of the read loop.
func (h sioHandler) ServeSocket(sess *socketio.Session, auth json.RawMessage) error {
	s := h.s
	token, err := sioToken(sess, auth)
	if err != nil {
		return err
	}
	claims, err := s.tokens.Verify(token)
	if err != nil {
		return err
	}
	if err := s.admit(); err != nil {
		return err
	}
	if s.active.Add(1) > int64(s.cfg.MaxConnections) {
		s.active.Add(-1)
		return chat.Errorf(chat.CodeServerFull, "server is full; retry later or elsewhere")
	}
	defer s.active.Add(-1)
	c := newClient(s, &sioSocket{sess: sess}, claims, token)
	// Runs last: no ping may touch the socket after the handler returned.
	defer c.stopPings()
	sess.OnAlive(func() { c.lastAlive.Store(time.Now().UnixNano()) })
	// CONNECT is answered before register, so no push can precede it.
	if err := sess.Accept(); err != nil {
		c.close(0, "")
		<-c.done
		return nil
	}
	if !s.register(c) {
		c.close(protocol.CloseServiceRestart, "server restarting")
		<-c.done
		return nil
	}
	defer s.release(c)
	s.metrics.connections.Inc()
	defer s.metrics.connections.Dec()

	expiry := time.AfterFunc(time.Until(claims.ExpiresAt), func() {
		c.close(protocol.CloseAuthExpired, "token expired")
	})
	var buf []byte
	for {
		ev, err := sess.Next()
		if err != nil {
			break
		}
		buf = s.handleSocketIOEvent(c, ev, buf[:0])
	}
	expiry.Stop()
	c.close(0, "")
	<-c.done
	return nil
}

// handleSocketIOEvent handles one client event as the native frame it
// stands for (docs/protocol.md#socketio), so validation, rate limits,
// metrics and replies are the /ws ones. buf is scratch space; the grown
// buffer is returned for reuse.
func (s *Service) handleSocketIOEvent(c *client, ev socketio.Event, buf []byte) []byte {
	if ev.Err != nil {
		// Counted against the rate limit like every frame.
		c.limiter.Allow()
		s.metrics.framesIn.WithLabelValues("invalid").Inc()
		c.reply(s.errorFrame(c, socketio.Ref(ev.ID), ev.Err))
		return buf
	}
	buf = socketio.AppendNativeFrame(buf, ev)
	s.handleFrame(c, buf)
	if cap(buf) > 64<<10 {
		return nil
	}
	return buf
}

// sioSocket is the socket a Socket.IO client's writer writes through:
// native frames become Socket.IO packets on the session's transport.
type sioSocket struct {
	sess *socketio.Session
	// deadline is set by the writer goroutine before each write.
	deadline time.Time
}

// WriteMessage implements socket.
func (w *sioSocket) WriteMessage(_ int, frame []byte) error {
	return w.sess.SendNative(frame, w.deadline)
}

// WriteControl implements socket: pings are Engine.IO's business (its own
// heartbeat), and a close frame's code decides how the session ends.
func (w *sioSocket) WriteControl(messageType int, data []byte, _ time.Time) error {
	if messageType == websocket.CloseMessage && len(data) >= 2 {
		w.sess.SetCloseCode(int(data[0])<<8 | int(data[1]))
	}
	return nil
}

// SetWriteDeadline implements socket.
func (w *sioSocket) SetWriteDeadline(t time.Time) error {
	w.deadline = t
	return nil
}

// Close implements socket.
func (w *sioSocket) Close() error { return w.sess.Close() }
