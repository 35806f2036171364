package server

import (
	"strings"
	"testing"

	"relay/pkg/chat"
	"relay/pkg/redis"
)

// Frames are coalesced into batched writes, with every length encoding of
// RFC 6455 (7-bit, 16-bit and 64-bit) and batches split at the ws transport's maxBatchBytes;
// the client's WebSocket library reads each frame back intact and in order.
func TestBatchedFramesOfEveryLength(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	g := e.start(nil)
	alice, at := e.user("alice")
	room := e.room(chat.RoomGroup, alice)
	c := e.dial(g, at)
	c.join(room, nil)
	pads := []int{0, 10, 20 << 10, 70 << 10, 0, 40 << 10, 5, 0}
	var prev *int64
	for i, n := range pads {
		seq := int64(i + 1)
		payload := e.publication(room, seq, prev, nil, strings.Repeat("p", n))
		if res, _, err := redis.Publish(t.Context(), e.rdb, e.keys, room, seq, prev, payload, 100); err != nil || res != redis.Published {
			t.Fatalf("publish %d: %v %v", seq, res, err)
		}
		prev = ptr(seq)
	}
	for i := range pads {
		if seq := seqOf(t, c.next()); seq != int64(i+1) {
			t.Fatalf("got seq %d, want %d", seq, i+1)
		}
	}
	c.call("ping", struct{}{})
}
