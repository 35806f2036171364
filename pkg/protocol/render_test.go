package protocol

import (
	"encoding/json"
	"testing"
	"time"

	"relay/pkg/events"
)

// RenderEvent's frame is what json.Marshal gives for the Frame, for every
// event type, with content that JSON must escape.
func TestRenderEventIsJSONMarshalOfTheFrame(t *testing.T) {
	at := time.Date(2026, 11, 27, 4, 0, 0, 123456000, time.UTC)
	prev := int64(9)
	for _, e := range []events.Event{
		{Type: events.MessageCreated, RoomID: 3, UserID: 5, Username: "kim", MessageID: "m1", Content: "<b>\"hi\"</b> & \u2028 é\n", MessageType: "text", Metadata: json.RawMessage(`{"a": [1, 2]}`), ClientMsgID: "c1", At: at},
		{Type: events.MessageEdited, RoomID: 3, UserID: 5, MessageID: "m1", Content: "edited", At: at},
		{Type: events.MessageDeleted, RoomID: 3, UserID: 5, MessageID: "m1", At: at},
		{Type: events.ReadMarked, RoomID: 3, UserID: 5, ReadSeq: 8},
		{Type: events.ReadMarked, RoomID: 3, UserID: 5, ReadSeq: 8, MessageID: "m1"},
		{Type: events.MemberJoined, RoomID: 3, UserID: 6, Username: "lee"},
		{Type: events.MemberLeft, RoomID: 3, UserID: 6},
	} {
		got, err := RenderEvent(&e, 10, &prev)
		if err != nil {
			t.Fatal(err)
		}
		var f Frame
		if err := json.Unmarshal(got, &f); err != nil {
			t.Fatalf("%s: invalid frame %s: %v", e.Type, got, err)
		}
		want, err := json.Marshal(f)
		if err != nil {
			t.Fatal(err)
		}
		if string(got) != string(want) {
			t.Errorf("%s: rendered\n%s\nwant\n%s", e.Type, got, want)
		}
	}
	if _, err := RenderEvent(&events.Event{Type: "nope", RoomID: 1}, 1, nil); err == nil {
		t.Error("unknown event type rendered")
	}
}
