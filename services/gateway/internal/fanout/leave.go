package fanout

import (
	"encoding/json"
	"errors"
	"strconv"

	"relay/pkg/presence"
	"relay/pkg/protocol"
	"relay/pkg/redis"
	"relay/services/gateway/internal/metrics"
)

// membershipEvent runs before a publication is queued to the local members.
// A user_joined or user_left changes presence routing, and a user_left
// drops the leaver's cached membership: both before the members see the
// event, so a send the leaver makes once told is checked against
// PostgreSQL (which says FORBIDDEN), never against the stale cache.
func (f *Fanout) membershipEvent(p *redis.Publication) {
	event := metrics.FrameEvent(p.Frame)
	if event != protocol.EventUserJoined && event != protocol.EventUserLeft {
		return
	}
	if f.o.Watcher != nil {
		f.o.Watcher.MembershipChanged(p.RoomID, p.Frame)
	}
	if user, ok := leaver(p); ok && f.o.Roles != nil {
		f.o.Roles.Forget(p.RoomID, user)
	}
}

// leaver is the user a user_left publication is about.
func leaver(p *redis.Publication) (int64, bool) {
	if metrics.FrameEvent(p.Frame) != protocol.EventUserLeft {
		return 0, false
	}
	var f struct {
		Data protocol.UserLeft `json:"data"`
	}
	if json.Unmarshal(p.Frame, &f) != nil {
		return 0, false
	}
	user, err := strconv.ParseInt(f.Data.UserID, 10, 64)
	return user, err == nil
}

// userLeft ends the leaver's memberships here once the room's user_left
// publication was queued to the local members, so the leaver's connections
// still get it and learn why the room stops: nothing more of the room is
// queued to them, and their typing ends. It runs on the room's fan-out
// goroutine, so what does I/O (the registry's unsubscribe, the typing
// stop) runs on a goroutine of its own, which Close waits for.
func (f *Fanout) userLeft(p *redis.Publication) {
	user, ok := leaver(p)
	if !ok {
		return
	}
	members := f.hub.Evict(p.RoomID, user)
	if len(members) == 0 {
		return
	}
	f.leaves.Go(func() {
		// Bounded by the fan-out: Close cancels ctx.
		ctx := f.ctx
		name := ""
		for _, m := range members {
			if c, ok := m.Conn().(named); ok {
				name = c.PresenceName()
			}
			if err := f.hub.Leave(ctx, m); err != nil {
				f.log.WarnContext(ctx, "leave room after user_left", "room_id", p.RoomID, "user_id", user, "err", err)
			}
		}
		if f.o.Typing == nil {
			return
		}
		// Presence ends typing per (room, user): one stop covers every
		// connection; a no-op when the user was not typing.
		if err := f.o.Typing.TypingStop(ctx, p.RoomID, user, name); err != nil && !errors.Is(err, presence.ErrClosed) {
			f.log.WarnContext(ctx, "typing stop after user_left not sent; it expires instead", "room_id", p.RoomID, "err", err)
		}
	})
}

// named is a connection that knows its user's presence name.
type named interface{ PresenceName() string }
