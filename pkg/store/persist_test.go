package store_test

import (
	"context"
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"github.com/google/uuid"
	"gorm.io/gorm"

	"relay/pkg/events"
	"relay/pkg/store"
	"relay/pkg/testenv"
)

// fixture is a room with two members in a fresh database.
type fixture struct {
	db           *gorm.DB
	room         int64
	alice, bob   int64
	emptyRoom    int64
	at           time.Time
	nextMsgIndex int
}

func newFixture(t testing.TB) *fixture {
	t.Helper()
	db := testenv.DB(t)
	f := &fixture{db: db, at: time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC)}
	users := []store.User{
		{Username: "alice", Email: "alice@example.com", PasswordHash: "x"},
		{Username: "bob", Email: "bob@example.com", PasswordHash: "x"},
	}
	if err := db.Create(&users).Error; err != nil {
		t.Fatalf("users: %v", err)
	}
	f.alice, f.bob = users[0].ID, users[1].ID
	rooms := []store.Room{{Name: "general", Type: "group", CreatedBy: f.alice}, {Name: "empty", Type: "group", CreatedBy: f.alice}}
	if err := db.Create(&rooms).Error; err != nil {
		t.Fatalf("rooms: %v", err)
	}
	f.room, f.emptyRoom = rooms[0].ID, rooms[1].ID
	members := []store.RoomMember{
		{RoomID: f.room, UserID: f.alice, Role: "admin", LastReadSeq: -1, JoinedAt: f.at},
		{RoomID: f.room, UserID: f.bob, Role: "member", LastReadSeq: -1, JoinedAt: f.at},
	}
	if err := db.Create(&members).Error; err != nil {
		t.Fatalf("members: %v", err)
	}
	return f
}

func (f *fixture) create(seq, user int64, content string) store.Change {
	f.nextMsgIndex++
	return store.Change{Seq: seq, Event: &events.Event{
		Type: events.MessageCreated, RoomID: f.room, UserID: user, Username: "u",
		MessageID: uuid.Must(uuid.NewV7()).String(), Content: content, MessageType: "text",
		ClientMsgID: fmt.Sprintf("c%d", f.nextMsgIndex), At: f.at,
	}}
}

func (f *fixture) edit(seq, user int64, id, content string) store.Change {
	return store.Change{Seq: seq, Event: &events.Event{
		Type: events.MessageEdited, RoomID: f.room, UserID: user, MessageID: id, Content: content, At: f.at.Add(time.Minute),
	}}
}

func (f *fixture) del(seq, user int64, id string) store.Change {
	return store.Change{Seq: seq, Event: &events.Event{
		Type: events.MessageDeleted, RoomID: f.room, UserID: user, MessageID: id, At: f.at.Add(2 * time.Minute),
	}}
}

func (f *fixture) read(seq, user, readSeq int64) store.Change {
	return store.Change{Seq: seq, Event: &events.Event{
		Type: events.ReadMarked, RoomID: f.room, UserID: user, ReadSeq: readSeq, At: f.at,
	}}
}

func (f *fixture) message(t *testing.T, id string) store.Message {
	t.Helper()
	var m store.Message
	if err := f.db.First(&m, "id = ?", id).Error; err != nil {
		t.Fatalf("message %s: %v", id, err)
	}
	return m
}

func (f *fixture) lastRead(t *testing.T, user int64) int64 {
	t.Helper()
	var m store.RoomMember
	if err := f.db.First(&m, "room_id = ? AND user_id = ?", f.room, user).Error; err != nil {
		t.Fatalf("member: %v", err)
	}
	return m.LastReadSeq
}

func (f *fixture) count(t *testing.T) int64 {
	t.Helper()
	var n int64
	if err := f.db.Model(&store.Message{}).Count(&n).Error; err != nil {
		t.Fatalf("count: %v", err)
	}
	return n
}

func apply(t *testing.T, f *fixture, changes ...store.Change) store.BatchResult {
	t.Helper()
	for _, c := range changes {
		if err := store.ValidateChange(c); err != nil {
			t.Fatalf("invalid change %+v: %v", c.Event, err)
		}
	}
	res, err := store.ApplyBatch(context.Background(), f.db, changes)
	if err != nil {
		t.Fatalf("ApplyBatch: %v", err)
	}
	return res
}

func TestApplyBatchCreateEditDeleteInOneBatch(t *testing.T) {
	if testenv.Short() {
		t.Skip("integration")
	}
	t.Parallel()
	f := newFixture(t)
	c1 := f.create(10, f.alice, "hello")
	c1.Event.Metadata = json.RawMessage(`{"k":"v"}`)
	c2 := f.create(11, f.bob, "second")
	c2.Event.ClientMsgID = "" // optional: NULL, and never a conflict
	c2b := f.create(19, f.bob, "third, also without clientMsgId")
	c2b.Event.ClientMsgID = ""
	c2b.Event.Metadata = json.RawMessage("null")
	c3 := f.create(15, f.alice, "to delete")
	c3.Event.Metadata = json.RawMessage(`{"k":"gone"}`)
	batch := []store.Change{
		c1, c2,
		f.edit(12, f.alice, c1.Event.MessageID, "hello, edited"),
		f.edit(13, f.bob, c1.Event.MessageID, "not the author"),
		f.read(14, f.bob, 11),
		c3,
		f.del(16, f.alice, c3.Event.MessageID),
		f.edit(17, f.alice, c3.Event.MessageID, "edit after delete"),
		{Seq: 18, Event: &events.Event{Type: events.MemberJoined, RoomID: f.room, UserID: f.bob, At: f.at}},
		c2b,
	}
	res := apply(t, f, batch...)
	want := store.BatchResult{Created: 4, Edited: 1, Deleted: 1, ReadsMoved: 1, Members: 1}
	if res != want {
		t.Fatalf("result = %+v, want %+v", res, want)
	}

	m1 := f.message(t, c1.Event.MessageID)
	if m1.Content != "hello, edited" || !m1.IsEdited || m1.EditedAt == nil || m1.UpdatedSeq != 12 || m1.Seq != 10 {
		t.Fatalf("edited message = %+v", m1)
	}
	if string(m1.Metadata) != `{"k": "v"}` {
		t.Fatalf("metadata = %s", m1.Metadata)
	}
	if m1.ClientMsgID == nil || *m1.ClientMsgID != c1.Event.ClientMsgID {
		t.Fatalf("clientMsgId = %v", m1.ClientMsgID)
	}
	if m2 := f.message(t, c2b.Event.MessageID); m2.ClientMsgID != nil || m2.Metadata != nil || m2.Seq != 19 {
		t.Fatalf("message without clientMsgId = %+v", m2)
	}
	m3 := f.message(t, c3.Event.MessageID)
	if !m3.IsDeleted || m3.DeletedAt == nil || m3.Content != "" || m3.Metadata != nil || m3.UpdatedSeq != 16 || m3.IsEdited {
		t.Fatalf("deleted message = %+v", m3)
	}
	if got := f.lastRead(t, f.bob); got != 11 {
		t.Fatalf("bob last read = %d, want 11", got)
	}

	// The whole batch again, as after a crash before the offsets were
	// committed: nothing changes.
	res = apply(t, f, batch...)
	if want := (store.BatchResult{Members: 1}); res != want {
		t.Fatalf("redelivered result = %+v, want %+v", res, want)
	}
	if n := f.count(t); n != 4 {
		t.Fatalf("messages = %d, want 4", n)
	}
	if m := f.message(t, c1.Event.MessageID); m.Content != "hello, edited" || m.UpdatedSeq != 12 {
		t.Fatalf("after redelivery = %+v", m)
	}
}

func TestApplyBatchSplitAcrossBatches(t *testing.T) {
	if testenv.Short() {
		t.Skip("integration")
	}
	t.Parallel()
	f := newFixture(t)
	c := f.create(1, f.alice, "v1")
	id := c.Event.MessageID
	apply(t, f, c)
	apply(t, f, f.edit(2, f.alice, id, "v2"), f.edit(3, f.alice, id, "v3"))
	// A redelivered older edit must not overwrite the newer one.
	if res := apply(t, f, f.edit(2, f.alice, id, "v2")); res.Edited != 0 {
		t.Fatalf("old edit applied: %+v", res)
	}
	if m := f.message(t, id); m.Content != "v3" || m.UpdatedSeq != 3 {
		t.Fatalf("message = %+v", m)
	}
	// An edit by the author of the room's other message does not touch it.
	if res := apply(t, f, f.edit(4, f.bob, id, "bob")); res.Edited != 0 {
		t.Fatalf("non-author edit applied: %+v", res)
	}
	apply(t, f, f.del(5, f.bob, id)) // an admin or the author; the gateway checked
	if res := apply(t, f, f.del(6, f.alice, id)); res.Deleted != 0 {
		t.Fatalf("second delete applied: %+v", res)
	}
	m := f.message(t, id)
	if !m.IsDeleted || m.UpdatedSeq != 5 || m.Content != "" {
		t.Fatalf("message = %+v", m)
	}
}

func TestApplyBatchCreateDuplicates(t *testing.T) {
	if testenv.Short() {
		t.Skip("integration")
	}
	t.Parallel()
	f := newFixture(t)
	c := f.create(1, f.alice, "first")
	apply(t, f, c)

	// Same clientMsgId by the same user under a new id: the first row wins.
	sameClient := f.create(2, f.alice, "again")
	sameClient.Event.ClientMsgID = c.Event.ClientMsgID
	// Same (room, seq) under a new id: cannot be two messages.
	sameSeq := f.create(1, f.bob, "same seq")
	// Same id twice in one batch.
	fresh := f.create(3, f.bob, "fresh")
	twice := fresh
	twice.Seq = 4
	res := apply(t, f, sameClient, sameSeq, fresh, twice)
	if res.Created != 1 {
		t.Fatalf("created = %d, want 1", res.Created)
	}
	if n := f.count(t); n != 2 {
		t.Fatalf("messages = %d, want 2", n)
	}
	if m := f.message(t, fresh.Event.MessageID); m.Seq != 3 {
		t.Fatalf("fresh seq = %d, want 3", m.Seq)
	}
}

func TestApplyBatchReadMarksOnlyMoveForward(t *testing.T) {
	if testenv.Short() {
		t.Skip("integration")
	}
	t.Parallel()
	f := newFixture(t)
	apply(t, f, f.read(20, f.alice, 15), f.read(21, f.alice, 9), f.read(22, f.bob, 4))
	if a, b := f.lastRead(t, f.alice), f.lastRead(t, f.bob); a != 15 || b != 4 {
		t.Fatalf("last read = %d, %d; want 15, 4", a, b)
	}
	apply(t, f, f.read(23, f.alice, 12))
	if a := f.lastRead(t, f.alice); a != 15 {
		t.Fatalf("last read moved back to %d", a)
	}
	// A mark beyond the log's end is clamped to the read event's own seq.
	apply(t, f, f.read(30, f.bob, 1<<40))
	if b := f.lastRead(t, f.bob); b != 30 {
		t.Fatalf("last read = %d, want 30", b)
	}
	// A non-member's mark writes nothing and fails nothing.
	nonMember := f.read(31, f.alice, 31)
	nonMember.Event.RoomID = f.emptyRoom
	if res := apply(t, f, nonMember); res.ReadsMoved != 0 {
		t.Fatalf("non-member read moved: %+v", res)
	}
}

func TestApplyBatchPermanentError(t *testing.T) {
	if testenv.Short() {
		t.Skip("integration")
	}
	t.Parallel()
	f := newFixture(t)
	ok := f.create(1, f.alice, "fine")
	orphan := f.create(2, f.alice, "room is gone")
	orphan.Event.RoomID = 1 << 40
	_, err := store.ApplyBatch(context.Background(), f.db, []store.Change{ok, orphan})
	if err == nil {
		t.Fatal("ApplyBatch with a missing room succeeded")
	}
	if !store.IsPermanent(err) {
		t.Fatalf("IsPermanent(%v) = false", err)
	}
	// All or nothing.
	if n := f.count(t); n != 0 {
		t.Fatalf("messages = %d after a failed batch", n)
	}
}

func TestValidateChange(t *testing.T) {
	t.Parallel()
	at := time.Now()
	base := func() *events.Event {
		return &events.Event{Type: events.MessageCreated, RoomID: 1, UserID: 2, MessageID: uuid.NewString(), MessageType: "text", Content: "hi", At: at}
	}
	cases := map[string]func(e *events.Event){
		"bad uuid":      func(e *events.Event) { e.MessageID = "nope" },
		"bad type":      func(e *events.Event) { e.MessageType = "video" },
		"nul content":   func(e *events.Event) { e.Content = "a\x00b" },
		"long client":   func(e *events.Event) { e.ClientMsgID = string(make([]byte, 65)) },
		"bad metadata":  func(e *events.Event) { e.Metadata = json.RawMessage(`{"a":`) },
		"nul metadata":  func(e *events.Event) { e.Metadata = json.RawMessage(`{"a":"\u0000"}`) },
		"edit bad uuid": func(e *events.Event) { e.Type = events.MessageEdited; e.MessageID = "x" },
		"no room":       func(e *events.Event) { e.RoomID = 0 },
	}
	if err := store.ValidateChange(store.Change{Seq: 1, Event: base()}); err != nil {
		t.Fatalf("valid change rejected: %v", err)
	}
	for name, mutate := range cases {
		e := base()
		mutate(e)
		if err := store.ValidateChange(store.Change{Seq: 1, Event: e}); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	if err := store.ValidateChange(store.Change{Seq: -1, Event: base()}); err == nil {
		t.Error("negative seq accepted")
	}
}

// BenchmarkApplyBatch500Creates measures one batch of 500 new messages,
// the persister's default batch size.
func BenchmarkApplyBatch500Creates(b *testing.B) {
	if testenv.Short() {
		b.Skip("integration")
	}
	f := newFixture(b)
	seq := int64(0)
	b.ReportAllocs()
	for b.Loop() {
		b.StopTimer()
		batch := make([]store.Change, 500)
		for i := range batch {
			seq++
			batch[i] = f.create(seq, f.alice, "a message of ordinary length, about sixty bytes long")
		}
		b.StartTimer()
		res, err := store.ApplyBatch(context.Background(), f.db, batch)
		if err != nil {
			b.Fatal(err)
		}
		if res.Created != 500 {
			b.Fatalf("created %d", res.Created)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*500), "ns/row")
}
