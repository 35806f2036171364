package redis_test

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"relay/pkg/events"
	"relay/pkg/protocol"
	"relay/pkg/redis"
	"relay/pkg/testenv"
)

// After a delete, the room's recent history (what a join_room replay
// reads) no longer has the message's content or metadata; after edits,
// every earlier frame of the message shows the current text.
func TestHistoryHidesDeletedAndEditedText(t *testing.T) {
	t.Parallel()
	rdb, prefix := testenv.Redis(t)
	ctx := context.Background()
	k := redis.Keys{Prefix: prefix}
	const room = 9
	at := time.Now().UTC()
	evs := []*events.Event{
		{Type: events.MessageCreated, RoomID: room, UserID: 1, MessageID: "m1", MessageType: "text", Content: "secret one", Metadata: json.RawMessage(`{"note":"secret meta"}`), At: at},
		{Type: events.MessageCreated, RoomID: room, UserID: 1, MessageID: "m2", MessageType: "text", Content: "first draft", At: at},
		{Type: events.MessageCreated, RoomID: room, UserID: 2, MessageID: "m3", MessageType: "text", Content: "kept", At: at},
		{Type: events.MessageEdited, RoomID: room, UserID: 1, MessageID: "m2", Content: "second draft", At: at},
		{Type: events.MessageDeleted, RoomID: room, UserID: 1, MessageID: "m1", At: at},
		{Type: events.MessageEdited, RoomID: room, UserID: 1, MessageID: "m2", Content: "final text", At: at},
		{Type: events.MessageEdited, RoomID: room, UserID: 1, MessageID: "m1", Content: "undelete?", At: at},
	}
	var prev *int64
	for i, e := range evs {
		seq := int64(i)
		frame, err := protocol.RenderEvent(e, seq, prev)
		if err != nil {
			t.Fatal(err)
		}
		payload, err := (&redis.Publication{RoomID: room, Seq: seq, PrevSeq: prev, Frame: frame}).Encode()
		if err != nil {
			t.Fatal(err)
		}
		var redact []redis.Redaction
		switch e.Type {
		case events.MessageDeleted:
			redact = append(redact, redis.Redaction{MessageID: e.MessageID, Deleted: true})
		case events.MessageEdited:
			redact = append(redact, redis.Redaction{MessageID: e.MessageID, Content: e.Content})
		}
		if res, _, err := redis.Publish(ctx, rdb, k, room, seq, prev, payload, 1000, redact...); err != nil || res != redis.Published {
			t.Fatalf("publish %d: %v %v", seq, res, err)
		}
		prev = &seq
	}
	hist, _, err := redis.History(ctx, rdb, k, room, -1, 100)
	if err != nil {
		t.Fatal(err)
	}
	if len(hist) != len(evs) {
		t.Fatalf("%d entries", len(hist))
	}
	all := ""
	for _, p := range hist {
		all += string(p.Frame)
	}
	for _, gone := range []string{"secret one", "secret meta", "first draft", "second draft", "undelete?"} {
		if strings.Contains(all, gone) {
			t.Errorf("history still shows %q: %s", gone, all)
		}
	}
	var m1, m2, m3 protocol.Message
	decode(t, hist[0].Frame, &m1)
	decode(t, hist[1].Frame, &m2)
	decode(t, hist[2].Frame, &m3)
	if !m1.Deleted || m1.Content != "" || m1.Metadata != nil || m1.Seq != 0 {
		t.Errorf("deleted message replays as %+v", m1)
	}
	if !m2.Edited || m2.Content != "final text" {
		t.Errorf("edited message replays as %+v", m2)
	}
	if m3.Edited || m3.Deleted || m3.Content != "kept" {
		t.Errorf("untouched message replays as %+v", m3)
	}
	var e1 protocol.MessageEdited
	decode(t, hist[3].Frame, &e1)
	if e1.Content != "final text" || e1.Seq != 3 || e1.PrevSeq == nil || *e1.PrevSeq != 2 {
		t.Errorf("older edit replays as %+v", e1)
	}
}

func decode(t *testing.T, frame []byte, into any) {
	t.Helper()
	var f protocol.Frame
	if err := json.Unmarshal(frame, &f); err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(f.Data, into); err != nil {
		t.Fatal(err)
	}
}
