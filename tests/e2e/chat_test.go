package e2e

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"testing"
	"time"

	"relay/pkg/events"
	"relay/pkg/protocol"
	"relay/tests/e2e/stack"
)

// messageRow is a messages row as the persister wrote it.
type messageRow struct {
	RoomID, UserID int64
	Content        string
	Seq            int64
	ClientMsgID    sql.NullString
	IsEdited       bool
	IsDeleted      bool
}

// waitRow polls PostgreSQL until the message row exists and cond (nil:
// any) holds for it.
func waitRow(t *testing.T, ctx context.Context, s *stack.Stack, id string, cond func(messageRow) bool) messageRow {
	t.Helper()
	var row messageRow
	err := stack.WaitFor(ctx, 20*time.Second, func(ctx context.Context) (bool, error) {
		err := s.SQL().QueryRowContext(ctx, `SELECT room_id, user_id, content, seq, client_msg_id, is_edited, is_deleted
			FROM messages WHERE id = $1`, id).Scan(&row.RoomID, &row.UserID, &row.Content, &row.Seq, &row.ClientMsgID, &row.IsEdited, &row.IsDeleted)
		if errors.Is(err, sql.ErrNoRows) {
			return false, fmt.Errorf("message %s not in PostgreSQL", id)
		}
		if err != nil {
			return false, err
		}
		if cond != nil && !cond(row) {
			return false, fmt.Errorf("message %s row %+v not as expected yet", id, row)
		}
		return true, nil
	})
	if err != nil {
		t.Fatalf("waiting for row: %v", err)
	}
	return row
}

func findHistory(msgs []stack.HistoryMessage, id string) *stack.HistoryMessage {
	for i := range msgs {
		if msgs[i].ID == id {
			return &msgs[i]
		}
	}
	return nil
}

// checkLogPushes checks that the log pushes c received for room chain up
// from the join ack's lastSeq and are exactly the room's Kafka records after
// it, in order (every event once, none missing). It waits until the last
// record has been pushed.
func checkLogPushes(t *testing.T, ctx context.Context, s *stack.Stack, who string, c *stack.Conn, roomID string, joinedAt *int64) {
	t.Helper()
	recs, err := s.RoomLog(ctx, roomID)
	if err != nil {
		t.Fatalf("kafka log: %v", err)
	}
	var want []int64
	for _, r := range recs {
		if joinedAt == nil || r.Seq > *joinedAt {
			want = append(want, r.Seq)
		}
	}
	if len(want) > 0 {
		last := want[len(want)-1]
		if _, err := c.WaitPushes(ctx, func(fs []protocol.Frame) bool {
			for _, f := range fs {
				if e, err := stack.DecodeRoomEvent(f); err == nil && e.RoomID == roomID && e.Seq == last {
					return true
				}
			}
			return false
		}); err != nil {
			t.Fatalf("%s: waiting for the push of seq %d: %v", who, last, err)
		}
	}
	evs, err := c.RoomLog(roomID)
	if err != nil {
		t.Errorf("%s: %v", who, err)
	}
	if err := stack.CheckChain(evs, joinedAt); err != nil {
		t.Errorf("%s: pushes of room %s do not chain from the join ack's lastSeq %s:\n%v", who, roomID, seqString(joinedAt), err)
	}
	got := make([]int64, len(evs))
	for i, e := range evs {
		got[i] = e.Seq
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("%s: pushed seqs %v, want the Kafka records after %s: %v", who, got, seqString(joinedAt), want)
	}
}

func seqString(p *int64) string {
	if p == nil {
		return "none"
	}
	return fmt.Sprint(*p)
}

// Two users on two gateway instances: the sender's ack carries the seq,
// the other member gets the message with that seq and the prevSeq of the
// room's previous event (the api's member_joined events come first), the
// row lands in PostgreSQL and REST history returns it; a repeated
// clientMsgId gets the first ack back and stores nothing.
func TestMessageAcrossGateways(t *testing.T) {
	s := newStack(t, stack.Options{Gateways: 2})
	ctx := testCtx(t, 60*time.Second)
	api := s.API()
	alice := register(t, ctx, api, "alice")
	bob := register(t, ctx, api, "bob")
	room, err := api.CreateRoom(ctx, alice, "general", "group", bob)
	if err != nil {
		t.Fatal(err)
	}
	// The log order checked below (the member events, then the message)
	// holds once the creation's events are in Kafka.
	relayed(t, ctx, s)

	ca := dial(t, ctx, s, 0, alice)
	cb := dial(t, ctx, s, 1, bob)
	lastA := join(t, ctx, ca, room.ID)
	lastB := join(t, ctx, cb, room.ID)

	ack, err := ca.Send(ctx, room.ID, "hello bob", "alice-1")
	if err != nil {
		t.Fatalf("send: %v", err)
	}
	if ack.RoomID != room.ID || ack.ClientMsgID != "alice-1" || ack.ID == "" {
		t.Errorf("ack %+v", ack)
	}

	msgs, err := cb.WaitMessages(ctx, room.ID, 1)
	if err != nil {
		t.Fatal(err)
	}
	m := msgs[0]
	if m.ID != ack.ID || m.Seq != ack.Seq || m.Content != "hello bob" || m.UserID != alice.ID ||
		m.Username != "alice" || m.ClientMsgID != "alice-1" || m.Type != "text" || !m.CreatedAt.Equal(ack.CreatedAt) {
		t.Errorf("bob got %+v, want the message of ack %+v", m, ack)
	}

	// The room's log in Kafka: alice joined, bob joined (the api, at
	// creation), then the message; its prevSeq is bob's member_joined.
	recs, err := s.RoomLog(ctx, room.ID)
	if err != nil {
		t.Fatal(err)
	}
	var types []events.Type
	for _, r := range recs {
		types = append(types, r.Event.Type)
	}
	want := []events.Type{events.MemberJoined, events.MemberJoined, events.MessageCreated}
	if fmt.Sprint(types) != fmt.Sprint(want) {
		t.Fatalf("room log %v, want %v", types, want)
	}
	if recs[0].Event.UserID != mustID(t, alice.ID) || recs[1].Event.UserID != mustID(t, bob.ID) {
		t.Errorf("member_joined order: users %d, %d; want alice (%s) then bob (%s)", recs[0].Event.UserID, recs[1].Event.UserID, alice.ID, bob.ID)
	}
	if recs[2].Seq != ack.Seq || recs[2].Event.MessageID != ack.ID {
		t.Errorf("record %d %s, ack seq %d id %s", recs[2].Seq, recs[2].Event.MessageID, ack.Seq, ack.ID)
	}
	if m.PrevSeq == nil || *m.PrevSeq != recs[1].Seq {
		t.Errorf("message prevSeq %s, want %d (bob's member_joined)", seqString(m.PrevSeq), recs[1].Seq)
	}

	// A few more, both ways, then the chain on each connection.
	for i := range 3 {
		if _, err := cb.Send(ctx, room.ID, fmt.Sprintf("reply %d", i), ""); err != nil {
			t.Fatal(err)
		}
		if _, err := ca.Send(ctx, room.ID, fmt.Sprintf("more %d", i), ""); err != nil {
			t.Fatal(err)
		}
	}
	checkLogPushes(t, ctx, s, "alice", ca, room.ID, lastA)
	checkLogPushes(t, ctx, s, "bob", cb, room.ID, lastB)

	row := waitRow(t, ctx, s, ack.ID, nil)
	if row.RoomID != mustID(t, room.ID) || row.UserID != mustID(t, alice.ID) || row.Content != "hello bob" ||
		row.Seq != ack.Seq || row.ClientMsgID.String != "alice-1" {
		t.Errorf("row %+v, want room %s user %s seq %d", row, room.ID, alice.ID, ack.Seq)
	}

	hist, err := api.AllHistory(ctx, bob, room.ID)
	if err != nil {
		t.Fatal(err)
	}
	h := findHistory(hist, ack.ID)
	if h == nil {
		t.Fatalf("history of %d messages lacks %s", len(hist), ack.ID)
	}
	if h.Seq != ack.Seq || h.Content == nil || *h.Content != "hello bob" || h.UserID != alice.ID ||
		h.Username != "alice" || h.ClientMsgID != "alice-1" || h.IsEdited || h.IsDeleted {
		t.Errorf("history item %+v", h)
	}

	// The same clientMsgId again, on another connection of alice on the
	// other gateway: the first ack, and nothing new in the log or table.
	ca2 := dial(t, ctx, s, 1, alice)
	again, err := ca2.Send(ctx, room.ID, "hello bob (retry)", "alice-1")
	if err != nil {
		t.Fatal(err)
	}
	if again.ID != ack.ID || again.Seq != ack.Seq {
		t.Errorf("repeated clientMsgId got ack %+v, want the first %+v", again, ack)
	}
	recs, err = s.RoomLog(ctx, room.ID)
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, r := range recs {
		if r.Event.ClientMsgID == "alice-1" {
			n++
		}
	}
	if n != 1 {
		t.Errorf("%d records with clientMsgId alice-1, want 1", n)
	}
	var rows int
	if err := s.SQL().QueryRowContext(ctx, `SELECT count(*) FROM messages WHERE client_msg_id = 'alice-1'`).Scan(&rows); err != nil {
		t.Fatal(err)
	}
	if rows != 1 {
		t.Errorf("%d rows with clientMsgId alice-1, want 1", rows)
	}
}

func mustID(t *testing.T, s string) int64 {
	t.Helper()
	var id int64
	if _, err := fmt.Sscan(s, &id); err != nil {
		t.Fatalf("id %q: %v", s, err)
	}
	return id
}

// unread polls GET /api/rooms as u until the room's unread count is want
// and returns its summary.
func unread(t *testing.T, ctx context.Context, api *stack.API, u *stack.User, roomID string, want int64) stack.RoomSummary {
	t.Helper()
	var got stack.RoomSummary
	err := stack.WaitFor(ctx, 20*time.Second, func(ctx context.Context) (bool, error) {
		rooms, err := api.Rooms(ctx, u)
		if err != nil {
			return false, err
		}
		for _, r := range rooms {
			if r.ID == roomID {
				got = r
				if r.UnreadCount == want {
					return true, nil
				}
				return false, fmt.Errorf("unreadCount %d, lastReadSeq %d", r.UnreadCount, r.LastReadSeq)
			}
		}
		return false, fmt.Errorf("room %s not in %s's list", roomID, u.Username)
	})
	if err != nil {
		t.Fatalf("%s's unread count of room %s never became %d: %v", u.Username, roomID, want, err)
	}
	return got
}

// Edit, delete and mark_read end to end: what the other member is pushed,
// what PostgreSQL and REST history hold, and the unread count dropping.
func TestEditDeleteRead(t *testing.T) {
	s := newStack(t, stack.Options{Gateways: 2})
	ctx := testCtx(t, 60*time.Second)
	api := s.API()
	alice := register(t, ctx, api, "alice")
	bob := register(t, ctx, api, "bob")
	room, err := api.CreateRoom(ctx, alice, "edits", "group", bob)
	if err != nil {
		t.Fatal(err)
	}
	ca := dial(t, ctx, s, 0, alice)
	cb := dial(t, ctx, s, 1, bob)
	lastA := join(t, ctx, ca, room.ID)
	lastB := join(t, ctx, cb, room.ID)

	var sent []protocol.SendAck
	for _, text := range []string{"first", "second", "third"} {
		ack, err := ca.Send(ctx, room.ID, text, "")
		if err != nil {
			t.Fatal(err)
		}
		sent = append(sent, ack)
	}
	m1, m2, m3 := sent[0], sent[1], sent[2]
	if _, err := cb.WaitMessages(ctx, room.ID, 3); err != nil {
		t.Fatal(err)
	}
	unread(t, ctx, api, bob, room.ID, 3)
	unread(t, ctx, api, alice, room.ID, 0) // one's own messages are never unread

	edit, err := ca.Edit(ctx, room.ID, m1.ID, "first (edited)")
	if err != nil {
		t.Fatalf("edit: %v", err)
	}
	if edit.MessageID != m1.ID || edit.Seq <= m3.Seq {
		t.Errorf("edit ack %+v", edit)
	}
	e, err := cb.WaitEvent(ctx, protocol.EventMessageEdited, nil)
	if err != nil {
		t.Fatal(err)
	}
	var edited protocol.MessageEdited
	if err := json.Unmarshal(e.Data, &edited); err != nil {
		t.Fatal(err)
	}
	if edited.MessageID != m1.ID || edited.Content != "first (edited)" || edited.UserID != alice.ID ||
		edited.Seq != edit.Seq || edited.RoomID != room.ID || edited.EditedAt.IsZero() {
		t.Errorf("bob got message_edited %+v, want message %s at seq %d", edited, m1.ID, edit.Seq)
	}

	del, err := ca.Delete(ctx, room.ID, m2.ID)
	if err != nil {
		t.Fatalf("delete: %v", err)
	}
	e, err = cb.WaitEvent(ctx, protocol.EventMessageDeleted, nil)
	if err != nil {
		t.Fatal(err)
	}
	var deleted protocol.MessageDeleted
	if err := json.Unmarshal(e.Data, &deleted); err != nil {
		t.Fatal(err)
	}
	if deleted.MessageID != m2.ID || deleted.UserID != alice.ID || deleted.Seq != del.Seq || deleted.DeletedAt.IsZero() {
		t.Errorf("bob got message_deleted %+v, want message %s at seq %d", deleted, m2.ID, del.Seq)
	}
	// A deleted message is gone for edits and deletes.
	_, err = ca.Edit(ctx, room.ID, m2.ID, "resurrected")
	wantCode(t, "edit a deleted message", err, "NOT_FOUND")
	_, err = ca.Delete(ctx, room.ID, m2.ID)
	wantCode(t, "delete a deleted message", err, "NOT_FOUND")

	// A deleted message is not unread any more.
	unread(t, ctx, api, bob, room.ID, 2)

	read, err := cb.MarkRead(ctx, room.ID, m1.Seq)
	if err != nil {
		t.Fatalf("mark_read: %v", err)
	}
	e, err = ca.WaitEvent(ctx, protocol.EventMessageRead, nil)
	if err != nil {
		t.Fatal(err)
	}
	var mr protocol.MessageRead
	if err := json.Unmarshal(e.Data, &mr); err != nil {
		t.Fatal(err)
	}
	if mr.UserID != bob.ID || mr.ReadSeq != m1.Seq || mr.Seq != read.Seq || mr.RoomID != room.ID {
		t.Errorf("alice got message_read %+v, want bob read up to %d at seq %d", mr, m1.Seq, read.Seq)
	}
	if sum := unread(t, ctx, api, bob, room.ID, 1); sum.LastReadSeq != m1.Seq {
		t.Errorf("lastReadSeq %d, want %d", sum.LastReadSeq, m1.Seq)
	}
	if _, err := cb.MarkRead(ctx, room.ID, m3.Seq); err != nil {
		t.Fatal(err)
	}
	unread(t, ctx, api, bob, room.ID, 0)
	// A read position never moves backwards.
	back, err := cb.MarkRead(ctx, room.ID, m1.Seq)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ca.WaitEvent(ctx, protocol.EventMessageRead, func(e stack.RoomEvent) bool { return e.Seq == back.Seq }); err != nil {
		t.Fatal(err)
	}
	waitLastRead(t, ctx, s, room.ID, bob.ID, m3.Seq, back.Seq)
	if sum := unread(t, ctx, api, bob, room.ID, 0); sum.LastReadSeq != m3.Seq {
		t.Errorf("lastReadSeq %d after marking an older seq, want it to stay %d", sum.LastReadSeq, m3.Seq)
	}

	row := waitRow(t, ctx, s, m1.ID, func(r messageRow) bool { return r.IsEdited })
	if row.Content != "first (edited)" {
		t.Errorf("edited row content %q", row.Content)
	}
	waitRow(t, ctx, s, m2.ID, func(r messageRow) bool { return r.IsDeleted })

	hist, err := api.AllHistory(ctx, bob, room.ID)
	if err != nil {
		t.Fatal(err)
	}
	if h := findHistory(hist, m1.ID); h == nil || h.Content == nil || *h.Content != "first (edited)" || !h.IsEdited || h.EditedAt == nil {
		t.Errorf("history of the edited message: %+v", h)
	}
	if h := findHistory(hist, m2.ID); h == nil || !h.IsDeleted || h.Content != nil || h.DeletedAt == nil {
		t.Errorf("history of the deleted message (want a tombstone without content): %+v", h)
	}
	if h := findHistory(hist, m3.ID); h == nil || h.Content == nil || *h.Content != "third" || h.IsEdited || h.IsDeleted {
		t.Errorf("history of the untouched message: %+v", h)
	}

	checkLogPushes(t, ctx, s, "alice", ca, room.ID, lastA)
	checkLogPushes(t, ctx, s, "bob", cb, room.ID, lastB)
}

// waitLastRead waits until the persister applied the read_marked event at
// applied (it commits an offset only after its rows are written) and checks
// bob's stored read position is then want.
func waitLastRead(t *testing.T, ctx context.Context, s *stack.Stack, roomID, userID string, want, applied int64) {
	t.Helper()
	recs, err := s.RoomLog(ctx, roomID)
	if err != nil || len(recs) == 0 {
		t.Fatalf("room log: %d records, %v", len(recs), err)
	}
	part := recs[0].Partition
	err = stack.WaitFor(ctx, 20*time.Second, func(ctx context.Context) (bool, error) {
		next, err := s.Committed(ctx, "persister", part)
		if err != nil {
			return false, err
		}
		return next > applied, fmt.Errorf("persister committed up to %d", next)
	})
	if err != nil {
		t.Fatalf("persister never got past seq %d: %v", applied, err)
	}
	var got int64
	if err := s.SQL().QueryRowContext(ctx, `SELECT last_read_seq FROM room_members WHERE room_id = $1 AND user_id = $2`,
		roomID, userID).Scan(&got); err != nil {
		t.Fatal(err)
	}
	if got != want {
		t.Errorf("room_members.last_read_seq %d, want %d", got, want)
	}
}
