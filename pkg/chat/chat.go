package chat

import "slices"

// RoomType is the kind of a room.
type RoomType string

// Room types.
const (
	// RoomDirect is a conversation of exactly two users, unique per pair.
	RoomDirect RoomType = "direct"
	// RoomGroup is a private room whose admins add members.
	RoomGroup RoomType = "group"
	// RoomChannel is a public room anyone may join.
	RoomChannel RoomType = "channel"
)

// Valid reports whether t is a known room type.
func (t RoomType) Valid() bool {
	return t == RoomDirect || t == RoomGroup || t == RoomChannel
}

// Role is a member's role in a room.
type Role string

// Member roles.
const (
	RoleAdmin  Role = "admin"
	RoleMember Role = "member"
)

// MessageType is the kind of a message's content.
type MessageType string

// Message types.
const (
	MessageText  MessageType = "text"
	MessageImage MessageType = "image"
	MessageFile  MessageType = "file"
)

// Valid reports whether t is a known message type.
func (t MessageType) Valid() bool {
	return slices.Contains([]MessageType{MessageText, MessageImage, MessageFile}, t)
}

// Limits users meet; documented in docs/protocol.md and the OpenAPI file.
const (
	// MaxContentBytes bounds a message's content (UTF-8 bytes).
	MaxContentBytes = 4000
	// MaxMetadataBytes bounds a message's metadata object once encoded.
	MaxMetadataBytes = 2048
	// MaxClientMsgIDLen bounds a client-chosen message id.
	MaxClientMsgIDLen = 64
	// MaxRoomNameLen bounds a room's name (characters).
	MaxRoomNameLen = 100
	// MaxRoomMembers bounds the members a room may be created with.
	MaxRoomMembers = 1000
)
