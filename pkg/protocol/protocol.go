// Package protocol is the native WebSocket protocol at /ws (docs/protocol.md):
// the frame envelope, event names, payloads, error codes and close codes.
// The gateway, the delivery worker (which renders pushes once, for every
// recipient), tests and chatbench share it.
package protocol

import (
	"encoding/json"
	"time"

	"relay/pkg/chat"
)

// Frame is one JSON text frame in either direction:
// {"event": "...", "data": {...}, "ref": "c42"}.
type Frame struct {
	// Event names the frame's meaning.
	Event string `json:"event"`
	// Data is the event's payload; its shape depends on Event.
	Data json.RawMessage `json:"data,omitempty"`
	// Ref, when a client sets it, is echoed in exactly one ack or error reply.
	Ref string `json:"ref,omitempty"`
}

// Client-to-server events.
const (
	EventJoinRoom      = "join_room"
	EventLeaveRoom     = "leave_room"
	EventSendMessage   = "send_message"
	EventEditMessage   = "edit_message"
	EventDeleteMessage = "delete_message"
	EventMarkRead      = "mark_read"
	EventTypingStart   = "typing_start"
	EventTypingStop    = "typing_stop"
	EventPing          = "ping"
)

// Server-to-client events.
const (
	EventAck            = "ack"
	EventError          = "error"
	EventMessage        = "message"
	EventMessageEdited  = "message_edited"
	EventMessageDeleted = "message_deleted"
	EventMessageRead    = "message_read"
	EventUserJoined     = "user_joined"
	EventUserLeft       = "user_left"
	EventTyping         = "typing"
	EventPresenceUpdate = "presence_update"
)

// ErrorData is the payload of an error frame.
type ErrorData struct {
	Code    chat.Code `json:"code"`
	Message string    `json:"message"`
	// RetryAfterMs, on some RATE_LIMITED errors, is how long to wait
	// before the same request can succeed.
	RetryAfterMs int64 `json:"retryAfterMs,omitempty"`
}

// WebSocket close codes the gateway sends (docs/protocol.md, close codes).
const (
	// CloseNormal: a Socket.IO session's WebSocket ended normally (the
	// session closed, or it moved on).
	CloseNormal = 1000
	// CloseProtocolError: the client broke RFC 6455 (/ws).
	CloseProtocolError = 1002
	// CloseUnsupportedData: a Socket.IO WebSocket message was not an
	// Engine.IO packet.
	CloseUnsupportedData = 1003
	// CloseMessageTooBig: a message over the read limit (WS_READ_LIMIT on
	// /ws, SOCKETIO_MAX_PAYLOAD on Socket.IO).
	CloseMessageTooBig = 1009
	// CloseInternalError: an unexpected server error ended the connection.
	CloseInternalError = 1011
	// CloseServiceRestart: the server restarts; reconnect (to another instance) and resume.
	CloseServiceRestart = 1012
	// CloseTryAgainLater: the server is full.
	CloseTryAgainLater = 1013
	// CloseSlowConsumer: the client did not read fast enough; its queue overflowed.
	CloseSlowConsumer = 4000
	// CloseAuthExpired: the token expired during the session.
	CloseAuthExpired = 4001
)

// Message is the payload of a `message` push and of history items.
type Message struct {
	ID          string          `json:"id"`
	RoomID      string          `json:"roomId"`
	UserID      string          `json:"userId"`
	Username    string          `json:"username"`
	Content     string          `json:"content"`
	Type        string          `json:"type"`
	Metadata    json.RawMessage `json:"metadata,omitempty"`
	ClientMsgID string          `json:"clientMsgId,omitempty"`
	Seq         int64           `json:"seq"`
	PrevSeq     *int64          `json:"prevSeq,omitempty"`
	CreatedAt   time.Time       `json:"createdAt"`
	// Edited is set in a replay when a later message_edited changed the
	// text: Content is already the current one.
	Edited bool `json:"edited,omitempty"`
	// Deleted is set in a replay when the message was deleted later: its
	// Content is empty and its Metadata gone.
	Deleted bool `json:"deleted,omitempty"`
}

// MessageEdited is the payload of a `message_edited` push.
type MessageEdited struct {
	RoomID    string    `json:"roomId"`
	MessageID string    `json:"messageId"`
	UserID    string    `json:"userId"`
	Content   string    `json:"content"`
	EditedAt  time.Time `json:"editedAt"`
	Seq       int64     `json:"seq"`
	PrevSeq   *int64    `json:"prevSeq,omitempty"`
}

// MessageDeleted is the payload of a `message_deleted` push.
type MessageDeleted struct {
	RoomID    string    `json:"roomId"`
	MessageID string    `json:"messageId"`
	UserID    string    `json:"userId"`
	DeletedAt time.Time `json:"deletedAt"`
	Seq       int64     `json:"seq"`
	PrevSeq   *int64    `json:"prevSeq,omitempty"`
}

// MessageRead is the payload of a `message_read` push: UserID has read
// RoomID up to ReadSeq. Seq is the read event's own position in the log.
type MessageRead struct {
	RoomID  string `json:"roomId"`
	UserID  string `json:"userId"`
	ReadSeq int64  `json:"readSeq"`
	// MessageID is the message read up to, when the reader named it.
	MessageID string `json:"messageId,omitempty"`
	Seq       int64  `json:"seq"`
	PrevSeq   *int64 `json:"prevSeq,omitempty"`
}

// UserJoined is the payload of a `user_joined` push.
type UserJoined struct {
	RoomID   string `json:"roomId"`
	UserID   string `json:"userId"`
	Username string `json:"username"`
	Seq      int64  `json:"seq"`
	PrevSeq  *int64 `json:"prevSeq,omitempty"`
}

// UserLeft is the payload of a `user_left` push.
type UserLeft struct {
	RoomID  string `json:"roomId"`
	UserID  string `json:"userId"`
	Seq     int64  `json:"seq"`
	PrevSeq *int64 `json:"prevSeq,omitempty"`
}
