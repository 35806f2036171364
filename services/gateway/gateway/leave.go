package gateway

import (
	"encoding/json"
	"errors"
	"strconv"

	"relay/pkg/presence"
	"relay/pkg/protocol"
	"relay/pkg/redis"
)

// userLeft ends what this instance grants a user once the room's user_left
// publication was queued to the local members, so the leaver's connections
// still get it and learn why the room stops: the cached membership (the
// next send is checked against PostgreSQL, which says FORBIDDEN), the
// leaver's memberships here (nothing more of the room is queued to them)
// and their typing. It runs on the room's fan-out goroutine, so what does
// I/O (the registry's unsubscribe, the typing stop) runs on its own.
func (s *Service) userLeft(p *redis.Publication) {
	var f struct {
		Data protocol.UserLeft `json:"data"`
	}
	if json.Unmarshal(p.Frame, &f) != nil {
		return
	}
	user, err := strconv.ParseInt(f.Data.UserID, 10, 64)
	if err != nil {
		return
	}
	s.roles.Remove(memberKey{p.RoomID, user})
	members := s.hub.Evict(p.RoomID, user)
	if len(members) == 0 {
		return
	}
	go func() {
		// Bounded by the service: Close cancels base.
		ctx := s.base
		name := ""
		for _, m := range members {
			if c, ok := m.Conn().(*client); ok {
				name = c.presName
			}
			if err := s.hub.Leave(ctx, m); err != nil {
				s.log.WarnContext(ctx, "leave room after user_left", "room_id", p.RoomID, "user_id", user, "err", err)
			}
		}
		// Presence ends typing per (room, user): one stop covers every
		// connection; a no-op when the user was not typing.
		if err := s.pub.TypingStop(ctx, p.RoomID, user, name); err != nil && !errors.Is(err, presence.ErrClosed) {
			s.log.WarnContext(ctx, "typing stop after user_left not sent; it expires instead", "room_id", p.RoomID, "err", err)
		}
	}()
}
