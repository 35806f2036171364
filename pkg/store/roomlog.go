package store

import (
	"context"
	"encoding/json"
	"fmt"

	"gorm.io/gorm"

	"relay/pkg/events"
)

// LoggedEvent is one row of room_events: a room event and its seq.
type LoggedEvent struct {
	// Seq is the event's Kafka offset.
	Seq int64
	// Event is the record value as produced (content scrubbed if its message
	// was deleted since).
	Event *events.Event
}

// RoomEvents returns up to limit events of the room with seq > afterSeq, in
// seq order, as the persister has written them. It is the fallback of a
// resume that Redis's recent history no longer reaches.
func RoomEvents(ctx context.Context, db *gorm.DB, roomID, afterSeq int64, limit int) ([]LoggedEvent, error) {
	var rows []struct {
		Seq   int64
		Event []byte
	}
	err := db.WithContext(ctx).Raw(
		`SELECT seq, event FROM room_events WHERE room_id = ? AND seq > ? ORDER BY seq LIMIT ?`,
		roomID, afterSeq, limit).Scan(&rows).Error
	if err != nil {
		return nil, fmt.Errorf("store: room events: %w", err)
	}
	out := make([]LoggedEvent, 0, len(rows))
	for _, r := range rows {
		var e events.Event
		if err := json.Unmarshal(r.Event, &e); err != nil {
			return nil, fmt.Errorf("store: room event %d/%d: %w", roomID, r.Seq, err)
		}
		out = append(out, LoggedEvent{Seq: r.Seq, Event: &e})
	}
	return out, nil
}

// PrevEventSeq returns the seq of the room's last event before seq, or nil
// when there is none, so the first event of a page gets its prevSeq.
func PrevEventSeq(ctx context.Context, db *gorm.DB, roomID, seq int64) (*int64, error) {
	var prev []int64
	err := db.WithContext(ctx).Raw(
		`SELECT seq FROM room_events WHERE room_id = ? AND seq < ? ORDER BY seq DESC LIMIT 1`, roomID, seq).
		Scan(&prev).Error
	if err != nil {
		return nil, fmt.Errorf("store: previous event: %w", err)
	}
	if len(prev) == 0 {
		return nil, nil
	}
	return &prev[0], nil
}
