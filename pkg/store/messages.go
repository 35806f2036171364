package store

import (
	"context"
	"fmt"
	"slices"
	"time"

	"gorm.io/gorm"

	"relay/pkg/chat"
)

// MessageView is a message row with its sender's username, as history and
// search return it.
type MessageView struct {
	Message
	// Username is the sender's current username.
	Username string
}

// messageColumns are the columns MessageView scans (never the search vector).
const messageColumns = `m.id, m.room_id, m.user_id, m.content, m.message_type, m.metadata, m.seq,
	m.client_msg_id, m.is_edited, m.edited_at, m.is_deleted, m.deleted_at, m.updated_seq, m.created_at,
	u.username`

// HistoryQuery selects a page of a room's messages by seq. At most one of
// Before and After is set; with neither, the newest page is returned.
type HistoryQuery struct {
	// Before, when set, selects the newest messages with seq < *Before.
	Before *int64
	// After, when set, selects the oldest messages with seq > *After.
	After *int64
	// Limit bounds the page; it must be positive.
	Limit int
}

// HistoryPage is one page of a room's messages in ascending seq order.
type HistoryPage struct {
	// Messages are in ascending seq order, deleted ones included.
	Messages []MessageView
	// HasMore says whether more messages exist in the direction of the
	// query: older ones for Before (and the newest page), newer ones for After.
	HasMore bool
}

// History returns a page of roomID's messages (deleted ones included; the
// caller renders them as tombstones). Who may read them is the caller's rule.
func History(ctx context.Context, db *gorm.DB, roomID int64, q HistoryQuery) (HistoryPage, error) {
	if q.Limit <= 0 || (q.Before != nil && q.After != nil) {
		return HistoryPage{}, chat.Errorf(chat.CodeBadRequest, "invalid history query")
	}
	// One extra row tells whether there is more.
	sql := `SELECT ` + messageColumns + ` FROM messages m JOIN users u ON u.id = m.user_id WHERE m.room_id = ?`
	args := []any{roomID}
	switch {
	case q.After != nil:
		sql += ` AND m.seq > ? ORDER BY m.seq ASC LIMIT ?`
		args = append(args, *q.After, q.Limit+1)
	case q.Before != nil:
		sql += ` AND m.seq < ? ORDER BY m.seq DESC LIMIT ?`
		args = append(args, *q.Before, q.Limit+1)
	default:
		sql += ` ORDER BY m.seq DESC LIMIT ?`
		args = append(args, q.Limit+1)
	}
	msgs := []MessageView{}
	if err := db.WithContext(ctx).Raw(sql, args...).Scan(&msgs).Error; err != nil {
		return HistoryPage{}, fmt.Errorf("store: history of %d: %w", roomID, err)
	}
	page := HistoryPage{HasMore: len(msgs) > q.Limit}
	if page.HasMore {
		msgs = msgs[:q.Limit]
	}
	if q.After == nil {
		slices.Reverse(msgs)
	}
	page.Messages = msgs
	return page, nil
}

// SearchCursor is the position after the last hit of a search page, in the
// order rank DESC, created_at DESC, id DESC.
type SearchCursor struct {
	Rank      float32
	CreatedAt time.Time
	ID        string
}

// SearchQuery is a full-text search over the rooms a user belongs to.
type SearchQuery struct {
	// UserID is the searcher; only rooms they belong to are searched.
	UserID int64
	// Text is a websearch_to_tsquery expression ('simple' configuration).
	Text string
	// RoomID narrows the search to one room when non-zero. Membership is
	// not checked here beyond the rooms-I-belong-to filter.
	RoomID int64
	// Limit bounds the page; it must be positive.
	Limit int
	// After continues a previous page; nil starts at the best hit.
	After *SearchCursor
}

// SearchHit is a matching message with its rank.
type SearchHit struct {
	MessageView
	// Rank is ts_rank of the message for the query.
	Rank float32
}

// Search returns the messages matching q.Text in the user's rooms, deleted
// ones excluded, best ranked first and newest first among equal ranks, and
// the cursor of the next page (nil when there is none).
func Search(ctx context.Context, db *gorm.DB, q SearchQuery) ([]SearchHit, *SearchCursor, error) {
	if q.Limit <= 0 || q.Text == "" {
		return nil, nil, chat.Errorf(chat.CodeBadRequest, "invalid search query")
	}
	inner := `SELECT ` + messageColumns + `, ts_rank(m.search, tq) AS rank
		FROM messages m JOIN users u ON u.id = m.user_id, websearch_to_tsquery('simple', ?) tq
		WHERE m.search @@ tq AND NOT m.is_deleted
		AND m.room_id IN (SELECT room_id FROM room_members WHERE user_id = ?)`
	args := []any{q.Text, q.UserID}
	if q.RoomID != 0 {
		inner += ` AND m.room_id = ?`
		args = append(args, q.RoomID)
	}
	sql := `SELECT * FROM (` + inner + `) s`
	if q.After != nil {
		// All three keys sort descending, so one row comparison continues the order.
		sql += ` WHERE (s.rank, s.created_at, s.id) < (?::real, ?, ?::uuid)`
		args = append(args, q.After.Rank, q.After.CreatedAt, q.After.ID)
	}
	sql += ` ORDER BY s.rank DESC, s.created_at DESC, s.id DESC LIMIT ?`
	args = append(args, q.Limit+1)
	hits := []SearchHit{}
	if err := db.WithContext(ctx).Raw(sql, args...).Scan(&hits).Error; err != nil {
		return nil, nil, fmt.Errorf("store: search: %w", err)
	}
	if len(hits) <= q.Limit {
		return hits, nil, nil
	}
	hits = hits[:q.Limit]
	last := hits[len(hits)-1]
	return hits, &SearchCursor{Rank: last.Rank, CreatedAt: last.CreatedAt, ID: last.ID}, nil
}
