package hub

import (
	"context"
	"strings"
	"sync"
	"testing"

	"relay/pkg/redis"
)

// fakeBroker confirms subscriptions at once and records the calls.
type fakeBroker struct {
	mu     sync.Mutex
	subs   map[int64]int
	unsubs map[int64]int
	// hold, when set, is closed to confirm instead of confirming at once.
	hold chan struct{}
}

var _ Broker = (*fakeBroker)(nil)

func newFakeBroker() *fakeBroker {
	return &fakeBroker{subs: map[int64]int{}, unsubs: map[int64]int{}}
}

func (b *fakeBroker) Subscribe(_ context.Context, room int64) (<-chan struct{}, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.subs[room]++
	if b.hold != nil {
		return b.hold, nil
	}
	ch := make(chan struct{})
	close(ch)
	return ch, nil
}

func (b *fakeBroker) Unsubscribe(_ context.Context, room int64) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.unsubs[room]++
	return nil
}

// fakeConn records what it was sent; full makes Send fail like a full queue.
type fakeConn struct {
	user   int64
	mu     sync.Mutex
	frames []string
	slow   bool
}

var _ Conn = (*fakeConn)(nil)

func (c *fakeConn) Send(f []byte) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.frames = append(c.frames, string(f))
	return true
}
func (c *fakeConn) UserID() int64 { return c.user }
func (c *fakeConn) CloseSlow()    { c.mu.Lock(); c.slow = true; c.mu.Unlock() }
func (c *fakeConn) got() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]string(nil), c.frames...)
}

func pub(room, seq int64) *redis.Publication {
	return &redis.Publication{RoomID: room, Seq: seq, Frame: []byte{byte('0' + seq)}}
}

func join(t *testing.T, h *Hub, room int64, c Conn, last int64) *Member {
	t.Helper()
	m, err := h.Join(context.Background(), room, c)
	if err != nil {
		t.Fatal(err)
	}
	m.Start(last, nil)
	return m
}

func TestSubscribesOncePerRoomAndUnsubscribesAfterLast(t *testing.T) {
	b := newFakeBroker()
	h := New(b, Options{Shards: 4})
	c1, c2 := &fakeConn{user: 1}, &fakeConn{user: 2}
	m1 := join(t, h, 7, c1, -1)
	m2 := join(t, h, 7, c2, -1)
	if b.subs[7] != 1 {
		t.Fatalf("subscribed %d times, want 1", b.subs[7])
	}
	if err := h.Leave(context.Background(), m1); err != nil {
		t.Fatal(err)
	}
	if err := h.Leave(context.Background(), m1); err != nil { // idempotent
		t.Fatal(err)
	}
	if b.unsubs[7] != 0 {
		t.Fatal("unsubscribed while a member remains")
	}
	_ = h.Leave(context.Background(), m2)
	if b.unsubs[7] != 1 || len(h.Rooms()) != 0 || h.Size() != 0 {
		t.Fatalf("unsubs %d rooms %v size %d after the last leave", b.unsubs[7], h.Rooms(), h.Size())
	}
}

func TestPublishInOrderDropsRedeliveries(t *testing.T) {
	h := New(newFakeBroker(), Options{})
	c1, c2 := &fakeConn{user: 1}, &fakeConn{user: 2}
	join(t, h, 1, c1, -1)
	join(t, h, 1, c2, 2) // c2 already has up to 2
	other := &fakeConn{user: 3}
	join(t, h, 2, other, -1)
	for _, s := range []int64{1, 2, 3, 3, 2, 4} {
		h.Publish(pub(1, s))
	}
	if got := c1.got(); len(got) != 4 || got[0] != "1" || got[3] != "4" {
		t.Fatalf("c1 got %v, want 1 2 3 4", got)
	}
	if got := c2.got(); len(got) != 2 || got[0] != "3" || got[1] != "4" {
		t.Fatalf("c2 got %v, want 3 4", got)
	}
	if len(other.got()) != 0 {
		t.Fatal("another room's member got frames")
	}
}

func TestReplayThenBufferedLiveWithoutDuplicate(t *testing.T) {
	h := New(newFakeBroker(), Options{})
	c := &fakeConn{user: 1}
	m, err := h.Join(context.Background(), 1, c)
	if err != nil {
		t.Fatal(err)
	}
	// Live publications arrive while the member reads its history.
	h.Publish(pub(1, 6))
	h.Publish(pub(1, 7))
	if len(c.got()) != 0 {
		t.Fatal("delivered before Start")
	}
	// History had 4..6 (6 overlaps the live one).
	m.Start(3, []*redis.Publication{pub(1, 4), pub(1, 5), pub(1, 6)}, []byte("A"))
	h.Publish(pub(1, 8))
	want := []string{"A", "4", "5", "6", "7", "8"}
	got := c.got()
	if len(got) != len(want) {
		t.Fatalf("got %v, want %v", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("got %v, want %v", got, want)
		}
	}
}

func TestBufferOverflowClosesSlow(t *testing.T) {
	h := New(newFakeBroker(), Options{MaxBuffered: 2})
	c := &fakeConn{user: 1}
	if _, err := h.Join(context.Background(), 1, c); err != nil {
		t.Fatal(err)
	}
	for s := int64(1); s <= 3; s++ {
		h.Publish(pub(1, s))
	}
	if !c.slow {
		t.Fatal("overflowing the replay buffer did not close the connection as slow")
	}
}

func TestEphemeralSkipsUserAndSeqChecks(t *testing.T) {
	h := New(newFakeBroker(), Options{})
	typist, other := &fakeConn{user: 1}, &fakeConn{user: 2}
	join(t, h, 1, typist, 10)
	join(t, h, 1, other, 10)
	n := h.Publish(&redis.Publication{RoomID: 1, Ephemeral: true, SkipUserID: 1, Frame: []byte("t")})
	if n != 1 || len(typist.got()) != 0 || len(other.got()) != 1 {
		t.Fatalf("delivered to %d: typist %v other %v", n, typist.got(), other.got())
	}
}

func TestJoinWaitsForConfirmation(t *testing.T) {
	b := newFakeBroker()
	b.hold = make(chan struct{})
	h := New(b, Options{})
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := h.Join(ctx, 1, &fakeConn{user: 1}); err == nil {
		t.Fatal("Join returned before the subscription was confirmed")
	}
	if b.unsubs[1] != 1 || h.Size() != 0 {
		t.Fatalf("a failed join left state: unsubs %d size %d", b.unsubs[1], h.Size())
	}
	done := make(chan error, 1)
	go func() {
		_, err := h.Join(context.Background(), 2, &fakeConn{user: 1})
		done <- err
	}()
	close(b.hold)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

func TestConcurrentJoinLeavePublish(t *testing.T) {
	b := newFakeBroker()
	h := New(b, Options{Shards: 2})
	var wg sync.WaitGroup
	for w := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 200 {
				room := int64(i%5 + 1)
				m := join(t, h, room, &fakeConn{user: int64(w)}, -1)
				h.Publish(pub(room, int64(i)))
				if err := h.Leave(context.Background(), m); err != nil {
					t.Error(err)
				}
			}
		}()
	}
	wg.Wait()
	if h.Size() != 0 || len(h.Rooms()) != 0 {
		t.Fatalf("size %d rooms %v after everyone left", h.Size(), h.Rooms())
	}
	for room, n := range b.subs {
		if b.unsubs[room] != n {
			t.Fatalf("room %d: %d subscribes, %d unsubscribes", room, n, b.unsubs[room])
		}
	}
}

func TestNotifyWaitsForTheReplay(t *testing.T) {
	h := New(newFakeBroker(), Options{})
	c := &fakeConn{user: 1}
	m, err := h.Join(context.Background(), 7, c)
	if err != nil {
		t.Fatal(err)
	}
	h.Publish(pub(7, 4))
	m.Notify(func(last int64) []byte { return []byte("n" + string(rune('0'+last))) })
	if got := c.got(); len(got) != 0 {
		t.Fatalf("sent %q while replaying", got)
	}
	m.Resume(Resume{Before: [][]byte{[]byte("ack")}, LastSeq: 1, Replay: []*redis.Publication{pub(7, 2)}})
	m.Notify(func(last int64) []byte { return []byte("n" + string(rune('0'+last))) })
	want := []string{"ack", "2", "n2", "4", "n4"}
	if got := c.got(); len(got) != len(want) {
		t.Fatalf("got %q, want %q", got, want)
	} else {
		for i := range want {
			if got[i] != want[i] {
				t.Fatalf("got %q, want %q", got, want)
			}
		}
	}
}

// bulkConn records bursts separately.
type bulkConn struct {
	fakeConn
	bursts [][]string
}

func (c *bulkConn) SendBulk(frames [][]byte) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	var b []string
	for _, f := range frames {
		b = append(b, string(f))
	}
	c.bursts = append(c.bursts, b)
	return true
}

func TestPublishRunAndResumeKeepSeqOrder(t *testing.T) {
	h := New(newFakeBroker(), Options{})
	c := &bulkConn{fakeConn: fakeConn{user: 1}}
	m, err := h.Join(context.Background(), 7, c)
	if err != nil {
		t.Fatal(err)
	}
	// While replaying: a live publication, then a repaired run reaching
	// behind it; Resume puts them in seq order, each once.
	h.Publish(pub(7, 6))
	h.PublishRun(7, []*redis.Publication{pub(7, 4), pub(7, 5), pub(7, 6)})
	m.Resume(Resume{LastSeq: 2, Replay: []*redis.Publication{pub(7, 3)}})
	// Started: a run goes out as one burst, without what was had.
	h.PublishRun(7, []*redis.Publication{pub(7, 6), pub(7, 7), pub(7, 8)})
	want := [][]string{{"3", "4", "5", "6"}, {"7", "8"}}
	if len(c.bursts) != len(want) {
		t.Fatalf("bursts %q, want %q", c.bursts, want)
	}
	for i := range want {
		if strings.Join(c.bursts[i], ",") != strings.Join(want[i], ",") {
			t.Fatalf("bursts %q, want %q", c.bursts, want)
		}
	}
	if got := c.got(); len(got) != 0 {
		t.Fatalf("single sends %q", got)
	}
}

// Evict stops a user's members at once, before Leave, and Leave then
// unsubscribes the room when they were its last members.
func TestEvictStopsDeliveryBeforeLeave(t *testing.T) {
	b := newFakeBroker()
	h := New(b, Options{})
	alice, bob := &fakeConn{user: 1}, &fakeConn{user: 2}
	join(t, h, 7, alice, -1)
	bm := join(t, h, 7, bob, -1)
	bm2 := join(t, h, 8, bob, -1)
	h.Publish(pub(7, 1))
	evicted := h.Evict(7, 2)
	if len(evicted) != 1 || evicted[0] != bm || !bm.Removed() || bm2.Removed() {
		t.Fatalf("evicted %v; removed 7:%v 8:%v", evicted, bm.Removed(), bm2.Removed())
	}
	if again := h.Evict(7, 2); len(again) != 0 {
		t.Fatalf("second evict returned %d members", len(again))
	}
	h.Publish(pub(7, 2))
	h.PublishRun(7, []*redis.Publication{pub(7, 3)})
	bm.Notify(func(int64) []byte { return []byte("note") })
	h.Publish(pub(8, 1))
	if got := strings.Join(bob.got(), ","); got != "1,1" {
		t.Fatalf("bob got %q, want room 7's seq 1 and room 8's seq 1", got)
	}
	if got := strings.Join(alice.got(), ","); got != "1,2,3" {
		t.Fatalf("alice got %q", got)
	}
	for _, m := range evicted {
		if err := h.Leave(context.Background(), m); err != nil {
			t.Fatal(err)
		}
	}
	if h.Size() != 2 || b.unsubs[7] != 0 {
		t.Fatalf("size %d, unsubscribes of 7: %d", h.Size(), b.unsubs[7])
	}
	h.Evict(7, 1)
	if len(h.Members(7)) != 1 {
		t.Fatal("evict took the member out of the registry; Leave does")
	}
}
