// Package commands handles client frames: the envelope checks (size,
// UTF-8, JSON, rate limit), the routing by event, and one handler per
// command (join, leave, send, edit, delete, read, typing) over small
// interfaces to what it needs, so each can be tested without servers.
package commands

import (
	"context"
	"encoding/json"
	"log/slog"
	"time"
	"unicode/utf8"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"

	"relay/pkg/chat"
	"relay/pkg/events"
	"relay/pkg/protocol"
	"relay/pkg/store"
	"relay/services/gateway/internal/adapters"
	"relay/services/gateway/internal/conn"
	"relay/services/gateway/internal/fanout"
	"relay/services/gateway/internal/fanout/hub"
	"relay/services/gateway/internal/frame"
	"relay/services/gateway/internal/metrics"
)

// Membership answers membership checks (adapters.Membership).
type Membership interface {
	// Cached reports whether the membership is cached (no check needed).
	Cached(room, user int64) bool
	// Lookup reads the room's type and the user's role.
	Lookup(ctx context.Context, room, user int64) (store.Access, error)
	// Require returns the user's role, or NOT_FOUND / FORBIDDEN.
	Require(ctx context.Context, room, user int64) (chat.Role, error)
	// Remember caches a membership.
	Remember(room, user int64, role chat.Role)
	// Writable returns FORBIDDEN when the room is archived.
	Writable(ctx context.Context, room int64) error
}

// Messages is the state of messages the commands check and record
// (adapters.Messages).
type Messages interface {
	DedupeKey(user int64, clientMsgID string) string
	Reserve(ctx context.Context, dedupeKey, messageID string, a adapters.Author) (json.RawMessage, error)
	Release(ctx context.Context, dedupeKey string)
	RecordAck(ctx context.Context, dedupeKey string, ack []byte)
	Author(ctx context.Context, messageID string) (adapters.Author, error)
	MarkDeleted(ctx context.Context, messageID string, a adapters.Author)
	// Stored returns a stored message's room and seq, or NOT_FOUND.
	Stored(ctx context.Context, messageID string) (room, seq int64, err error)
}

// Producer appends room events to the log and returns their seq
// (adapters.Producer).
type Producer interface {
	Produce(ctx context.Context, e *events.Event) (int64, error)
}

// Channels makes a user a member of a channel (adapters.Channels).
type Channels interface {
	Join(ctx context.Context, room int64, token string) error
}

// Rooms is the local fan-out a connection joins and leaves, and the room
// log it replays from (*fanout.Fanout with its hub).
type Rooms interface {
	Join(ctx context.Context, room int64, c hub.Conn) (*hub.Member, error)
	Leave(ctx context.Context, m *hub.Member) error
	LastSeq(ctx context.Context, room int64) (*int64, error)
	Baseline(room int64, last *int64)
	ReadLog(ctx context.Context, room, after int64, until *int64, limit int) (fanout.LogRead, error)
}

// Typing tells presence about typing (*presence.Presence).
type Typing interface {
	// StartTyping starts or renews c's typing in room.
	StartTyping(ctx context.Context, c *conn.Client, room int64) error
	// StopTyping ends c's typing in room if c is still typing there.
	StopTyping(ctx context.Context, c *conn.Client, room int64)
	// EndTyping ends the user's typing in room, started on any connection.
	EndTyping(ctx context.Context, c *conn.Client, room int64) error
}

// UserLimit counts one event of a user against a limit shared by every
// gateway (*ratelimit.Leased): nil when allowed, RATE_LIMITED with a retry
// hint when not.
type UserLimit interface {
	Allow(ctx context.Context, user int64) error
}

// Options configure New; every field is required but Sends and Joins.
type Options struct {
	Membership Membership
	Messages   Messages
	Producer   Producer
	Channels   Channels
	Rooms      Rooms
	Typing     Typing
	// Sends limits a user's send_message, edit_message and delete_message,
	// all connections on all gateways together; Joins their join_room.
	// Nil means no limit.
	Sends, Joins UserLimit
	// Frames encodes acks and errors; Metrics counts frames; Tracer
	// traces each command; Log gets what goes wrong.
	Frames  *frame.Encoder
	Metrics *metrics.Metrics
	Tracer  trace.Tracer
	Log     *slog.Logger
	// MaxFrameBytes is the largest frame handled (TOO_LARGE above);
	// MaxRooms the rooms joined on one connection; SendTimeout bounds a
	// join's subscription and replay read; ReplayLimit a replay.
	MaxFrameBytes, MaxRooms, ReplayLimit int
	SendTimeout                          time.Duration
}

// Handler handles the client frames of every connection, whatever its
// transport.
type Handler struct {
	o      Options
	routes map[string]handler
	// frames tracks client frames in flight for the shutdown.
	frames flights
	// base is the context of command work; Close of the service cancels it.
	base context.Context
}

// New makes the handler; base bounds the commands' work.
func New(base context.Context, o Options) *Handler {
	h := &Handler{o: o, base: base}
	h.routes = h.handlers()
	return h
}

// sentReply is returned by handlers that queued their ack themselves (join
// sends it ahead of the replay).
var sentReply = json.RawMessage(nil)

// emptyAck is the payload of acks that carry nothing.
var emptyAck = json.RawMessage(`{}`)

// Text handles one client text frame: every frame with a ref gets
// exactly one ack or error carrying it.
func (s *Handler) Text(c *conn.Client, raw []byte) {
	// Every frame counts against the rate limit, bad ones too.
	allowed := c.Allow()
	if len(raw) > s.o.MaxFrameBytes {
		s.o.Metrics.FramesIn.WithLabelValues("invalid").Inc()
		c.Reply(s.errorFrame(c, peekRef(raw), chat.Errorf(chat.CodeTooLarge, "frame exceeds %d bytes", s.o.MaxFrameBytes)))
		return
	}
	if !utf8.Valid(raw) {
		s.o.Metrics.FramesIn.WithLabelValues("invalid").Inc()
		c.Reply(s.errorFrame(c, "", chat.Errorf(chat.CodeBadRequest, "frame is not valid UTF-8")))
		return
	}
	event, data, ref, err := decodeEnvelope(raw)
	if err != nil {
		s.o.Metrics.FramesIn.WithLabelValues("invalid").Inc()
		c.Reply(s.errorFrame(c, ref, err))
		return
	}
	h, known := s.routes[event]
	label := event
	if !known {
		label = "unknown"
	}
	s.o.Metrics.FramesIn.WithLabelValues(label).Inc()
	if !allowed {
		c.Reply(s.errorFrame(c, ref, chat.Errorf(chat.CodeRateLimited, "too many frames; slow down")))
		return
	}
	if !known {
		c.Reply(s.errorFrame(c, ref, chat.Errorf(chat.CodeUnknownEvent, "unknown event %q", truncate(event, 64))))
		return
	}
	if !s.frames.begin() {
		c.Reply(s.errorFrame(c, ref, chat.Errorf(chat.CodeUnavailable, "server is restarting; reconnect and retry")))
		return
	}
	defer s.frames.end()
	ctx, span := s.o.Tracer.Start(s.base, "gateway."+event, trace.WithSpanKind(trace.SpanKindServer),
		trace.WithAttributes(attribute.Int64("user.id", c.UserID())))
	defer span.End()
	ack, err := h(ctx, c, data, ref)
	switch event {
	case protocol.EventSendMessage:
		metrics.Answered(s.o.Metrics.Sends, err)
	case protocol.EventJoinRoom:
		metrics.Answered(s.o.Metrics.Joins, err)
	}
	if err != nil {
		span.SetStatus(codes.Error, string(chat.ErrorCode(err)))
		if chat.ErrorCode(err) == chat.CodeInternal {
			span.RecordError(err)
		}
		c.Reply(s.errorFrame(c, ref, err))
		return
	}
	if ref != "" && ack != nil {
		c.Reply(s.frame(protocol.EventAck, ref, ack))
	}
}

// Binary answers a binary message: the protocol is JSON text. It counts
// against the connection's frame rate like every frame; over the rate it
// gets no answer, so a flood of them costs no writes.
func (s *Handler) Binary(c *conn.Client) {
	s.o.Metrics.FramesIn.WithLabelValues("invalid").Inc()
	if !c.Allow() {
		return
	}
	c.Reply(s.errorFrame(c, "", chat.Errorf(chat.CodeBadRequest, "binary frames are not supported; send JSON text frames")))
}

// Invalid answers a frame its transport could not decode (a Socket.IO
// event that maps to no native frame); it counts against the rate limit
// like every frame.
func (s *Handler) Invalid(c *conn.Client, ref string, err error) {
	c.Allow()
	s.o.Metrics.FramesIn.WithLabelValues("invalid").Inc()
	c.Reply(s.errorFrame(c, ref, err))
}

// Drain refuses frames from now on and returns a channel closed once the
// frames in flight are done.
func (s *Handler) Drain() <-chan struct{} { return s.frames.drain() }

// InFlight is the number of frames being handled.
func (s *Handler) InFlight() int { return s.frames.count() }

// LeaveAll removes c from every room it joined (its end).
func (s *Handler) LeaveAll(ctx context.Context, c *conn.Client) {
	for id, m := range c.Rooms {
		if err := s.o.Rooms.Leave(ctx, m); err != nil {
			s.o.Log.WarnContext(ctx, "leave room on disconnect", "room_id", id, "err", err)
		}
		delete(c.Rooms, id)
	}
}

// handler handles one decoded client event. It returns the ack payload, or
// sentReply when it queued the ack itself.
type handler func(ctx context.Context, c *conn.Client, data json.RawMessage, ref string) (json.RawMessage, error)

func (s *Handler) handlers() map[string]handler {
	return map[string]handler{
		protocol.EventJoinRoom:      s.joinRoom,
		protocol.EventLeaveRoom:     s.leaveRoom,
		protocol.EventSendMessage:   s.sendMessage,
		protocol.EventEditMessage:   s.editMessage,
		protocol.EventDeleteMessage: s.deleteMessage,
		protocol.EventMarkRead:      s.markRead,
		protocol.EventTypingStart:   s.typingStart,
		protocol.EventTypingStop:    s.typingStop,
		protocol.EventPing: func(context.Context, *conn.Client, json.RawMessage, string) (json.RawMessage, error) {
			return emptyAck, nil
		},
	}
}

// allow counts one event of c's user against limit (nil: none).
func (s *Handler) allow(ctx context.Context, limit UserLimit, c *conn.Client) error {
	if limit == nil {
		return nil
	}
	return limit.Allow(ctx, c.UserID())
}

// frame encodes a server frame; data is already JSON.
func (s *Handler) frame(event, ref string, data json.RawMessage) []byte {
	return s.o.Frames.Frame(event, ref, data)
}

// errorFrame encodes an error frame for c.
func (s *Handler) errorFrame(c *conn.Client, ref string, err error) []byte {
	return s.o.Frames.Error(c.UserID(), ref, err)
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}
