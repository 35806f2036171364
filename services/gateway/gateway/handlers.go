package gateway

import (
	"context"
	"encoding/json"
	"unicode/utf8"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"

	"relay/pkg/chat"
	"relay/pkg/protocol"
)

// sentReply is returned by handlers that queued their ack themselves (join
// sends it ahead of the replay).
var sentReply = json.RawMessage(nil)

// emptyAck is the payload of acks that carry nothing.
var emptyAck = json.RawMessage(`{}`)

// handleFrame handles one client text frame: every frame with a ref gets
// exactly one ack or error carrying it.
func (s *Service) handleFrame(c *client, raw []byte) {
	// Every frame counts against the rate limit, bad ones too.
	allowed := c.limiter.Allow()
	if len(raw) > s.cfg.MaxFrameBytes {
		s.metrics.framesIn.WithLabelValues("invalid").Inc()
		c.reply(s.errorFrame(c, peekRef(raw), chat.Errorf(chat.CodeTooLarge, "frame exceeds %d bytes", s.cfg.MaxFrameBytes)))
		return
	}
	if !utf8.Valid(raw) {
		s.metrics.framesIn.WithLabelValues("invalid").Inc()
		c.reply(s.errorFrame(c, "", chat.Errorf(chat.CodeBadRequest, "frame is not valid UTF-8")))
		return
	}
	event, data, ref, err := decodeEnvelope(raw)
	if err != nil {
		s.metrics.framesIn.WithLabelValues("invalid").Inc()
		c.reply(s.errorFrame(c, ref, err))
		return
	}
	h, known := s.routes[event]
	label := event
	if !known {
		label = "unknown"
	}
	s.metrics.framesIn.WithLabelValues(label).Inc()
	if !allowed {
		c.reply(s.errorFrame(c, ref, chat.Errorf(chat.CodeRateLimited, "too many frames; slow down")))
		return
	}
	if !known {
		c.reply(s.errorFrame(c, ref, chat.Errorf(chat.CodeUnknownEvent, "unknown event %q", truncate(event, 64))))
		return
	}
	if !s.frames.begin() {
		c.reply(s.errorFrame(c, ref, chat.Errorf(chat.CodeUnavailable, "server is restarting; reconnect and retry")))
		return
	}
	defer s.frames.end()
	ctx, span := s.tel.Tracer.Start(s.base, "gateway."+event, trace.WithSpanKind(trace.SpanKindServer),
		trace.WithAttributes(attribute.Int64("user.id", c.userID)))
	defer span.End()
	ack, err := h(ctx, c, data, ref)
	if err != nil {
		span.SetStatus(codes.Error, string(chat.ErrorCode(err)))
		if chat.ErrorCode(err) == chat.CodeInternal {
			span.RecordError(err)
		}
		c.reply(s.errorFrame(c, ref, err))
		return
	}
	if ref != "" && ack != nil {
		c.reply(s.frame(protocol.EventAck, ref, ack))
	}
}

// handler handles one decoded client event. It returns the ack payload, or
// sentReply when it queued the ack itself.
type handler func(ctx context.Context, c *client, data json.RawMessage, ref string) (json.RawMessage, error)

func (s *Service) handlers() map[string]handler {
	return map[string]handler{
		protocol.EventJoinRoom:      s.joinRoom,
		protocol.EventLeaveRoom:     s.leaveRoom,
		protocol.EventSendMessage:   s.sendMessage,
		protocol.EventEditMessage:   s.editMessage,
		protocol.EventDeleteMessage: s.deleteMessage,
		protocol.EventMarkRead:      s.markRead,
		protocol.EventTypingStart:   s.typingStart,
		protocol.EventTypingStop:    s.typingStop,
		protocol.EventPing:          func(context.Context, *client, json.RawMessage, string) (json.RawMessage, error) { return emptyAck, nil },
	}
}

// frame encodes a server frame; data is already JSON.
func (s *Service) frame(event, ref string, data json.RawMessage) []byte {
	b, err := json.Marshal(protocol.Frame{Event: event, Ref: ref, Data: data})
	if err != nil {
		// Only invalid raw JSON can fail here, which would be our bug.
		s.log.Error("encode frame", "event", event, "err", err)
		return nil
	}
	s.metrics.framesOut.WithLabelValues(event).Inc()
	return b
}

// errorFrame encodes an error frame; anything that is not a *chat.Error is
// INTERNAL with a generic message, its detail only logged.
func (s *Service) errorFrame(c *client, ref string, err error) []byte {
	code := chat.ErrorCode(err)
	if code == chat.CodeInternal || code == chat.CodeUnavailable {
		s.log.Warn("frame failed", "user_id", c.userID, "code", code, "err", err)
	}
	s.metrics.errors.WithLabelValues(string(code)).Inc()
	data, _ := json.Marshal(protocol.ErrorData{Code: code, Message: chat.ErrorMessage(err)})
	return s.frame(protocol.EventError, ref, data)
}

// mustJSON encodes an ack payload made of plain fields (cannot fail).
func mustJSON(v any) json.RawMessage {
	b, err := json.Marshal(v)
	if err != nil {
		return json.RawMessage(`{}`)
	}
	return b
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}
