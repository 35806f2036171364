package store

import (
	"context"
	"fmt"

	"gorm.io/gorm"

	"relay/pkg/chat"
)

// The reads the gateway checks access with (read-only; it writes
// nothing): a user's role in a room, who wrote a message, and the rooms and
// members presence_update is routed by.

// Access is a room's type and a user's role in it.
type Access struct {
	// RoomType is the room's type.
	RoomType chat.RoomType
	// Role is empty when the user is not a member.
	Role chat.Role
	// Active is false for an archived room (it takes no messages).
	Active bool
}

// RoomAccess reads the room's type and the user's role in it; found is
// false for an unknown room.
func RoomAccess(ctx context.Context, db *gorm.DB, roomID, userID int64) (a Access, found bool, err error) {
	var rows []struct {
		Type     string
		IsActive bool
		Role     *string
	}
	err = db.WithContext(ctx).Raw(`SELECT r.type, r.is_active, m.role FROM rooms r
		LEFT JOIN room_members m ON m.room_id = r.id AND m.user_id = ?
		WHERE r.id = ?`, userID, roomID).Scan(&rows).Error
	if err != nil {
		return Access{}, false, fmt.Errorf("store: room access: %w", err)
	}
	if len(rows) == 0 {
		return Access{}, false, nil
	}
	a.RoomType = chat.RoomType(rows[0].Type)
	a.Active = rows[0].IsActive
	if rows[0].Role != nil {
		a.Role = chat.Role(*rows[0].Role)
	}
	return a, true, nil
}

// Authorship is where a message is and who wrote it.
type Authorship struct {
	// RoomID and UserID are the message's room and author.
	RoomID, UserID int64
	// Deleted is set once the message was deleted.
	Deleted bool
}

// MessageAuthorship reads who wrote a message; found is false for an
// unknown (or not yet persisted) message.
func MessageAuthorship(ctx context.Context, db *gorm.DB, messageID string) (a Authorship, found bool, err error) {
	var rows []struct {
		RoomID    int64
		UserID    int64
		IsDeleted bool
	}
	err = db.WithContext(ctx).Raw(`SELECT room_id, user_id, is_deleted FROM messages WHERE id = ?`, messageID).Scan(&rows).Error
	if err != nil {
		return Authorship{}, false, fmt.Errorf("store: message author: %w", err)
	}
	if len(rows) == 0 {
		return Authorship{}, false, nil
	}
	return Authorship{RoomID: rows[0].RoomID, UserID: rows[0].UserID, Deleted: rows[0].IsDeleted}, true, nil
}

// RoomsOf returns the ids of the rooms the user is a member of.
func RoomsOf(ctx context.Context, db *gorm.DB, userID int64) ([]int64, error) {
	var rooms []int64
	if err := db.WithContext(ctx).Raw(`SELECT room_id FROM room_members WHERE user_id = ?`, userID).Scan(&rooms).Error; err != nil {
		return nil, fmt.Errorf("store: rooms of user %d: %w", userID, err)
	}
	return rooms, nil
}

// MembersOf returns the member ids of each of the rooms that have at most
// maxMembers members, in one query; larger rooms are left out (their
// members are not read at all).
func MembersOf(ctx context.Context, db *gorm.DB, roomIDs []int64, maxMembers int) (map[int64][]int64, error) {
	var rows []struct {
		RoomID int64
		UserID int64
	}
	err := db.WithContext(ctx).Raw(`SELECT room_id, user_id FROM room_members WHERE room_id IN (
		SELECT room_id FROM room_members WHERE room_id IN ? GROUP BY room_id HAVING count(*) <= ?)`,
		roomIDs, maxMembers).Scan(&rows).Error
	if err != nil {
		return nil, fmt.Errorf("store: members of %d rooms: %w", len(roomIDs), err)
	}
	byRoom := make(map[int64][]int64, len(roomIDs))
	for _, row := range rows {
		byRoom[row.RoomID] = append(byRoom[row.RoomID], row.UserID)
	}
	return byRoom, nil
}
