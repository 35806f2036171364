package protocol

import (
	"encoding/json"
	"time"
)

// EventResyncRequired is the server push telling a client that the recent
// history could not replay what it missed in a room: it must fetch the room's
// REST history after FromSeq (docs/protocol.md).
const EventResyncRequired = "resync_required"

// JoinRoom is the payload of join_room.
type JoinRoom struct {
	// RoomID is the room to receive on this connection.
	RoomID string `json:"roomId"`
	// LastSeq, when set, is the last seq the client has of the room; the
	// server replays what came after it before live events. Nil means no replay.
	LastSeq *int64 `json:"lastSeq,omitempty"`
}

// LeaveRoom is the payload of leave_room.
type LeaveRoom struct {
	// RoomID is the room to stop receiving on this connection.
	RoomID string `json:"roomId"`
}

// SendMessage is the payload of send_message.
type SendMessage struct {
	// RoomID is the room to post to.
	RoomID string `json:"roomId"`
	// Content is the message text (or caption / URL for image and file).
	Content string `json:"content"`
	// Type is text, image or file; empty means text.
	Type string `json:"type,omitempty"`
	// Metadata is an optional JSON object stored with the message.
	Metadata json.RawMessage `json:"metadata,omitempty"`
	// ClientMsgID is an optional idempotency key chosen by the client.
	ClientMsgID string `json:"clientMsgId,omitempty"`
}

// EditMessage is the payload of edit_message.
type EditMessage struct {
	// RoomID is the room of the message; optional (the seed's form sends
	// none: the server finds the message's room).
	RoomID string `json:"roomId"`
	// MessageID is the UUID of the message to edit.
	MessageID string `json:"messageId"`
	// Content is the new text.
	Content string `json:"content"`
}

// DeleteMessage is the payload of delete_message.
type DeleteMessage struct {
	// RoomID is the room of the message; optional, as for EditMessage.
	RoomID string `json:"roomId"`
	// MessageID is the UUID of the message to delete.
	MessageID string `json:"messageId"`
}

// MarkRead is the payload of mark_read.
type MarkRead struct {
	// RoomID is the room read.
	RoomID string `json:"roomId"`
	// Seq is the seq of the last event read; this or MessageID is required.
	Seq *int64 `json:"seq"`
	// MessageID names the last message read instead of Seq (the seed's
	// form); its seq is looked up.
	MessageID string `json:"messageId"`
}

// TypingRequest is the payload of typing_start and typing_stop.
type TypingRequest struct {
	// RoomID is the room typed in.
	RoomID string `json:"roomId"`
}

// JoinAck is the ack payload of join_room.
type JoinAck struct {
	// RoomID is the room joined.
	RoomID string `json:"roomId"`
	// LastSeq is the room's current last seq; null when the room has no
	// events yet (or the server does not know it).
	LastSeq *int64 `json:"lastSeq"`
}

// LeaveAck is the ack payload of leave_room.
type LeaveAck struct {
	// RoomID is the room left.
	RoomID string `json:"roomId"`
}

// SendAck is the ack payload of send_message: the message is stored in the
// room's log at Seq.
type SendAck struct {
	// ID is the message's UUIDv7.
	ID string `json:"id"`
	// RoomID is the room posted to.
	RoomID string `json:"roomId"`
	// Seq is the message's position in the room's log.
	Seq int64 `json:"seq"`
	// ClientMsgID echoes the client's idempotency key; empty when none.
	ClientMsgID string `json:"clientMsgId,omitempty"`
	// CreatedAt is when the server accepted the message (UTC).
	CreatedAt time.Time `json:"createdAt"`
}

// MessageAck is the ack payload of edit_message and delete_message.
type MessageAck struct {
	// MessageID is the message edited or deleted.
	MessageID string `json:"messageId"`
	// Seq is the position of the edit or delete event in the room's log.
	Seq int64 `json:"seq"`
}

// ReadAck is the ack payload of mark_read.
type ReadAck struct {
	// Seq is the position of the read event in the room's log.
	Seq int64 `json:"seq"`
}

// Typing is the payload of a `typing` push; it has no seq (not in the log).
type Typing struct {
	RoomID   string `json:"roomId"`
	UserID   string `json:"userId"`
	Username string `json:"username"`
	// Typing is true on typing_start and false on typing_stop.
	Typing bool `json:"typing"`
}

// ResyncRequired is the payload of a `resync_required` push.
type ResyncRequired struct {
	// RoomID is the room with a gap.
	RoomID string `json:"roomId"`
	// FromSeq is the last seq the client has: fetch REST history after it.
	FromSeq int64 `json:"fromSeq"`
	// Reason says why the server could not fill the gap itself (the
	// Resync* constants); empty from servers that predate it.
	Reason string `json:"reason,omitempty"`
	// RetryAfterMs, when set, says that joining again with lastSeq FromSeq
	// after this many milliseconds will likely replay the gap.
	RetryAfterMs int64 `json:"retryAfterMs,omitempty"`
}

// Reasons of a resync_required push (docs/protocol.md).
const (
	// ResyncHistoryTrimmed: neither the recent history nor the server's
	// copy of the log has the missed events; use REST history.
	ResyncHistoryTrimmed = "history_trimmed"
	// ResyncPersisterBehind: the events are past the recent history and
	// not yet in the server's copy of the log; retry after RetryAfterMs.
	ResyncPersisterBehind = "persister_behind"
	// ResyncReplayLimit: more events were missed than one replay carries
	// (the first ones were replayed); use REST history for the rest.
	ResyncReplayLimit = "replay_limit"
	// ResyncUnavailable: a store the replay needs did not answer; retry
	// after RetryAfterMs.
	ResyncUnavailable = "unavailable"
	// ResyncOverflow: the server could not hold the room's live events
	// while it repaired a gap; use REST history.
	ResyncOverflow = "overflow"
)
