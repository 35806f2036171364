package stack

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/fasthttp/websocket"

	"relay/pkg/chat"
	"relay/pkg/protocol"
)

// ProtocolError is an `error` frame answering a client frame.
type ProtocolError struct {
	Code    chat.Code
	Message string
}

func (e *ProtocolError) Error() string { return fmt.Sprintf("ws: %s: %s", e.Code, e.Message) }

// Conn is a WebSocket test client. One goroutine reads every frame: replies
// (frames with a ref) go to the caller waiting for that ref, pushes are
// appended to a log that tests wait on and inspect. Methods are safe for
// concurrent use.
type Conn struct {
	ws   *websocket.Conn
	wmu  sync.Mutex
	refs atomic.Int64

	mu      sync.Mutex
	waiters map[string]chan protocol.Frame
	pushes  []protocol.Frame
	changed chan struct{} // closed and replaced on every push and at the end
	readErr error

	closed chan struct{}
	// onPush, when set, gets every push instead of the log.
	onPush func(protocol.Frame)
}

// Dial opens a WebSocket to wsURL (ws://host:port/ws) with token as the
// ?token= query parameter. A refused upgrade is an *APIError.
func Dial(ctx context.Context, wsURL, token string) (*Conn, error) {
	return DialFunc(ctx, wsURL, token, nil)
}

// DialFunc is Dial that hands every push to onPush (when not nil) instead
// of keeping it in the connection's log, for clients that run long and
// process pushes as they come. onPush runs on the connection's read
// goroutine, in arrival order, before Done is closed: it must not block
// for long (the server closes a client that does not read).
func DialFunc(ctx context.Context, wsURL, token string, onPush func(protocol.Frame)) (*Conn, error) {
	d := websocket.Dialer{HandshakeTimeout: 10 * time.Second}
	ws, resp, err := d.DialContext(ctx, wsURL+"?token="+token, nil)
	if err != nil {
		if resp != nil {
			defer resp.Body.Close()
			body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
			ae := &APIError{Status: resp.StatusCode, Message: string(body)}
			var eb struct {
				Error struct {
					Code    chat.Code `json:"code"`
					Message string    `json:"message"`
				} `json:"error"`
			}
			if json.Unmarshal(body, &eb) == nil {
				ae.Code, ae.Message = eb.Error.Code, eb.Error.Message
			}
			return nil, ae
		}
		return nil, fmt.Errorf("ws: dial %s: %w", wsURL, err)
	}
	if resp != nil && resp.StatusCode != http.StatusSwitchingProtocols {
		ws.Close()
		return nil, fmt.Errorf("ws: dial %s: status %d", wsURL, resp.StatusCode)
	}
	c := &Conn{ws: ws, waiters: map[string]chan protocol.Frame{}, changed: make(chan struct{}), closed: make(chan struct{}), onPush: onPush}
	go c.readLoop()
	return c, nil
}

func (c *Conn) readLoop() {
	var err error
	for {
		var b []byte
		var mt int
		mt, b, err = c.ws.ReadMessage()
		if err != nil {
			break
		}
		if mt != websocket.TextMessage {
			err = fmt.Errorf("ws: message type %d from the server", mt)
			break
		}
		var f protocol.Frame
		if err = json.Unmarshal(b, &f); err != nil {
			err = fmt.Errorf("ws: bad frame %q: %w", b, err)
			break
		}
		c.mu.Lock()
		if f.Ref != "" {
			w, ok := c.waiters[f.Ref]
			delete(c.waiters, f.Ref)
			c.mu.Unlock()
			if ok {
				w <- f // buffered: one reply per ref
			}
			continue
		}
		if c.onPush != nil {
			c.mu.Unlock()
			c.onPush(f)
			continue
		}
		c.pushes = append(c.pushes, f)
		close(c.changed)
		c.changed = make(chan struct{})
		c.mu.Unlock()
	}
	c.mu.Lock()
	c.readErr = err
	close(c.changed)
	c.changed = make(chan struct{})
	c.mu.Unlock()
	close(c.closed)
}

// Err returns why the connection ended (a *websocket.CloseError carries the
// close code), or nil while it is open.
func (c *Conn) Err() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.readErr
}

// Done is closed when the connection ended.
func (c *Conn) Done() <-chan struct{} { return c.closed }

// Close closes the socket.
func (c *Conn) Close() error {
	c.wmu.Lock()
	_ = c.ws.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseNormalClosure, ""), time.Now().Add(time.Second))
	c.wmu.Unlock()
	return c.ws.Close()
}

// WriteRaw sends b as one text frame.
func (c *Conn) WriteRaw(b []byte) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	_ = c.ws.SetWriteDeadline(time.Now().Add(10 * time.Second))
	if err := c.ws.WriteMessage(websocket.TextMessage, b); err != nil {
		return fmt.Errorf("ws: write: %w", err)
	}
	return nil
}

// Call sends event with data and a fresh ref and returns the reply (an
// `ack` or `error` frame).
func (c *Conn) Call(ctx context.Context, event string, data any) (protocol.Frame, error) {
	raw, err := json.Marshal(data)
	if err != nil {
		return protocol.Frame{}, fmt.Errorf("ws: encode %s: %w", event, err)
	}
	ref := "r" + strconv.FormatInt(c.refs.Add(1), 10)
	b, err := json.Marshal(protocol.Frame{Event: event, Data: raw, Ref: ref})
	if err != nil {
		return protocol.Frame{}, fmt.Errorf("ws: encode %s: %w", event, err)
	}
	w := make(chan protocol.Frame, 1)
	c.mu.Lock()
	c.waiters[ref] = w
	c.mu.Unlock()
	defer func() {
		c.mu.Lock()
		delete(c.waiters, ref)
		c.mu.Unlock()
	}()
	if err := c.WriteRaw(b); err != nil {
		return protocol.Frame{}, err
	}
	select {
	case f := <-w:
		return f, nil
	case <-c.closed:
		return protocol.Frame{}, fmt.Errorf("ws: %s %s: connection ended: %w", event, ref, c.Err())
	case <-ctx.Done():
		return protocol.Frame{}, fmt.Errorf("ws: %s %s: no reply: %w", event, ref, ctx.Err())
	}
}

// Request is Call that decodes an ack into out (may be nil) and turns an
// error frame into a *ProtocolError.
func (c *Conn) Request(ctx context.Context, event string, data, out any) error {
	f, err := c.Call(ctx, event, data)
	if err != nil {
		return err
	}
	switch f.Event {
	case protocol.EventAck:
		if out != nil {
			if err := json.Unmarshal(f.Data, out); err != nil {
				return fmt.Errorf("ws: %s ack %s: %w", event, f.Data, err)
			}
		}
		return nil
	case protocol.EventError:
		var e protocol.ErrorData
		if err := json.Unmarshal(f.Data, &e); err != nil {
			return fmt.Errorf("ws: %s error %s: %w", event, f.Data, err)
		}
		return &ProtocolError{Code: e.Code, Message: e.Message}
	default:
		return fmt.Errorf("ws: %s: reply %q is neither ack nor error", event, f.Event)
	}
}

// Join sends join_room; lastSeq nil means no replay.
func (c *Conn) Join(ctx context.Context, roomID string, lastSeq *int64) (protocol.JoinAck, error) {
	var ack protocol.JoinAck
	err := c.Request(ctx, protocol.EventJoinRoom, protocol.JoinRoom{RoomID: roomID, LastSeq: lastSeq}, &ack)
	return ack, err
}

// Send sends a text message; clientMsgID may be empty.
func (c *Conn) Send(ctx context.Context, roomID, content, clientMsgID string) (protocol.SendAck, error) {
	var ack protocol.SendAck
	err := c.Request(ctx, protocol.EventSendMessage, protocol.SendMessage{RoomID: roomID, Content: content, ClientMsgID: clientMsgID}, &ack)
	return ack, err
}

// Edit sends edit_message.
func (c *Conn) Edit(ctx context.Context, roomID, messageID, content string) (protocol.MessageAck, error) {
	var ack protocol.MessageAck
	err := c.Request(ctx, protocol.EventEditMessage, protocol.EditMessage{RoomID: roomID, MessageID: messageID, Content: content}, &ack)
	return ack, err
}

// Delete sends delete_message.
func (c *Conn) Delete(ctx context.Context, roomID, messageID string) (protocol.MessageAck, error) {
	var ack protocol.MessageAck
	err := c.Request(ctx, protocol.EventDeleteMessage, protocol.DeleteMessage{RoomID: roomID, MessageID: messageID}, &ack)
	return ack, err
}

// MarkRead sends mark_read up to seq.
func (c *Conn) MarkRead(ctx context.Context, roomID string, seq int64) (protocol.ReadAck, error) {
	var ack protocol.ReadAck
	err := c.Request(ctx, protocol.EventMarkRead, protocol.MarkRead{RoomID: roomID, Seq: &seq}, &ack)
	return ack, err
}

// Pushes returns every push received so far, in arrival order.
func (c *Conn) Pushes() []protocol.Frame {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]protocol.Frame(nil), c.pushes...)
}

// WaitPushes waits until cond holds for the pushes received so far and
// returns them; it fails when ctx ends or the connection does first.
func (c *Conn) WaitPushes(ctx context.Context, cond func([]protocol.Frame) bool) ([]protocol.Frame, error) {
	for {
		c.mu.Lock()
		pushes, changed, readErr := c.pushes, c.changed, c.readErr
		c.mu.Unlock()
		// pushes is append-only and read here only up to its length.
		if cond(pushes) {
			return append([]protocol.Frame(nil), pushes...), nil
		}
		if readErr != nil {
			return append([]protocol.Frame(nil), pushes...), fmt.Errorf("ws: connection ended while waiting (%d pushes): %w", len(pushes), readErr)
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return append([]protocol.Frame(nil), pushes...), fmt.Errorf("ws: waited for pushes (%d so far): %w", len(pushes), ctx.Err())
		}
	}
}

// WaitEvent waits for the first push named event whose decoded room event
// satisfies match (nil matches any) and returns it.
func (c *Conn) WaitEvent(ctx context.Context, event string, match func(RoomEvent) bool) (RoomEvent, error) {
	var found RoomEvent
	_, err := c.WaitPushes(ctx, func(fs []protocol.Frame) bool {
		for _, f := range fs {
			if f.Event != event {
				continue
			}
			e, err := DecodeRoomEvent(f)
			if err == nil && (match == nil || match(e)) {
				found = e
				return true
			}
		}
		return false
	})
	if err != nil {
		return RoomEvent{}, fmt.Errorf("waiting for %s: %w", event, err)
	}
	return found, nil
}

// WaitMessages waits until at least n `message` pushes of room arrived and
// returns all of them, in arrival order.
func (c *Conn) WaitMessages(ctx context.Context, roomID string, n int) ([]protocol.Message, error) {
	count := func(fs []protocol.Frame) []protocol.Message {
		var out []protocol.Message
		for _, f := range fs {
			if f.Event != protocol.EventMessage {
				continue
			}
			var m protocol.Message
			if json.Unmarshal(f.Data, &m) == nil && m.RoomID == roomID {
				out = append(out, m)
			}
		}
		return out
	}
	fs, err := c.WaitPushes(ctx, func(fs []protocol.Frame) bool { return len(count(fs)) >= n })
	msgs := count(fs)
	if err != nil {
		return msgs, fmt.Errorf("waiting for %d messages in room %s (have %d): %w", n, roomID, len(msgs), err)
	}
	return msgs, nil
}

// RoomEvent is a push of a room's log (message, message_edited, ...)
// reduced to what ordering checks need, with its payload.
type RoomEvent struct {
	Event   string
	RoomID  string
	Seq     int64
	PrevSeq *int64
	Data    json.RawMessage
}

// DecodeRoomEvent reads roomId, seq and prevSeq of a push.
func DecodeRoomEvent(f protocol.Frame) (RoomEvent, error) {
	var v struct {
		RoomID  string `json:"roomId"`
		Seq     *int64 `json:"seq"`
		PrevSeq *int64 `json:"prevSeq"`
	}
	if err := json.Unmarshal(f.Data, &v); err != nil {
		return RoomEvent{}, fmt.Errorf("push %s %s: %w", f.Event, f.Data, err)
	}
	e := RoomEvent{Event: f.Event, RoomID: v.RoomID, PrevSeq: v.PrevSeq, Data: f.Data}
	if v.Seq != nil {
		e.Seq = *v.Seq
	} else {
		e.Seq = -1
	}
	return e, nil
}

// LogEvents are the pushes that belong to a room's ordered log.
func LogEvents() []string {
	return []string{protocol.EventMessage, protocol.EventMessageEdited, protocol.EventMessageDeleted,
		protocol.EventMessageRead, protocol.EventUserJoined, protocol.EventUserLeft}
}

// RoomLog returns the log pushes of room received so far, in arrival order.
func (c *Conn) RoomLog(roomID string) ([]RoomEvent, error) {
	var out []RoomEvent
	var errs []error
	for _, f := range c.Pushes() {
		if !isLogEvent(f.Event) {
			continue
		}
		e, err := DecodeRoomEvent(f)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if e.RoomID == roomID {
			out = append(out, e)
		}
	}
	return out, errors.Join(errs...)
}

func isLogEvent(name string) bool {
	for _, n := range LogEvents() {
		if n == name {
			return true
		}
	}
	return false
}

// CheckChain checks that evs (one room, in arrival order) form an unbroken
// chain starting after last (nil: the room had no event before): every
// seq is greater than the one before, and every prevSeq equals the seq
// before it. It returns one error per broken link.
func CheckChain(evs []RoomEvent, last *int64) error {
	var errs []error
	for i, e := range evs {
		switch {
		case e.Seq < 0:
			errs = append(errs, fmt.Errorf("#%d %s has no seq: %s", i, e.Event, e.Data))
		case last != nil && e.Seq <= *last:
			errs = append(errs, fmt.Errorf("#%d %s seq %d not after %d (duplicate or out of order)", i, e.Event, e.Seq, *last))
		case !sameSeq(e.PrevSeq, last):
			errs = append(errs, fmt.Errorf("#%d %s seq %d has prevSeq %s, want %s (gap)", i, e.Event, e.Seq, fmtSeq(e.PrevSeq), fmtSeq(last)))
		}
		seq := e.Seq
		last = &seq
	}
	return errors.Join(errs...)
}

func sameSeq(a, b *int64) bool {
	if a == nil || b == nil {
		return a == nil && b == nil
	}
	return *a == *b
}

func fmtSeq(p *int64) string {
	if p == nil {
		return "none"
	}
	return strconv.FormatInt(*p, 10)
}
