package store

import (
	"context"
	"fmt"
	"strings"

	"gorm.io/gorm"

	"relay/pkg/chat"
)

// escapeLike escapes LIKE's wildcards in s, so user input matches literally.
func escapeLike(s string) string {
	return strings.NewReplacer(`\`, `\\`, `%`, `\%`, `_`, `\_`).Replace(s)
}

// SearchUsers returns up to limit users whose username starts with prefix
// (usernames are stored in lower case; prefix is lowered here), in username
// order.
func SearchUsers(ctx context.Context, db *gorm.DB, prefix string, limit int) ([]User, error) {
	users := []User{}
	err := db.WithContext(ctx).
		Where(`username LIKE ?`, escapeLike(strings.ToLower(prefix))+"%").
		Order("username").Limit(limit).Find(&users).Error
	if err != nil {
		return nil, fmt.Errorf("store: search users: %w", err)
	}
	return users, nil
}

// ProfilePatch is a change to a user's profile; nil fields stay as they
// are. The caller validates the values.
type ProfilePatch struct {
	DisplayName *string
	AvatarURL   *string
}

// UpdateProfile applies p to user id and returns the user as stored, or
// NOT_FOUND.
func UpdateProfile(ctx context.Context, db *gorm.DB, id int64, p ProfilePatch) (*User, error) {
	set := map[string]any{"updated_at": gorm.Expr("now()")}
	if p.DisplayName != nil {
		set["display_name"] = *p.DisplayName
	}
	if p.AvatarURL != nil {
		set["avatar_url"] = *p.AvatarURL
	}
	res := db.WithContext(ctx).Model(&User{}).Where("id = ?", id).Updates(set)
	if res.Error != nil {
		return nil, fmt.Errorf("store: update profile: %w", res.Error)
	}
	if res.RowsAffected == 0 {
		return nil, chat.Errorf(chat.CodeNotFound, "user %d not found", id)
	}
	return UserByID(ctx, db, id)
}

// Channel is one entry of the channel directory.
type Channel struct {
	ID          int64
	Name        string
	MemberCount int64
	// Joined tells whether the viewer is a member.
	Joined bool
}

// ChannelCursor is where a page of the directory ends: the last entry's
// name (lower case) and id.
type ChannelCursor struct {
	Name string
	ID   int64
}

// Channels lists active channels whose name contains q (case-insensitive;
// all when q is empty), ordered by name then id, limit at a time after
// after (nil for the first page), marking those viewerID has joined. next
// is nil on the last page.
func Channels(ctx context.Context, db *gorm.DB, viewerID int64, q string, limit int, after *ChannelCursor) (page []Channel, next *ChannelCursor, err error) {
	var rows []struct {
		Channel
		Key string
	}
	query := `SELECT r.id, r.name, lower(r.name) AS key,
			(SELECT count(*) FROM room_members c WHERE c.room_id = r.id) AS member_count,
			EXISTS (SELECT 1 FROM room_members m WHERE m.room_id = r.id AND m.user_id = ?) AS joined
		FROM rooms r WHERE r.type = 'channel' AND r.is_active`
	args := []any{viewerID}
	if q != "" {
		query += ` AND lower(r.name) LIKE ?`
		args = append(args, "%"+escapeLike(strings.ToLower(q))+"%")
	}
	if after != nil {
		query += ` AND (lower(r.name), r.id) > (?, ?)`
		args = append(args, after.Name, after.ID)
	}
	query += ` ORDER BY lower(r.name), r.id LIMIT ?`
	args = append(args, limit+1)
	if err := db.WithContext(ctx).Raw(query, args...).Scan(&rows).Error; err != nil {
		return nil, nil, fmt.Errorf("store: channels: %w", err)
	}
	if len(rows) > limit {
		rows = rows[:limit]
		last := rows[limit-1]
		next = &ChannelCursor{Name: last.Key, ID: last.ID}
	}
	page = make([]Channel, len(rows))
	for i, r := range rows {
		page[i] = r.Channel
	}
	return page, next, nil
}
