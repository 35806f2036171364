package socketio

import (
	"encoding/json"
	"errors"
	"strings"
	"time"

	"github.com/fasthttp/websocket"

	"relay/pkg/auth"
	"relay/pkg/chat"
	"relay/pkg/ratelimit"
	"relay/services/gateway/internal/conn"
	"relay/services/gateway/internal/transport/socketio/packet"
)

// FrameHandler handles the native frames Socket.IO events stand for
// (*commands.Handler).
type FrameHandler interface {
	// Text handles one native client frame.
	Text(c *conn.Client, raw []byte)
	// Invalid answers an event that maps to no native frame.
	Invalid(c *conn.Client, ref string, err error)
}

// Gateway serves connected Socket.IO sockets as gateway connections like
// the /ws ones: same lifecycle, hub, rate limits, queues and presence.
type Gateway struct {
	// Lifecycle opens and ends the connections.
	Lifecycle *conn.Lifecycle
	// Tokens verifies the JWT of a CONNECT.
	Tokens *auth.Tokens
	// Frames handles the events.
	Frames FrameHandler
	// Caps bounds the connections per user (the session's address was
	// counted when it opened: Options.AcquireAddr); nil means no cap.
	Caps *ratelimit.ConnCaps
}

var _ Handler = (*Gateway)(nil)

// sioAuth is the CONNECT payload socket.io-client sends from its `auth`
// option.
type sioAuth struct {
	Token json.RawMessage `json:"token"`
}

// sioToken finds the JWT: auth.token, else the handshake's ?token= or
// Authorization: Bearer (what the seed accepted too).
func sioToken(sess *Session, auth json.RawMessage) (string, error) {
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

// ServeSocket implements Handler: the Socket.IO counterpart of the ws
// transport's serve, with the session's event stream in place of the
// reader.
func (g *Gateway) ServeSocket(sess *Session, auth json.RawMessage) error {
	token, err := sioToken(sess, auth)
	if err != nil {
		return err
	}
	claims, err := g.Tokens.Verify(token)
	if err != nil {
		return err
	}
	if err := g.Lifecycle.Admit(); err != nil {
		return err
	}
	var release func()
	if g.Caps != nil {
		// Refused with CONNECT_ERROR (connect_error, err.data.code
		// RATE_LIMITED), before anything is registered.
		if release, err = g.Caps.AcquireUser(claims.UserID); err != nil {
			return err
		}
	}
	c, err := g.Lifecycle.Open(&nativeTransport{sess: sess}, claims, token, conn.OpenOptions{Protocol: "socketio",
		Addr: sess.Handshake().RemoteIP, Release: release,
		Accept: func(c *conn.Client) error {
			sess.OnAlive(c.Touch)
			// CONNECT is answered before register, so no push can precede it.
			return sess.Accept()
		},
	})
	if errors.Is(err, conn.ErrFull) {
		return err
	}
	if err != nil {
		// Closed already: the session ends with its close code.
		return nil
	}
	defer func() {
		if p := recover(); p != nil {
			// Our bug: the connection ends (its rooms, presence and caps are
			// given back) and the session goroutine logs the panic and
			// closes with 1011.
			c.Abort(conn.DisconnectInternal)
			g.Lifecycle.End(c)
			panic(p)
		}
	}()
	var buf []byte
	for {
		ev, err := sess.Next()
		if err != nil {
			break
		}
		buf = g.handle(c, ev, buf[:0])
	}
	g.Lifecycle.End(c)
	return nil
}

// handle handles one client event as the native frame it stands for
// (docs/protocol.md#socketio), so validation, rate limits, metrics and
// replies are the /ws ones. buf is scratch space; the grown buffer is
// returned for reuse.
func (g *Gateway) handle(c *conn.Client, ev Event, buf []byte) []byte {
	if ev.Err != nil {
		g.Frames.Invalid(c, packet.Ref(ev.ID), ev.Err)
		return buf
	}
	buf = packet.AppendNative(buf, ev.Name, ev.Data, ev.ID)
	g.Frames.Text(c, buf)
	if cap(buf) > 64<<10 {
		return nil
	}
	return buf
}

// nativeTransport is the conn.Transport a Socket.IO client's writer
// writes through: native frames become Socket.IO packets on the session's
// transport.
type nativeTransport struct {
	sess *Session
	// deadline is set by the writer goroutine before each write.
	deadline time.Time
}

// WriteMessage implements conn.Transport.
func (w *nativeTransport) WriteMessage(_ int, frame []byte) error {
	return w.sess.SendNative(frame, w.deadline)
}

// WriteControl implements conn.Transport: pings are Engine.IO's business (its own
// heartbeat), and a close frame's code decides how the session ends.
func (w *nativeTransport) WriteControl(messageType int, data []byte, _ time.Time) error {
	if messageType == websocket.CloseMessage && len(data) >= 2 {
		w.sess.SetCloseCode(int(data[0])<<8 | int(data[1]))
	}
	return nil
}

// SetWriteDeadline implements conn.Transport.
func (w *nativeTransport) SetWriteDeadline(t time.Time) error {
	w.deadline = t
	return nil
}

// Close implements conn.Transport.
func (w *nativeTransport) Close() error { return w.sess.Close() }
