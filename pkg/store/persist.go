package store

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgconn"
	"gorm.io/gorm"

	"relay/pkg/chat"
	"relay/pkg/events"
)

// Change is one room event for ApplyBatch: a decoded chat.messages record
// and its seq (the record's Kafka offset).
type Change struct {
	// Seq is the record's offset in its room's partition.
	Seq int64
	// Event is the decoded record value; never nil in a valid change.
	Event *events.Event
	// Raw is the record value as consumed, kept in room_events as it is;
	// nil means Event is encoded again.
	Raw []byte
}

// BatchResult counts what ApplyBatch wrote. Redelivered or superseded
// changes are not counted, so the counts say what actually moved.
type BatchResult struct {
	// Created is the number of message rows inserted.
	Created int64
	// Edited is the number of message rows an edit changed.
	Edited int64
	// Deleted is the number of message rows tombstoned.
	Deleted int64
	// ReadsMoved is the number of room_members rows whose last_read_seq rose.
	ReadsMoved int64
	// Members is the number of member_joined/member_left changes seen; the
	// api already committed them, so nothing is written for them.
	Members int64
}

// ValidateChange reports whether c can be written. A change it rejects
// would make its statement fail on every retry (a malformed uuid, a type
// the CHECK constraint refuses, a NUL byte PostgreSQL text cannot hold), so
// callers send such records to a dead-letter topic instead of retrying.
func ValidateChange(c Change) error {
	e := c.Event
	if e == nil {
		return errors.New("store: change without event")
	}
	if c.Seq < 0 {
		return errors.New("store: negative seq")
	}
	if err := e.Validate(); err != nil {
		return err
	}
	switch e.Type {
	case events.MessageCreated:
		if err := validMessageID(e.MessageID); err != nil {
			return err
		}
		if !chat.MessageType(e.MessageType).Valid() {
			return fmt.Errorf("store: unknown message type %q", e.MessageType)
		}
		if len(e.ClientMsgID) > chat.MaxClientMsgIDLen {
			return errors.New("store: clientMsgId too long")
		}
		if err := validText(e.Content); err != nil {
			return err
		}
		if err := validText(e.ClientMsgID); err != nil {
			return err
		}
		if m := metadata(e.Metadata); m != nil {
			// jsonb refuses \u0000 and anything that is not JSON.
			if !json.Valid(m) || bytes.Contains(m, []byte(`\u0000`)) {
				return errors.New("store: metadata is not storable JSON")
			}
		}
	case events.MessageEdited:
		if err := validMessageID(e.MessageID); err != nil {
			return err
		}
		if err := validText(e.Content); err != nil {
			return err
		}
	case events.MessageDeleted:
		if err := validMessageID(e.MessageID); err != nil {
			return err
		}
	}
	return nil
}

func validMessageID(id string) error {
	if _, err := uuid.Parse(id); err != nil {
		return fmt.Errorf("store: message id %q is not a uuid", id)
	}
	return nil
}

func validText(s string) error {
	if strings.IndexByte(s, 0) >= 0 || !utf8.ValidString(s) {
		return errors.New("store: text holds a NUL byte or invalid UTF-8")
	}
	return nil
}

// metadata returns m, or nil when it is absent or JSON null, so the column
// is SQL NULL rather than a jsonb null.
func metadata(m json.RawMessage) json.RawMessage {
	if len(m) == 0 || string(bytes.TrimSpace(m)) == "null" {
		return nil
	}
	return m
}

// IsPermanent reports whether err is a database error that retrying the
// same statement cannot fix: a data exception (class 22) or an integrity
// violation (class 23), e.g. a message for a room deleted meanwhile.
// Connection failures, timeouts and serialization failures are transient.
func IsPermanent(err error) bool {
	var pe *pgconn.PgError
	if !errors.As(err, &pe) {
		return false
	}
	return strings.HasPrefix(pe.Code, "22") || strings.HasPrefix(pe.Code, "23")
}

type memberKey struct{ room, user int64 }

// insertMessages and markReads take one array per column and unnest them
// server side: one fixed statement (prepared once per connection) whatever
// the batch size, with the values sent binary-encoded. Measured against
// GORM's multi-row INSERT (clause.OnConflict{DoNothing: true}) on 500
// rows: 14 ms vs 20.5 ms a batch, 5.6k vs 14k allocations.
const (
	insertMessages = `INSERT INTO messages (id, room_id, user_id, content, message_type, metadata, seq, client_msg_id, updated_seq, created_at)
		SELECT id, room_id, user_id, content, message_type, metadata::jsonb, seq, client_msg_id, seq, created_at
		FROM unnest($1::uuid[], $2::bigint[], $3::bigint[], $4::text[], $5::text[], $6::text[], $7::bigint[], $8::text[], $9::timestamptz[])
			AS v(id, room_id, user_id, content, message_type, metadata, seq, client_msg_id, created_at)
		ON CONFLICT DO NOTHING`
	markReads = `UPDATE room_members AS m SET last_read_seq = v.seq
		FROM unnest($1::bigint[], $2::bigint[], $3::bigint[]) AS v(room_id, user_id, seq)
		WHERE m.room_id = v.room_id AND m.user_id = v.user_id AND m.last_read_seq < v.seq`
	editMessage = `UPDATE messages SET content = $1, is_edited = TRUE, edited_at = $2, updated_seq = $3
		WHERE id = $4 AND room_id = $5 AND user_id = $6 AND updated_seq < $3 AND NOT is_deleted`
	deleteMessage = `UPDATE messages SET is_deleted = TRUE, deleted_at = $1, content = '', metadata = NULL, updated_seq = $2
		WHERE id = $3 AND room_id = $4 AND updated_seq < $2 AND NOT is_deleted`
	// A deleted message's text must not survive in the kept log either.
	scrubEvents = `UPDATE room_events SET event = event - 'content' - 'metadata'
		WHERE room_id = $1 AND message_id = $2 AND seq < $3 AND (event ? 'content' OR event ? 'metadata')`
	// An edit's earlier events show its text too, so a replay from the log
	// never brings back the old one.
	rewriteEvents = `UPDATE room_events SET event = jsonb_set(event, '{content}', to_jsonb($4::text))
		WHERE room_id = $1 AND message_id = $2 AND seq < $3 AND event ? 'content'`
	insertEvents = `INSERT INTO room_events (room_id, seq, type, message_id, event, created_at)
		SELECT room_id, seq, type, message_id, event::jsonb, created_at
		FROM unnest($1::bigint[], $2::bigint[], $3::text[], $4::uuid[], $5::text[], $6::timestamptz[])
			AS v(room_id, seq, type, message_id, event, created_at)
		ON CONFLICT DO NOTHING`
)

// eventColumns holds every change column by column for room_events.
type eventColumns struct {
	rooms, seqs   []int64
	types, values []string
	messageIDs    []*string
	createdAt     []time.Time
}

func (m *eventColumns) add(c Change) error {
	e := c.Event
	b := c.Raw
	if b == nil {
		var err error
		if b, err = json.Marshal(e); err != nil {
			return fmt.Errorf("store: encode event: %w", err)
		}
	}
	var id *string
	if e.MessageID != "" {
		s := e.MessageID
		id = &s
	}
	m.rooms = append(m.rooms, e.RoomID)
	m.seqs = append(m.seqs, c.Seq)
	m.types = append(m.types, string(e.Type))
	m.messageIDs = append(m.messageIDs, id)
	m.values = append(m.values, string(b))
	m.createdAt = append(m.createdAt, e.At)
	return nil
}

// createColumns holds message_created changes column by column.
type createColumns struct {
	ids, contents, types []string
	rooms, users, seqs   []int64
	metadata, clientIDs  []*string
	createdAt            []time.Time
}

func (m *createColumns) add(c Change) {
	e := c.Event
	m.ids = append(m.ids, e.MessageID)
	m.rooms = append(m.rooms, e.RoomID)
	m.users = append(m.users, e.UserID)
	m.contents = append(m.contents, e.Content)
	m.types = append(m.types, e.MessageType)
	m.seqs = append(m.seqs, c.Seq)
	m.createdAt = append(m.createdAt, e.At)
	var md, client *string
	if v := metadata(e.Metadata); v != nil {
		s := string(v)
		md = &s
	}
	if e.ClientMsgID != "" {
		s := e.ClientMsgID
		client = &s
	}
	m.metadata = append(m.metadata, md)
	m.clientIDs = append(m.clientIDs, client)
}

// ApplyBatch writes changes in one transaction, idempotently, so a batch
// redelivered after a crash changes nothing twice:
//   - message_created: one multi-row INSERT ... ON CONFLICT DO NOTHING, so
//     a row that exists by id, (room_id, seq) or (user_id, client_msg_id)
//     is kept as it is;
//   - message_edited: applied when the editor is the author, the message is
//     not deleted and no later event touched it (updated_seq < seq);
//   - message_deleted: tombstones the row (content and metadata cleared);
//     the gateway already checked the deleter is the author or an admin;
//   - read_marked: last_read_seq only moves forward, and never past the
//     read event's own seq (nothing after it can have been read);
//   - member_joined/member_left: counted only; the api wrote them;
//   - every change is also kept in room_events (the room log; a delete
//     scrubs the content of the events about its message, an applied edit
//     puts its text into them).
//
// Changes must be in offset order per room. All inserts run before the
// updates: an update can only need a message created at a lower seq, and
// the updated_seq guards make the result the same as applying in order.
// The caller validates changes with ValidateChange first.
func ApplyBatch(ctx context.Context, db *gorm.DB, changes []Change) (BatchResult, error) {
	var (
		res     BatchResult
		creates createColumns
		log     eventColumns
		updates []Change
		reads   = map[memberKey]int64{}
	)
	for _, c := range changes {
		e := c.Event
		if err := log.add(c); err != nil {
			return BatchResult{}, err
		}
		switch e.Type {
		case events.MessageCreated:
			creates.add(c)
		case events.MessageEdited, events.MessageDeleted:
			updates = append(updates, c)
		case events.ReadMarked:
			k := memberKey{e.RoomID, e.UserID}
			// GREATEST is commutative, so only the highest mark of a member counts.
			if v, ok := reads[k]; !ok || readUpTo(c) > v {
				reads[k] = readUpTo(c)
			}
		case events.MemberJoined, events.MemberLeft:
			res.Members++
		default:
			return BatchResult{}, fmt.Errorf("store: apply: unknown event type %q", e.Type)
		}
	}
	err := db.WithContext(ctx).Transaction(func(tx *gorm.DB) error {
		// The transaction's own connection: GORM would expand the array
		// arguments into lists, pgx sends them as arrays.
		conn := tx.Statement.ConnPool
		if len(creates.ids) > 0 {
			r, err := conn.ExecContext(ctx, insertMessages, creates.ids, creates.rooms, creates.users,
				creates.contents, creates.types, creates.metadata, creates.seqs, creates.clientIDs, creates.createdAt)
			if err != nil {
				return fmt.Errorf("insert messages: %w", err)
			}
			if res.Created, err = r.RowsAffected(); err != nil {
				return fmt.Errorf("insert messages: %w", err)
			}
		}
		if len(log.seqs) > 0 {
			if _, err := conn.ExecContext(ctx, insertEvents, log.rooms, log.seqs, log.types, log.messageIDs,
				log.values, log.createdAt); err != nil {
				return fmt.Errorf("insert room events: %w", err)
			}
		}
		for _, c := range updates {
			e := c.Event
			var (
				r   sql.Result
				err error
			)
			if e.Type == events.MessageEdited {
				r, err = conn.ExecContext(ctx, editMessage, e.Content, e.At, c.Seq, e.MessageID, e.RoomID, e.UserID)
			} else {
				r, err = conn.ExecContext(ctx, deleteMessage, e.At, c.Seq, e.MessageID, e.RoomID)
			}
			if err != nil {
				return fmt.Errorf("%s %s: %w", e.Type, e.MessageID, err)
			}
			n, err := r.RowsAffected()
			if err != nil {
				return fmt.Errorf("%s %s: %w", e.Type, e.MessageID, err)
			}
			if e.Type == events.MessageEdited {
				res.Edited += n
				if n > 0 {
					if _, err := conn.ExecContext(ctx, rewriteEvents, e.RoomID, e.MessageID, c.Seq, e.Content); err != nil {
						return fmt.Errorf("rewrite events of %s: %w", e.MessageID, err)
					}
				}
				continue
			}
			res.Deleted += n
			if _, err := conn.ExecContext(ctx, scrubEvents, e.RoomID, e.MessageID, c.Seq); err != nil {
				return fmt.Errorf("scrub events of %s: %w", e.MessageID, err)
			}
		}
		if len(reads) > 0 {
			rooms, users, seqs := make([]int64, 0, len(reads)), make([]int64, 0, len(reads)), make([]int64, 0, len(reads))
			for k, seq := range reads {
				rooms, users, seqs = append(rooms, k.room), append(users, k.user), append(seqs, seq)
			}
			r, err := conn.ExecContext(ctx, markReads, rooms, users, seqs)
			if err != nil {
				return fmt.Errorf("read marks: %w", err)
			}
			if res.ReadsMoved, err = r.RowsAffected(); err != nil {
				return fmt.Errorf("read marks: %w", err)
			}
		}
		return nil
	})
	if err != nil {
		return BatchResult{}, fmt.Errorf("store: apply batch: %w", err)
	}
	return res, nil
}

// readUpTo is the read mark a read_marked change may set.
func readUpTo(c Change) int64 {
	return min(c.Event.ReadSeq, c.Seq)
}
