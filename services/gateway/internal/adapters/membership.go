// Package adapters are the gateway's dependencies behind what its
// commands need: membership (PostgreSQL reads behind a cache), message
// authors and clientMsgId dedupe (Redis, then PostgreSQL), the Kafka
// producer behind its breaker, and the api's channel join.
package adapters

import (
	"context"
	"fmt"
	"time"

	"github.com/hashicorp/golang-lru/v2/expirable"
	"gorm.io/gorm"

	"relay/pkg/chat"
)

// Access is what the gateway knows of a user in a room.
type Access struct {
	// RoomType is the room's type.
	RoomType chat.RoomType
	// Role is empty when the user is not a member.
	Role chat.Role
}

// memberKey identifies a cached membership.
type memberKey struct{ room, user int64 }

// Membership answers membership checks from PostgreSQL (read-only), with
// positive answers cached for a TTL.
type Membership struct {
	db *gorm.DB
	// roles caches positive membership checks: (room, user) → role.
	roles *expirable.LRU[memberKey, chat.Role]
	// active caches whether a room takes messages (not archived), for the
	// same TTL: archiving takes effect within it.
	active *expirable.LRU[int64, bool]
}

// NewMembership caches up to size positive answers for ttl.
func NewMembership(db *gorm.DB, size int, ttl time.Duration) *Membership {
	return &Membership{db: db, roles: expirable.NewLRU[memberKey, chat.Role](size, nil, ttl),
		active: expirable.NewLRU[int64, bool](size, nil, ttl)}
}

// Cached reports whether the user's membership of room is cached.
func (m *Membership) Cached(room, user int64) bool {
	_, ok := m.roles.Get(memberKey{room, user})
	return ok
}

// Remember caches that user has role in room.
func (m *Membership) Remember(room, user int64, role chat.Role) {
	m.roles.Add(memberKey{room, user}, role)
}

// Forget drops the cached membership (the user left the room).
func (m *Membership) Forget(room, user int64) { m.roles.Remove(memberKey{room, user}) }

// Lookup reads the room's type and the user's role (read-only), caching
// a membership it finds. An unknown room is NOT_FOUND.
func (m *Membership) Lookup(ctx context.Context, room, user int64) (Access, error) {
	var rows []struct {
		Type     string
		IsActive bool
		Role     *string
	}
	err := m.db.WithContext(ctx).Raw(`SELECT r.type, r.is_active, m.role FROM rooms r
		LEFT JOIN room_members m ON m.room_id = r.id AND m.user_id = ?
		WHERE r.id = ?`, user, room).Scan(&rows).Error
	if err != nil {
		return Access{}, chat.Wrap(chat.CodeUnavailable, fmt.Errorf("membership: %w", err), "membership check failed; retry")
	}
	if len(rows) == 0 {
		return Access{}, chat.Errorf(chat.CodeNotFound, "room %d not found", room)
	}
	a := Access{RoomType: chat.RoomType(rows[0].Type)}
	m.active.Add(room, rows[0].IsActive)
	if rows[0].Role != nil {
		a.Role = chat.Role(*rows[0].Role)
		m.Remember(room, user, a.Role)
	}
	return a, nil
}

// Require returns the user's role in room: NOT_FOUND for an unknown
// room, FORBIDDEN for a non-member. Positive answers are cached for
// MembershipTTL; negative ones are not, so a new member is never refused.
func (m *Membership) Require(ctx context.Context, room, user int64) (chat.Role, error) {
	if role, ok := m.roles.Get(memberKey{room, user}); ok {
		return role, nil
	}
	a, err := m.Lookup(ctx, room, user)
	if err != nil {
		return "", err
	}
	if a.Role == "" {
		return "", chat.Errorf(chat.CodeForbidden, "not a member of room %d", room)
	}
	return a.Role, nil
}

// Writable returns FORBIDDEN when room is archived (rooms.is_active false),
// NOT_FOUND when it does not exist. The answer is cached like memberships.
func (m *Membership) Writable(ctx context.Context, room int64) error {
	active, ok := m.active.Get(room)
	if !ok {
		var rows []bool
		err := m.db.WithContext(ctx).Raw(`SELECT is_active FROM rooms WHERE id = ?`, room).Scan(&rows).Error
		if err != nil {
			return chat.Wrap(chat.CodeUnavailable, fmt.Errorf("room state: %w", err), "room check failed; retry")
		}
		if len(rows) == 0 {
			return chat.Errorf(chat.CodeNotFound, "room %d not found", room)
		}
		active = rows[0]
		m.active.Add(room, active)
	}
	if !active {
		return chat.Errorf(chat.CodeForbidden, "room %d is archived", room)
	}
	return nil
}
