package server

import (
	"strings"
	"testing"
	"time"

	"relay/pkg/chat"
	"relay/pkg/events"
	"relay/pkg/protocol"
	"relay/pkg/store"
)

// The seed's payloads: edit_message and delete_message name only the
// message (its room is looked up), mark_read names a message instead of a
// seq. To a non-member the message does not exist.
func TestSeedPayloadForms(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	g := e.start(nil)
	alice, aliceTok := e.user("alice")
	bob, bobTok := e.user("bob")
	_, eveTok := e.user("eve")
	room := e.room(chat.RoomGroup, alice, bob)
	a, b, ev := e.dial(g, aliceTok), e.dial(g, bobTok), e.dial(g, eveTok)

	var sent protocol.SendAck
	b.ack(protocol.EventSendMessage, protocol.SendMessage{RoomID: rid(room), Content: "hi"}, &sent)
	var edited protocol.MessageAck
	b.ack(protocol.EventEditMessage, map[string]string{"messageId": sent.ID, "content": "hi, edited"}, &edited)
	if edited.MessageID != sent.ID || edited.Seq <= sent.Seq {
		t.Fatalf("edit ack %+v", edited)
	}
	ev.fail(protocol.EventEditMessage, map[string]string{"messageId": sent.ID, "content": "x"}, chat.CodeNotFound)
	ev.fail(protocol.EventDeleteMessage, map[string]string{"messageId": sent.ID}, chat.CodeNotFound)
	a.fail(protocol.EventEditMessage, map[string]string{"messageId": sent.ID, "content": "admins cannot edit"}, chat.CodeForbidden)
	a.ack(protocol.EventDeleteMessage, map[string]string{"messageId": sent.ID}, nil)

	// mark_read by message id: the stored message's seq is the position.
	row := store.Message{ID: "0190a7d2-2222-7000-8000-000000000002", RoomID: room, UserID: bob, Content: "stored",
		Type: "text", Seq: 40, UpdatedSeq: 40, CreatedAt: time.Now()}
	if err := e.db.Create(&row).Error; err != nil {
		t.Fatal(err)
	}
	a.ack(protocol.EventMarkRead, map[string]string{"roomId": rid(room), "messageId": row.ID}, nil)
	a.fail(protocol.EventMarkRead, map[string]string{"roomId": rid(room), "messageId": "0190a7d2-3333-7000-8000-000000000003"}, chat.CodeNotFound)
	a.fail(protocol.EventMarkRead, map[string]string{"roomId": rid(room)}, chat.CodeBadRequest)
	other := e.room(chat.RoomGroup, alice)
	a.fail(protocol.EventMarkRead, map[string]string{"roomId": rid(other), "messageId": row.ID}, chat.CodeNotFound)

	recs := e.records(4)
	want := []events.Type{events.MessageCreated, events.MessageEdited, events.MessageDeleted, events.ReadMarked}
	for i, rec := range recs {
		if got := decodeRecord(t, rec); got.Type != want[i] || got.RoomID != room {
			t.Fatalf("record %d: %+v, want %s in room %d", i, got, want[i], room)
		}
	}
	read := decodeRecord(t, recs[3])
	if read.ReadSeq != 40 || read.MessageID != row.ID || read.UserID != alice {
		t.Fatalf("read record %+v", read)
	}
	// message_read carries the message id.
	f, err := protocol.RenderEvent(read, recs[3].Offset, nil)
	if err != nil || !strings.Contains(string(f), `"messageId":"`+row.ID+`"`) {
		t.Fatalf("message_read %s (%v)", f, err)
	}
}

// An archived room refuses sends and edits; reading it goes on.
func TestArchivedRoomRefusesSends(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	g := e.start(nil)
	alice, tok := e.user("alice")
	room := e.room(chat.RoomGroup, alice)
	c := e.dial(g, tok)
	var sent protocol.SendAck
	c.ack(protocol.EventSendMessage, protocol.SendMessage{RoomID: rid(room), Content: "before"}, &sent)
	if err := e.db.Exec(`UPDATE rooms SET is_active = false WHERE id = ?`, room).Error; err != nil {
		t.Fatal(err)
	}
	// A new gateway: the first one cached the room as active (for the
	// membership TTL, as documented).
	g2 := e.start(nil)
	c2 := e.dial(g2, tok)
	msg := c2.fail(protocol.EventSendMessage, protocol.SendMessage{RoomID: rid(room), Content: "after"}, chat.CodeForbidden)
	if msg.Message != "room "+rid(room)+" is archived" {
		t.Fatalf("error %+v", msg)
	}
	c2.fail(protocol.EventEditMessage, protocol.EditMessage{RoomID: rid(room), MessageID: sent.ID, Content: "x"}, chat.CodeForbidden)
	c2.ack(protocol.EventMarkRead, protocol.MarkRead{RoomID: rid(room), Seq: ptr(sent.Seq)}, nil)
}
