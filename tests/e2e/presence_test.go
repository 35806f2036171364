package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"testing"
	"time"

	"relay/pkg/protocol"
	"relay/tests/e2e/stack"
)

// waitPushAfter waits for a push named event, among those c received after
// the first skip, whose data satisfies match; it returns the data.
func waitPushAfter(ctx context.Context, c *stack.Conn, skip int, event string, match func(json.RawMessage) bool) (json.RawMessage, error) {
	var found json.RawMessage
	_, err := c.WaitPushes(ctx, func(fs []protocol.Frame) bool {
		for _, f := range fs[min(skip, len(fs)):] {
			if f.Event == event && match(f.Data) {
				found = f.Data
				return true
			}
		}
		return false
	})
	if err != nil {
		return nil, fmt.Errorf("waiting for %s: %w", event, err)
	}
	return found, nil
}

type presenceUpdate struct {
	UserID string `json:"userId"`
	Status string `json:"status"`
}

func isPresence(userID, status string) func(json.RawMessage) bool {
	return func(d json.RawMessage) bool {
		var p presenceUpdate
		return json.Unmarshal(d, &p) == nil && p.UserID == userID && p.Status == status
	}
}

func isTyping(userID string, on bool) func(json.RawMessage) bool {
	return func(d json.RawMessage) bool {
		var p protocol.Typing
		return json.Unmarshal(d, &p) == nil && p.UserID == userID && p.Typing == on
	}
}

// restPresence polls GET /api/users/:id/presence until it says status.
func restPresence(t *testing.T, ctx context.Context, api *stack.API, as *stack.User, userID, status string) {
	t.Helper()
	err := stack.WaitFor(ctx, 10*time.Second, func(ctx context.Context) (bool, error) {
		var p presenceUpdate
		if err := api.Do(ctx, http.MethodGet, "/api/users/"+userID+"/presence", as.Token, nil, &p); err != nil {
			return false, err
		}
		return p.Status == status, fmt.Errorf("status %q", p.Status)
	})
	if err != nil {
		t.Errorf("REST presence of user %s never became %s: %v", userID, status, err)
	}
}

// Presence across gateway, presence service and api: a user online on one
// gateway is seen online by a room mate on another (push and REST), typing
// reaches the room and its REST view, and when the user's gateway is
// killed the user goes offline after the presence timeout; a graceful
// close goes offline at once.
func TestPresenceAcrossServices(t *testing.T) {
	// Short presence timings so a dead gateway's users expire quickly; set
	// alike on the gateways and the presence service, as documented.
	s := newStack(t, stack.Options{Gateways: 2, Env: map[string]string{
		"PRESENCE_HEARTBEAT_INTERVAL": "500ms",
		"PRESENCE_TIMEOUT":            "2s",
		"PRESENCE_SWEEP_INTERVAL":     "200ms",
	}})
	ctx := testCtx(t, 60*time.Second)
	api := s.API()
	alice := register(t, ctx, api, "alice")
	bob := register(t, ctx, api, "bob")
	room, err := api.CreateRoom(ctx, alice, "presence", "group", bob)
	if err != nil {
		t.Fatal(err)
	}
	ca := dial(t, ctx, s, 0, alice)
	join(t, ctx, ca, room.ID)

	mark := len(ca.Pushes())
	cb := dial(t, ctx, s, 1, bob)
	if _, err := waitPushAfter(ctx, ca, mark, protocol.EventPresenceUpdate, isPresence(bob.ID, "online")); err != nil {
		t.Fatalf("alice never saw bob come online: %v", err)
	}
	restPresence(t, ctx, api, alice, bob.ID, "online")

	// Typing, from bob's gateway to alice's, and in the room's REST view.
	if err := cb.Request(ctx, protocol.EventTypingStart, protocol.TypingRequest{RoomID: room.ID}, nil); err != nil {
		t.Fatalf("typing_start: %v", err)
	}
	if _, err := waitPushAfter(ctx, ca, mark, protocol.EventTyping, isTyping(bob.ID, true)); err != nil {
		t.Error(err)
	}
	var rp struct {
		Typing []struct {
			UserID string `json:"userId"`
		} `json:"typing"`
	}
	if err := api.Do(ctx, http.MethodGet, "/api/rooms/"+room.ID+"/presence", alice.Token, nil, &rp); err != nil {
		t.Error(err)
	} else if len(rp.Typing) != 1 || rp.Typing[0].UserID != bob.ID {
		t.Errorf("room presence typing %+v, want bob", rp.Typing)
	}
	if err := cb.Request(ctx, protocol.EventTypingStop, protocol.TypingRequest{RoomID: room.ID}, nil); err != nil {
		t.Fatalf("typing_stop: %v", err)
	}
	if _, err := waitPushAfter(ctx, ca, mark, protocol.EventTyping, isTyping(bob.ID, false)); err != nil {
		t.Error(err)
	}

	// Bob's gateway dies without a word: the presence timeout takes him
	// offline.
	mark = len(ca.Pushes())
	killed := time.Now()
	s.Kill(stack.GatewayName(1))
	if _, err := waitPushAfter(ctx, ca, mark, protocol.EventPresenceUpdate, isPresence(bob.ID, "offline")); err != nil {
		t.Fatalf("alice never saw bob go offline after his gateway died: %v", err)
	}
	t.Logf("offline %v after the gateway was killed (PRESENCE_TIMEOUT 2s)", time.Since(killed).Round(time.Millisecond))
	restPresence(t, ctx, api, alice, bob.ID, "offline")

	// Back on the other gateway, then a clean close.
	mark = len(ca.Pushes())
	cb2 := dial(t, ctx, s, 0, bob)
	if _, err := waitPushAfter(ctx, ca, mark, protocol.EventPresenceUpdate, isPresence(bob.ID, "online")); err != nil {
		t.Fatalf("bob's return: %v", err)
	}
	mark = len(ca.Pushes())
	_ = cb2.Close()
	if _, err := waitPushAfter(ctx, ca, mark, protocol.EventPresenceUpdate, isPresence(bob.ID, "offline")); err != nil {
		t.Fatalf("bob's close: %v", err)
	}
	restPresence(t, ctx, api, alice, bob.ID, "offline")
	_ = cb.Close()
}
