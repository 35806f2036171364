package commands

import (
	"context"
	"encoding/json"

	"relay/pkg/chat"
	"relay/services/gateway/internal/conn"
)

// typingStart starts, or renews, the user's typing in a room through the
// presence service, which broadcasts only the start and later the stop
// (typing_stop, a message, leave_room, disconnect or TYPING_TTL expiry).
func (s *Handler) typingStart(ctx context.Context, c *conn.Client, data json.RawMessage, _ string) (json.RawMessage, error) {
	cmd, err := parseRoom(data)
	if err != nil {
		return nil, err
	}
	if _, err := s.o.Membership.Require(ctx, cmd.room, c.UserID()); err != nil {
		return nil, err
	}
	if err := s.o.Typing.StartTyping(ctx, c, cmd.room); err != nil {
		return nil, err
	}
	return emptyAck, nil
}

// typingStop ends the user's typing in a room (started on any of their
// connections); a no-op for presence when they were not typing.
func (s *Handler) typingStop(ctx context.Context, c *conn.Client, data json.RawMessage, _ string) (json.RawMessage, error) {
	cmd, err := parseRoom(data)
	if err != nil {
		return nil, err
	}
	if _, err := s.o.Membership.Require(ctx, cmd.room, c.UserID()); err != nil {
		return nil, err
	}
	if err := s.o.Typing.EndTyping(ctx, c, cmd.room); err != nil {
		return nil, chat.Wrap(chat.CodeUnavailable, err, "could not publish typing; retry")
	}
	return emptyAck, nil
}
