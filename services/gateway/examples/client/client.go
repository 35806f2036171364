// Package client is an example relay WebSocket client that survives
// reconnects the way docs/protocol.md ("Reconnecting") describes: it
// reconnects with exponential backoff and full jitter (at once after a
// 1012 restart), resumes every room with join_room {roomId, lastSeq},
// resends unacked sends with the same clientMsgId, rejoins a room when an
// event's prevSeq shows a gap, and follows resync_required (joins again
// after retryAfterMs, or hands the gap to the application for REST).
//
// It is deliberately small: one connection at a time, one goroutine
// reading it, JSON frames from relay/pkg/protocol.
package client

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"strconv"
	"sync"
	"time"

	"github.com/fasthttp/websocket"
	"github.com/google/uuid"

	"relay/pkg/chat"
	"relay/pkg/protocol"
)

// Options configure New.
type Options struct {
	// URLs are gateway WebSocket URLs (ws://host/ws), tried in turn.
	URLs []string
	// Token is the api's JWT.
	Token string
	// OnEvent gets each room event once, in seq order per room. It runs on
	// the reading goroutine; nil ignores events.
	OnEvent func(roomID string, seq int64, f protocol.Frame)
	// OnResync gets the gaps a retry will not fill: fetch
	// GET /api/rooms/:id/messages?after=<FromSeq>. Nil ignores them.
	OnResync func(protocol.ResyncRequired)
	// MaxBackoff caps the reconnect delay; zero means 30 s.
	MaxBackoff time.Duration
}

// Client is a reconnecting connection to the gateways.
type Client struct {
	o Options

	mu      sync.Mutex
	conn    *websocket.Conn
	rooms   map[string]int64 // roomId → last seq seen (-1: joined, nothing seen)
	pending map[string]*pending
	refs    int
	wmu     sync.Mutex // serialises writes to conn
}

type pending struct {
	frame []byte
	done  chan result
}

type result struct {
	ack protocol.SendAck
	err error
}

// New returns a client; Run connects it.
func New(o Options) *Client {
	if o.MaxBackoff <= 0 {
		o.MaxBackoff = 30 * time.Second
	}
	return &Client{o: o, rooms: map[string]int64{}, pending: map[string]*pending{}}
}

// Run connects and reconnects until ctx ends.
func (c *Client) Run(ctx context.Context) error {
	if len(c.o.URLs) == 0 {
		return errors.New("client: no URLs")
	}
	attempt := 0
	for i := 0; ; i++ {
		url := c.o.URLs[i%len(c.o.URLs)]
		conn, _, err := websocket.DefaultDialer.DialContext(ctx, url+"?token="+c.o.Token, nil)
		delay := c.backoff(attempt)
		if err == nil {
			up := time.Now()
			code := c.serve(ctx, conn)
			if time.Since(up) > 30*time.Second {
				attempt = 0
			}
			switch code {
			case protocol.CloseServiceRestart:
				// The instance is restarting: come back at once, with a
				// little jitter so clients do not all arrive together.
				delay = rand.N(time.Second)
				attempt = 0
			case protocol.CloseAuthExpired:
				return errors.New("client: token expired; log in again")
			}
		}
		attempt++
		t := time.NewTimer(delay)
		select {
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		case <-t.C:
		}
	}
}

// backoff is full jitter: random(0, min(MaxBackoff, 0.5 s × 2^attempt)).
func (c *Client) backoff(attempt int) time.Duration {
	d := min(c.o.MaxBackoff, 500*time.Millisecond<<min(attempt, 16))
	return rand.N(d) + time.Millisecond
}

// serve runs one connection: rejoin, resend, read until it fails. It
// returns the close code (0 when there was none).
func (c *Client) serve(ctx context.Context, conn *websocket.Conn) int {
	stop := context.AfterFunc(ctx, func() { _ = conn.Close() })
	defer stop()
	c.mu.Lock()
	c.conn = conn
	rooms := make(map[string]int64, len(c.rooms))
	for r, last := range c.rooms {
		rooms[r] = last
	}
	resend := make([][]byte, 0, len(c.pending))
	for _, p := range c.pending {
		resend = append(resend, p.frame)
	}
	c.mu.Unlock()
	for r, last := range rooms {
		c.join(r, last)
	}
	for _, f := range resend {
		c.write(f)
	}
	defer func() {
		c.mu.Lock()
		c.conn = nil
		c.mu.Unlock()
		_ = conn.Close()
	}()
	for {
		_, b, err := conn.ReadMessage()
		if err != nil {
			var ce *websocket.CloseError
			if errors.As(err, &ce) {
				return ce.Code
			}
			return 0
		}
		var f protocol.Frame
		if json.Unmarshal(b, &f) == nil {
			c.handle(f)
		}
	}
}

// Join starts receiving a room (now, and again after every reconnect).
func (c *Client) Join(roomID string) {
	c.mu.Lock()
	last, ok := c.rooms[roomID]
	if !ok {
		last = -1
		c.rooms[roomID] = last
	}
	c.mu.Unlock()
	c.join(roomID, last)
}

func (c *Client) join(roomID string, last int64) {
	j := protocol.JoinRoom{RoomID: roomID}
	if last >= 0 {
		j.LastSeq = &last
	}
	c.write(c.frame(protocol.EventJoinRoom, "j", j))
}

// Send posts a message and returns its ack. It waits across reconnects:
// the frame is resent with the same clientMsgId until a reply comes, so
// the message is stored once.
func (c *Client) Send(ctx context.Context, roomID, content string) (protocol.SendAck, error) {
	f := c.frame(protocol.EventSendMessage, "s", protocol.SendMessage{RoomID: roomID, Content: content, ClientMsgID: uuid.NewString()})
	var env protocol.Frame
	_ = json.Unmarshal(f, &env)
	p := &pending{frame: f, done: make(chan result, 1)}
	c.mu.Lock()
	c.pending[env.Ref] = p
	c.mu.Unlock()
	defer func() {
		c.mu.Lock()
		delete(c.pending, env.Ref)
		c.mu.Unlock()
	}()
	c.write(f)
	select {
	case r := <-p.done:
		return r.ack, r.err
	case <-ctx.Done():
		return protocol.SendAck{}, ctx.Err()
	}
}

// LastSeq returns the last seq seen in a room (-1 for none).
func (c *Client) LastSeq(roomID string) int64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	if last, ok := c.rooms[roomID]; ok {
		return last
	}
	return -1
}

func (c *Client) handle(f protocol.Frame) {
	switch {
	case f.Ref != "":
		c.reply(f)
	case f.Event == protocol.EventResyncRequired:
		var r protocol.ResyncRequired
		if json.Unmarshal(f.Data, &r) != nil {
			return
		}
		if r.RetryAfterMs > 0 {
			time.AfterFunc(time.Duration(r.RetryAfterMs)*time.Millisecond, func() { c.join(r.RoomID, c.LastSeq(r.RoomID)) })
		} else if c.o.OnResync != nil {
			c.o.OnResync(r)
		}
	default:
		var pos struct {
			RoomID  string `json:"roomId"`
			Seq     *int64 `json:"seq"`
			PrevSeq *int64 `json:"prevSeq"`
		}
		if json.Unmarshal(f.Data, &pos) != nil || pos.Seq == nil || pos.RoomID == "" {
			return // not a room event (typing, presence)
		}
		c.mu.Lock()
		last, joined := c.rooms[pos.RoomID]
		fresh := joined && *pos.Seq > last
		gap := fresh && last >= 0 && pos.PrevSeq != nil && *pos.PrevSeq > last
		if fresh && !gap {
			c.rooms[pos.RoomID] = *pos.Seq
		}
		c.mu.Unlock()
		switch {
		case gap:
			// Missed something: the server replays from last.
			c.join(pos.RoomID, last)
		case fresh && c.o.OnEvent != nil:
			c.o.OnEvent(pos.RoomID, *pos.Seq, f)
		}
	}
}

// reply settles a pending send; UNAVAILABLE and CONFLICT are retried.
func (c *Client) reply(f protocol.Frame) {
	c.mu.Lock()
	p := c.pending[f.Ref]
	c.mu.Unlock()
	if p == nil {
		return // a join ack
	}
	if f.Event == protocol.EventError {
		var e protocol.ErrorData
		_ = json.Unmarshal(f.Data, &e)
		if e.Code == chat.CodeUnavailable || e.Code == chat.CodeConflict {
			time.AfterFunc(500*time.Millisecond, func() { c.write(p.frame) })
			return
		}
		p.done <- result{err: fmt.Errorf("client: %s: %s", e.Code, e.Message)}
		return
	}
	var ack protocol.SendAck
	err := json.Unmarshal(f.Data, &ack)
	p.done <- result{ack: ack, err: err}
}

func (c *Client) frame(event, prefix string, data any) []byte {
	d, _ := json.Marshal(data)
	c.mu.Lock()
	c.refs++
	ref := prefix + strconv.Itoa(c.refs)
	c.mu.Unlock()
	b, _ := json.Marshal(protocol.Frame{Event: event, Ref: ref, Data: d})
	return b
}

// write sends a frame when connected; otherwise the reconnect resends
// what matters (joins, pending sends).
func (c *Client) write(f []byte) {
	c.mu.Lock()
	conn := c.conn
	c.mu.Unlock()
	if conn == nil {
		return
	}
	c.wmu.Lock()
	defer c.wmu.Unlock()
	_ = conn.SetWriteDeadline(time.Now().Add(10 * time.Second))
	_ = conn.WriteMessage(websocket.TextMessage, f)
}
