package commands

import (
	"context"
	"encoding/json"
	"time"

	"relay/pkg/chat"
	"relay/pkg/protocol"
	"relay/services/gateway/internal/conn"
	"relay/services/gateway/internal/fanout"
	"relay/services/gateway/internal/fanout/hub"
	"relay/services/gateway/internal/frame"
)

// joinRoom: a member (or anyone, for a channel, which makes them a member
// through the api) starts receiving the room on this connection. With
// lastSeq, what the client missed is replayed from the recent history
// before live events.
func (s *Handler) joinRoom(ctx context.Context, c *conn.Client, data json.RawMessage, ref string) (json.RawMessage, error) {
	cmd, err := parseJoin(data)
	if err != nil {
		return nil, err
	}
	// A join with lastSeq may replay up to REPLAY_LIMIT events: repeated,
	// it would make the gateway read and queue them over and over. The
	// connection's replay limit is asked before anything changes (a
	// refused rejoin keeps its membership); only a join that replayed
	// events counts against it.
	if cmd.lastSeq != nil {
		if wait := c.ReplayWait(); wait > 0 {
			return nil, chat.RateLimited(wait, "too many replays on this connection; join again after %s", wait.Round(time.Millisecond))
		}
	}
	if err := s.allow(ctx, s.o.Joins, c); err != nil {
		return nil, err
	}
	if m, ok := c.Rooms[cmd.room]; ok && cmd.lastSeq != nil {
		// A rejoin with lastSeq is a recovery request (the client saw a
		// gap): start a fresh membership that replays from lastSeq.
		delete(c.Rooms, cmd.room)
		if err := s.o.Rooms.Leave(ctx, m); err != nil {
			s.o.Log.WarnContext(ctx, "leave room for rejoin", "room_id", cmd.room, "err", err)
		}
	}
	if m, ok := c.Rooms[cmd.room]; ok && !m.Removed() {
		// Already receiving here: nothing changes.
		last, err := s.o.Rooms.LastSeq(ctx, cmd.room)
		if err != nil {
			return nil, chat.Wrap(chat.CodeUnavailable, err, "could not read the room position; retry")
		}
		return frame.MustJSON(protocol.JoinAck{RoomID: frame.RoomString(cmd.room), LastSeq: last}), nil
	}
	if len(c.Rooms) >= s.o.MaxRooms {
		// Memberships ended by a user_left still have their entry.
		for id, m := range c.Rooms {
			if m.Removed() {
				delete(c.Rooms, id)
			}
		}
	}
	if len(c.Rooms) >= s.o.MaxRooms {
		return nil, chat.Errorf(chat.CodeBadRequest, "at most %d rooms can be joined on one connection", s.o.MaxRooms)
	}
	if !s.o.Membership.Cached(cmd.room, c.UserID()) {
		a, err := s.o.Membership.Lookup(ctx, cmd.room, c.UserID())
		if err != nil {
			return nil, err
		}
		if a.Role == "" {
			if a.RoomType != chat.RoomChannel {
				return nil, chat.Errorf(chat.CodeForbidden, "not a member of room %d", cmd.room)
			}
			if err := s.o.Channels.Join(ctx, cmd.room, c.Token()); err != nil {
				return nil, err
			}
			s.o.Membership.Remember(cmd.room, c.UserID(), chat.RoleMember)
		}
	}

	jctx, cancel := context.WithTimeout(ctx, s.o.SendTimeout)
	defer cancel()
	m, err := s.o.Rooms.Join(jctx, cmd.room, c)
	if err != nil {
		return nil, chat.Wrap(chat.CodeUnavailable, err, "could not subscribe to the room; retry")
	}
	last, err := s.o.Rooms.LastSeq(ctx, cmd.room)
	var replay fanout.LogRead
	if err == nil {
		s.o.Rooms.Baseline(cmd.room, last)
		// Nothing to replay when the room has not moved past the client.
		if cmd.lastSeq != nil && (last == nil || *last > *cmd.lastSeq) {
			rctx, cancel := context.WithTimeout(ctx, s.o.SendTimeout)
			replay, err = s.o.Rooms.ReadLog(rctx, cmd.room, *cmd.lastSeq, last, s.o.ReplayLimit)
			cancel()
			if err == nil && (len(replay.Pubs) > 0 || replay.Gap != "") {
				c.TakeReplay()
			}
		}
	}
	if err != nil {
		_ = s.o.Rooms.Leave(context.WithoutCancel(ctx), m)
		return nil, chat.Wrap(chat.CodeUnavailable, err, "could not read the room history; retry")
	}
	if c.Rooms == nil {
		c.Rooms = make(map[int64]*hub.Member, 1)
	}
	c.Rooms[cmd.room] = m

	r := hub.Resume{LastSeq: -1, Replay: replay.Pubs}
	if ref != "" {
		r.Before = [][]byte{s.frame(protocol.EventAck, ref, frame.MustJSON(protocol.JoinAck{RoomID: frame.RoomString(cmd.room), LastSeq: last}))}
	}
	if last != nil {
		r.LastSeq = *last
	}
	if cmd.lastSeq != nil {
		r.LastSeq = *cmd.lastSeq
		if replay.Gap != "" {
			// What could be replayed was; the rest is the client's to fetch
			// (or to retry), then live events follow.
			r.After = [][]byte{s.o.Frames.Resync(cmd.room, replay.Last, replay.Gap)}
		}
	}
	m.Resume(r)
	return sentReply, nil
}

// leaveRoom stops receiving the room on this connection (membership itself
// changes over REST). Leaving a room not joined here is acked too.
func (s *Handler) leaveRoom(ctx context.Context, c *conn.Client, data json.RawMessage, _ string) (json.RawMessage, error) {
	cmd, err := parseRoom(data)
	if err != nil {
		return nil, err
	}
	if m, ok := c.Rooms[cmd.room]; ok {
		delete(c.Rooms, cmd.room)
		if err := s.o.Rooms.Leave(ctx, m); err != nil {
			s.o.Log.WarnContext(ctx, "unsubscribe room", "room_id", cmd.room, "err", err)
		}
	}
	s.o.Typing.StopTyping(ctx, c, cmd.room)
	return frame.MustJSON(protocol.LeaveAck{RoomID: frame.RoomString(cmd.room)}), nil
}
