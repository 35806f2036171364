package protocol

import (
	"encoding/json"
	"fmt"
	"strconv"

	"relay/pkg/events"
)

// RenderEvent turns a room event into the server frame every recipient
// gets, rendered once for all of them (by the delivery worker, and by a
// gateway replaying the log kept in PostgreSQL). prev is the room's previous seq, nil when
// unknown (receivers then recover from history).
func RenderEvent(e *events.Event, seq int64, prev *int64) ([]byte, error) {
	room := strconv.FormatInt(e.RoomID, 10)
	user := strconv.FormatInt(e.UserID, 10)
	var (
		name string
		data any
	)
	switch e.Type {
	case events.MessageCreated:
		name = EventMessage
		data = Message{
			ID: e.MessageID, RoomID: room, UserID: user, Username: e.Username,
			Content: e.Content, Type: e.MessageType, Metadata: metadata(e.Metadata),
			ClientMsgID: e.ClientMsgID, Seq: seq, PrevSeq: prev, CreatedAt: e.At,
		}
	case events.MessageEdited:
		name = EventMessageEdited
		data = MessageEdited{
			RoomID: room, MessageID: e.MessageID, UserID: user, Content: e.Content,
			EditedAt: e.At, Seq: seq, PrevSeq: prev,
		}
	case events.MessageDeleted:
		name = EventMessageDeleted
		data = MessageDeleted{
			RoomID: room, MessageID: e.MessageID, UserID: user, DeletedAt: e.At, Seq: seq, PrevSeq: prev,
		}
	case events.ReadMarked:
		name = EventMessageRead
		data = MessageRead{RoomID: room, UserID: user, ReadSeq: e.ReadSeq, MessageID: e.MessageID, Seq: seq, PrevSeq: prev}
	case events.MemberJoined:
		name = EventUserJoined
		data = UserJoined{RoomID: room, UserID: user, Username: e.Username, Seq: seq, PrevSeq: prev}
	case events.MemberLeft:
		name = EventUserLeft
		data = UserLeft{RoomID: room, UserID: user, Seq: seq, PrevSeq: prev}
	default:
		return nil, fmt.Errorf("render: unknown event type %q", e.Type)
	}
	d, err := json.Marshal(data)
	if err != nil {
		return nil, fmt.Errorf("render %s: %w", e.Type, err)
	}
	// What json.Marshal(Frame{Event: name, Data: d}) gives, without
	// scanning d again: it is json.Marshal's compact output, and name is
	// one of the event constants (nothing to escape).
	f := make([]byte, 0, len(d)+len(name)+20)
	f = append(f, `{"event":"`...)
	f = append(f, name...)
	f = append(f, `","data":`...)
	f = append(f, d...)
	return append(f, '}'), nil
}

// metadata drops an explicit JSON null so the field is omitted.
func metadata(m json.RawMessage) json.RawMessage {
	if string(m) == "null" {
		return nil
	}
	return m
}
