package commands

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"testing"

	"go.opentelemetry.io/otel/trace/noop"

	"relay/pkg/auth"
	"relay/pkg/chat"
	"relay/pkg/events"
	"relay/pkg/protocol"
	"relay/services/gateway/internal/adapters"
	"relay/services/gateway/internal/conn"
	"relay/services/gateway/internal/conn/conntest"
	"relay/services/gateway/internal/fanout"
	"relay/services/gateway/internal/fanout/hub"
	"relay/services/gateway/internal/frame"
)

// Unit tests of the handlers over fakes: no server is involved.

// fakeMembers: user 1 is a member of room 10 (admin of nothing).
type fakeMembers struct{}

func (fakeMembers) Cached(room, user int64) bool { return false }
func (fakeMembers) Lookup(_ context.Context, room, user int64) (adapters.Access, error) {
	if room != 10 {
		return adapters.Access{}, chat.Errorf(chat.CodeNotFound, "room %d not found", room)
	}
	if user == 1 {
		return adapters.Access{RoomType: chat.RoomGroup, Role: chat.RoleMember}, nil
	}
	return adapters.Access{RoomType: chat.RoomGroup}, nil
}
func (f fakeMembers) Require(ctx context.Context, room, user int64) (chat.Role, error) {
	a, err := f.Lookup(ctx, room, user)
	if err != nil {
		return "", err
	}
	if a.Role == "" {
		return "", chat.Errorf(chat.CodeForbidden, "not a member of room %d", room)
	}
	return a.Role, nil
}
func (fakeMembers) Remember(int64, int64, chat.Role) {}
func (fakeMembers) Writable(_ context.Context, room int64) error {
	if room != 10 {
		return chat.Errorf(chat.CodeNotFound, "room %d not found", room)
	}
	return nil
}

// fakeMessages keeps dedupe claims and acks in maps.
type fakeMessages struct {
	acks     map[string][]byte
	claimed  map[string]bool
	released []string
	authors  map[string]adapters.Author
}

func (m *fakeMessages) DedupeKey(user int64, id string) string { return id }
func (m *fakeMessages) Reserve(_ context.Context, key, messageID string, a adapters.Author) (json.RawMessage, error) {
	if m.authors == nil {
		m.authors = map[string]adapters.Author{}
	}
	m.authors[messageID] = a
	if key == "" {
		return nil, nil
	}
	if ack, ok := m.acks[key]; ok {
		return ack, nil
	}
	if m.claimed[key] {
		return nil, chat.Errorf(chat.CodeConflict, "send in progress; retry")
	}
	m.claimed[key] = true
	return nil, nil
}
func (m *fakeMessages) Release(_ context.Context, key string) {
	delete(m.claimed, key)
	m.released = append(m.released, key)
}
func (m *fakeMessages) RecordAck(_ context.Context, key string, ack []byte) { m.acks[key] = ack }
func (m *fakeMessages) Author(_ context.Context, id string) (adapters.Author, error) {
	a, ok := m.authors[id]
	if !ok {
		return adapters.Author{}, chat.Errorf(chat.CodeNotFound, "message not found")
	}
	return a, nil
}
func (m *fakeMessages) MarkDeleted(context.Context, string, adapters.Author) {}
func (m *fakeMessages) Stored(_ context.Context, id string) (int64, int64, error) {
	a, ok := m.authors[id]
	if !ok {
		return 0, 0, chat.Errorf(chat.CodeNotFound, "message not found")
	}
	return a.Room, 7, nil
}

// fakeProducer assigns seqs, or fails with err.
type fakeProducer struct {
	produced []*events.Event
	err      error
}

func (p *fakeProducer) Produce(_ context.Context, e *events.Event) (int64, error) {
	if p.err != nil {
		return 0, p.err
	}
	p.produced = append(p.produced, e)
	return int64(len(p.produced)), nil
}

type noRooms struct{}

func (noRooms) Join(context.Context, int64, hub.Conn) (*hub.Member, error) {
	return nil, errors.New("no rooms")
}
func (noRooms) Leave(context.Context, *hub.Member) error       { return nil }
func (noRooms) LastSeq(context.Context, int64) (*int64, error) { return nil, nil }
func (noRooms) Baseline(int64, *int64)                         {}
func (noRooms) ReadLog(context.Context, int64, int64, *int64, int) (fanout.LogRead, error) {
	return fanout.LogRead{}, nil
}

type noTyping struct{}

func (noTyping) StartTyping(context.Context, *conn.Client, int64) error { return nil }
func (noTyping) StopTyping(context.Context, *conn.Client, int64)        {}
func (noTyping) EndTyping(context.Context, *conn.Client, int64) error   { return nil }

func newTestHandler(t *testing.T, msgs *fakeMessages, prod *fakeProducer) (*Handler, *conn.Client, *conn.Client) {
	t.Helper()
	l, m := conntest.Lifecycle(16)
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	h := New(context.Background(), Options{
		Membership: fakeMembers{}, Messages: msgs, Producer: prod, Rooms: noRooms{}, Typing: noTyping{},
		Frames: &frame.Encoder{Metrics: m, Log: log}, Metrics: m, Tracer: noop.NewTracerProvider().Tracer("t"), Log: log,
		MaxFrameBytes: 16 << 10, MaxRooms: 10, ReplayLimit: 10, SendTimeout: 1 << 30,
	})
	member := conn.NewClient(l, conntest.Discard{}, auth.Claims{UserID: 1, Username: "alice"}, "", false)
	other := conn.NewClient(l, conntest.Discard{}, auth.Claims{UserID: 2, Username: "bob"}, "", false)
	t.Cleanup(func() { conntest.Close([]*conn.Client{member, other}) })
	return h, member, other
}

func send(t *testing.T, h *Handler, c *conn.Client, content, clientMsgID string) (json.RawMessage, error) {
	t.Helper()
	data, _ := json.Marshal(protocol.SendMessage{RoomID: "10", Content: content, ClientMsgID: clientMsgID})
	return h.sendMessage(context.Background(), c, data, "r")
}

func TestSendProducesOnceAndRepeatsTheFirstAck(t *testing.T) {
	msgs := &fakeMessages{acks: map[string][]byte{}, claimed: map[string]bool{}}
	prod := &fakeProducer{}
	h, alice, _ := newTestHandler(t, msgs, prod)
	first, err := send(t, h, alice, "hello", "k1")
	if err != nil {
		t.Fatal(err)
	}
	again, err := send(t, h, alice, "hello", "k1")
	if err != nil || string(again) != string(first) {
		t.Fatalf("repeat: %s %v, want the first ack %s", again, err, first)
	}
	if len(prod.produced) != 1 || prod.produced[0].Type != events.MessageCreated || prod.produced[0].Content != "hello" {
		t.Fatalf("produced %+v, want one message_created", prod.produced)
	}
	var ack protocol.SendAck
	if json.Unmarshal(first, &ack) != nil || ack.Seq != 1 || ack.ClientMsgID != "k1" || ack.RoomID != "10" {
		t.Fatalf("ack %s", first)
	}
}

func TestSendOfANonMemberIsForbiddenAndNotProduced(t *testing.T) {
	prod := &fakeProducer{}
	h, _, bob := newTestHandler(t, &fakeMessages{acks: map[string][]byte{}, claimed: map[string]bool{}}, prod)
	if _, err := send(t, h, bob, "hi", ""); chat.ErrorCode(err) != chat.CodeForbidden {
		t.Fatalf("err %v, want FORBIDDEN", err)
	}
	if len(prod.produced) != 0 {
		t.Fatal("a non-member's message was produced")
	}
}

func TestFailedProduceReleasesTheClientMsgID(t *testing.T) {
	msgs := &fakeMessages{acks: map[string][]byte{}, claimed: map[string]bool{}}
	prod := &fakeProducer{err: chat.Errorf(chat.CodeUnavailable, "kafka down")}
	h, alice, _ := newTestHandler(t, msgs, prod)
	if _, err := send(t, h, alice, "hi", "k2"); chat.ErrorCode(err) != chat.CodeUnavailable {
		t.Fatalf("err %v, want UNAVAILABLE", err)
	}
	if len(msgs.released) != 1 || msgs.released[0] != "k2" || msgs.claimed["k2"] {
		t.Fatalf("released %v, claimed %v: the retry would be refused", msgs.released, msgs.claimed)
	}
}

func TestOnlyTheAuthorEdits(t *testing.T) {
	msgs := &fakeMessages{acks: map[string][]byte{}, claimed: map[string]bool{}}
	prod := &fakeProducer{}
	h, alice, _ := newTestHandler(t, msgs, prod)
	ackData, err := send(t, h, alice, "hello", "")
	if err != nil {
		t.Fatal(err)
	}
	var ack protocol.SendAck
	_ = json.Unmarshal(ackData, &ack)
	edit, _ := json.Marshal(protocol.EditMessage{RoomID: "10", MessageID: ack.ID, Content: "edited"})
	msgs.authors[ack.ID] = adapters.Author{Room: 10, User: 3}
	if _, err := h.editMessage(context.Background(), alice, edit, ""); chat.ErrorCode(err) != chat.CodeForbidden {
		t.Fatalf("edit of another's message: %v, want FORBIDDEN", err)
	}
	msgs.authors[ack.ID] = adapters.Author{Room: 10, User: 1}
	if _, err := h.editMessage(context.Background(), alice, edit, ""); err != nil {
		t.Fatalf("edit by the author: %v", err)
	}
	if last := prod.produced[len(prod.produced)-1]; last.Type != events.MessageEdited || last.Content != "edited" {
		t.Fatalf("produced %+v, want message_edited", last)
	}
}
