package worker

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"relay/pkg/events"
	"relay/pkg/protocol"
	"relay/pkg/redis"
)

func TestRenderFrames(t *testing.T) {
	t.Parallel()
	at := time.Date(2025, 5, 6, 7, 8, 9, 123456789, time.UTC)
	prev := int64(41)
	base := events.Event{RoomID: 7, UserID: 9, Username: "ann", At: at}
	cases := []struct {
		typ   events.Type
		set   func(e *events.Event)
		event string
		want  string // JSON of the data object
	}{
		{events.MessageCreated, func(e *events.Event) {
			e.MessageID, e.Content, e.MessageType, e.ClientMsgID = "m1", "hi", "text", "c1"
			e.Metadata = json.RawMessage(`{"a":1}`)
		}, protocol.EventMessage,
			`{"id":"m1","roomId":"7","userId":"9","username":"ann","content":"hi","type":"text","metadata":{"a":1},"clientMsgId":"c1","seq":42,"prevSeq":41,"createdAt":"2025-05-06T07:08:09.123456789Z"}`},
		{events.MessageEdited, func(e *events.Event) { e.MessageID, e.Content = "m1", "edited" }, protocol.EventMessageEdited,
			`{"roomId":"7","messageId":"m1","userId":"9","content":"edited","editedAt":"2025-05-06T07:08:09.123456789Z","seq":42,"prevSeq":41}`},
		{events.MessageDeleted, func(e *events.Event) { e.MessageID = "m1" }, protocol.EventMessageDeleted,
			`{"roomId":"7","messageId":"m1","userId":"9","deletedAt":"2025-05-06T07:08:09.123456789Z","seq":42,"prevSeq":41}`},
		{events.ReadMarked, func(e *events.Event) { e.ReadSeq = 40 }, protocol.EventMessageRead,
			`{"roomId":"7","userId":"9","readSeq":40,"seq":42,"prevSeq":41}`},
		{events.MemberJoined, func(e *events.Event) { e.Role = "member" }, protocol.EventUserJoined,
			`{"roomId":"7","userId":"9","username":"ann","seq":42,"prevSeq":41}`},
		{events.MemberLeft, func(*events.Event) {}, protocol.EventUserLeft,
			`{"roomId":"7","userId":"9","seq":42,"prevSeq":41}`},
	}
	for _, c := range cases {
		e := base
		e.Type = c.typ
		c.set(&e)
		b, err := protocol.RenderEvent(&e, 42, &prev)
		if err != nil {
			t.Fatalf("%s: %v", c.typ, err)
		}
		var f protocol.Frame
		if err := json.Unmarshal(b, &f); err != nil {
			t.Fatalf("%s: %v", c.typ, err)
		}
		if f.Event != c.event || string(f.Data) != c.want || f.Ref != "" {
			t.Errorf("%s: got %s %s\nwant %s %s", c.typ, f.Event, f.Data, c.event, c.want)
		}
	}
}

func TestRenderPublicationWithoutPrevSeq(t *testing.T) {
	t.Parallel()
	e := &events.Event{Type: events.MessageCreated, RoomID: 3, UserID: 4, MessageID: "m", MessageType: "text",
		Metadata: json.RawMessage("null"), At: time.Unix(0, 0).UTC()}
	b, err := renderPublication(e, 5, nil, map[string]string{"traceparent": "00-0123-4567-01"})
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(b), "prevSeq") || strings.Contains(string(b), "metadata") {
		t.Fatalf("prevSeq or null metadata rendered: %s", b)
	}
	p, err := redis.DecodePublication(b)
	if err != nil {
		t.Fatal(err)
	}
	if p.RoomID != 3 || p.Seq != 5 || p.PrevSeq != nil || p.Trace["traceparent"] != "00-0123-4567-01" {
		t.Fatalf("publication = %+v", p)
	}
	var f protocol.Frame
	if err := json.Unmarshal(p.Frame, &f); err != nil || f.Event != protocol.EventMessage {
		t.Fatalf("frame %s: %v", p.Frame, err)
	}
}

func TestRenderUnknownType(t *testing.T) {
	t.Parallel()
	if _, err := protocol.RenderEvent(&events.Event{Type: "bogus", RoomID: 1, UserID: 1}, 1, nil); err == nil {
		t.Fatal("unknown type rendered")
	}
}

func BenchmarkRender(b *testing.B) {
	prev := int64(99)
	e := &events.Event{Type: events.MessageCreated, RoomID: 12345, UserID: 678, Username: "someone",
		MessageID: "0190f3c6-8a9b-7cde-8f01-23456789abcd", Content: "a message of ordinary length, about sixty bytes long",
		MessageType: "text", ClientMsgID: "c-123", At: time.Now().UTC()}
	tc := map[string]string{"traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := renderPublication(e, 100, &prev, tc); err != nil {
			b.Fatal(err)
		}
	}
}
