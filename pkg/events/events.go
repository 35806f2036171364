// Package events defines the records of the room event log, topic
// chat.messages: one JSON value per record, keyed by room id, so a room's
// events share a partition and its order (docs/architecture.md). A record's
// seq is its Kafka offset and is therefore not part of the value.
package events

import (
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"time"
)

// Type names a room event.
type Type string

// Room event types.
const (
	MessageCreated Type = "message_created"
	MessageEdited  Type = "message_edited"
	MessageDeleted Type = "message_deleted"
	ReadMarked     Type = "read_marked"
	MemberJoined   Type = "member_joined"
	MemberLeft     Type = "member_left"
)

// Header names carried on every record besides W3C trace context.
const (
	// HeaderType repeats the event type so consumers can route without decoding.
	HeaderType = "event-type"
)

// Event is the value of one chat.messages record. Which fields are set
// depends on Type; ids are strings on the wire (docs/architecture.md).
type Event struct {
	// Type says what happened.
	Type Type `json:"type"`
	// RoomID is the room, also the record key.
	RoomID int64 `json:"roomId,string"`
	// UserID is the actor: sender, editor, deleter, reader, joiner or leaver.
	UserID int64 `json:"userId,string"`
	// Username is the actor's name, for display without a lookup.
	Username string `json:"username,omitempty"`
	// MessageID is the UUIDv7 of the message created, edited or deleted.
	MessageID string `json:"messageId,omitempty"`
	// Content is the text of a created or edited message.
	Content string `json:"content,omitempty"`
	// MessageType is text, image or file (message_created only).
	MessageType string `json:"messageType,omitempty"`
	// Metadata is the optional JSON object of a created message.
	Metadata json.RawMessage `json:"metadata,omitempty"`
	// ClientMsgID is the sender's idempotency key (message_created only).
	ClientMsgID string `json:"clientMsgId,omitempty"`
	// ReadSeq is the seq read up to (read_marked only).
	ReadSeq int64 `json:"readSeq,omitempty"`
	// Role is the member's role (member_joined only).
	Role string `json:"role,omitempty"`
	// At is when the producer accepted the event (UTC).
	At time.Time `json:"at"`
}

// Key returns the record key: the room id in decimal.
func (e *Event) Key() []byte {
	return strconv.AppendInt(nil, e.RoomID, 10)
}

// Validate checks the fields each type needs, so producers fail early and
// consumers can reject records that would corrupt state.
func (e *Event) Validate() error {
	if e.RoomID <= 0 || e.UserID <= 0 {
		return errors.New("events: roomId and userId required")
	}
	if e.At.IsZero() {
		return errors.New("events: at required")
	}
	switch e.Type {
	case MessageCreated:
		if e.MessageID == "" || e.MessageType == "" {
			return errors.New("events: message_created needs messageId and messageType")
		}
	case MessageEdited:
		if e.MessageID == "" {
			return errors.New("events: message_edited needs messageId")
		}
	case MessageDeleted:
		if e.MessageID == "" {
			return errors.New("events: message_deleted needs messageId")
		}
	case ReadMarked:
		if e.ReadSeq < 0 {
			return errors.New("events: read_marked needs readSeq >= 0")
		}
	case MemberJoined, MemberLeft:
	default:
		return fmt.Errorf("events: unknown type %q", e.Type)
	}
	return nil
}

// Marshal encodes e after validating it.
func Marshal(e *Event) ([]byte, error) {
	if err := e.Validate(); err != nil {
		return nil, err
	}
	b, err := json.Marshal(e)
	if err != nil {
		return nil, fmt.Errorf("events: encode: %w", err)
	}
	return b, nil
}

// Unmarshal decodes and validates a record value.
func Unmarshal(b []byte) (*Event, error) {
	var e Event
	if err := json.Unmarshal(b, &e); err != nil {
		return nil, fmt.Errorf("events: decode: %w", err)
	}
	if err := e.Validate(); err != nil {
		return nil, err
	}
	return &e, nil
}
