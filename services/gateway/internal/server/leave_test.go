package server

import (
	"context"
	"encoding/json"
	"strconv"
	"testing"
	"time"

	"relay/pkg/chat"
	"relay/pkg/events"
	"relay/pkg/protocol"
	"relay/pkg/redis"
	"relay/pkg/store"
)

// A user_left ends the leaver's access on the gateway at once: the cached
// membership is dropped (a send is FORBIDDEN although the cache TTL is far
// away) and the leaver's open connection gets the user_left, then nothing
// more of the room, while the other members keep receiving it.
func TestUserLeftEndsAccess(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	g := e.start(func(c *Config) { c.MembershipTTL = time.Hour })
	alice, at := e.user("alice")
	bob, bt := e.user("bob")
	room := e.room(chat.RoomGroup, alice, bob)
	a := e.dial(g, at)
	b := e.dial(g, bt)
	a.join(room, nil)
	b.join(room, nil) // caches bob's membership
	// Bob left over REST: the api deleted the row and produced member_left.
	if err := e.db.Where("room_id = ? AND user_id = ?", room, bob).Delete(&store.RoomMember{}).Error; err != nil {
		t.Fatal(err)
	}
	frame, err := protocol.RenderEvent(&events.Event{Type: events.MemberLeft, RoomID: room, UserID: bob, Username: "bob", At: time.Now()}, 1, nil)
	if err != nil {
		t.Fatal(err)
	}
	payload, _ := json.Marshal(redis.Publication{RoomID: room, Seq: 1, Frame: frame})
	if res, _, err := redis.Publish(context.Background(), e.rdb, e.keys, room, 1, nil, payload, 1000); err != nil || res != redis.Published {
		t.Fatalf("publish user_left: %v %v", res, err)
	}
	for _, c := range []*wsClient{a, b} {
		if f := c.next(); f.Event != protocol.EventUserLeft {
			t.Fatalf("got %s %s, want user_left", f.Event, f.Data)
		}
	}
	b.fail(protocol.EventSendMessage, protocol.SendMessage{RoomID: strconv.FormatInt(room, 10), Content: "still here?"}, chat.CodeForbidden)

	e.publishNext(room, 2)
	if seq := seqOf(t, a.next()); seq != 2 {
		t.Fatalf("alice got seq %d, want 2", seq)
	}
	// Alice has seq 2, so the gateway has fanned it out; bob's ping is
	// answered behind anything queued for him.
	b.call(protocol.EventPing, struct{}{})
	if len(b.pending) > 0 {
		t.Fatalf("bob, no longer a member, was pushed %s %s", b.pending[0].Event, b.pending[0].Data)
	}
	// A rejoin is checked against the database again.
	b.fail(protocol.EventJoinRoom, protocol.JoinRoom{RoomID: strconv.FormatInt(room, 10)}, chat.CodeForbidden)
}
