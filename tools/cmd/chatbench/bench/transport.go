package bench

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/valyala/fastjson"

	"relay/pkg/protocol"
)

// Wire protocols chatbench speaks (--protocol). The last two drive peers
// measured beside relay (compare mode): the seed's Node.js reference and
// Centrifugo.
const (
	ProtocolNative     = "native"
	ProtocolSocketIO   = "socketio"
	ProtocolSeedNode   = "seednode"
	ProtocolCentrifugo = "centrifugo"
)

// socketIOFamily is whether proto speaks Socket.IO (and so gets the
// Socket.IO endpoint and string seqs).
func socketIOFamily(proto string) bool {
	return proto == ProtocolSocketIO || proto == ProtocolSeedNode
}

// transport puts client events on a connection and takes server frames off
// it; the measurement code above it sees only (event, ref, data).
type transport interface {
	// open finishes connecting after the WebSocket upgrade.
	open(c *conn, token string) error
	// encode returns the message for one client event; data is its JSON
	// payload (nil for none) and ref, when set, asks for a reply carrying it.
	encode(c *conn, event, ref string, data []byte) ([]byte, error)
	// decode parses one server message with c's reader-owned parser. ok is
	// false for a message that cannot be understood; an empty event means
	// a transport-level message that was handled (or is ignored).
	decode(c *conn, raw []byte) (in inbound, ok bool)
}

// inbound is one decoded server frame in native terms.
type inbound struct {
	event string
	ref   []byte
	data  *fastjson.Value
}

// native is the gateway's own protocol: one JSON frame per message.
type native struct{}

func (native) open(*conn, string) error { return nil }

func (native) encode(_ *conn, event, ref string, data []byte) ([]byte, error) {
	frame, err := json.Marshal(protocol.Frame{Event: event, Data: data, Ref: ref})
	if err != nil {
		return nil, fmt.Errorf("encode %s: %w", event, err)
	}
	return frame, nil
}

func (native) decode(c *conn, raw []byte) (inbound, bool) {
	v, err := c.parser.ParseBytes(raw)
	if err != nil || v.Type() != fastjson.TypeObject {
		return inbound{}, false
	}
	return inbound{event: string(v.GetStringBytes("event")), ref: v.GetStringBytes("ref"), data: v.Get("data")}, true
}

// socketIO is Socket.IO v4 (Engine.IO 4) over the WebSocket transport
// directly, no polling: "4" (Engine.IO message) + "2" (EVENT) + ack id +
// ["event", data]; replies come back as "43" + ack id + [data].
type socketIO struct {
	// userID authenticates with {"userId": username} instead of
	// {"token": ...}: the seed's Node.js reference, which has no accounts.
	userID bool
}

// sioAcks maps a connection's Socket.IO ack ids to the native refs they
// stand for: ack ids are integers, chatbench's refs carry the record.
type sioAcks struct {
	mu   sync.Mutex
	next uint64
	refs map[uint64]string
}

func (a *sioAcks) add(ref string) uint64 {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.refs == nil {
		a.refs = map[uint64]string{}
	}
	id := a.next
	a.next++
	a.refs[id] = ref
	return id
}

func (a *sioAcks) take(id uint64) (string, bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	ref, ok := a.refs[id]
	delete(a.refs, id)
	return ref, ok
}

// sioHandshakeTimeout bounds the Engine.IO open and Socket.IO CONNECT.
const sioHandshakeTimeout = 10 * time.Second

// open reads the Engine.IO open packet ("0{sid,...}"), sends CONNECT with
// the token as auth and waits for its answer: "40{sid}" or "44{message}".
func (s socketIO) open(c *conn, token string) error {
	_ = c.ws.SetReadDeadline(time.Now().Add(sioHandshakeTimeout))
	defer func() { _ = c.ws.SetReadDeadline(time.Time{}) }()
	_, msg, err := c.ws.ReadMessage()
	if err != nil {
		return fmt.Errorf("engine.io open: %w", err)
	}
	if len(msg) == 0 || msg[0] != '0' {
		return fmt.Errorf("engine.io open: got %q", truncate(string(msg), 40))
	}
	creds := map[string]string{"token": token}
	if s.userID {
		creds = map[string]string{"userId": c.r.accs[c.user].Username}
	}
	auth, err := json.Marshal(creds)
	if err != nil {
		return fmt.Errorf("socket.io connect: %w", err)
	}
	if err := c.write(append([]byte("40"), auth...)); err != nil {
		return err
	}
	for {
		_, msg, err := c.ws.ReadMessage()
		if err != nil {
			return fmt.Errorf("socket.io connect: %w", err)
		}
		switch {
		case bytes.HasPrefix(msg, []byte("40")):
			return nil
		case bytes.HasPrefix(msg, []byte("44")):
			return &sioConnectError{msg: sioErrorMessage(msg[2:])}
		case string(msg) == "2": // a ping before CONNECT is answered
			if err := c.write([]byte("3")); err != nil {
				return err
			}
		case bytes.HasPrefix(msg, []byte("1")), bytes.HasPrefix(msg, []byte("41")):
			return errors.New("socket.io connect: closed by the server")
		}
	}
}

// sioConnectError is a CONNECT refused by the server ("44").
type sioConnectError struct{ msg string }

func (e *sioConnectError) Error() string { return "CONNECT_ERROR " + e.msg }

// sioErrorMessage is the message of a CONNECT_ERROR payload ({"message": ...}).
func sioErrorMessage(b []byte) string {
	var p struct {
		Message string `json:"message"`
	}
	if json.Unmarshal(b, &p) == nil && p.Message != "" {
		return truncate(p.Message, 40)
	}
	return truncate(string(b), 40)
}

func (socketIO) encode(c *conn, event, ref string, data []byte) ([]byte, error) {
	name, err := json.Marshal(event)
	if err != nil {
		return nil, fmt.Errorf("encode %s: %w", event, err)
	}
	b := make([]byte, 0, 16+len(name)+len(data))
	b = append(b, "42"...)
	if ref != "" {
		b = strconv.AppendUint(b, c.acks.add(ref), 10)
	}
	b = append(b, '[')
	b = append(b, name...)
	if data != nil {
		b = append(b, ',')
		b = append(b, data...)
	}
	return append(b, ']'), nil
}

func (socketIO) decode(c *conn, raw []byte) (inbound, bool) {
	if len(raw) == 0 {
		return inbound{}, false
	}
	switch raw[0] {
	case '2': // Engine.IO ping: the server closes a session that does not pong
		if err := c.write([]byte("3")); err != nil && !c.bye.Load() {
			c.r.closes.Add("PONG_WRITE_FAILED")
		}
		return inbound{}, true
	case '4':
	default: // open, close, noop, upgrade: nothing to measure
		return inbound{}, true
	}
	if len(raw) < 2 {
		return inbound{}, false
	}
	kind, rest := raw[1], raw[2:]
	if kind != '2' && kind != '3' {
		return inbound{}, true // CONNECT, DISCONNECT, binary: not used here
	}
	i := 0
	for i < len(rest) && rest[i] >= '0' && rest[i] <= '9' {
		i++
	}
	id, hasID := parseInt(rest[:i])
	v, err := c.parser.ParseBytes(rest[i:])
	if err != nil || v.Type() != fastjson.TypeArray {
		return inbound{}, false
	}
	args := v.GetArray()
	if kind == '2' { // EVENT ["name", data]
		if len(args) == 0 || args[0].Type() != fastjson.TypeString {
			return inbound{}, false
		}
		in := inbound{event: string(args[0].GetStringBytes())}
		if len(args) > 1 {
			in.data = args[1]
		}
		return in, true
	}
	// ACK <id>[data]: {error: {code, message}} is a failed reply.
	if !hasID {
		return inbound{}, false
	}
	ref, ok := c.acks.take(uint64(id))
	if !ok {
		return inbound{}, false
	}
	in := inbound{event: protocol.EventAck, ref: []byte(ref)}
	if len(args) > 0 {
		in.data = args[0]
		if e := in.data.Get("error"); e != nil && e.Type() == fastjson.TypeObject {
			in.event, in.data = protocol.EventError, e
		}
	}
	return in, true
}

// socketIOURL turns a gateway URL into its Socket.IO WebSocket endpoint:
// the /ws path (chatbench's default) becomes /socket.io/, another path is
// kept, and the Engine.IO query is added.
func socketIOURL(s string) (string, error) {
	u, err := url.Parse(s)
	if err != nil {
		return "", fmt.Errorf("%q: %w", s, err)
	}
	if u.Path == "" || u.Path == "/" || u.Path == "/ws" {
		u.Path = "/socket.io/"
	}
	if !strings.HasSuffix(u.Path, "/") {
		u.Path += "/"
	}
	q := u.Query()
	q.Set("EIO", "4")
	q.Set("transport", "websocket")
	u.RawQuery = q.Encode()
	return u.String(), nil
}

// newTransport returns the transport of a --protocol value.
func newTransport(proto string) transport {
	switch proto {
	case ProtocolSocketIO:
		return socketIO{}
	case ProtocolSeedNode:
		return socketIO{userID: true}
	case ProtocolCentrifugo:
		return centrifugo{}
	}
	return native{}
}
