package adapters

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"time"

	goredis "github.com/redis/go-redis/v9"
	"gorm.io/gorm"

	"relay/pkg/chat"
	"relay/pkg/dedupe"
	"relay/pkg/redis"
	"relay/pkg/store"
)

// Author is who wrote a message, and where.
type Author struct {
	// Room and User are the message's room and author.
	Room, User int64
	// Deleted is set once the message was deleted.
	Deleted bool
}

func (a Author) String() string {
	v := strconv.FormatInt(a.Room, 10) + ":" + strconv.FormatInt(a.User, 10)
	if a.Deleted {
		v += ":deleted"
	}
	return v
}

func parseAuthor(v string) (Author, bool) {
	parts := strings.Split(v, ":")
	if len(parts) < 2 || len(parts) > 3 {
		return Author{}, false
	}
	room, err1 := strconv.ParseInt(parts[0], 10, 64)
	user, err2 := strconv.ParseInt(parts[1], 10, 64)
	if err1 != nil || err2 != nil {
		return Author{}, false
	}
	return Author{Room: room, User: user, Deleted: len(parts) == 3 && parts[2] == "deleted"}, true
}

// MessagesOptions configure NewMessages; every field is required.
type MessagesOptions struct {
	// Keys names the Redis keys of authors.
	Keys redis.Keys
	// AuthorTTL keeps a message's author in Redis.
	AuthorTTL time.Duration
	// Dedupe claims clientMsgIds and records their acks.
	Dedupe *dedupe.Store
	// Log gets degraded Redis writes.
	Log *slog.Logger
}

// Messages is what the gateway keeps of messages in Redis (authors, so an
// edit right after the ack finds its message; clientMsgId dedupe) with
// PostgreSQL behind it for authors.
type Messages struct {
	rdb  goredis.UniversalClient
	db   *gorm.DB
	o    MessagesOptions
	acks *dedupe.Recorder
}

// NewMessages makes the adapter; Run records acks until Close.
func NewMessages(rdb goredis.UniversalClient, db *gorm.DB, o MessagesOptions) *Messages {
	return &Messages{rdb: rdb, db: db, o: o, acks: dedupe.NewRecorder(o.Dedupe, o.Log)}
}

// Run writes the recorded acks until Close.
func (m *Messages) Run() { m.acks.Run() }

// Close stops recording and returns once the queued acks are written.
func (m *Messages) Close() { m.acks.Close() }

// DedupeKey is the key of a user's clientMsgId.
func (m *Messages) DedupeKey(user int64, clientMsgID string) string {
	return m.o.Dedupe.Key(user, clientMsgID)
}

// Reserve, in one round trip before the message is produced, records its
// author (so an edit right after the ack finds it, though the row may not
// be persisted yet) and claims the clientMsgId when there is one. It
// returns the first ack when the clientMsgId was used before. Without a
// clientMsgId a Redis failure only degrades the author check (edits fall
// back to PostgreSQL); with one the send is refused, as it cannot be
// deduplicated. An author recorded for a send that then fails names a
// message id no one was given, and expires.
func (m *Messages) Reserve(ctx context.Context, dedupeKey, messageID string, a Author) (json.RawMessage, error) {
	pipe := m.rdb.Pipeline()
	pipe.Set(ctx, m.o.Keys.MessageAuthor(messageID), a.String(), m.o.AuthorTTL)
	var claim *goredis.BoolCmd
	if dedupeKey != "" {
		claim = m.o.Dedupe.QueueClaim(ctx, pipe, dedupeKey)
	}
	_, err := pipe.Exec(ctx)
	if err != nil && (claim == nil || claim.Err() == nil) {
		m.o.Log.WarnContext(ctx, "record author in redis", "message_id", messageID, "err", err)
	}
	if claim == nil {
		return nil, nil
	}
	return m.o.Dedupe.ClaimReply(ctx, dedupeKey, claim)
}

// Release drops a clientMsgId's claim after a failed send, so the client
// can retry with the same clientMsgId.
func (m *Messages) Release(ctx context.Context, dedupeKey string) {
	if err := m.o.Dedupe.Release(ctx, dedupeKey); err != nil {
		m.o.Log.WarnContext(ctx, "drop dedupe marker", "err", err)
	}
}

// RecordAck records ack as the answer to a clientMsgId, off the send path
// (dedupe.Recorder).
func (m *Messages) RecordAck(ctx context.Context, dedupeKey string, ack []byte) {
	m.acks.Record(ctx, dedupeKey, ack)
}

// Author finds a message's author: first in Redis (written at ack time,
// since the row may not be persisted yet), then in PostgreSQL. An unknown
// message is NOT_FOUND.
func (m *Messages) Author(ctx context.Context, messageID string) (Author, error) {
	v, err := m.rdb.Get(ctx, m.o.Keys.MessageAuthor(messageID)).Result()
	switch {
	case err == nil:
		if a, ok := parseAuthor(v); ok {
			return a, nil
		}
		m.o.Log.WarnContext(ctx, "bad author key", "message_id", messageID, "value", v)
	case !errors.Is(err, goredis.Nil):
		return Author{}, chat.Wrap(chat.CodeUnavailable, err, "authorship check failed; retry")
	}
	row, found, err := store.MessageAuthorship(ctx, m.db, messageID)
	if err != nil {
		return Author{}, chat.Wrap(chat.CodeUnavailable, err, "authorship check failed; retry")
	}
	if !found {
		return Author{}, chat.Errorf(chat.CodeNotFound, "message not found")
	}
	return Author{Room: row.RoomID, User: row.UserID, Deleted: row.Deleted}, nil
}

// MarkDeleted records in Redis that a message was deleted (best effort:
// PostgreSQL has it once the persister caught up).
func (m *Messages) MarkDeleted(ctx context.Context, messageID string, a Author) {
	a.Deleted = true
	if err := m.rdb.Set(context.WithoutCancel(ctx), m.o.Keys.MessageAuthor(messageID), a.String(), m.o.AuthorTTL).Err(); err != nil {
		m.o.Log.WarnContext(ctx, "mark message deleted in redis", "message_id", messageID, "err", err)
	}
}

// Stored returns the room and seq of a message the persister has written,
// or NOT_FOUND.
func (m *Messages) Stored(ctx context.Context, messageID string) (room, seq int64, err error) {
	var rows []struct {
		RoomID int64
		Seq    int64
	}
	err = m.db.WithContext(ctx).Raw(`SELECT room_id, seq FROM messages WHERE id = ?`, messageID).Scan(&rows).Error
	if err != nil {
		return 0, 0, chat.Wrap(chat.CodeUnavailable, fmt.Errorf("message seq: %w", err), "message lookup failed; retry")
	}
	if len(rows) == 0 {
		return 0, 0, chat.Errorf(chat.CodeNotFound, "message not found (or not stored yet: send seq)")
	}
	return rows[0].RoomID, rows[0].Seq, nil
}
