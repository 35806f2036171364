package server

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"io"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/fasthttp/websocket"

	"relay/pkg/auth"
	"relay/pkg/chat"
	"relay/pkg/dedupe"
	"relay/pkg/events"
	"relay/pkg/kafka"
	"relay/pkg/protocol"
	"relay/pkg/store"
	"relay/pkg/web"
	"relay/services/gateway/internal/frame"
)

func TestUpgradeRefusedWithoutValidToken(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	g := e.start(nil)
	uid, good := e.user("alice")

	expired, err := auth.NewTokens(testSecret, time.Nanosecond)
	if err != nil {
		t.Fatal(err)
	}
	expiredTok, _, _ := expired.Issue(uid, "alice")
	otherKey, _ := auth.NewTokens("another-secret-0123456789abcdef", time.Hour)
	forged, _, _ := otherKey.Issue(uid, "alice")
	b64 := base64.RawURLEncoding.EncodeToString
	none := b64([]byte(`{"alg":"none","typ":"JWT"}`)) + "." +
		b64([]byte(`{"iss":"relay","sub":"`+rid(uid)+`","username":"alice","exp":`+strconv.FormatInt(time.Now().Add(time.Hour).Unix(), 10)+`}`)) + "."

	for name, tok := range map[string]string{
		"missing": "", "garbage": "not-a-jwt", "expired": expiredTok, "wrong secret": forged, "alg none": none,
	} {
		t.Run(name, func(t *testing.T) {
			_, resp, err := websocket.DefaultDialer.Dial(g.url+"?token="+tok, nil)
			if err == nil {
				t.Fatal("upgrade accepted")
			}
			if resp == nil || resp.StatusCode != http.StatusUnauthorized {
				t.Fatalf("response %v, want 401", resp)
			}
			body, _ := io.ReadAll(resp.Body)
			var eb web.ErrorBody
			if err := json.Unmarshal(body, &eb); err != nil || eb.Error.Code != chat.CodeUnauthorized {
				t.Fatalf("body %s, want UNAUTHORIZED error body", body)
			}
		})
	}

	t.Run("bearer header accepted", func(t *testing.T) {
		c, _, err := websocket.DefaultDialer.Dial(g.url, http.Header{"Authorization": {"Bearer " + good}})
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		w := &wsClient{t: t, conn: c}
		w.ack(protocol.EventPing, struct{}{}, nil)
	})
	t.Run("plain GET is not an upgrade", func(t *testing.T) {
		resp, err := http.Get(g.http + "/ws?token=" + good)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusBadRequest {
			t.Fatalf("status %d, want 400", resp.StatusCode)
		}
	})
}

func TestSendProducesRecordAndAcksWithItsOffset(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	g := e.start(nil)
	alice, tok := e.user("alice")
	bob, _ := e.user("bob")
	room := e.room(chat.RoomGroup, alice, bob)
	c := e.dial(g, tok)

	var acks []protocol.SendAck
	for i := range 3 {
		var ack protocol.SendAck
		c.ack(protocol.EventSendMessage, protocol.SendMessage{
			RoomID: rid(room), Content: "hello " + strconv.Itoa(i), Metadata: json.RawMessage(`{"k":1}`),
		}, &ack)
		acks = append(acks, ack)
	}
	recs := e.records(3)
	if len(recs) != 3 {
		t.Fatalf("%d records, want 3", len(recs))
	}
	for i, r := range recs {
		ack := acks[i]
		if ack.Seq != r.Offset {
			t.Errorf("ack %d seq %d, record offset %d", i, ack.Seq, r.Offset)
		}
		if string(r.Key) != rid(room) {
			t.Errorf("key %q, want room id", r.Key)
		}
		headers := map[string]string{}
		for _, h := range r.Headers {
			headers[string(h.Key)] = string(h.Value)
		}
		if headers[events.HeaderType] != string(events.MessageCreated) {
			t.Errorf("headers %v lack event-type", headers)
		}
		if !strings.HasPrefix(headers["traceparent"], "00-") {
			t.Errorf("headers %v lack traceparent", headers)
		}
		ev := decodeRecord(t, r)
		if ev.Type != events.MessageCreated || ev.RoomID != room || ev.UserID != alice || ev.Username != "alice" ||
			ev.MessageID != ack.ID || ev.Content != "hello "+strconv.Itoa(i) || ev.MessageType != "text" ||
			string(ev.Metadata) != `{"k":1}` || !ev.At.Equal(ack.CreatedAt) {
			t.Errorf("record %+v does not match ack %+v", ev, ack)
		}
		if ack.RoomID != rid(room) || len(ack.ID) != 36 || ack.ID[14] != '7' {
			t.Errorf("ack %+v: want the room and a UUIDv7", ack)
		}
	}
	// The author is recorded for edits before the row exists.
	if v, err := e.rdb.Get(t.Context(), e.keys.MessageAuthor(acks[0].ID)).Result(); err != nil || v != rid(room)+":"+rid(alice) {
		t.Errorf("author key %q %v", v, err)
	}
	// A span per frame, and the produce carries its trace.
	var found bool
	for _, s := range g.spans.Ended() {
		if s.Name() == "gateway.send_message" {
			found = true
		}
	}
	if !found {
		t.Error("no gateway.send_message span")
	}
}

func TestClientMsgIDDedupe(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	g := e.start(nil)
	alice, tok := e.user("alice")
	room := e.room(chat.RoomGroup, alice)
	c := e.dial(g, tok)
	send := protocol.SendMessage{RoomID: rid(room), Content: "once", ClientMsgID: "c-1"}

	var first, second protocol.SendAck
	c.ack(protocol.EventSendMessage, send, &first)
	c.ack(protocol.EventSendMessage, send, &second)
	if first != second {
		t.Fatalf("second ack %+v differs from first %+v", second, first)
	}
	// Another connection of the same user gets the same answer too.
	c2 := e.dial(g, tok)
	var third protocol.SendAck
	c2.ack(protocol.EventSendMessage, send, &third)
	if third != first {
		t.Fatalf("ack on second connection %+v differs from %+v", third, first)
	}
	if recs := e.records(1); len(recs) != 1 {
		t.Fatalf("%d records, want exactly 1", len(recs))
	}

	// While a send with the id is in flight, a duplicate is told to retry.
	if err := e.rdb.Set(t.Context(), dedupeKeys(e).Key(alice, "c-2"), dedupe.Pending, time.Minute).Err(); err != nil {
		t.Fatal(err)
	}
	ed := c.fail(protocol.EventSendMessage, protocol.SendMessage{RoomID: rid(room), Content: "x", ClientMsgID: "c-2"}, chat.CodeConflict)
	if !strings.Contains(ed.Message, "retry") {
		t.Errorf("conflict message %q", ed.Message)
	}

	// A duplicate arriving while the first send is in flight waits for its
	// ack: here the delivery worker records it, as it does for a send whose
	// gateway died between Kafka's ack and its own.
	if err := e.rdb.Set(t.Context(), dedupeKeys(e).Key(alice, "c-3"), dedupe.Pending, time.Minute).Err(); err != nil {
		t.Fatal(err)
	}
	late := protocol.SendAck{ID: "0195f0e0-0000-7000-8000-000000000003", RoomID: rid(room), Seq: 1234, ClientMsgID: "c-3", CreatedAt: time.Now().UTC()}
	go func() {
		time.Sleep(300 * time.Millisecond)
		dd, _ := dedupe.New(e.rdb, dedupe.Options{Keys: dedupeKeys(e), TTL: time.Hour})
		_ = dd.Fill(context.Background(), dd.Key(alice, "c-3"), frame.MustJSON(late))
	}()
	var got protocol.SendAck
	c.ack(protocol.EventSendMessage, protocol.SendMessage{RoomID: rid(room), Content: "x", ClientMsgID: "c-3"}, &got)
	if got.ID != late.ID || got.Seq != late.Seq {
		t.Fatalf("duplicate got %+v, want the first send's ack %+v", got, late)
	}
	if recs := e.records(1); len(recs) != 1 {
		t.Fatalf("%d records, want still exactly 1", len(recs))
	}
}

func TestNonMembersAreRefused(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	g := e.start(nil)
	alice, aliceTok := e.user("alice")
	_, eveTok := e.user("eve")
	group := e.room(chat.RoomGroup, alice)
	a := e.dial(g, aliceTok)
	var sent protocol.SendAck
	a.ack(protocol.EventSendMessage, protocol.SendMessage{RoomID: rid(group), Content: "hi"}, &sent)

	eve := e.dial(g, eveTok)
	r := rid(group)
	eve.fail(protocol.EventJoinRoom, protocol.JoinRoom{RoomID: r}, chat.CodeForbidden)
	eve.fail(protocol.EventSendMessage, protocol.SendMessage{RoomID: r, Content: "x"}, chat.CodeForbidden)
	eve.fail(protocol.EventEditMessage, protocol.EditMessage{RoomID: r, MessageID: sent.ID, Content: "x"}, chat.CodeForbidden)
	eve.fail(protocol.EventDeleteMessage, protocol.DeleteMessage{RoomID: r, MessageID: sent.ID}, chat.CodeForbidden)
	eve.fail(protocol.EventMarkRead, protocol.MarkRead{RoomID: r, Seq: ptr(int64(0))}, chat.CodeForbidden)
	eve.fail(protocol.EventTypingStart, protocol.TypingRequest{RoomID: r}, chat.CodeForbidden)
	eve.fail(protocol.EventJoinRoom, protocol.JoinRoom{RoomID: "999999"}, chat.CodeNotFound)
	eve.fail(protocol.EventSendMessage, protocol.SendMessage{RoomID: "999999", Content: "x"}, chat.CodeNotFound)
	if recs := e.records(1); len(recs) != 1 {
		t.Fatalf("%d records, want only alice's", len(recs))
	}
	e.apiMu.Lock()
	calls := len(e.apiCalls)
	e.apiMu.Unlock()
	if calls != 0 {
		t.Errorf("api called %d times for a group join", calls)
	}
}

func TestJoinChannelThroughAPI(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	g := e.start(nil)
	alice, _ := e.user("alice")
	bob, bobTok := e.user("bob")
	channel := e.room(chat.RoomChannel, alice)
	c := e.dial(g, bobTok)
	c.join(channel, nil)
	var role string
	if err := e.db.Raw("SELECT role FROM room_members WHERE room_id = ? AND user_id = ?", channel, bob).Scan(&role).Error; err != nil || role != "member" {
		t.Fatalf("bob is not a member after joining the channel: %q %v", role, err)
	}
	var ack protocol.SendAck
	c.ack(protocol.EventSendMessage, protocol.SendMessage{RoomID: rid(channel), Content: "hi"}, &ack)

	// The api's refusal is passed on.
	carol, carolTok := e.user("carol")
	_ = carol
	e.apiMu.Lock()
	e.apiStatus = http.StatusForbidden
	e.apiMu.Unlock()
	e.dial(g, carolTok).fail(protocol.EventJoinRoom, protocol.JoinRoom{RoomID: rid(channel)}, chat.CodeForbidden)
}

func TestEditAndDeleteRules(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	g := e.start(nil)
	alice, aliceTok := e.user("alice") // admin
	bob, bobTok := e.user("bob")
	carol, carolTok := e.user("carol")
	room := e.room(chat.RoomGroup, alice, bob, carol)
	a, b, c := e.dial(g, aliceTok), e.dial(g, bobTok), e.dial(g, carolTok)
	r := rid(room)

	var bobs protocol.SendAck
	b.ack(protocol.EventSendMessage, protocol.SendMessage{RoomID: r, Content: "bob's"}, &bobs)
	var edited protocol.MessageAck
	b.ack(protocol.EventEditMessage, protocol.EditMessage{RoomID: r, MessageID: bobs.ID, Content: "bob's, edited"}, &edited)
	if edited.MessageID != bobs.ID || edited.Seq <= bobs.Seq {
		t.Fatalf("edit ack %+v after send %+v", edited, bobs)
	}
	c.fail(protocol.EventEditMessage, protocol.EditMessage{RoomID: r, MessageID: bobs.ID, Content: "carol's now"}, chat.CodeForbidden)
	a.fail(protocol.EventEditMessage, protocol.EditMessage{RoomID: r, MessageID: bobs.ID, Content: "admins neither"}, chat.CodeForbidden)
	c.fail(protocol.EventDeleteMessage, protocol.DeleteMessage{RoomID: r, MessageID: bobs.ID}, chat.CodeForbidden)
	b.fail(protocol.EventEditMessage, protocol.EditMessage{RoomID: r, MessageID: "0190a7d2-0000-7000-8000-000000000000", Content: "x"}, chat.CodeNotFound)
	// The message exists, but not in the room named.
	other := e.room(chat.RoomGroup, bob)
	b.fail(protocol.EventEditMessage, protocol.EditMessage{RoomID: rid(other), MessageID: bobs.ID, Content: "x"}, chat.CodeNotFound)

	var deleted protocol.MessageAck
	a.ack(protocol.EventDeleteMessage, protocol.DeleteMessage{RoomID: r, MessageID: bobs.ID}, &deleted)
	if deleted.Seq <= edited.Seq {
		t.Fatalf("delete seq %d not after edit %d", deleted.Seq, edited.Seq)
	}
	b.fail(protocol.EventEditMessage, protocol.EditMessage{RoomID: r, MessageID: bobs.ID, Content: "too late"}, chat.CodeNotFound)

	// The author's own delete, of a persisted message with no Redis key
	// (the PostgreSQL fallback).
	row := store.Message{ID: "0190a7d2-1111-7000-8000-000000000001", RoomID: room, UserID: carol, Content: "old",
		Type: "text", Seq: 0, UpdatedSeq: 0, CreatedAt: time.Now()}
	if err := e.db.Create(&row).Error; err != nil {
		t.Fatal(err)
	}
	b.fail(protocol.EventDeleteMessage, protocol.DeleteMessage{RoomID: r, MessageID: row.ID}, chat.CodeForbidden)
	c.ack(protocol.EventEditMessage, protocol.EditMessage{RoomID: r, MessageID: row.ID, Content: "new"}, nil)
	c.ack(protocol.EventDeleteMessage, protocol.DeleteMessage{RoomID: r, MessageID: row.ID}, nil)

	recs := e.records(5)
	want := []events.Type{events.MessageCreated, events.MessageEdited, events.MessageDeleted, events.MessageEdited, events.MessageDeleted}
	for i, rec := range recs {
		if ev := decodeRecord(t, rec); i >= len(want) || ev.Type != want[i] {
			t.Fatalf("record %d is %s, want %v", i, ev.Type, want)
		}
	}
	if ev := decodeRecord(t, recs[2]); ev.UserID != alice || ev.MessageID != bobs.ID {
		t.Errorf("delete record %+v: want alice deleting bob's message", ev)
	}
}

func TestMarkRead(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	g := e.start(nil)
	alice, tok := e.user("alice")
	room := e.room(chat.RoomGroup, alice)
	c := e.dial(g, tok)
	var ack protocol.ReadAck
	c.ack(protocol.EventMarkRead, protocol.MarkRead{RoomID: rid(room), Seq: ptr(int64(41))}, &ack)
	recs := e.records(1)
	ev := decodeRecord(t, recs[0])
	if ev.Type != events.ReadMarked || ev.ReadSeq != 41 || ev.UserID != alice || ack.Seq != recs[0].Offset {
		t.Fatalf("record %+v at %d, ack %+v", ev, recs[0].Offset, ack)
	}
}

var _ = kafka.HeaderCarrier{}
