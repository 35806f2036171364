package store_test

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"relay/pkg/chat"
	"relay/pkg/events"
	"relay/pkg/store"
	"relay/pkg/testenv"
)

// outboxConn is a pgx connection to the test's own database, as the relay
// has one.
func outboxConn(t *testing.T, url string) *pgx.Conn {
	t.Helper()
	conn, err := pgx.Connect(context.Background(), url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close(context.Background()) })
	return conn
}

// outboxString renders the outbox as "type:room:user:username:role".
func outboxString(t *testing.T, conn *pgx.Conn) []string {
	t.Helper()
	rows, err := store.PendingOutbox(context.Background(), conn, 1000)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for i, o := range rows {
		e := o.Event
		if o.RoomID != e.RoomID || e.At.IsZero() || time.Since(e.At) > time.Hour || o.CreatedAt.IsZero() {
			t.Errorf("row %+v", o)
		}
		if i > 0 && o.ID <= rows[i-1].ID {
			t.Errorf("rows not in id order: %d after %d", o.ID, rows[i-1].ID)
		}
		s := fmt.Sprintf("%s:%d:%d:%s", e.Type, e.RoomID, e.UserID, e.Username)
		if e.Role != "" {
			s += ":" + e.Role
		}
		out = append(out, s)
	}
	return out
}

// TestMembershipChangesWriteOutbox: every change writes its event in its
// own transaction, in order; no-ops and refusals write nothing.
func TestMembershipChangesWriteOutbox(t *testing.T) {
	if testenv.Short() {
		t.Skip("integration test")
	}
	t.Parallel()
	url := testenv.Database(t)
	db, err := store.Open(context.Background(), url, store.Options{MaxConns: 4})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = store.Close(db) })
	conn := outboxConn(t, url)
	ctx := context.Background()
	a, b, c := queriesUser(t, db, "oa"), queriesUser(t, db, "ob"), queriesUser(t, db, "oc")

	trace := store.Trace{"traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"}
	// The creator is listed last but announced first.
	g, _, _, err := store.CreateRoom(ctx, db, store.NewRoom{Name: "g", Type: chat.RoomGroup, CreatedBy: b.ID, MemberIDs: []int64{a.ID, b.ID}, Trace: trace})
	if err != nil {
		t.Fatal(err)
	}
	ch, _, _, err := store.CreateRoom(ctx, db, store.NewRoom{Name: "ch", Type: chat.RoomChannel, CreatedBy: a.ID})
	if err != nil {
		t.Fatal(err)
	}
	mustOK := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	_, _, err = store.JoinRoom(ctx, db, ch.ID, c.ID, nil)
	mustOK(err)
	_, _, err = store.JoinRoom(ctx, db, ch.ID, c.ID, nil) // no-op
	mustOK(err)
	_, _, err = store.AddMember(ctx, db, g.ID, b.ID, c.ID, nil)
	mustOK(err)
	_, _, err = store.AddMember(ctx, db, g.ID, b.ID, c.ID, nil) // no-op
	mustOK(err)
	_, _, err = store.AddMember(ctx, db, g.ID, c.ID, a.ID, nil) // refused: not admin
	wantCode(t, err, chat.CodeForbidden)
	_, err = store.LeaveRoom(ctx, db, g.ID, b.ID, nil) // the admin: a is promoted
	mustOK(err)
	_, err = store.LeaveRoom(ctx, db, g.ID, b.ID, nil) // no-op
	mustOK(err)
	_, _, _, err = store.CreateRoom(ctx, db, store.NewRoom{Name: "x", Type: chat.RoomGroup, CreatedBy: a.ID, MemberIDs: []int64{987654}})
	wantCode(t, err, chat.CodeNotFound) // rolled back: no events
	dm, _, created, err := store.CreateRoom(ctx, db, store.NewRoom{Type: chat.RoomDirect, CreatedBy: a.ID, MemberIDs: []int64{c.ID}})
	mustOK(err)
	if _, _, again, err := store.CreateRoom(ctx, db, store.NewRoom{Type: chat.RoomDirect, CreatedBy: c.ID, MemberIDs: []int64{a.ID}}); err != nil || again || !created {
		t.Fatalf("direct room: created %v, again %v, %v", created, again, err)
	}

	want := []string{
		fmt.Sprintf("member_joined:%d:%d:ob:admin", g.ID, b.ID),
		fmt.Sprintf("member_joined:%d:%d:oa:member", g.ID, a.ID),
		fmt.Sprintf("member_joined:%d:%d:oa:admin", ch.ID, a.ID),
		fmt.Sprintf("member_joined:%d:%d:oc:member", ch.ID, c.ID),
		fmt.Sprintf("member_joined:%d:%d:oc:member", g.ID, c.ID),
		fmt.Sprintf("member_left:%d:%d:ob", g.ID, b.ID),
		fmt.Sprintf("member_joined:%d:%d:oa:admin", dm.ID, a.ID),
		fmt.Sprintf("member_joined:%d:%d:oc:member", dm.ID, c.ID),
	}
	if got := outboxString(t, conn); !slices.Equal(got, want) {
		t.Fatalf("outbox\n got %v\nwant %v", got, want)
	}
	rows, err := store.PendingOutbox(ctx, conn, 2)
	if err != nil || len(rows) != 2 {
		t.Fatalf("limit 2: %d rows, %v", len(rows), err)
	}
	if rows[0].Trace["traceparent"] != trace["traceparent"] || rows[1].Trace["traceparent"] != trace["traceparent"] {
		t.Fatalf("trace not kept: %v %v", rows[0].Trace, rows[1].Trace)
	}
	if rows[0].Event.Type != events.MemberJoined {
		t.Fatalf("first row %+v", rows[0])
	}
	if n, err := store.OutboxDepth(ctx, conn); err != nil || n != int64(len(want)) {
		t.Fatalf("depth %d, %v; want %d", n, err, len(want))
	}
	if err := store.DeleteOutbox(ctx, conn, []int64{rows[0].ID, rows[1].ID}); err != nil {
		t.Fatal(err)
	}
	if got := outboxString(t, conn); !slices.Equal(got, want[2:]) {
		t.Fatalf("after delete\n got %v\nwant %v", got, want[2:])
	}
	if n, err := store.OutboxDepth(ctx, conn); err != nil || n != int64(len(want)-2) {
		t.Fatalf("depth after delete %d, %v", n, err)
	}
}

// TestOutboxNotifiesOnCommit: a committed change wakes a listener (the
// relay's LISTEN outbox).
func TestOutboxNotifiesOnCommit(t *testing.T) {
	if testenv.Short() {
		t.Skip("integration test")
	}
	t.Parallel()
	url := testenv.Database(t)
	db, err := store.Open(context.Background(), url, store.Options{MaxConns: 2})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = store.Close(db) })
	conn := outboxConn(t, url)
	ctx := context.Background()
	if _, err := conn.Exec(ctx, "LISTEN outbox"); err != nil {
		t.Fatal(err)
	}
	a := queriesUser(t, db, "na")
	if _, _, _, err := store.CreateRoom(ctx, db, store.NewRoom{Name: "n", Type: chat.RoomChannel, CreatedBy: a.ID}); err != nil {
		t.Fatal(err)
	}
	wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if n, err := conn.WaitForNotification(wctx); err != nil || n.Channel != "outbox" {
		t.Fatalf("no notification after the commit: %v", err)
	}
}
