package store

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"time"

	"gorm.io/gorm"
	"gorm.io/gorm/clause"

	"relay/pkg/chat"
	"relay/pkg/events"
)

// Member is a room member together with the profile fields shown next to it.
type Member struct {
	RoomID      int64
	UserID      int64
	Username    string
	DisplayName string
	AvatarURL   string
	IsOnline    bool
	// Role is admin or member.
	Role chat.Role
	// LastReadSeq is the seq the member has read up to; -1 means nothing.
	LastReadSeq int64
	// IsMuted is the member's own mute setting.
	IsMuted  bool
	JoinedAt time.Time
}

// RoomView is a room as one user sees it.
type RoomView struct {
	Room
	// Role is the viewer's role; empty when the viewer is not a member.
	Role chat.Role
	// MemberCount is the number of members.
	MemberCount int64
}

// RoomSummary is one entry of a user's room list.
type RoomSummary struct {
	RoomView
	// LastReadSeq is the viewer's read position; -1 means nothing read.
	LastReadSeq int64
	// LastSeq is the seq of the room's newest event in its log (a message,
	// edit, delete, read or membership event); -1 when the log is empty.
	LastSeq int64
	// IsMuted is the viewer's mute setting.
	IsMuted bool
	// LastMessage is the newest message that is not deleted; nil when none.
	LastMessage *MessageView
	// UnreadCount counts messages by others, not deleted, after LastReadSeq.
	UnreadCount int64
	// Peer is the other member of a direct room; nil for other rooms (or
	// when the peer's account is gone).
	Peer *Member
}

// DirectKey returns the rooms.direct_key of the direct room of two users:
// "<lower id>:<higher id>", so both orders name the same room.
func DirectKey(a, b int64) string {
	if a > b {
		a, b = b, a
	}
	return strconv.FormatInt(a, 10) + ":" + strconv.FormatInt(b, 10)
}

// roomType returns the type of room id, or NOT_FOUND. With lock, the row is
// locked until the transaction ends (FOR UPDATE), serialising membership
// changes that depend on each other.
func roomType(ctx context.Context, tx *gorm.DB, roomID int64, lock bool) (chat.RoomType, error) {
	q := "SELECT type FROM rooms WHERE id = ?"
	if lock {
		q += " FOR UPDATE"
	}
	var types []string
	if err := tx.WithContext(ctx).Raw(q, roomID).Scan(&types).Error; err != nil {
		return "", fmt.Errorf("store: room %d: %w", roomID, err)
	}
	if len(types) == 0 {
		return "", chat.Errorf(chat.CodeNotFound, "room %d not found", roomID)
	}
	return chat.RoomType(types[0]), nil
}

// Membership returns userID's role in roomID: NOT_FOUND when the room does
// not exist, FORBIDDEN when the user is not a member. It is the check every
// members-only operation starts with (api and gateway).
func Membership(ctx context.Context, db *gorm.DB, roomID, userID int64) (chat.Role, error) {
	var rows []struct {
		Role *string
	}
	err := db.WithContext(ctx).Raw(`SELECT m.role FROM rooms r
		LEFT JOIN room_members m ON m.room_id = r.id AND m.user_id = ?
		WHERE r.id = ?`, userID, roomID).Scan(&rows).Error
	if err != nil {
		return "", fmt.Errorf("store: membership: %w", err)
	}
	if len(rows) == 0 {
		return "", chat.Errorf(chat.CodeNotFound, "room %d not found", roomID)
	}
	if rows[0].Role == nil {
		return "", chat.Errorf(chat.CodeForbidden, "not a member of room %d", roomID)
	}
	return chat.Role(*rows[0].Role), nil
}

// RoomFor returns room roomID as userID sees it (with the user's role, empty
// when not a member), or NOT_FOUND. Who may see it is the caller's rule.
func RoomFor(ctx context.Context, db *gorm.DB, roomID, userID int64) (*RoomView, error) {
	var rows []struct {
		Room
		MyRole      *string
		MemberCount int64
	}
	err := db.WithContext(ctx).Raw(`SELECT r.*, m.role AS my_role,
			(SELECT count(*) FROM room_members c WHERE c.room_id = r.id) AS member_count
		FROM rooms r
		LEFT JOIN room_members m ON m.room_id = r.id AND m.user_id = ?
		WHERE r.id = ?`, userID, roomID).Scan(&rows).Error
	if err != nil {
		return nil, fmt.Errorf("store: room %d: %w", roomID, err)
	}
	if len(rows) == 0 {
		return nil, chat.Errorf(chat.CodeNotFound, "room %d not found", roomID)
	}
	v := &RoomView{Room: rows[0].Room, MemberCount: rows[0].MemberCount}
	if rows[0].MyRole != nil {
		v.Role = chat.Role(*rows[0].MyRole)
	}
	return v, nil
}

const memberColumns = `m.room_id, m.user_id, u.username, u.display_name, u.avatar_url, u.is_online,
	m.role, m.last_read_seq, m.is_muted, m.joined_at`

// ListMembers returns the members of roomID in the order they joined.
func ListMembers(ctx context.Context, db *gorm.DB, roomID int64) ([]Member, error) {
	members := []Member{}
	err := db.WithContext(ctx).Raw(`SELECT `+memberColumns+`
		FROM room_members m JOIN users u ON u.id = m.user_id
		WHERE m.room_id = ? ORDER BY m.joined_at, m.user_id`, roomID).Scan(&members).Error
	if err != nil {
		return nil, fmt.Errorf("store: members of %d: %w", roomID, err)
	}
	return members, nil
}

func member(ctx context.Context, tx *gorm.DB, roomID, userID int64) (*Member, error) {
	var ms []Member
	err := tx.WithContext(ctx).Raw(`SELECT `+memberColumns+`
		FROM room_members m JOIN users u ON u.id = m.user_id
		WHERE m.room_id = ? AND m.user_id = ?`, roomID, userID).Scan(&ms).Error
	if err != nil {
		return nil, fmt.Errorf("store: member: %w", err)
	}
	if len(ms) == 0 {
		return nil, chat.Errorf(chat.CodeNotFound, "user %d is not a member of room %d", userID, roomID)
	}
	return &ms[0], nil
}

// NewRoom describes a room to create.
type NewRoom struct {
	// Name is required for groups and channels and ignored for direct rooms.
	Name string
	// Type is direct, group or channel.
	Type chat.RoomType
	// CreatedBy is the creator, who becomes the room's admin.
	CreatedBy int64
	// MemberIDs are the other members; duplicates and the creator are
	// ignored. A direct room needs exactly one other member.
	MemberIDs []int64
	// Trace is the request's trace context, carried by the member events;
	// nil for none.
	Trace Trace
}

// CreateRoom creates a room with its creator as admin and the other members
// as members, and returns it with its members. In the same transaction it
// writes their member_joined events to the outbox, the creator's first, so
// the room's log starts with its admin. A direct room is unique per pair of
// users: when it already exists (also when created concurrently), that room
// is returned with created=false and nothing is written. Unknown member ids
// are NOT_FOUND; a malformed request is BAD_REQUEST.
func CreateRoom(ctx context.Context, db *gorm.DB, nr NewRoom) (room *Room, members []Member, created bool, err error) {
	if !nr.Type.Valid() {
		return nil, nil, false, chat.Errorf(chat.CodeBadRequest, "unknown room type %q", nr.Type)
	}
	others := make([]int64, 0, len(nr.MemberIDs))
	for _, id := range nr.MemberIDs {
		if id != nr.CreatedBy && !slices.Contains(others, id) {
			others = append(others, id)
		}
	}
	if len(others)+1 > chat.MaxRoomMembers {
		return nil, nil, false, chat.Errorf(chat.CodeBadRequest, "a room is created with at most %d members", chat.MaxRoomMembers)
	}
	r := &Room{Name: nr.Name, Type: string(nr.Type), CreatedBy: nr.CreatedBy}
	if nr.Type == chat.RoomDirect {
		if len(others) != 1 {
			return nil, nil, false, chat.Errorf(chat.CodeBadRequest, "a direct room has exactly one other member")
		}
		key := DirectKey(nr.CreatedBy, others[0])
		r.Name, r.DirectKey = "", &key
	}
	err = db.WithContext(ctx).Transaction(func(tx *gorm.DB) error {
		missing, err := MissingUsers(ctx, tx, others)
		if err != nil {
			return err
		}
		if len(missing) > 0 {
			return chat.Errorf(chat.CodeNotFound, "user %d not found", missing[0])
		}
		if r.DirectKey != nil {
			// ON CONFLICT waits for a concurrent creator of the same pair and
			// then inserts nothing; the next statement sees its committed row.
			var ids []int64
			err := tx.Raw(`INSERT INTO rooms (name, type, direct_key, created_by) VALUES ('', 'direct', ?, ?)
				ON CONFLICT (direct_key) WHERE direct_key IS NOT NULL DO NOTHING RETURNING id`,
				*r.DirectKey, r.CreatedBy).Scan(&ids).Error
			if err != nil {
				return fmt.Errorf("store: create direct room: %w", err)
			}
			if len(ids) == 0 {
				if err := tx.Where("direct_key = ?", *r.DirectKey).Take(r).Error; err != nil {
					return fmt.Errorf("store: existing direct room: %w", err)
				}
				members, err = ListMembers(ctx, tx, r.ID)
				return err
			}
			if err := tx.Where("id = ?", ids[0]).Take(r).Error; err != nil {
				return fmt.Errorf("store: read direct room: %w", err)
			}
		} else if err := tx.Clauses(clause.Returning{}).Create(r).Error; err != nil {
			return fmt.Errorf("store: create room: %w", err)
		}
		rows := make([]RoomMember, 0, len(others)+1)
		rows = append(rows, RoomMember{RoomID: r.ID, UserID: nr.CreatedBy, Role: string(chat.RoleAdmin), LastReadSeq: -1})
		for _, id := range others {
			rows = append(rows, RoomMember{RoomID: r.ID, UserID: id, Role: string(chat.RoleMember), LastReadSeq: -1})
		}
		if err := tx.Omit("JoinedAt").CreateInBatches(rows, 500).Error; err != nil {
			if foreignKeyViolation(err) {
				// A member's account was deleted after the check above.
				return chat.Wrap(chat.CodeNotFound, err, "a member does not exist")
			}
			return fmt.Errorf("store: add members: %w", err)
		}
		created = true
		if members, err = ListMembers(ctx, tx, r.ID); err != nil {
			return err
		}
		return insertOutbox(ctx, tx, nr.Trace, joinedEvents(members, nr.CreatedBy)...)
	})
	if err != nil {
		return nil, nil, false, err
	}
	return r, members, created, nil
}

// joinedEvents returns the member_joined events of a new room's members:
// the creator's first, then the others in the order listed.
func joinedEvents(members []Member, creatorID int64) []*events.Event {
	evs := make([]*events.Event, 0, len(members))
	for i := range members {
		if members[i].UserID == creatorID {
			evs = append(evs, memberEvent(events.MemberJoined, &members[i]))
		}
	}
	for i := range members {
		if members[i].UserID != creatorID {
			evs = append(evs, memberEvent(events.MemberJoined, &members[i]))
		}
	}
	return evs
}

// joinSQL adds a member whose read position starts at the room's newest
// stored message: history from before joining is there to read but is not
// counted as unread.
const joinSQL = `INSERT INTO room_members (room_id, user_id, role, last_read_seq)
	VALUES (?, ?, 'member', (SELECT COALESCE(max(seq), -1) FROM messages WHERE room_id = ?))
	ON CONFLICT DO NOTHING`

// JoinRoom makes userID a member of channel roomID and returns the
// membership; joined is false when the user already was a member (of any
// room type), which is not an error. A join writes its member_joined event
// (carrying trace) to the outbox in the same transaction. Groups and direct
// rooms cannot be joined (FORBIDDEN); an unknown room is NOT_FOUND.
func JoinRoom(ctx context.Context, db *gorm.DB, roomID, userID int64, trace Trace) (m *Member, joined bool, err error) {
	err = db.WithContext(ctx).Transaction(func(tx *gorm.DB) error {
		typ, err := roomType(ctx, tx, roomID, false)
		if err != nil {
			return err
		}
		if m, err = member(ctx, tx, roomID, userID); err == nil {
			return nil
		} else if chat.ErrorCode(err) != chat.CodeNotFound {
			return err
		}
		if typ != chat.RoomChannel {
			return chat.Errorf(chat.CodeForbidden, "only channels can be joined; a group admin must add you")
		}
		res := tx.Exec(joinSQL, roomID, userID, roomID)
		if res.Error != nil {
			if foreignKeyViolation(res.Error) {
				return chat.Wrap(chat.CodeNotFound, res.Error, "room or user no longer exists")
			}
			return fmt.Errorf("store: join: %w", res.Error)
		}
		joined = res.RowsAffected == 1
		if m, err = member(ctx, tx, roomID, userID); err != nil || !joined {
			return err
		}
		return insertOutbox(ctx, tx, trace, memberEvent(events.MemberJoined, m))
	})
	if err != nil {
		return nil, false, err
	}
	return m, joined, nil
}

// LeaveRoom removes userID from roomID; left is false when the user was not
// a member. A leave writes its member_left event (carrying trace) to the
// outbox in the same transaction. When the last admin of a group or channel
// leaves, the longest standing member becomes admin, so the room stays
// manageable. Direct rooms cannot be left (FORBIDDEN); an unknown room is
// NOT_FOUND.
func LeaveRoom(ctx context.Context, db *gorm.DB, roomID, userID int64, trace Trace) (left bool, err error) {
	err = db.WithContext(ctx).Transaction(func(tx *gorm.DB) error {
		// Locking the room serialises concurrent leaves, so two last admins
		// leaving at once still leave one admin behind.
		typ, err := roomType(ctx, tx, roomID, true)
		if err != nil {
			return err
		}
		if typ == chat.RoomDirect {
			return chat.Errorf(chat.CodeForbidden, "a direct room cannot be left")
		}
		var gone []Member
		err = tx.Raw(`DELETE FROM room_members m USING users u
			WHERE m.room_id = ? AND m.user_id = ? AND u.id = m.user_id
			RETURNING m.room_id, m.user_id, u.username, m.role`, roomID, userID).Scan(&gone).Error
		if err != nil {
			return fmt.Errorf("store: leave: %w", err)
		}
		if len(gone) == 0 {
			return nil
		}
		left = true
		if err := insertOutbox(ctx, tx, trace, memberEvent(events.MemberLeft, &gone[0])); err != nil {
			return err
		}
		if gone[0].Role != chat.RoleAdmin {
			return nil
		}
		err = tx.Exec(`UPDATE room_members SET role = 'admin'
			WHERE room_id = ? AND NOT EXISTS (SELECT 1 FROM room_members WHERE room_id = ? AND role = 'admin')
			AND user_id = (SELECT user_id FROM room_members WHERE room_id = ? ORDER BY joined_at, user_id LIMIT 1)`,
			roomID, roomID, roomID).Error
		if err != nil {
			return fmt.Errorf("store: promote admin: %w", err)
		}
		return nil
	})
	return left, err
}

// AddMember lets actorID, an admin of group or channel roomID, add userID
// as a member. added is false when userID already was a member. An
// addition writes its member_joined event (carrying trace) to the outbox in
// the same transaction. A non-member or non-admin actor, or a direct room,
// is FORBIDDEN; an unknown room or user is NOT_FOUND.
func AddMember(ctx context.Context, db *gorm.DB, roomID, actorID, userID int64, trace Trace) (m *Member, added bool, err error) {
	err = db.WithContext(ctx).Transaction(func(tx *gorm.DB) error {
		typ, err := roomType(ctx, tx, roomID, false)
		if err != nil {
			return err
		}
		// FOR SHARE keeps the actor's membership (and role) in place until
		// the new member is in.
		var roles []string
		err = tx.Raw(`SELECT role FROM room_members WHERE room_id = ? AND user_id = ? FOR SHARE`, roomID, actorID).Scan(&roles).Error
		if err != nil {
			return fmt.Errorf("store: actor role: %w", err)
		}
		switch {
		case len(roles) == 0:
			return chat.Errorf(chat.CodeForbidden, "not a member of room %d", roomID)
		case typ == chat.RoomDirect:
			return chat.Errorf(chat.CodeForbidden, "members cannot be added to a direct room")
		case chat.Role(roles[0]) != chat.RoleAdmin:
			return chat.Errorf(chat.CodeForbidden, "only room admins can add members")
		}
		if _, err := UserByID(ctx, tx, userID); err != nil {
			return err
		}
		res := tx.Exec(joinSQL, roomID, userID, roomID)
		if res.Error != nil {
			if foreignKeyViolation(res.Error) {
				return chat.Wrap(chat.CodeNotFound, res.Error, "user no longer exists")
			}
			return fmt.Errorf("store: add member: %w", res.Error)
		}
		added = res.RowsAffected == 1
		if m, err = member(ctx, tx, roomID, userID); err != nil || !added {
			return err
		}
		return insertOutbox(ctx, tx, trace, memberEvent(events.MemberJoined, m))
	})
	if err != nil {
		return nil, false, err
	}
	return m, added, nil
}

// ListRooms returns the rooms userID belongs to, most recently active
// first, each with its newest visible message, the user's unread count and,
// for direct rooms, the other member.
func ListRooms(ctx context.Context, db *gorm.DB, userID int64) ([]RoomSummary, error) {
	var rows []struct {
		Room
		MyRole         string
		MemberCount    int64
		LastReadSeq    int64
		RoomLastSeq    int64
		MyMuted        bool
		UnreadCount    int64
		LastID         *string
		LastUserID     int64
		LastUsername   string
		LastContent    string
		LastType       string
		LastMetadata   []byte
		LastClientID   *string
		LastSeq        int64
		LastIsEdited   bool
		LastEditedAt   *time.Time
		LastUpdatedSeq int64
		LastCreatedAt  time.Time
		PeerID         *int64
		PeerUsername   string
		PeerDisplay    string
		PeerAvatar     string
		PeerOnline     bool
		PeerRole       string
		PeerReadSeq    int64
		PeerJoinedAt   time.Time
	}
	err := db.WithContext(ctx).Raw(`SELECT r.*, m.role AS my_role, m.last_read_seq, m.is_muted AS my_muted,
			GREATEST((SELECT max(seq) FROM room_events e WHERE e.room_id = r.id),
				(SELECT max(seq) FROM messages y WHERE y.room_id = r.id), -1) AS room_last_seq,
			(SELECT count(*) FROM room_members c WHERE c.room_id = r.id) AS member_count,
			(SELECT count(*) FROM messages x WHERE x.room_id = r.id AND x.seq > m.last_read_seq
				AND x.user_id <> m.user_id AND NOT x.is_deleted) AS unread_count,
			lm.id AS last_id, lm.user_id AS last_user_id, lu.username AS last_username,
			lm.content AS last_content, lm.message_type AS last_type, lm.metadata AS last_metadata,
			lm.client_msg_id AS last_client_id, lm.seq AS last_seq, lm.is_edited AS last_is_edited,
			lm.edited_at AS last_edited_at, lm.updated_seq AS last_updated_seq, lm.created_at AS last_created_at,
			p.user_id AS peer_id, pu.username AS peer_username, pu.display_name AS peer_display,
			pu.avatar_url AS peer_avatar, pu.is_online AS peer_online, p.role AS peer_role,
			p.last_read_seq AS peer_read_seq, p.joined_at AS peer_joined_at
		FROM room_members m
		JOIN rooms r ON r.id = m.room_id
		LEFT JOIN LATERAL (SELECT * FROM messages WHERE room_id = r.id AND NOT is_deleted
			ORDER BY seq DESC LIMIT 1) lm ON true
		LEFT JOIN users lu ON lu.id = lm.user_id
		LEFT JOIN LATERAL (SELECT * FROM room_members o WHERE o.room_id = r.id AND o.user_id <> m.user_id
			AND r.type = 'direct' LIMIT 1) p ON true
		LEFT JOIN users pu ON pu.id = p.user_id
		WHERE m.user_id = ?
		ORDER BY COALESCE(lm.created_at, r.created_at) DESC, r.id DESC`, userID).Scan(&rows).Error
	if err != nil {
		return nil, fmt.Errorf("store: rooms of %d: %w", userID, err)
	}
	out := make([]RoomSummary, 0, len(rows))
	for _, row := range rows {
		s := RoomSummary{
			RoomView:    RoomView{Room: row.Room, Role: chat.Role(row.MyRole), MemberCount: row.MemberCount},
			LastReadSeq: row.LastReadSeq,
			LastSeq:     row.RoomLastSeq,
			IsMuted:     row.MyMuted,
			UnreadCount: row.UnreadCount,
		}
		if row.LastID != nil {
			s.LastMessage = &MessageView{Message: Message{
				ID: *row.LastID, RoomID: row.ID, UserID: row.LastUserID, Content: row.LastContent,
				Type: row.LastType, Metadata: row.LastMetadata, Seq: row.LastSeq, ClientMsgID: row.LastClientID,
				IsEdited: row.LastIsEdited, EditedAt: row.LastEditedAt, UpdatedSeq: row.LastUpdatedSeq,
				CreatedAt: row.LastCreatedAt,
			}, Username: row.LastUsername}
		}
		if row.PeerID != nil {
			s.Peer = &Member{
				RoomID: row.ID, UserID: *row.PeerID, Username: row.PeerUsername, DisplayName: row.PeerDisplay,
				AvatarURL: row.PeerAvatar, IsOnline: row.PeerOnline, Role: chat.Role(row.PeerRole),
				LastReadSeq: row.PeerReadSeq, JoinedAt: row.PeerJoinedAt,
			}
		}
		out = append(out, s)
	}
	return out, nil
}
