package server

import (
	"context"
	"slices"
	"sync"
	"testing"
	"time"

	"relay/pkg/chat"
	"relay/pkg/protocol"
	example "relay/services/gateway/examples/client"
)

// The example client of docs/protocol.md survives a gateway restart: it
// reconnects to the other instance at once after 1012, resumes the room
// with lastSeq (no event lost or repeated) and its send gets an ack.
func TestExampleClientResumesAcrossARestart(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	g1, g2 := e.start(nil), e.start(nil)
	alice, at := e.user("alice")
	room := e.room(chat.RoomGroup, alice)
	l := e.roomLog(room, alice, 1000)
	var mu sync.Mutex
	var got []int64
	seen := func() []int64 {
		mu.Lock()
		defer mu.Unlock()
		return slices.Clone(got)
	}
	cl := example.New(example.Options{
		URLs: []string{g1.url, g2.url}, Token: at, MaxBackoff: 200 * time.Millisecond,
		OnEvent: func(_ string, seq int64, _ protocol.Frame) {
			mu.Lock()
			got = append(got, seq)
			mu.Unlock()
		},
	})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- cl.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		<-done
	})
	eventually(t, "connected", func() bool { return g1.svc.lc.Active() == 1 })
	cl.Join(rid(room))
	// A connection's frames are handled in order, so once a send made
	// after the join is acked, the join has read the room's position and
	// live events flow. The hub lists the member earlier, before that
	// read: a publication in between would count as already seen.
	jctx, jcancel := context.WithTimeout(ctx, 10*time.Second)
	defer jcancel()
	if _, err := cl.Send(jctx, rid(room), "joined"); err != nil {
		t.Fatalf("send after the join: %v", err)
	}
	if len(g1.svc.hub.Members(room)) != 1 {
		t.Fatal("not joined on the first instance")
	}
	want := seqRange(0, 4, 1)
	for _, s := range want {
		l.publish(s)
	}
	eventually(t, "first events", func() bool { return len(seen()) == len(want) })

	g1.stop()
	for s := int64(5); s < 10; s++ {
		l.publish(s)
		want = append(want, s)
	}
	eventually(t, "resumed on the other instance", func() bool { return len(seen()) >= len(want) })
	if s := seen(); !slices.Equal(s, want) {
		t.Fatalf("events %v, want %v", s, want)
	}
	if len(g2.svc.hub.Members(room)) != 1 {
		t.Fatal("not joined on the second instance")
	}
	sctx, scancel := context.WithTimeout(ctx, 10*time.Second)
	defer scancel()
	ack, err := cl.Send(sctx, rid(room), "hello again")
	if err != nil || ack.RoomID != rid(room) || ack.ClientMsgID == "" {
		t.Fatalf("send: %+v %v", ack, err)
	}
}
