package delivery

import (
	"encoding/json"
	"fmt"
	"strconv"

	"relay/pkg/events"
	"relay/pkg/protocol"
	"relay/pkg/redis"
)

// renderFrame turns a room event into the server frame every recipient
// gets, once for all of them. prev is the room's previous seq, nil when
// unknown (receivers then recover from history).
func renderFrame(e *events.Event, seq int64, prev *int64) ([]byte, error) {
	room := strconv.FormatInt(e.RoomID, 10)
	user := strconv.FormatInt(e.UserID, 10)
	var (
		name string
		data any
	)
	switch e.Type {
	case events.MessageCreated:
		name = protocol.EventMessage
		data = protocol.Message{
			ID: e.MessageID, RoomID: room, UserID: user, Username: e.Username,
			Content: e.Content, Type: e.MessageType, Metadata: metadata(e.Metadata),
			ClientMsgID: e.ClientMsgID, Seq: seq, PrevSeq: prev, CreatedAt: e.At,
		}
	case events.MessageEdited:
		name = protocol.EventMessageEdited
		data = protocol.MessageEdited{
			RoomID: room, MessageID: e.MessageID, UserID: user, Content: e.Content,
			EditedAt: e.At, Seq: seq, PrevSeq: prev,
		}
	case events.MessageDeleted:
		name = protocol.EventMessageDeleted
		data = protocol.MessageDeleted{
			RoomID: room, MessageID: e.MessageID, UserID: user, DeletedAt: e.At, Seq: seq, PrevSeq: prev,
		}
	case events.ReadMarked:
		name = protocol.EventMessageRead
		data = protocol.MessageRead{RoomID: room, UserID: user, ReadSeq: e.ReadSeq, Seq: seq, PrevSeq: prev}
	case events.MemberJoined:
		name = protocol.EventUserJoined
		data = protocol.UserJoined{RoomID: room, UserID: user, Username: e.Username, Seq: seq, PrevSeq: prev}
	case events.MemberLeft:
		name = protocol.EventUserLeft
		data = protocol.UserLeft{RoomID: room, UserID: user, Seq: seq, PrevSeq: prev}
	default:
		return nil, fmt.Errorf("render: unknown event type %q", e.Type)
	}
	d, err := json.Marshal(data)
	if err != nil {
		return nil, fmt.Errorf("render %s: %w", e.Type, err)
	}
	f, err := json.Marshal(protocol.Frame{Event: name, Data: d})
	if err != nil {
		return nil, fmt.Errorf("render %s: %w", e.Type, err)
	}
	return f, nil
}

// renderPublication wraps the frame with its position and trace context:
// the bytes published on the room channel and kept in its history.
func renderPublication(e *events.Event, seq int64, prev *int64, trace map[string]string) ([]byte, error) {
	frame, err := renderFrame(e, seq, prev)
	if err != nil {
		return nil, err
	}
	b, err := json.Marshal(redis.Publication{RoomID: e.RoomID, Seq: seq, PrevSeq: prev, Trace: trace, Frame: frame})
	if err != nil {
		return nil, fmt.Errorf("render publication: %w", err)
	}
	return b, nil
}

// metadata drops an explicit JSON null so the field is omitted.
func metadata(m json.RawMessage) json.RawMessage {
	if string(m) == "null" {
		return nil
	}
	return m
}
