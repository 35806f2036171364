package socketio

import (
	"bytes"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"time"

	"github.com/fasthttp/websocket"

	"relay/pkg/chat"
	"relay/pkg/protocol"
	"relay/services/gateway/internal/transport/socketio/packet"
)

// ErrClosed is returned by a Session's methods once it is closing.
var ErrClosed = errors.New("socketio: session closed")

// closeGrace is how long a polling session that closes gracefully waits for
// the client's next poll to take its last packets.
const closeGrace = 5 * time.Second

// upgradePollWait is how long a poll waits during an upgrade before it
// returns a noop, so the client can pause polling (the reference server
// checks every 100 ms too).
const upgradePollWait = 100 * time.Millisecond

type transportKind int

const (
	transportPolling transportKind = iota
	transportWebSocket
)

func (t transportKind) String() string {
	if t == transportWebSocket {
		return "websocket"
	}
	return "polling"
}

// Handshake is what the opening HTTP request of a session carried.
type Handshake struct {
	// Token is the `token` query parameter ("" when absent).
	Token string
	// Authorization is the Authorization header ("" when absent).
	Authorization string
	// RemoteIP is the client's address (Options.ClientAddr: behind a
	// trusted proxy, the one it forwarded).
	RemoteIP string
}

// Event is one client event, handed out by Next in the order sent.
type Event struct {
	// Name is the event name, the first element of the EVENT array.
	Name string
	// Data is the event's first argument as raw JSON; nil when it had none.
	Data json.RawMessage
	// ID is the client's ack id; -1 when it passed no acknowledgement
	// callback.
	ID int64
	// Err, when set, is a chat error to answer instead of an event
	// (malformed packet, binary data, another namespace).
	Err error
}

// inbound is one Engine.IO message from the client, on its way to the
// session's goroutine.
type inbound struct {
	data   []byte
	binary bool
}

// Session is one Engine.IO connection carrying one Socket.IO socket on the
// main namespace. Transports (polling requests, a WebSocket) feed it; its
// own goroutine decodes Socket.IO packets in order and runs the Handler.
type Session struct {
	srv    *Server
	id     string
	sockID string
	hs     Handshake
	// slot is the session's place under its address's bounds, given back
	// in part when the socket connects and in full by finalize.
	slot *slot

	// inbox carries client messages to the session goroutine in order.
	inbox chan inbound
	// closed is closed once the session starts closing.
	closed chan struct{}
	// wake tells a waiting poll that packets are pending or the state
	// changed; space tells a blocked writer that a poll took packets.
	wake, space chan struct{}
	alive       atomic.Pointer[func()]
	// backlogged counts transports waiting for room in inbox: their
	// client is alive even though its pong may be queued behind.
	backlogged atomic.Int32

	mu        sync.Mutex
	transport transportKind
	upgrading bool
	getting   bool
	posting   bool
	pending   [][]byte
	closing   bool
	// graceful is set with closing when the client is to get what was
	// queued before the close packet.
	graceful     bool
	accepted     bool
	awaitingPong bool
	hb           *time.Timer
	finalOnce    sync.Once

	// wmu serialises writes to ws; ws is nil while polling and once the
	// WebSocket is closed or its handler returned (fasthttp reuses the
	// connection then, so nothing may touch it).
	wmu sync.Mutex
	ws  *websocket.Conn

	// Session goroutine only.
	skip    int
	scratch []byte
	// closeCode is the close code given by the writer before Close.
	closeCode atomic.Int32
}

func newID() string {
	var b [15]byte
	_, _ = rand.Read(b[:])
	return base64.RawURLEncoding.EncodeToString(b[:])
}

// ID returns the Engine.IO session id.
func (s *Session) ID() string { return s.id }

// Handshake returns what the session's opening request carried.
func (s *Session) Handshake() Handshake { return s.hs }

// OnAlive sets f to be called on every packet the client sends, pongs
// included (f must be quick and safe for concurrent use).
func (s *Session) OnAlive(f func()) { s.alive.Store(&f) }

// Transport names the current transport: "polling" or "websocket".
func (s *Session) Transport() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.transport.String()
}

// start runs the heartbeat and the session goroutine.
func (s *Session) start() {
	s.mu.Lock()
	s.hb = time.AfterFunc(s.srv.opts.PingInterval, s.heartbeat)
	s.mu.Unlock()
	go s.run()
}

// run is the session goroutine: it waits for the CONNECT packet, then
// hands the socket to the handler. A panic (our bug) ends this session
// with 1011 instead of the process.
func (s *Session) run() {
	defer func() {
		if p := recover(); p != nil {
			s.srv.log.Error("panic in socket.io session", "sid", s.id, "panic", fmt.Sprint(p), "stack", string(debug.Stack()))
			s.closeWith("internal error", true, protocol.CloseInternalError)
			return
		}
		s.close("socket ended", true)
	}()
	auth, ok := s.awaitConnect()
	if !ok {
		return
	}
	err := s.srv.opts.Handler.ServeSocket(s, auth)
	s.mu.Lock()
	accepted := s.accepted
	s.mu.Unlock()
	if err != nil && !accepted {
		_ = s.writePacket(packet.ConnectError(packet.MainNamespace, chat.ErrorCode(err), chat.ErrorMessage(err)), time.Time{})
	}
}

// awaitConnect reads packets until the CONNECT of the main namespace and
// returns its auth payload ("null" when the client sent none).
func (s *Session) awaitConnect() (json.RawMessage, bool) {
	timer := time.NewTimer(s.srv.opts.ConnectTimeout)
	defer timer.Stop()
	for {
		select {
		case in := <-s.inbox:
			if in.binary {
				continue
			}
			p, err := packet.Decode(in.data)
			if err != nil {
				s.srv.log.Debug("socket.io: bad packet before CONNECT", "sid", s.id, "err", err)
				s.close("parse error", false)
				return nil, false
			}
			if p.Type != packet.TypeConnect {
				// As the reference server does: nothing happens before CONNECT.
				continue
			}
			if p.Nsp != packet.MainNamespace {
				_ = s.writePacket(packet.ConnectError(p.Nsp, chat.CodeBadRequest, "Invalid namespace"), time.Time{})
				continue
			}
			if p.Data == nil {
				return json.RawMessage("null"), true
			}
			return p.Data, true
		case <-s.closed:
			return nil, false
		case <-timer.C:
			s.close("connect timeout", false)
			return nil, false
		}
	}
}

// Accept connects the socket: the client gets its CONNECT reply (and
// socket.io-client its `connect` event). Call it once, from the Handler.
func (s *Session) Accept() error {
	s.mu.Lock()
	s.accepted = true
	s.mu.Unlock()
	s.slot.connected()
	return s.writePacket(packet.Connected(s.sockID), time.Time{})
}

// Next returns the client's next event. It fails with ErrClosed once the
// session closed or the client disconnected the socket. Only the Handler's
// goroutine may call it.
func (s *Session) Next() (Event, error) {
	for {
		var in inbound
		// Messages that arrived before the close are still handled.
		select {
		case in = <-s.inbox:
		default:
			select {
			case in = <-s.inbox:
			case <-s.closed:
				return Event{}, ErrClosed
			}
		}
		if in.binary {
			if s.skip > 0 {
				s.skip--
				continue
			}
			return Event{ID: -1, Err: chat.Errorf(chat.CodeBadRequest, "binary data is not supported; send JSON")}, nil
		}
		p, err := packet.Decode(in.data)
		if err != nil {
			return Event{ID: -1, Err: err}, nil
		}
		if p.Nsp != packet.MainNamespace {
			switch p.Type {
			case packet.TypeConnect:
				_ = s.writePacket(packet.ConnectError(p.Nsp, chat.CodeBadRequest, "Invalid namespace"), time.Time{})
			case packet.TypeEvent, packet.TypeBinaryEvent:
				s.skip = p.Attachments
				// Its ack id belongs to the other namespace's socket.
				return Event{ID: -1, Err: chat.Errorf(chat.CodeBadRequest, "namespace %q is not served; use the main namespace", packet.Truncate(p.Nsp, 64))}, nil
			}
			continue
		}
		switch p.Type {
		case packet.TypeEvent:
			name, data, err := packet.EventArgs(p.Data)
			if err != nil {
				return Event{ID: p.ID, Err: err}, nil
			}
			return Event{Name: name, Data: data, ID: p.ID}, nil
		case packet.TypeBinaryEvent, packet.TypeBinaryAck:
			s.skip = p.Attachments
			id := p.ID
			if p.Type == packet.TypeBinaryAck {
				id = -1
			}
			return Event{ID: id, Err: chat.Errorf(chat.CodeBadRequest, "binary attachments are not supported; send JSON (e.g. base64 in a string field)")}, nil
		case packet.TypeDisconnect:
			s.close("client disconnect", true)
			return Event{}, ErrClosed
		}
		// CONNECT again, or an ACK (the server asks for none): nothing to do.
	}
}

// SendNative sends a native server frame (docs/protocol.md) as its
// Socket.IO equivalent, waiting at most until deadline (zero: the server's
// write timeout) for the transport. A timeout is a net.Error with
// Timeout() true. One goroutine at a time may call it.
func (s *Session) SendNative(frame []byte, deadline time.Time) error {
	pkt, ok := packet.AppendFromNative(s.scratch[:0], frame)
	if !ok {
		return errors.New("socketio: not a native frame")
	}
	err := s.writePacket(pkt, deadline)
	if cap(pkt) <= 64<<10 {
		s.scratch = pkt[:0]
	}
	return err
}

// SetCloseCode records the native close code (docs/protocol.md) the next
// Close stands for.
func (s *Session) SetCloseCode(code int) { s.closeCode.Store(int32(code)) }

// Close ends the session for the reason recorded by SetCloseCode: for 4001
// (token expired) the client gets an `error` event and a DISCONNECT, so it
// does not reconnect by itself; for other codes the transport closes after
// what was sent, so socket.io-client reconnects; without a code the session
// just ends. It is idempotent.
func (s *Session) Close() error {
	code := int(s.closeCode.Load())
	switch code {
	case 0:
		s.close("server close", false)
	case protocol.CloseAuthExpired:
		data, _ := json.Marshal(protocol.ErrorData{Code: chat.CodeUnauthorized, Message: "token expired"})
		_ = s.writePacket(packet.AppendEvent(nil, []byte(`"`+protocol.EventError+`"`), data), time.Now().Add(time.Second))
		_ = s.writePacket(packet.Disconnect, time.Now().Add(time.Second))
		s.closeWith("token expired", true, code)
	default:
		s.closeWith("server close", true, code)
	}
	return nil
}

// writePacket sends one Engine.IO packet on the current transport. While
// polling it is queued for the next poll; a full queue waits for a poll
// until deadline.
func (s *Session) writePacket(p []byte, deadline time.Time) error {
	if deadline.IsZero() {
		deadline = time.Now().Add(s.srv.opts.WriteTimeout)
	}
	var timer *time.Timer
	defer func() {
		if timer != nil {
			timer.Stop()
		}
	}()
	for {
		s.mu.Lock()
		if s.closing {
			s.mu.Unlock()
			return ErrClosed
		}
		if s.transport == transportWebSocket {
			s.mu.Unlock()
			return s.writeWS(p, deadline)
		}
		if len(s.pending) < s.srv.opts.PollBuffer {
			s.pending = append(s.pending, bytes.Clone(p))
			s.mu.Unlock()
			notify(s.wake)
			return nil
		}
		s.mu.Unlock()
		wait := time.Until(deadline)
		if wait <= 0 {
			return timeoutError{}
		}
		if timer == nil {
			timer = time.NewTimer(wait)
		} else {
			timer.Reset(wait)
		}
		select {
		case <-s.space:
		case <-s.closed:
			return ErrClosed
		case <-timer.C:
			return timeoutError{}
		}
	}
}

// writeWS writes one packet as a WebSocket text frame.
func (s *Session) writeWS(p []byte, deadline time.Time) error {
	s.wmu.Lock()
	defer s.wmu.Unlock()
	if s.ws == nil {
		return ErrClosed
	}
	if err := s.ws.SetWriteDeadline(deadline); err != nil {
		return err
	}
	return s.ws.WriteMessage(websocket.TextMessage, p)
}

// heartbeat sends the Engine.IO ping every PingInterval and closes the
// session when a pong does not follow within PingTimeout. It runs on a
// timer; a panic there (our bug) closes the session, not the process.
func (s *Session) heartbeat() {
	defer func() {
		if p := recover(); p != nil {
			s.srv.log.Error("panic in socket.io heartbeat", "sid", s.id, "panic", fmt.Sprint(p))
			s.close("internal error", false)
		}
	}()
	s.mu.Lock()
	if s.closing {
		s.mu.Unlock()
		return
	}
	if s.awaitingPong {
		if s.backlogged.Load() > 0 {
			// The pong may wait behind events the handler is still busy
			// with (a slow Kafka): the client is not silent, it is ahead.
			s.hb.Reset(s.srv.opts.PingTimeout)
			s.mu.Unlock()
			return
		}
		s.mu.Unlock()
		s.close("ping timeout", false)
		return
	}
	s.awaitingPong = true
	s.hb.Reset(s.srv.opts.PingTimeout)
	s.mu.Unlock()
	if err := s.writePacket(pingPacket, time.Time{}); err != nil && !errors.Is(err, ErrClosed) {
		s.close("transport error", false)
	}
}

func (s *Session) onPong() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.awaitingPong && !s.closing {
		s.awaitingPong = false
		s.hb.Reset(s.srv.opts.PingInterval)
	}
}

// receive handles one Engine.IO packet from the client (data is owned by
// the session from now on). It reports false for a malformed packet, after
// which the session must end.
func (s *Session) receive(data []byte, isBinary bool) bool {
	if f := s.alive.Load(); f != nil {
		(*f)()
	}
	if isBinary {
		return s.deliver(inbound{binary: true})
	}
	typ, payload, ok := decodeEngine(data)
	if !ok {
		return false
	}
	switch typ {
	case engineMessage:
		return s.deliver(inbound{data: payload})
	case engineBase64:
		return s.deliver(inbound{binary: true})
	case enginePong:
		s.onPong()
	case enginePing:
		// Engine.IO 3 clients ping; answering costs nothing.
		if err := s.writePacket(pongPacket, time.Time{}); err != nil && !errors.Is(err, ErrClosed) {
			s.close("transport error", false)
		}
	case engineClose:
		s.close("client close", false)
	}
	return true
}

// deliver hands a message to the session goroutine, waiting while its
// inbox is full (backpressure on the client's transport).
func (s *Session) deliver(in inbound) bool {
	select {
	case s.inbox <- in:
		return true
	default:
	}
	s.backlogged.Add(1)
	defer s.backlogged.Add(-1)
	select {
	case s.inbox <- in:
	case <-s.closed:
	}
	return true
}

// close ends the session without a close code.
func (s *Session) close(reason string, graceful bool) {
	s.closeWith(reason, graceful, 0)
}

// closeWith ends the session. Graceful: a polling client gets the pending
// packets on its next poll and the close packet on the one after (in one
// payload socket.io-client would act on the close before the packets, which
// it hands on a tick later), a WebSocket a close frame with code (1000 when
// 0). Otherwise the transport just ends.
func (s *Session) closeWith(reason string, graceful bool, code int) {
	s.mu.Lock()
	if s.closing {
		s.mu.Unlock()
		return
	}
	s.closing, s.graceful = true, graceful
	if s.hb != nil {
		s.hb.Stop()
	}
	polling := s.transport == transportPolling
	s.mu.Unlock()
	close(s.closed)
	s.srv.metrics.closed.WithLabelValues(reason).Inc()
	s.srv.log.Debug("socket.io session closed", "sid", s.id, "reason", reason)

	s.wmu.Lock()
	if s.ws != nil {
		if graceful {
			if code == 0 {
				code = protocol.CloseNormal
			}
			_ = s.ws.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(code, ""), time.Now().Add(time.Second))
		}
		// Without fasthttp's KeepHijackedConns, Close does nothing until
		// the handler returns: end the handler's read now.
		_ = s.ws.SetReadDeadline(time.Now())
		_ = s.ws.Close()
		s.ws = nil
	}
	s.wmu.Unlock()
	if polling && graceful {
		time.AfterFunc(closeGrace, s.finalize)
		return
	}
	s.finalize()
}

// finalize forgets the session: later requests with its id get
// "Session ID unknown".
func (s *Session) finalize() {
	s.finalOnce.Do(func() {
		s.srv.forget(s)
		s.slot.release()
	})
}
