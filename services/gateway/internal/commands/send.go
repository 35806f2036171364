package commands

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/google/uuid"

	"relay/pkg/chat"
	"relay/pkg/events"
	"relay/pkg/protocol"
	"relay/services/gateway/internal/adapters"
	"relay/services/gateway/internal/conn"
	"relay/services/gateway/internal/frame"
)

// sendMessage produces message_created and acks with the record's offset
// once Kafka stored it. A repeated clientMsgId gets the first ack back.
func (s *Handler) sendMessage(ctx context.Context, c *conn.Client, data json.RawMessage, _ string) (json.RawMessage, error) {
	start := time.Now()
	cmd, err := parseSend(data)
	if err != nil {
		return nil, err
	}
	if err := s.allow(ctx, s.o.Sends, c); err != nil {
		return nil, err
	}
	if _, err := s.o.Membership.Require(ctx, cmd.room, c.UserID()); err != nil {
		return nil, err
	}
	if err := s.o.Membership.Writable(ctx, cmd.room); err != nil {
		return nil, err
	}
	id, err := uuid.NewV7()
	if err != nil {
		return nil, fmt.Errorf("message id: %w", err)
	}
	var dedupeKey string
	if cmd.clientMsgID != "" {
		dedupeKey = s.o.Messages.DedupeKey(c.UserID(), cmd.clientMsgID)
	}
	if first, err := s.o.Messages.Reserve(ctx, dedupeKey, id.String(), adapters.Author{Room: cmd.room, User: c.UserID()}); err != nil || first != nil {
		return first, err
	}
	// Microseconds: what PostgreSQL keeps, so REST history shows the same time.
	at := time.Now().UTC().Truncate(time.Microsecond)
	seq, err := s.o.Producer.Produce(ctx, &events.Event{
		Type: events.MessageCreated, RoomID: cmd.room, UserID: c.UserID(), Username: c.Username(),
		MessageID: id.String(), Content: cmd.content, MessageType: string(cmd.typ),
		Metadata: cmd.metadata, ClientMsgID: cmd.clientMsgID, At: at,
	})
	if err != nil {
		if dedupeKey != "" {
			// Let the client retry with the same clientMsgId.
			s.o.Messages.Release(ctx, dedupeKey)
		}
		return nil, err
	}
	// The message is what the typing was for.
	s.o.Typing.StopTyping(ctx, c, cmd.room)
	ack := frame.MustJSON(protocol.SendAck{ID: id.String(), RoomID: frame.RoomString(cmd.room), Seq: seq, ClientMsgID: cmd.clientMsgID, CreatedAt: at})
	if dedupeKey != "" {
		s.o.Messages.RecordAck(ctx, dedupeKey, ack)
	}
	s.o.Metrics.SendAck.Observe(time.Since(start).Seconds())
	return ack, nil
}

// editMessage: the author only; produces message_edited.
func (s *Handler) editMessage(ctx context.Context, c *conn.Client, data json.RawMessage, _ string) (json.RawMessage, error) {
	cmd, err := parseEdit(data)
	if err != nil {
		return nil, err
	}
	if err := s.allow(ctx, s.o.Sends, c); err != nil {
		return nil, err
	}
	if cmd.room, err = s.messageRoom(ctx, c, cmd.room, cmd.message); err != nil {
		return nil, err
	}
	if _, err := s.o.Membership.Require(ctx, cmd.room, c.UserID()); err != nil {
		return nil, err
	}
	if err := s.o.Membership.Writable(ctx, cmd.room); err != nil {
		return nil, err
	}
	a, err := s.existingMessage(ctx, cmd.room, cmd.message)
	if err != nil {
		return nil, err
	}
	if a.User != c.UserID() {
		return nil, chat.Errorf(chat.CodeForbidden, "only the author can edit a message")
	}
	seq, err := s.o.Producer.Produce(ctx, &events.Event{
		Type: events.MessageEdited, RoomID: cmd.room, UserID: c.UserID(), Username: c.Username(),
		MessageID: cmd.message, Content: cmd.content, At: time.Now().UTC().Truncate(time.Microsecond),
	})
	if err != nil {
		return nil, err
	}
	return frame.MustJSON(protocol.MessageAck{MessageID: cmd.message, Seq: seq}), nil
}

// deleteMessage: the author or a room admin; produces message_deleted.
func (s *Handler) deleteMessage(ctx context.Context, c *conn.Client, data json.RawMessage, _ string) (json.RawMessage, error) {
	cmd, err := parseDelete(data)
	if err != nil {
		return nil, err
	}
	if err := s.allow(ctx, s.o.Sends, c); err != nil {
		return nil, err
	}
	if cmd.room, err = s.messageRoom(ctx, c, cmd.room, cmd.message); err != nil {
		return nil, err
	}
	role, err := s.o.Membership.Require(ctx, cmd.room, c.UserID())
	if err != nil {
		return nil, err
	}
	a, err := s.existingMessage(ctx, cmd.room, cmd.message)
	if err != nil {
		return nil, err
	}
	if a.User != c.UserID() && role != chat.RoleAdmin {
		return nil, chat.Errorf(chat.CodeForbidden, "only the author or a room admin can delete a message")
	}
	seq, err := s.o.Producer.Produce(ctx, &events.Event{
		Type: events.MessageDeleted, RoomID: cmd.room, UserID: c.UserID(), Username: c.Username(),
		MessageID: cmd.message, At: time.Now().UTC().Truncate(time.Microsecond),
	})
	if err != nil {
		return nil, err
	}
	s.o.Messages.MarkDeleted(ctx, cmd.message, a)
	return frame.MustJSON(protocol.MessageAck{MessageID: cmd.message, Seq: seq}), nil
}

// messageRoom returns room, or when the client named none (the seed's
// edit_message and delete_message), the room of the message. To someone
// who is not a member of that room the message does not exist.
func (s *Handler) messageRoom(ctx context.Context, c *conn.Client, room int64, messageID string) (int64, error) {
	if room != 0 {
		return room, nil
	}
	a, err := s.o.Messages.Author(ctx, messageID)
	if err != nil {
		return 0, err
	}
	if _, err := s.o.Membership.Require(ctx, a.Room, c.UserID()); err != nil {
		if chat.ErrorCode(err) == chat.CodeForbidden {
			return 0, chat.Errorf(chat.CodeNotFound, "message not found")
		}
		return 0, err
	}
	return a.Room, nil
}

// existingMessage returns the author of a message of room that is not
// deleted, or NOT_FOUND.
func (s *Handler) existingMessage(ctx context.Context, room int64, messageID string) (adapters.Author, error) {
	a, err := s.o.Messages.Author(ctx, messageID)
	if err != nil {
		return adapters.Author{}, err
	}
	if a.Room != room || a.Deleted {
		return adapters.Author{}, chat.Errorf(chat.CodeNotFound, "message not found")
	}
	return a, nil
}

// markRead: a member produces read_marked up to seq.
func (s *Handler) markRead(ctx context.Context, c *conn.Client, data json.RawMessage, _ string) (json.RawMessage, error) {
	cmd, err := parseRead(data)
	if err != nil {
		return nil, err
	}
	if _, err := s.o.Membership.Require(ctx, cmd.room, c.UserID()); err != nil {
		return nil, err
	}
	if cmd.message != "" {
		// The seed's form: the message's seq is the read position. Only a
		// stored message has one, so a message the persister has not
		// written yet is NOT_FOUND for a moment (clients that have the seq
		// send it instead).
		room, seq, err := s.o.Messages.Stored(ctx, cmd.message)
		if err != nil {
			return nil, err
		}
		if room != cmd.room {
			return nil, chat.Errorf(chat.CodeNotFound, "message not found in room %d", cmd.room)
		}
		cmd.seq = seq
	}
	seq, err := s.o.Producer.Produce(ctx, &events.Event{
		Type: events.ReadMarked, RoomID: cmd.room, UserID: c.UserID(), Username: c.Username(),
		ReadSeq: cmd.seq, MessageID: cmd.message, At: time.Now().UTC().Truncate(time.Microsecond),
	})
	if err != nil {
		return nil, err
	}
	return frame.MustJSON(protocol.ReadAck{Seq: seq}), nil
}
