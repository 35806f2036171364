package events

import (
	"strings"
	"testing"
	"time"
)

func TestMarshalRoundTripIdsAsStrings(t *testing.T) {
	e := &Event{Type: MessageCreated, RoomID: 7, UserID: 42, MessageID: "01a2", MessageType: "text", Content: "hi", At: time.Unix(1, 0).UTC()}
	b, err := Marshal(e)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(b), `"roomId":"7"`) || !strings.Contains(string(b), `"userId":"42"`) {
		t.Fatalf("ids must be strings on the wire: %s", b)
	}
	got, err := Unmarshal(b)
	if err != nil || got.RoomID != 7 || got.Content != "hi" {
		t.Fatalf("round trip: %+v %v", got, err)
	}
	if string(e.Key()) != "7" {
		t.Fatalf("key %q", e.Key())
	}
}

func TestValidateRefuses(t *testing.T) {
	at := time.Now()
	bad := map[string]*Event{
		"no room":            {Type: MemberJoined, UserID: 1, At: at},
		"no time":            {Type: MemberJoined, RoomID: 1, UserID: 1},
		"unknown type":       {Type: "exploded", RoomID: 1, UserID: 1, At: at},
		"create without id":  {Type: MessageCreated, RoomID: 1, UserID: 1, MessageType: "text", At: at},
		"edit without id":    {Type: MessageEdited, RoomID: 1, UserID: 1, At: at},
		"delete without id":  {Type: MessageDeleted, RoomID: 1, UserID: 1, At: at},
		"negative read mark": {Type: ReadMarked, RoomID: 1, UserID: 1, ReadSeq: -1, At: at},
	}
	for name, e := range bad {
		if _, err := Marshal(e); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	for _, raw := range []string{`not json`, `[]`, `{"type":"member_joined","roomId":1,"userId":"1","at":"2020-01-01T00:00:00Z"}`} {
		if _, err := Unmarshal([]byte(raw)); err == nil {
			t.Errorf("%s: decoded", raw)
		}
	}
}
