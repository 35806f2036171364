package gateway

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/google/uuid"
	goredis "github.com/redis/go-redis/v9"
	"github.com/sony/gobreaker/v2"
	"go.opentelemetry.io/otel/propagation"

	"relay/pkg/chat"
	"relay/pkg/events"
	"relay/pkg/protocol"
	"relay/pkg/redis"
	"relay/pkg/web"
	"relay/services/gateway/gateway/hub"
)

// dedupePending marks a clientMsgId whose send is in flight.
const dedupePending = redis.DedupePending

// pendingWait bounds how long a repeated clientMsgId waits for the first
// send's ack (from its gateway, or from the delivery worker when that
// gateway died) before it is told to retry.
const pendingWait = 2 * time.Second

// joinRoom: a member (or anyone, for a channel, which makes them a member
// through the api) starts receiving the room on this connection. With
// lastSeq, what the client missed is replayed from the recent history
// before live events.
func (s *Service) joinRoom(ctx context.Context, c *client, data json.RawMessage, ref string) (json.RawMessage, error) {
	cmd, err := parseJoin(data)
	if err != nil {
		return nil, err
	}
	if m, ok := c.rooms[cmd.room]; ok && cmd.lastSeq != nil {
		// A rejoin with lastSeq is a recovery request (the client saw a
		// gap): start a fresh membership that replays from lastSeq.
		delete(c.rooms, cmd.room)
		if err := s.hub.Leave(ctx, m); err != nil {
			s.log.WarnContext(ctx, "leave room for rejoin", "room_id", cmd.room, "err", err)
		}
	}
	if m, ok := c.rooms[cmd.room]; ok && !m.Removed() {
		// Already receiving here: nothing changes.
		last, err := redis.LastSeq(ctx, s.rdb, s.keys, cmd.room)
		if err != nil {
			return nil, chat.Wrap(chat.CodeUnavailable, err, "could not read the room position; retry")
		}
		return mustJSON(protocol.JoinAck{RoomID: roomString(cmd.room), LastSeq: last}), nil
	}
	if len(c.rooms) >= s.cfg.MaxRooms {
		// Memberships ended by a user_left still have their entry.
		for id, m := range c.rooms {
			if m.Removed() {
				delete(c.rooms, id)
			}
		}
	}
	if len(c.rooms) >= s.cfg.MaxRooms {
		return nil, chat.Errorf(chat.CodeBadRequest, "at most %d rooms can be joined on one connection", s.cfg.MaxRooms)
	}
	if _, cached := s.roles.Get(memberKey{cmd.room, c.userID}); !cached {
		a, err := s.lookupAccess(ctx, cmd.room, c.userID)
		if err != nil {
			return nil, err
		}
		if a.role == "" {
			if a.roomType != chat.RoomChannel {
				return nil, chat.Errorf(chat.CodeForbidden, "not a member of room %d", cmd.room)
			}
			if err := s.joinChannel(ctx, cmd.room, c.token); err != nil {
				return nil, err
			}
			s.roles.Add(memberKey{cmd.room, c.userID}, chat.RoleMember)
		}
	}

	jctx, cancel := context.WithTimeout(ctx, s.cfg.SendTimeout)
	defer cancel()
	m, err := s.hub.Join(jctx, cmd.room, c)
	if err != nil {
		return nil, chat.Wrap(chat.CodeUnavailable, err, "could not subscribe to the room; retry")
	}
	last, err := redis.LastSeq(ctx, s.rdb, s.keys, cmd.room)
	var replay logRead
	if err == nil {
		s.broker.seq.baseline(cmd.room, last)
		// Nothing to replay when the room has not moved past the client.
		if cmd.lastSeq != nil && (last == nil || *last > *cmd.lastSeq) {
			rctx, cancel := context.WithTimeout(ctx, s.cfg.SendTimeout)
			replay, err = s.readLog(rctx, cmd.room, *cmd.lastSeq, last, s.cfg.ReplayLimit)
			cancel()
		}
	}
	if err != nil {
		_ = s.hub.Leave(context.WithoutCancel(ctx), m)
		return nil, chat.Wrap(chat.CodeUnavailable, err, "could not read the room history; retry")
	}
	if c.rooms == nil {
		c.rooms = make(map[int64]*hub.Member, 1)
	}
	c.rooms[cmd.room] = m

	r := hub.Resume{LastSeq: -1, Replay: replay.pubs}
	if ref != "" {
		r.Before = [][]byte{s.frame(protocol.EventAck, ref, mustJSON(protocol.JoinAck{RoomID: roomString(cmd.room), LastSeq: last}))}
	}
	if last != nil {
		r.LastSeq = *last
	}
	if cmd.lastSeq != nil {
		r.LastSeq = *cmd.lastSeq
		if replay.gap != "" {
			// What could be replayed was; the rest is the client's to fetch
			// (or to retry), then live events follow.
			r.After = [][]byte{s.resyncFrame(cmd.room, replay.last, replay.gap)}
		}
	}
	m.Resume(r)
	return sentReply, nil
}

// leaveRoom stops receiving the room on this connection (membership itself
// changes over REST). Leaving a room not joined here is acked too.
func (s *Service) leaveRoom(ctx context.Context, c *client, data json.RawMessage, _ string) (json.RawMessage, error) {
	cmd, err := parseRoom(data)
	if err != nil {
		return nil, err
	}
	if m, ok := c.rooms[cmd.room]; ok {
		delete(c.rooms, cmd.room)
		if err := s.hub.Leave(ctx, m); err != nil {
			s.log.WarnContext(ctx, "unsubscribe room", "room_id", cmd.room, "err", err)
		}
	}
	s.stopTyping(ctx, c, cmd.room)
	return mustJSON(protocol.LeaveAck{RoomID: roomString(cmd.room)}), nil
}

// sendMessage produces message_created and acks with the record's offset
// once Kafka stored it. A repeated clientMsgId gets the first ack back.
func (s *Service) sendMessage(ctx context.Context, c *client, data json.RawMessage, _ string) (json.RawMessage, error) {
	start := time.Now()
	cmd, err := parseSend(data)
	if err != nil {
		return nil, err
	}
	if _, err := s.requireMember(ctx, cmd.room, c.userID); err != nil {
		return nil, err
	}
	id, err := uuid.NewV7()
	if err != nil {
		return nil, fmt.Errorf("message id: %w", err)
	}
	var dedupeKey string
	if cmd.clientMsgID != "" {
		dedupeKey = s.keys.Dedupe(c.userID, cmd.clientMsgID)
	}
	if first, err := s.reserve(ctx, dedupeKey, id.String(), author{room: cmd.room, user: c.userID}); err != nil || first != nil {
		return first, err
	}
	// Microseconds: what PostgreSQL keeps, so REST history shows the same time.
	at := time.Now().UTC().Truncate(time.Microsecond)
	seq, err := s.produce(ctx, &events.Event{
		Type: events.MessageCreated, RoomID: cmd.room, UserID: c.userID, Username: c.username,
		MessageID: id.String(), Content: cmd.content, MessageType: string(cmd.typ),
		Metadata: cmd.metadata, ClientMsgID: cmd.clientMsgID, At: at,
	})
	if err != nil {
		if dedupeKey != "" {
			// Let the client retry with the same clientMsgId.
			if derr := s.rdb.Del(context.WithoutCancel(ctx), dedupeKey).Err(); derr != nil {
				s.log.WarnContext(ctx, "drop dedupe marker", "err", derr)
			}
		}
		return nil, err
	}
	// The message is what the typing was for.
	s.stopTyping(ctx, c, cmd.room)
	ack := mustJSON(protocol.SendAck{ID: id.String(), RoomID: roomString(cmd.room), Seq: seq, ClientMsgID: cmd.clientMsgID, CreatedAt: at})
	if dedupeKey != "" {
		s.acks.record(ctx, dedupeKey, ack)
	}
	s.metrics.sendAck.Observe(time.Since(start).Seconds())
	return ack, nil
}

// reserve, in one round trip before the message is produced, records its
// author (so an edit right after the ack finds it, though the row may not
// be persisted yet) and claims the clientMsgId when there is one. It
// returns the first ack when the clientMsgId was used before. Without a
// clientMsgId a Redis failure only degrades the author check (edits fall
// back to PostgreSQL); with one the send is refused, as it cannot be
// deduplicated. An author recorded for a send that then fails names a
// message id no one was given, and expires.
func (s *Service) reserve(ctx context.Context, dedupeKey, messageID string, a author) (json.RawMessage, error) {
	pipe := s.rdb.Pipeline()
	pipe.Set(ctx, s.keys.MessageAuthor(messageID), a.String(), s.cfg.AuthorTTL)
	var claim *goredis.BoolCmd
	if dedupeKey != "" {
		claim = pipe.SetNX(ctx, dedupeKey, dedupePending, s.cfg.DedupePendingTTL)
	}
	_, err := pipe.Exec(ctx)
	if claim != nil && claim.Err() != nil {
		return nil, chat.Wrap(chat.CodeUnavailable, claim.Err(), "could not check clientMsgId; retry")
	}
	if err != nil {
		s.log.WarnContext(ctx, "record author in redis", "message_id", messageID, "err", err)
	}
	if claim == nil || claim.Val() {
		return nil, nil
	}
	// Used before, or in flight: the first send's ack, once there is one.
	return s.claimClientMsgID(ctx, dedupeKey)
}

// claimClientMsgID sets the pending marker of a clientMsgId. It returns the
// first ack when the id was already used, and (nil, nil) when this send may
// go ahead. While the first send is in flight it waits up to pendingWait for
// its ack, then answers CONFLICT (retry).
func (s *Service) claimClientMsgID(ctx context.Context, key string) (json.RawMessage, error) {
	deadline := time.Now().Add(pendingWait)
	for {
		ack, err := s.tryClaim(ctx, key)
		if err == nil || chat.ErrorCode(err) != chat.CodeConflict || time.Now().After(deadline) {
			return ack, err
		}
		select {
		case <-ctx.Done():
			return nil, err
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// tryClaim is one attempt of claimClientMsgID.
func (s *Service) tryClaim(ctx context.Context, key string) (json.RawMessage, error) {
	for range 3 {
		ok, err := s.rdb.SetNX(ctx, key, dedupePending, s.cfg.DedupePendingTTL).Result()
		if err != nil {
			return nil, chat.Wrap(chat.CodeUnavailable, err, "could not check clientMsgId; retry")
		}
		if ok {
			return nil, nil
		}
		v, err := s.rdb.Get(ctx, key).Result()
		if errors.Is(err, goredis.Nil) {
			continue // expired or dropped in between: try to claim again
		}
		if err != nil {
			return nil, chat.Wrap(chat.CodeUnavailable, err, "could not check clientMsgId; retry")
		}
		if v == dedupePending {
			return nil, chat.Errorf(chat.CodeConflict, "send in progress; retry")
		}
		return json.RawMessage(v), nil
	}
	return nil, chat.Errorf(chat.CodeConflict, "send in progress; retry")
}

// editMessage: the author only; produces message_edited.
func (s *Service) editMessage(ctx context.Context, c *client, data json.RawMessage, _ string) (json.RawMessage, error) {
	cmd, err := parseEdit(data)
	if err != nil {
		return nil, err
	}
	if _, err := s.requireMember(ctx, cmd.room, c.userID); err != nil {
		return nil, err
	}
	a, err := s.existingMessage(ctx, cmd.room, cmd.message)
	if err != nil {
		return nil, err
	}
	if a.user != c.userID {
		return nil, chat.Errorf(chat.CodeForbidden, "only the author can edit a message")
	}
	seq, err := s.produce(ctx, &events.Event{
		Type: events.MessageEdited, RoomID: cmd.room, UserID: c.userID, Username: c.username,
		MessageID: cmd.message, Content: cmd.content, At: time.Now().UTC().Truncate(time.Microsecond),
	})
	if err != nil {
		return nil, err
	}
	return mustJSON(protocol.MessageAck{MessageID: cmd.message, Seq: seq}), nil
}

// deleteMessage: the author or a room admin; produces message_deleted.
func (s *Service) deleteMessage(ctx context.Context, c *client, data json.RawMessage, _ string) (json.RawMessage, error) {
	cmd, err := parseDelete(data)
	if err != nil {
		return nil, err
	}
	role, err := s.requireMember(ctx, cmd.room, c.userID)
	if err != nil {
		return nil, err
	}
	a, err := s.existingMessage(ctx, cmd.room, cmd.message)
	if err != nil {
		return nil, err
	}
	if a.user != c.userID && role != chat.RoleAdmin {
		return nil, chat.Errorf(chat.CodeForbidden, "only the author or a room admin can delete a message")
	}
	seq, err := s.produce(ctx, &events.Event{
		Type: events.MessageDeleted, RoomID: cmd.room, UserID: c.userID, Username: c.username,
		MessageID: cmd.message, At: time.Now().UTC().Truncate(time.Microsecond),
	})
	if err != nil {
		return nil, err
	}
	a.deleted = true
	if err := s.rdb.Set(context.WithoutCancel(ctx), s.keys.MessageAuthor(cmd.message), a.String(), s.cfg.AuthorTTL).Err(); err != nil {
		s.log.WarnContext(ctx, "mark message deleted in redis", "message_id", cmd.message, "err", err)
	}
	return mustJSON(protocol.MessageAck{MessageID: cmd.message, Seq: seq}), nil
}

// existingMessage returns the author of a message of room that is not
// deleted, or NOT_FOUND.
func (s *Service) existingMessage(ctx context.Context, room int64, messageID string) (author, error) {
	a, err := s.messageAuthor(ctx, messageID)
	if err != nil {
		return author{}, err
	}
	if a.room != room || a.deleted {
		return author{}, chat.Errorf(chat.CodeNotFound, "message not found")
	}
	return a, nil
}

// markRead: a member produces read_marked up to seq.
func (s *Service) markRead(ctx context.Context, c *client, data json.RawMessage, _ string) (json.RawMessage, error) {
	cmd, err := parseRead(data)
	if err != nil {
		return nil, err
	}
	if _, err := s.requireMember(ctx, cmd.room, c.userID); err != nil {
		return nil, err
	}
	seq, err := s.produce(ctx, &events.Event{
		Type: events.ReadMarked, RoomID: cmd.room, UserID: c.userID, Username: c.username,
		ReadSeq: cmd.seq, At: time.Now().UTC().Truncate(time.Microsecond),
	})
	if err != nil {
		return nil, err
	}
	return mustJSON(protocol.ReadAck{Seq: seq}), nil
}

// typingStart starts, or renews, the user's typing in a room through the
// presence service, which broadcasts only the start and later the stop
// (typing_stop, a message, leave_room, disconnect or TYPING_TTL expiry).
func (s *Service) typingStart(ctx context.Context, c *client, data json.RawMessage, _ string) (json.RawMessage, error) {
	cmd, err := parseRoom(data)
	if err != nil {
		return nil, err
	}
	if _, err := s.requireMember(ctx, cmd.room, c.userID); err != nil {
		return nil, err
	}
	if err := s.startTyping(ctx, c, cmd.room); err != nil {
		return nil, err
	}
	return emptyAck, nil
}

// typingStop ends the user's typing in a room (started on any of their
// connections); a no-op for presence when they were not typing.
func (s *Service) typingStop(ctx context.Context, c *client, data json.RawMessage, _ string) (json.RawMessage, error) {
	cmd, err := parseRoom(data)
	if err != nil {
		return nil, err
	}
	if _, err := s.requireMember(ctx, cmd.room, c.userID); err != nil {
		return nil, err
	}
	delete(c.typing, cmd.room)
	if err := s.pub.TypingStop(ctx, cmd.room, c.userID, c.presName); err != nil {
		return nil, chat.Wrap(chat.CodeUnavailable, err, "could not publish typing; retry")
	}
	return emptyAck, nil
}

// produce appends e to the room log through the breaker and returns its
// seq. Kafka down, slow past SendTimeout, or the breaker open is UNAVAILABLE:
// nothing is acked that Kafka has not stored.
func (s *Service) produce(ctx context.Context, e *events.Event) (int64, error) {
	ctx, cancel := context.WithTimeout(ctx, s.cfg.SendTimeout)
	defer cancel()
	seq, err := s.breaker.Execute(func() (int64, error) {
		_, seq, err := s.prod.Publish(ctx, e)
		return seq, err
	})
	switch {
	case err == nil:
		return seq, nil
	case errors.Is(err, gobreaker.ErrOpenState), errors.Is(err, gobreaker.ErrTooManyRequests):
		return 0, chat.Wrap(chat.CodeUnavailable, err, "message log unavailable; retry later")
	default:
		return 0, chat.Wrap(chat.CodeUnavailable, err, "could not store the event; retry")
	}
}

// joinChannel makes the user a member of a channel through the api (the
// gateway never writes PostgreSQL), forwarding the user's own token.
func (s *Service) joinChannel(ctx context.Context, room int64, token string) error {
	url := strings.TrimSuffix(s.cfg.APIURL, "/") + "/api/rooms/" + roomString(room) + "/join"
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, nil)
	if err != nil {
		return fmt.Errorf("api request: %w", err)
	}
	req.Header.Set("Authorization", "Bearer "+token)
	s.tel.Propagator.Inject(ctx, propagation.HeaderCarrier(req.Header))
	resp, err := s.api.Do(req)
	if err != nil {
		return chat.Wrap(chat.CodeUnavailable, err, "could not join the channel; retry")
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	if resp.StatusCode >= 200 && resp.StatusCode < 300 {
		return nil
	}
	var eb web.ErrorBody
	if json.Unmarshal(body, &eb) == nil {
		switch eb.Error.Code {
		case chat.CodeNotFound, chat.CodeForbidden, chat.CodeUnauthorized, chat.CodeBadRequest:
			return chat.Errorf(eb.Error.Code, "%s", eb.Error.Message)
		}
	}
	return chat.Wrap(chat.CodeUnavailable, fmt.Errorf("api join: status %d: %s", resp.StatusCode, truncate(string(body), 200)), "could not join the channel; retry")
}
