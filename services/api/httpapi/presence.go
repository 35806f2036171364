package httpapi

import (
	"context"
	"fmt"
	"time"

	"github.com/gofiber/fiber/v2"
	"gorm.io/gorm"

	"relay/pkg/chat"
	"relay/pkg/presence"
	"relay/pkg/store"
	"relay/services/api/internal/rest"
)

// PresenceReader reads the presence state the presence service keeps in
// Redis; *presence.Reader on the api's Redis client is the production
// implementation.
type PresenceReader interface {
	// Users returns the presence of each of ids, in the same order.
	Users(ctx context.Context, ids []int64) ([]presence.Status, error)
	// Typing returns who is typing in roomID.
	Typing(ctx context.Context, roomID int64) ([]presence.Typist, error)
}

var _ PresenceReader = (*presence.Reader)(nil)

// WithPresenceReader makes the service read presence through r instead of
// a presence.Reader on its own Redis client.
func WithPresenceReader(r PresenceReader) Option {
	return func(s *Service) { s.presence = r }
}

// userPresence returns a user's online status and last seen to any signed-in
// user.
func (s *Service) userPresence(c *fiber.Ctx) error {
	id, err := rest.PathID(c, "user")
	if err != nil {
		return err
	}
	ctx := c.UserContext()
	u, err := store.UserByID(ctx, s.db, id)
	if err != nil {
		return err
	}
	sts, err := s.readPresence(ctx, []int64{id})
	if err != nil {
		return err
	}
	st := sts[0]
	if st.LastSeen == nil && u.LastSeen != nil {
		t := u.LastSeen.UTC()
		st.LastSeen = &t
	}
	return c.JSON(presenceJSON{UserID: rest.IDString(id), Status: st.Status, LastSeen: st.LastSeen})
}

// roomPresence returns the status of every member of a room and who is
// typing in it, to its members.
func (s *Service) roomPresence(c *fiber.Ctx) error {
	id, err := rest.PathID(c, "room")
	if err != nil {
		return err
	}
	ctx := c.UserContext()
	if _, err := store.Membership(ctx, s.db, id, rest.User(c).ID); err != nil {
		return err
	}
	members, err := store.ListMembers(ctx, s.db, id)
	if err != nil {
		return err
	}
	ids := make([]int64, len(members))
	for i := range members {
		ids[i] = members[i].UserID
	}
	sts, err := s.readPresence(ctx, ids)
	if err != nil {
		return err
	}
	typists, err := s.presence.Typing(ctx, id)
	if err != nil {
		return s.presenceUnavailable(ctx, err)
	}
	var unseen []int64
	for _, st := range sts {
		if st.LastSeen == nil {
			unseen = append(unseen, st.UserID)
		}
	}
	stored, err := storedLastSeen(ctx, s.db, unseen)
	if err != nil {
		return err
	}

	out := roomPresenceJSON{RoomID: rest.IDString(id), Online: make([]memberPresenceJSON, len(members)), Typing: []typistJSON{}}
	names := make(map[int64]string, len(members))
	for i := range members {
		m := &members[i]
		names[m.UserID] = m.Username
		lastSeen := sts[i].LastSeen
		if lastSeen == nil {
			if t, ok := stored[m.UserID]; ok {
				lastSeen = &t
			}
		}
		out.Online[i] = memberPresenceJSON{UserID: rest.IDString(m.UserID), Username: m.Username, Status: sts[i].Status, LastSeen: lastSeen}
	}
	// Typing state is keyed by room only: someone who left the room while
	// typing stays there until it expires, and is not shown.
	for _, ty := range typists {
		if name, ok := names[ty.UserID]; ok {
			out.Typing = append(out.Typing, typistJSON{UserID: rest.IDString(ty.UserID), Username: name})
		}
	}
	return c.JSON(out)
}

// readPresence reads the presence of ids; a Redis failure is UNAVAILABLE.
func (s *Service) readPresence(ctx context.Context, ids []int64) ([]presence.Status, error) {
	sts, err := s.presence.Users(ctx, ids)
	if err != nil {
		return nil, s.presenceUnavailable(ctx, err)
	}
	if len(sts) != len(ids) {
		// A reader breaking its contract is a bug, not an outage.
		return nil, fmt.Errorf("presence: %d statuses for %d users", len(sts), len(ids))
	}
	return sts, nil
}

// presenceUnavailable logs a failed presence read (the error handler logs
// only INTERNAL errors) and returns it as UNAVAILABLE.
func (s *Service) presenceUnavailable(ctx context.Context, err error) error {
	s.log.WarnContext(ctx, "presence read failed", "err", err)
	return chat.Wrap(chat.CodeUnavailable, err, "presence is unavailable; retry later")
}

// storedLastSeen returns users.last_seen of those of ids that have one. The
// presence service keeps that column in step with Redis, so it only tells
// something Redis does not after Redis lost its state.
func storedLastSeen(ctx context.Context, db *gorm.DB, ids []int64) (map[int64]time.Time, error) {
	out := map[int64]time.Time{}
	if len(ids) == 0 {
		return out, nil
	}
	var rows []struct {
		ID       int64
		LastSeen time.Time
	}
	err := db.WithContext(ctx).Model(&store.User{}).Select("id", "last_seen").
		Where("id IN ? AND last_seen IS NOT NULL", ids).Scan(&rows).Error
	if err != nil {
		return nil, fmt.Errorf("api: users' last seen: %w", err)
	}
	for _, r := range rows {
		out[r.ID] = r.LastSeen.UTC()
	}
	return out, nil
}
