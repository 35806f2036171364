package store

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"gorm.io/gorm"

	"relay/pkg/events"
)

// Trace is the W3C trace context (propagation carrier keys to values) that
// an outbox event carries to its Kafka record; nil means none.
type Trace map[string]string

// OutboxEvent is one event of the outbox (migration 00004), waiting to be
// produced.
type OutboxEvent struct {
	// ID orders the outbox: a room's events were written in increasing ids.
	ID int64
	// RoomID is the event's room, also its record key.
	RoomID int64
	// Event is the record value to produce.
	Event events.Event
	// Trace is the trace context of the change; nil when there was none.
	Trace Trace
	// CreatedAt is when the change was made (database clock).
	CreatedAt time.Time
}

// memberEvent returns the member_joined (with the role) or member_left event
// of m, dated now.
func memberEvent(typ events.Type, m *Member) *events.Event {
	e := &events.Event{Type: typ, RoomID: m.RoomID, UserID: m.UserID, Username: m.Username, At: time.Now().UTC()}
	if typ == events.MemberJoined {
		e.Role = string(m.Role)
	}
	return e
}

// insertOutbox writes evs, in order, to the outbox inside tx, the
// transaction of the change they announce: the events exist exactly when
// the change committed.
func insertOutbox(ctx context.Context, tx *gorm.DB, trace Trace, evs ...*events.Event) error {
	if len(evs) == 0 {
		return nil
	}
	var traceJSON []byte
	if len(trace) > 0 {
		b, err := json.Marshal(trace)
		if err != nil {
			return fmt.Errorf("store: outbox trace: %w", err)
		}
		traceJSON = b
	}
	// One multi-row statement; VALUES keeps the list order, and so the ids.
	sql := "INSERT INTO outbox (room_id, event, trace) VALUES "
	args := make([]any, 0, 3*len(evs))
	for i, e := range evs {
		value, err := events.Marshal(e)
		if err != nil {
			return fmt.Errorf("store: outbox: %w", err)
		}
		if i > 0 {
			sql += ", "
		}
		sql += "(?, ?, ?)"
		args = append(args, e.RoomID, string(value), nullableJSON(traceJSON))
	}
	if err := tx.WithContext(ctx).Exec(sql, args...).Error; err != nil {
		return fmt.Errorf("store: outbox: %w", err)
	}
	return nil
}

// nullableJSON is b as a JSONB parameter, or SQL NULL when b is empty.
func nullableJSON(b []byte) any {
	if len(b) == 0 {
		return nil
	}
	return string(b)
}

// OutboxConn is what the outbox relay reads and deletes through: its own
// pgx connection, the one that holds the relay lock.
type OutboxConn interface {
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
	Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error)
}

// PendingOutbox returns up to limit of the oldest outbox events in id order.
// It always reads from the head rather than after the last id seen: a
// transaction that took a lower id may commit after a higher one, and its
// row must not be skipped.
func PendingOutbox(ctx context.Context, conn OutboxConn, limit int) ([]OutboxEvent, error) {
	rows, err := conn.Query(ctx, `SELECT id, room_id, event, trace, created_at FROM outbox ORDER BY id LIMIT $1`, limit)
	if err != nil {
		return nil, fmt.Errorf("store: read outbox: %w", err)
	}
	defer rows.Close()
	var out []OutboxEvent
	for rows.Next() {
		var (
			o            OutboxEvent
			value, trace []byte
		)
		if err := rows.Scan(&o.ID, &o.RoomID, &value, &trace, &o.CreatedAt); err != nil {
			return nil, fmt.Errorf("store: read outbox: %w", err)
		}
		if err := json.Unmarshal(value, &o.Event); err != nil {
			return nil, fmt.Errorf("store: outbox row %d: %w", o.ID, err)
		}
		if len(trace) > 0 {
			if err := json.Unmarshal(trace, &o.Trace); err != nil {
				return nil, fmt.Errorf("store: outbox row %d trace: %w", o.ID, err)
			}
		}
		out = append(out, o)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("store: read outbox: %w", err)
	}
	return out, nil
}

// DeleteOutbox removes the outbox events ids, once they were produced.
func DeleteOutbox(ctx context.Context, conn OutboxConn, ids []int64) error {
	if len(ids) == 0 {
		return nil
	}
	if _, err := conn.Exec(ctx, `DELETE FROM outbox WHERE id = ANY($1)`, ids); err != nil {
		return fmt.Errorf("store: delete outbox: %w", err)
	}
	return nil
}

// OutboxDepth counts the events waiting in the outbox.
func OutboxDepth(ctx context.Context, conn OutboxConn) (int64, error) {
	rows, err := conn.Query(ctx, `SELECT count(*) FROM outbox`)
	if err != nil {
		return 0, fmt.Errorf("store: outbox depth: %w", err)
	}
	n, err := pgx.CollectExactlyOneRow(rows, pgx.RowTo[int64])
	if err != nil {
		return 0, fmt.Errorf("store: outbox depth: %w", err)
	}
	return n, nil
}
