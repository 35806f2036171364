package store

import (
	"context"
	"fmt"

	"gorm.io/gorm"

	"relay/pkg/chat"
	"relay/pkg/events"
)

// RoomPatch is a change to a room's settings; nil fields stay as they are.
type RoomPatch struct {
	// Name renames a group or channel (the caller validates it).
	Name *string
	// IsActive archives (false) or restores (true) the room.
	IsActive *bool
}

// actorRole returns actorID's role in roomID, locking the membership row
// until the transaction ends so the role cannot change underneath; a
// non-member is FORBIDDEN.
func actorRole(ctx context.Context, tx *gorm.DB, roomID, actorID int64) (chat.Role, error) {
	var roles []string
	err := tx.WithContext(ctx).Raw(`SELECT role FROM room_members WHERE room_id = ? AND user_id = ? FOR SHARE`,
		roomID, actorID).Scan(&roles).Error
	if err != nil {
		return "", fmt.Errorf("store: actor role: %w", err)
	}
	if len(roles) == 0 {
		return "", chat.Errorf(chat.CodeForbidden, "not a member of room %d", roomID)
	}
	return chat.Role(roles[0]), nil
}

// lockAsAdmin locks roomID's row (serialising the room's member changes)
// and checks that actorID is one of its admins and that the room is not a
// direct one: each refusal is FORBIDDEN with the caller's message; an
// unknown room is NOT_FOUND.
func lockAsAdmin(ctx context.Context, tx *gorm.DB, roomID, actorID int64, direct, notAdmin string) error {
	typ, err := roomType(ctx, tx, roomID, true)
	if err != nil {
		return err
	}
	role, err := actorRole(ctx, tx, roomID, actorID)
	if err != nil {
		return err
	}
	if typ == chat.RoomDirect {
		return chat.Errorf(chat.CodeForbidden, "%s", direct)
	}
	if role != chat.RoleAdmin {
		return chat.Errorf(chat.CodeForbidden, "%s", notAdmin)
	}
	return nil
}

// UpdateRoom applies p to roomID on behalf of actorID, who must be one of
// its admins (FORBIDDEN otherwise), and returns the room as the actor sees
// it. Direct rooms have no settings to change (FORBIDDEN); an unknown room
// is NOT_FOUND.
func UpdateRoom(ctx context.Context, db *gorm.DB, roomID, actorID int64, p RoomPatch) (*RoomView, error) {
	err := db.WithContext(ctx).Transaction(func(tx *gorm.DB) error {
		if err := lockAsAdmin(ctx, tx, roomID, actorID, "a direct room cannot be renamed or archived", "only room admins can change the room"); err != nil {
			return err
		}
		set := map[string]any{"updated_at": gorm.Expr("now()")}
		if p.Name != nil {
			set["name"] = *p.Name
		}
		if p.IsActive != nil {
			set["is_active"] = *p.IsActive
		}
		if err := tx.Model(&Room{}).Where("id = ?", roomID).Updates(set).Error; err != nil {
			return fmt.Errorf("store: update room %d: %w", roomID, err)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return RoomFor(ctx, db, roomID, actorID)
}

// SetMemberRole makes userID an admin or a plain member of roomID on behalf
// of actorID, who must be an admin. Demoting the room's last admin is a
// CONFLICT, so a room always has someone to manage it. Direct rooms have no
// roles to change (FORBIDDEN); a user who is not a member is NOT_FOUND.
func SetMemberRole(ctx context.Context, db *gorm.DB, roomID, actorID, userID int64, role chat.Role) (*Member, error) {
	if role != chat.RoleAdmin && role != chat.RoleMember {
		return nil, chat.Errorf(chat.CodeBadRequest, "role must be admin or member")
	}
	var m *Member
	err := db.WithContext(ctx).Transaction(func(tx *gorm.DB) error {
		// Locking the room serialises role changes and leaves, so two
		// admins demoting each other at once still leave one admin.
		err := lockAsAdmin(ctx, tx, roomID, actorID, "members of a direct room have no roles to change", "only room admins can change roles")
		if err != nil {
			return err
		}
		if m, err = member(ctx, tx, roomID, userID); err != nil {
			return err
		}
		if m.Role == role {
			return nil
		}
		if role == chat.RoleMember {
			var admins int64
			if err := tx.Raw(`SELECT count(*) FROM room_members WHERE room_id = ? AND role = 'admin'`, roomID).
				Scan(&admins).Error; err != nil {
				return fmt.Errorf("store: count admins: %w", err)
			}
			if admins <= 1 {
				return chat.Errorf(chat.CodeConflict, "the last admin of a room cannot be demoted; make someone else admin first")
			}
		}
		if err := tx.Exec(`UPDATE room_members SET role = ? WHERE room_id = ? AND user_id = ?`,
			string(role), roomID, userID).Error; err != nil {
			return fmt.Errorf("store: set role: %w", err)
		}
		m.Role = role
		return nil
	})
	if err != nil {
		return nil, err
	}
	return m, nil
}

// SetMuted sets userID's own mute setting in roomID; a non-member is
// FORBIDDEN and an unknown room NOT_FOUND.
func SetMuted(ctx context.Context, db *gorm.DB, roomID, userID int64, muted bool) (*Member, error) {
	if _, err := Membership(ctx, db, roomID, userID); err != nil {
		return nil, err
	}
	res := db.WithContext(ctx).Exec(`UPDATE room_members SET is_muted = ? WHERE room_id = ? AND user_id = ?`,
		muted, roomID, userID)
	if res.Error != nil {
		return nil, fmt.Errorf("store: set muted: %w", res.Error)
	}
	if res.RowsAffected == 0 {
		return nil, chat.Errorf(chat.CodeForbidden, "not a member of room %d", roomID)
	}
	return member(ctx, db, roomID, userID)
}

// RemoveMember removes userID from roomID on behalf of actorID. Removing
// oneself is leaving (LeaveRoom: the last admin hands the room on). Anyone
// else may be removed only by an admin (FORBIDDEN otherwise); the removal
// writes its member_left event (carrying trace) to the outbox in the same
// transaction. Since the actor is an admin and stays, the room keeps one.
// Direct rooms are FORBIDDEN; a user who is not a member is NOT_FOUND.
func RemoveMember(ctx context.Context, db *gorm.DB, roomID, actorID, userID int64, trace Trace) error {
	if actorID == userID {
		left, err := LeaveRoom(ctx, db, roomID, userID, trace)
		if err == nil && !left {
			return chat.Errorf(chat.CodeNotFound, "user %d is not a member of room %d", userID, roomID)
		}
		return err
	}
	return db.WithContext(ctx).Transaction(func(tx *gorm.DB) error {
		err := lockAsAdmin(ctx, tx, roomID, actorID, "members cannot be removed from a direct room", "only room admins can remove members")
		if err != nil {
			return err
		}
		var gone []Member
		err = tx.Raw(`DELETE FROM room_members m USING users u
			WHERE m.room_id = ? AND m.user_id = ? AND u.id = m.user_id
			RETURNING m.room_id, m.user_id, u.username, m.role`, roomID, userID).Scan(&gone).Error
		if err != nil {
			return fmt.Errorf("store: remove member: %w", err)
		}
		if len(gone) == 0 {
			return chat.Errorf(chat.CodeNotFound, "user %d is not a member of room %d", userID, roomID)
		}
		return insertOutbox(ctx, tx, trace, memberEvent(events.MemberLeft, &gone[0]))
	})
}
