package e2e

import (
	"context"
	"fmt"
	"sort"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"relay/pkg/protocol"
	"relay/tests/e2e/stack"
)

// Stream shape of the fault tests: senders × perSender messages, one
// every pace per sender (so the stream lasts a few seconds and is still
// flowing when the process comes back), the fault injected after killAt
// acks, the process restarted downFor later.
const (
	senders   = 4
	perSender = 100
	pace      = 15 * time.Millisecond
	killAt    = senders * perSender / 3
	downFor   = time.Second
)

// faultOptions lifts the per-connection frame rate limit (20/s) that would
// otherwise make 100 sends take five seconds per sender.
func faultOptions() stack.Options {
	return stack.Options{
		Gateways:   2,
		Partitions: 2,
		ServiceEnv: map[string]map[string]string{
			"gateway": {"WS_RATE": "1000", "WS_BURST": "1000"},
		},
	}
}

// streamRoom is a group room whose members are the senders, each with a
// connection (alternating between gateways) that joined the room.
type streamRoom struct {
	room    *stack.Room
	users   []*stack.User
	conns   []*stack.Conn
	joinAck []*int64
}

func newStreamRoom(t *testing.T, ctx context.Context, s *stack.Stack) *streamRoom {
	t.Helper()
	api := s.API()
	r := &streamRoom{}
	for i := range senders {
		r.users = append(r.users, register(t, ctx, api, fmt.Sprintf("sender%d", i)))
	}
	room, err := api.CreateRoom(ctx, r.users[0], "stream", "group", r.users[1:]...)
	if err != nil {
		t.Fatal(err)
	}
	r.room = room
	for i, u := range r.users {
		c := dial(t, ctx, s, i%2, u)
		r.conns = append(r.conns, c)
		r.joinAck = append(r.joinAck, join(t, ctx, c, room.ID))
	}
	return r
}

// sent is one acked message of the stream.
type sent struct {
	clientMsgID string
	ack         protocol.SendAck
}

// stream sends perSender messages from every sender concurrently, each with
// a clientMsgId and retried with the same one until acked (UNAVAILABLE and
// CONFLICT are what a retry is for). fault runs once killAt messages were
// acked, while the senders go on; it gets the count of acks so far. It
// returns every ack.
func (r *streamRoom) stream(t *testing.T, ctx context.Context, fault func(acked func() int64)) []sent {
	t.Helper()
	var (
		mu      sync.Mutex
		acks    []sent
		lastAck time.Time
		count   atomic.Int64
		trigger = make(chan struct{})
		once    sync.Once
		errs    = make(chan error, senders)
		retries atomic.Int64
		wg      sync.WaitGroup
	)
	began := time.Now()
	for i, c := range r.conns {
		wg.Go(func() {
			for n := range perSender {
				id := fmt.Sprintf("s%d-%03d", i, n)
				for {
					ack, err := c.Send(ctx, r.room.ID, fmt.Sprintf("message %d from sender %d", n, i), id)
					if err == nil {
						mu.Lock()
						acks = append(acks, sent{clientMsgID: id, ack: ack})
						lastAck = time.Now()
						mu.Unlock()
						if count.Add(1) == killAt {
							once.Do(func() { close(trigger) })
						}
						time.Sleep(pace)
						break
					}
					if code := stack.ErrorCode(err); (code != "UNAVAILABLE" && code != "CONFLICT") || ctx.Err() != nil {
						errs <- fmt.Errorf("sender %d, %s: %w", i, id, err)
						return
					}
					retries.Add(1)
					time.Sleep(50 * time.Millisecond)
				}
			}
		})
	}
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-trigger:
		fault(count.Load)
	case <-done:
		t.Fatalf("the stream ended (%d acks) before the fault at %d", count.Load(), killAt)
	}
	<-done
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if t.Failed() {
		t.FailNow()
	}
	t.Logf("%d messages acked in %v, %d retried sends", len(acks), lastAck.Sub(began).Round(time.Millisecond), retries.Load())
	return acks
}

// Kill the persister (SIGKILL) in the middle of a stream of sends and
// bring it back: every acked message ends up in PostgreSQL exactly once,
// with the seq of its ack, and nothing that was not acked is there.
func TestPersisterKilledMidStream(t *testing.T) {
	s := newStack(t, faultOptions())
	ctx := testCtx(t, 90*time.Second)
	r := newStreamRoom(t, ctx, s)
	var restarted time.Time
	acks := r.stream(t, ctx, func(acked func() int64) {
		var rows int
		_ = s.SQL().QueryRowContext(ctx, `SELECT count(*) FROM messages WHERE room_id = $1`, r.room.ID).Scan(&rows)
		s.Kill("persister")
		t.Logf("persister killed at %d acks, %d rows stored", acked(), rows)
		time.Sleep(downFor)
		restarted = time.Now()
		n := acked()
		s.Start("persister")
		t.Logf("persister restarted at %d acks, ready after %v", n, time.Since(restarted).Round(time.Millisecond))
	})

	total := len(acks)
	err := stack.WaitFor(ctx, 60*time.Second, func(ctx context.Context) (bool, error) {
		var n int
		if err := s.SQL().QueryRowContext(ctx, `SELECT count(*) FROM messages WHERE room_id = $1`, r.room.ID).Scan(&n); err != nil {
			return false, err
		}
		return n >= total, fmt.Errorf("%d of %d rows", n, total)
	})
	if err != nil {
		t.Fatalf("rows never caught up: %v", err)
	}
	t.Logf("all rows stored %v after the restart", time.Since(restarted).Round(time.Millisecond))

	// Nothing more arrives later: the persister committed past the last
	// record, so a row count taken now is final.
	waitCommittedAll(t, ctx, s, "persister")

	var rows, ids, cmids int
	if err := s.SQL().QueryRowContext(ctx, `SELECT count(*), count(DISTINCT id), count(DISTINCT (user_id, client_msg_id))
		FROM messages WHERE room_id = $1`, r.room.ID).Scan(&rows, &ids, &cmids); err != nil {
		t.Fatal(err)
	}
	if rows != total || ids != total || cmids != total {
		t.Errorf("rows %d, distinct ids %d, distinct clientMsgIds %d; want %d each (once per acked message)", rows, ids, cmids, total)
	}
	got := map[string]sent{}
	rs, err := s.SQL().QueryContext(ctx, `SELECT id::text, seq, client_msg_id FROM messages WHERE room_id = $1`, r.room.ID)
	if err != nil {
		t.Fatal(err)
	}
	defer rs.Close()
	for rs.Next() {
		var m sent
		if err := rs.Scan(&m.ack.ID, &m.ack.Seq, &m.clientMsgID); err != nil {
			t.Fatal(err)
		}
		got[m.ack.ID] = m
	}
	if err := rs.Err(); err != nil {
		t.Fatal(err)
	}
	acked := map[string]bool{}
	for _, a := range acks {
		acked[a.ack.ID] = true
		row, ok := got[a.ack.ID]
		switch {
		case !ok:
			t.Errorf("acked message %s (%s, seq %d) not in PostgreSQL", a.ack.ID, a.clientMsgID, a.ack.Seq)
		case row.ack.Seq != a.ack.Seq || row.clientMsgID != a.clientMsgID:
			t.Errorf("row %s has seq %d clientMsgId %s; ack said seq %d clientMsgId %s", a.ack.ID, row.ack.Seq, row.clientMsgID, a.ack.Seq, a.clientMsgID)
		}
	}
	for id, row := range got {
		if !acked[id] {
			t.Errorf("row %s (%s, seq %d) was never acked", id, row.clientMsgID, row.ack.Seq)
		}
	}
}

// Kill the delivery worker in the middle of a stream and bring it back:
// every member online in the room gets every message exactly once, in seq
// order, with an unbroken prevSeq chain and the seqs of the acks.
func TestDeliveryKilledMidStream(t *testing.T) {
	s := newStack(t, faultOptions())
	ctx := testCtx(t, 90*time.Second)
	r := newStreamRoom(t, ctx, s)
	var restarted time.Time
	acks := r.stream(t, ctx, func(acked func() int64) {
		s.Kill("delivery")
		t.Logf("delivery killed at %d acks", acked())
		time.Sleep(downFor)
		restarted = time.Now()
		n := acked()
		s.Start("delivery")
		t.Logf("delivery restarted at %d acks, ready after %v", n, time.Since(restarted).Round(time.Millisecond))
	})

	wantSeq := map[string]int64{}
	for _, a := range acks {
		wantSeq[a.ack.ID] = a.ack.Seq
	}
	var wg sync.WaitGroup
	for i, c := range r.conns {
		wg.Go(func() {
			who := r.users[i].Username
			msgs, err := c.WaitMessages(ctx, r.room.ID, len(acks))
			if err != nil {
				t.Errorf("%s: %v", who, err)
			}
			seen := map[string]int{}
			for _, m := range msgs {
				seen[m.ID]++
				if want, ok := wantSeq[m.ID]; !ok {
					t.Errorf("%s got message %s (seq %d) nobody sent", who, m.ID, m.Seq)
				} else if m.Seq != want {
					t.Errorf("%s got message %s with seq %d, its ack said %d", who, m.ID, m.Seq, want)
				}
			}
			var missing []int64
			for id, seq := range wantSeq {
				switch seen[id] {
				case 0:
					missing = append(missing, seq)
				case 1:
				default:
					t.Errorf("%s got message %s (seq %d) %d times", who, id, wantSeq[id], seen[id])
				}
			}
			if len(missing) > 0 {
				sort.Slice(missing, func(a, b int) bool { return missing[a] < missing[b] })
				t.Errorf("%s never got %d acked messages, seqs %v", who, len(missing), missing)
			}
			evs, err := c.RoomLog(r.room.ID)
			if err != nil {
				t.Error(err)
			}
			if err := stack.CheckChain(evs, r.joinAck[i]); err != nil {
				t.Errorf("%s: the pushes are not the room's log in order:\n%v", who, err)
			}
			for _, f := range c.Pushes() {
				if f.Event == protocol.EventResyncRequired || f.Event == protocol.EventError {
					t.Errorf("%s got %s %s", who, f.Event, f.Data)
				}
			}
		})
	}
	wg.Wait()
	t.Logf("every receiver had every message %v after the restart", time.Since(restarted).Round(time.Millisecond))
	for i := range r.conns {
		checkLogPushes(t, ctx, s, r.users[i].Username, r.conns[i], r.room.ID, r.joinAck[i])
	}
}

// waitCommittedAll waits until service's consumer group has committed the
// end of every partition of the stack's topic.
func waitCommittedAll(t *testing.T, ctx context.Context, s *stack.Stack, service string) {
	t.Helper()
	ends, err := s.PartitionEnds(ctx)
	if err != nil {
		t.Fatal(err)
	}
	err = stack.WaitFor(ctx, 30*time.Second, func(ctx context.Context) (bool, error) {
		for p, end := range ends {
			next, err := s.Committed(ctx, service, p)
			if err != nil {
				return false, err
			}
			if end > 0 && next < end {
				return false, fmt.Errorf("partition %d committed %d of %d", p, next, end)
			}
		}
		return true, nil
	})
	if err != nil {
		t.Fatalf("%s never committed the whole topic: %v", service, err)
	}
}
