package gateway

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"

	goredis "github.com/redis/go-redis/v9"

	"relay/pkg/chat"
)

// roomAccess is what the gateway knows of a user in a room.
type roomAccess struct {
	roomType chat.RoomType
	// role is empty when the user is not a member.
	role chat.Role
}

// lookupAccess reads the room's type and the user's role (read-only).
// An unknown room is NOT_FOUND.
func (s *Service) lookupAccess(ctx context.Context, room, user int64) (roomAccess, error) {
	var rows []struct {
		Type string
		Role *string
	}
	err := s.db.WithContext(ctx).Raw(`SELECT r.type, m.role FROM rooms r
		LEFT JOIN room_members m ON m.room_id = r.id AND m.user_id = ?
		WHERE r.id = ?`, user, room).Scan(&rows).Error
	if err != nil {
		return roomAccess{}, chat.Wrap(chat.CodeUnavailable, fmt.Errorf("membership: %w", err), "membership check failed; retry")
	}
	if len(rows) == 0 {
		return roomAccess{}, chat.Errorf(chat.CodeNotFound, "room %d not found", room)
	}
	a := roomAccess{roomType: chat.RoomType(rows[0].Type)}
	if rows[0].Role != nil {
		a.role = chat.Role(*rows[0].Role)
		s.roles.Add(memberKey{room, user}, a.role)
	}
	return a, nil
}

// requireMember returns the user's role in room: NOT_FOUND for an unknown
// room, FORBIDDEN for a non-member. Positive answers are cached for
// MembershipTTL; negative ones are not, so a new member is never refused.
func (s *Service) requireMember(ctx context.Context, room, user int64) (chat.Role, error) {
	if role, ok := s.roles.Get(memberKey{room, user}); ok {
		return role, nil
	}
	a, err := s.lookupAccess(ctx, room, user)
	if err != nil {
		return "", err
	}
	if a.role == "" {
		return "", chat.Errorf(chat.CodeForbidden, "not a member of room %d", room)
	}
	return a.role, nil
}

// author is who wrote a message, and where.
type author struct {
	room, user int64
	deleted    bool
}

func (a author) String() string {
	v := strconv.FormatInt(a.room, 10) + ":" + strconv.FormatInt(a.user, 10)
	if a.deleted {
		v += ":deleted"
	}
	return v
}

func parseAuthor(v string) (author, bool) {
	parts := strings.Split(v, ":")
	if len(parts) < 2 || len(parts) > 3 {
		return author{}, false
	}
	room, err1 := strconv.ParseInt(parts[0], 10, 64)
	user, err2 := strconv.ParseInt(parts[1], 10, 64)
	if err1 != nil || err2 != nil {
		return author{}, false
	}
	return author{room: room, user: user, deleted: len(parts) == 3 && parts[2] == "deleted"}, true
}

// messageAuthor finds a message's author: first in Redis (written at ack
// time, since the row may not be persisted yet), then in PostgreSQL. An
// unknown message is NOT_FOUND.
func (s *Service) messageAuthor(ctx context.Context, messageID string) (author, error) {
	v, err := s.rdb.Get(ctx, s.keys.MessageAuthor(messageID)).Result()
	switch {
	case err == nil:
		if a, ok := parseAuthor(v); ok {
			return a, nil
		}
		s.log.WarnContext(ctx, "bad author key", "message_id", messageID, "value", v)
	case !errors.Is(err, goredis.Nil):
		return author{}, chat.Wrap(chat.CodeUnavailable, err, "authorship check failed; retry")
	}
	var rows []struct {
		RoomID    int64
		UserID    int64
		IsDeleted bool
	}
	err = s.db.WithContext(ctx).Raw(`SELECT room_id, user_id, is_deleted FROM messages WHERE id = ?`, messageID).Scan(&rows).Error
	if err != nil {
		return author{}, chat.Wrap(chat.CodeUnavailable, fmt.Errorf("author: %w", err), "authorship check failed; retry")
	}
	if len(rows) == 0 {
		return author{}, chat.Errorf(chat.CodeNotFound, "message not found")
	}
	return author{room: rows[0].RoomID, user: rows[0].UserID, deleted: rows[0].IsDeleted}, nil
}
