package e2e

import (
	"encoding/json"
	"errors"
	"net/http"
	"testing"
	"time"

	"relay/pkg/auth"
	"relay/pkg/protocol"
	"relay/tests/e2e/stack"
)

// Authorization across services: the gateway's membership checks against
// the api's rooms, the channel join through the api, authorship for edits.
func TestAuthorization(t *testing.T) {
	s := newStack(t, stack.Options{Gateways: 2})
	ctx := testCtx(t, 60*time.Second)
	api := s.API()
	alice := register(t, ctx, api, "alice")
	bob := register(t, ctx, api, "bob")
	carol := register(t, ctx, api, "carol")
	group, err := api.CreateRoom(ctx, alice, "private", "group", bob)
	if err != nil {
		t.Fatal(err)
	}
	channel, err := api.CreateRoom(ctx, alice, "announcements", "channel")
	if err != nil {
		t.Fatal(err)
	}

	// The upgrade wants a token the api signed.
	if _, err := stack.Dial(ctx, s.GatewayURL(0), ""); stack.ErrorCode(err) != "UNAUTHORIZED" || status(err) != http.StatusUnauthorized {
		t.Errorf("dial without token: %v, want 401 UNAUTHORIZED", err)
	}
	forger, err := auth.NewTokens("not-the-stack-secret-0123456789", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	forged, _, err := forger.Issue(mustID(t, alice.ID), "alice")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := stack.Dial(ctx, s.GatewayURL(1), forged); stack.ErrorCode(err) != "UNAUTHORIZED" {
		t.Errorf("dial with a token of another secret: %v, want 401 UNAUTHORIZED", err)
	}

	ca := dial(t, ctx, s, 0, alice)
	cb := dial(t, ctx, s, 1, bob)
	cc := dial(t, ctx, s, 1, carol)
	join(t, ctx, ca, group.ID)
	join(t, ctx, cb, group.ID)
	fromAlice, err := ca.Send(ctx, group.ID, "members only", "")
	if err != nil {
		t.Fatal(err)
	}
	fromBob, err := cb.Send(ctx, group.ID, "bob was here", "")
	if err != nil {
		t.Fatal(err)
	}

	// Carol is no member of the group: refused everywhere.
	_, err = cc.Join(ctx, group.ID, nil)
	wantCode(t, "non-member joins a group", err, "FORBIDDEN")
	_, err = cc.Send(ctx, group.ID, "let me in", "")
	wantCode(t, "non-member sends to a group", err, "FORBIDDEN")
	_, err = cc.MarkRead(ctx, group.ID, fromAlice.Seq)
	wantCode(t, "non-member marks a group read", err, "FORBIDDEN")
	_, err = cc.Edit(ctx, group.ID, fromAlice.ID, "defaced")
	wantCode(t, "non-member edits in a group", err, "FORBIDDEN")
	_, err = cc.Delete(ctx, group.ID, fromAlice.ID)
	wantCode(t, "non-member deletes in a group", err, "FORBIDDEN")
	_, err = api.History(ctx, carol, group.ID, nil)
	wantCode(t, "non-member reads group history", err, "FORBIDDEN")
	_, err = cc.Join(ctx, "999999", nil)
	wantCode(t, "join an unknown room", err, "NOT_FOUND")

	// Nobody edits someone else's message, not even the room's admin; only
	// the author or an admin deletes.
	_, err = cb.Edit(ctx, group.ID, fromAlice.ID, "bob's words now")
	wantCode(t, "member edits another's message", err, "FORBIDDEN")
	_, err = ca.Edit(ctx, group.ID, fromBob.ID, "alice's words now")
	wantCode(t, "admin edits another's message", err, "FORBIDDEN")
	_, err = cb.Delete(ctx, group.ID, fromAlice.ID)
	wantCode(t, "member deletes another's message", err, "FORBIDDEN")
	del, err := ca.Delete(ctx, group.ID, fromBob.ID)
	if err != nil {
		t.Errorf("admin deletes a member's message: %v", err)
	}
	if _, err := cb.WaitEvent(ctx, protocol.EventMessageDeleted, func(e stack.RoomEvent) bool { return e.Seq == del.Seq }); err != nil {
		t.Error(err)
	}

	// A channel is open: joining it over WS makes carol a member through
	// the api, and the members already in it see her arrive.
	lastA := join(t, ctx, ca, channel.ID)
	if _, err := cc.Join(ctx, channel.ID, nil); err != nil {
		t.Fatalf("join a channel: %v", err)
	}
	ev, err := ca.WaitEvent(ctx, protocol.EventUserJoined, func(e stack.RoomEvent) bool { return e.RoomID == channel.ID })
	if err != nil {
		t.Fatal(err)
	}
	var uj protocol.UserJoined
	if err := json.Unmarshal(ev.Data, &uj); err != nil {
		t.Fatal(err)
	}
	if uj.UserID != carol.ID || uj.Username != "carol" {
		t.Errorf("alice got user_joined %+v, want carol (%s)", uj, carol.ID)
	}
	members, err := api.Members(ctx, alice, channel.ID)
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, m := range members {
		if m.UserID == carol.ID {
			found = m.Role == "member"
		}
	}
	if !found {
		t.Errorf("channel members %+v lack carol as member", members)
	}
	// ... so she may post there, and alice gets it.
	hi, err := cc.Send(ctx, channel.ID, "hi all", "")
	if err != nil {
		t.Fatalf("new channel member sends: %v", err)
	}
	if _, err := ca.WaitEvent(ctx, protocol.EventMessage, func(e stack.RoomEvent) bool { return e.Seq == hi.Seq && e.RoomID == channel.ID }); err != nil {
		t.Error(err)
	}
	// Still no way into the group.
	_, err = cc.Send(ctx, group.ID, "now?", "")
	wantCode(t, "channel member sends to a group", err, "FORBIDDEN")

	checkLogPushes(t, ctx, s, "alice", ca, channel.ID, lastA)

	// History: alice's message untouched, bob's deleted by the admin.
	waitRow(t, ctx, s, fromBob.ID, func(r messageRow) bool { return r.IsDeleted })
	hist, err := api.AllHistory(ctx, bob, group.ID)
	if err != nil {
		t.Fatal(err)
	}
	if h := findHistory(hist, fromAlice.ID); h == nil || h.IsEdited || h.IsDeleted || h.Content == nil || *h.Content != "members only" {
		t.Errorf("alice's message in history: %+v", h)
	}
	if h := findHistory(hist, fromBob.ID); h == nil || !h.IsDeleted {
		t.Errorf("bob's message in history: %+v", h)
	}
}

func status(err error) int {
	var ae *stack.APIError
	if errors.As(err, &ae) {
		return ae.Status
	}
	return 0
}

// Leaving a room for good (POST /api/rooms/:id/leave) ends what one may do
// and see there at once, on connections already open: the others are told
// (user_left), the leaver's sends are refused and the room's messages are
// no longer pushed to them.
func TestLeaveEndsAccess(t *testing.T) {
	s := newStack(t, stack.Options{Gateways: 2})
	ctx := testCtx(t, 60*time.Second)
	api := s.API()
	alice := register(t, ctx, api, "alice")
	bob := register(t, ctx, api, "bob")
	room, err := api.CreateRoom(ctx, alice, "circle", "group", bob)
	if err != nil {
		t.Fatal(err)
	}
	ca := dial(t, ctx, s, 0, alice)
	cb := dial(t, ctx, s, 1, bob)
	// A second connection of alice on bob's gateway: when it has a push,
	// bob's gateway has fanned that publication out to all its members.
	ca1 := dial(t, ctx, s, 1, alice)
	join(t, ctx, ca, room.ID)
	join(t, ctx, ca1, room.ID)
	join(t, ctx, cb, room.ID)
	// Bob has posted, so his gateway knows (and caches) his membership.
	if _, err := cb.Send(ctx, room.ID, "bye soon", ""); err != nil {
		t.Fatal(err)
	}

	if err := api.Do(ctx, http.MethodPost, "/api/rooms/"+room.ID+"/leave", bob.Token, nil, nil); err != nil {
		t.Fatalf("leave: %v", err)
	}
	left, err := ca.WaitEvent(ctx, protocol.EventUserLeft, nil)
	if err != nil {
		t.Fatal(err)
	}
	var ul protocol.UserLeft
	if err := json.Unmarshal(left.Data, &ul); err != nil {
		t.Fatal(err)
	}
	if ul.UserID != bob.ID {
		t.Errorf("user_left %+v, want bob (%s)", ul, bob.ID)
	}
	// Bob's own connection saw his user_left too, so it is past it.
	if _, err := cb.WaitEvent(ctx, protocol.EventUserLeft, nil); err != nil {
		t.Error(err)
	}

	_, err = cb.Send(ctx, room.ID, "still here?", "")
	wantCode(t, "send after leaving", err, "FORBIDDEN")
	after, err := ca.Send(ctx, room.ID, "bob has gone", "")
	if err != nil {
		t.Fatal(err)
	}
	// Once alice's connection on gateway1 has the message, gateway1 has
	// queued it for every member there; a ping bob sends after that is
	// answered behind anything queued for him.
	if _, err := ca1.WaitEvent(ctx, protocol.EventMessage, func(e stack.RoomEvent) bool { return e.Seq == after.Seq }); err != nil {
		t.Fatal(err)
	}
	if err := cb.Request(ctx, protocol.EventPing, struct{}{}, nil); err != nil {
		t.Fatal(err)
	}
	for _, f := range cb.Pushes() {
		if e, err := stack.DecodeRoomEvent(f); err == nil && f.Event == protocol.EventMessage && e.Seq >= after.Seq {
			t.Errorf("bob, no longer a member, was pushed %s %s", f.Event, f.Data)
		}
	}
	_, err = api.History(ctx, bob, room.ID, nil)
	wantCode(t, "history after leaving", err, "FORBIDDEN")
}
