// Package presence is the shared side of the presence service: the Redis key
// and channel names it owns, the commands gateways send it, the events it
// publishes, the gateway-side Publisher and the read side (Reader) for the
// api.
//
// Flow: gateways append commands (connect, disconnect, heartbeat batches,
// typing start/stop) to the stream Keys.Commands; the presence service reads
// them with the consumer group "presence", applies each with an atomic Lua
// script that says whether that call changed a user's or a typist's state,
// and publishes only then:
//
//   - presence_update on the global channel Keys.Events, as an Event:
//     {"userId": "42", "status": "online", "trace": {...},
//     "frame": {"event": "presence_update", "data": {"userId": "42",
//     "status": "online", "lastSeen": "2026-01-02T15:04:05.123Z"}}}.
//     Every gateway subscribes and writes Frame to its connections that
//     share a room with UserID (that filter is the gateway's).
//   - typing on the room's shard channel (pkg/redis Keys.RoomChannel,
//     SPUBLISH) as a
//     pkg/protocol.Publication with Ephemeral = true, Seq 0 and SkipUserID =
//     the typist: {"roomId": "7", "seq": 0, "ephemeral": true,
//     "skipUserId": "42", "frame": {"event": "typing", "data": {"roomId":
//     "7", "userId": "42", "username": "ada", "typing": true}}}.
//
// State (all names under the deployment's REDIS_PREFIX; only the presence
// service writes them). Every name has the hash tag {presence}, so the
// scripts that update several of them at once work on Redis Cluster (one
// slot, one shard):
//
//	{presence}:cmds                stream, capped    commands from gateways (group "presence")
//	{presence}:events              stream, capped    presence_update events (AddEvent, FollowEvents)
//	{presence}:u:<user>            sorted set        "<gatewayId>/<connId>" → expiry (unix ms)
//	{presence}:online              sorted set        user id → latest expiry of its connections
//	{presence}:lastseen            hash              user id → last seen (unix ms)
//	{presence}:tombs               sorted set        closed "<gatewayId>/<connId>" → forget-after (unix ms)
//	{presence}:dirty               sorted set        user id → change counter, for the PostgreSQL sync
//	{presence}:typing:<room>       sorted set        user id → typing expiry (unix ms)
//	{presence}:typing:names:<room> hash              user id → username of the typist
//	{presence}:typing:rooms        sorted set        room id → soonest typing expiry in the room
//
// Times in scores are Redis stream time: a command's expiry is counted from
// the millisecond of its stream entry id, so a late-applied command (after a
// presence restart) means what it meant when it was sent.
package presence

import (
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	relayredis "relay/pkg/redis"
)

// The heartbeat interval, presence timeout and typing TTL the gateways
// and the presence service must agree on are relay/pkg/config.Presence.
const (
	// DefaultStreamMaxLen caps the commands stream (approximately). A
	// presence outage longer than this many commands loses the oldest.
	DefaultStreamMaxLen = 100_000
	// Group is the consumer group of the presence service on the commands stream.
	Group = "presence"
)

// Keys names everything presence owns; it embeds pkg/redis Keys for the room
// channels typing events go to.
type Keys struct {
	relayredis.Keys
}

// NewKeys returns the names under prefix (REDIS_PREFIX, e.g. "relay:").
func NewKeys(prefix string) Keys { return Keys{relayredis.Keys{Prefix: prefix}} }

// tag is the hash tag of every presence key: the scripts update a user's
// or a room's key together with the global sets (online, typing rooms), so
// on Redis Cluster all of them must be in one hash slot. Presence state is
// small (a few hundred bytes per online user); one shard holds it.
const tag = "{presence}"

// Commands is the stream gateways append commands to.
func (k Keys) Commands() string { return k.Prefix + tag + ":cmds" }

// Events is the stream presence_update events are appended to (AddEvent,
// FollowEvents).
func (k Keys) Events() string { return k.Prefix + tag + ":events" }

// User is the sorted set of a user's live connections, scored by expiry.
func (k Keys) User(userID int64) string {
	return k.Prefix + tag + ":u:" + strconv.FormatInt(userID, 10)
}

// Online is the sorted set of online users scored by their latest
// connection expiry; the sweeper scans it from the low end.
func (k Keys) Online() string { return k.Prefix + tag + ":online" }

// LastSeen is the hash of user id → last seen, unix ms.
func (k Keys) LastSeen() string { return k.Prefix + tag + ":lastseen" }

// Tombs remembers closed connections for a while, so a connect or heartbeat
// applied after the connection's disconnect (two presence instances can
// apply neighbouring commands out of order) does not bring it back.
func (k Keys) Tombs() string { return k.Prefix + tag + ":tombs" }

// Dirty holds users whose online state changed since it was last written
// to PostgreSQL; the score counts changes so a sync only clears what it wrote.
func (k Keys) Dirty() string { return k.Prefix + tag + ":dirty" }

// Typing is the sorted set of a room's typists scored by expiry.
func (k Keys) Typing(roomID int64) string {
	return k.Prefix + tag + ":typing:" + strconv.FormatInt(roomID, 10)
}

// TypingNames is the hash of a room's typists' usernames.
func (k Keys) TypingNames(roomID int64) string {
	return k.Prefix + tag + ":typing:names:" + strconv.FormatInt(roomID, 10)
}

// TypingRooms is the sorted set of rooms with typists, scored by their
// soonest expiry; the sweeper scans it from the low end.
func (k Keys) TypingRooms() string { return k.Prefix + tag + ":typing:rooms" }

// Member is the sorted-set member naming one connection of one gateway.
func Member(gatewayID, connID string) string { return gatewayID + "/" + connID }

// Op is a command's kind.
type Op string

// Commands a gateway sends.
const (
	OpConnect     Op = "connect"
	OpDisconnect  Op = "disconnect"
	OpHeartbeat   Op = "heartbeat"
	OpTypingStart Op = "typing_start"
	OpTypingStop  Op = "typing_stop"
)

// Conn is one connection in a heartbeat batch.
type Conn struct {
	// UserID is the connection's user.
	UserID int64 `json:"u,string"`
	// ConnID identifies the connection within its gateway.
	ConnID string `json:"c"`
}

// Command is the JSON value of field "c" of a commands stream entry.
type Command struct {
	// Op says what to do.
	Op Op `json:"op"`
	// Gateway is the sending gateway instance's id.
	Gateway string `json:"gw"`
	// UserID is the user (connect, disconnect, typing).
	UserID int64 `json:"user,string,omitempty"`
	// Username is the user's name (connect, typing).
	Username string `json:"name,omitempty"`
	// ConnID is the connection (connect, disconnect).
	ConnID string `json:"conn,omitempty"`
	// RoomID is the room typed in (typing).
	RoomID int64 `json:"room,string,omitempty"`
	// Conns are the connections a heartbeat renews.
	Conns []Conn `json:"conns,omitempty"`
	// Trace carries W3C trace context of the gateway's span.
	Trace map[string]string `json:"trace,omitempty"`
}

// Limits that keep one command cheap to apply.
const (
	// MaxIDLen bounds gateway and connection ids.
	MaxIDLen = 128
	// MaxUsernameLen bounds a username carried in a command.
	MaxUsernameLen = 64
)

// Validate checks that c has what its Op needs.
func (c *Command) Validate() error {
	if c.Gateway == "" || len(c.Gateway) > MaxIDLen {
		return errors.New("presence: gateway id required (at most 128 bytes)")
	}
	if len(c.Username) > MaxUsernameLen {
		return errors.New("presence: username too long")
	}
	switch c.Op {
	case OpConnect, OpDisconnect:
		if c.UserID <= 0 {
			return fmt.Errorf("presence: %s: user id required", c.Op)
		}
		if err := validConnID(c.ConnID); err != nil {
			return err
		}
	case OpHeartbeat:
		for _, cn := range c.Conns {
			if cn.UserID <= 0 {
				return errors.New("presence: heartbeat: user id required")
			}
			if err := validConnID(cn.ConnID); err != nil {
				return err
			}
		}
	case OpTypingStart, OpTypingStop:
		if c.UserID <= 0 || c.RoomID <= 0 {
			return fmt.Errorf("presence: %s: user and room id required", c.Op)
		}
	default:
		return fmt.Errorf("presence: unknown op %q", c.Op)
	}
	return nil
}

func validConnID(id string) error {
	if id == "" || len(id) > MaxIDLen {
		return errors.New("presence: connection id required (at most 128 bytes)")
	}
	return nil
}

// DecodeCommand parses and validates a command entry's value.
func DecodeCommand(b []byte) (*Command, error) {
	var c Command
	if err := json.Unmarshal(b, &c); err != nil {
		return nil, fmt.Errorf("presence: command: %w", err)
	}
	if err := c.Validate(); err != nil {
		return nil, err
	}
	return &c, nil
}

// Status values of a presence_update.
const (
	StatusOnline  = "online"
	StatusOffline = "offline"
)

// PresenceUpdate is the payload of a `presence_update` push.
type PresenceUpdate struct {
	// UserID is the user whose state changed.
	UserID string `json:"userId"`
	// Status is online or offline.
	Status string `json:"status"`
	// LastSeen is when the user was last seen: the time of the transition,
	// or for a timed-out user the time of its last heartbeat.
	LastSeen time.Time `json:"lastSeen"`
}

// Event is what the presence service appends to Keys.Events: the
// rendered presence_update frame and the user it is about, for the
// gateway's filter.
type Event struct {
	// UserID is the user whose state changed.
	UserID int64 `json:"userId,string"`
	// Status is online or offline.
	Status string `json:"status"`
	// Trace carries W3C trace context.
	Trace map[string]string `json:"trace,omitempty"`
	// Frame is the server frame to write to sockets as it is.
	Frame json.RawMessage `json:"frame"`
}

// DecodeEvent parses an event of the events stream.
func DecodeEvent(b []byte) (*Event, error) {
	var e Event
	if err := json.Unmarshal(b, &e); err != nil {
		return nil, fmt.Errorf("presence: event: %w", err)
	}
	if e.UserID <= 0 || len(e.Frame) == 0 {
		return nil, errors.New("presence: event: userId and frame required")
	}
	return &e, nil
}

// Status is a user's presence as the Reader reports it (and the REST api
// renders it).
type Status struct {
	// UserID is the user.
	UserID int64 `json:"userId,string"`
	// Status is online or offline.
	Status string `json:"status"`
	// LastSeen is the user's last transition or heartbeat; nil when the
	// presence state has never seen the user (callers may fall back to
	// users.last_seen).
	LastSeen *time.Time `json:"lastSeen"`
}

// Online reports whether the user is online.
func (s Status) Online() bool { return s.Status == StatusOnline }

// Typist is a user typing in a room.
type Typist struct {
	// UserID is the typist.
	UserID int64 `json:"userId,string"`
	// Username is the typist's name.
	Username string `json:"username"`
}

// EntryTime returns the unix ms of a stream entry id ("<ms>-<seq>").
func EntryTime(id string) (int64, error) {
	ms, _, _ := strings.Cut(id, "-")
	v, err := strconv.ParseInt(ms, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("presence: entry id %q: %w", id, err)
	}
	return v, nil
}
