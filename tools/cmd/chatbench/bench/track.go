package bench

import (
	"slices"
	"sort"
	"sync"
	"sync/atomic"
	"time"
)

// Message states.
const (
	msgPending int32 = iota // sent, no answer yet
	msgAcked                // acked: stored in the room's log
	msgFailed               // error reply or write failure
)

// msgRec is one sent message. Readers of every connection update it, so
// every field is atomic.
type msgRec struct {
	sentAt atomic.Int64 // unix nanos; 0 = never sent
	// recipients is how many connections had joined the message's room
	// when it was sent: the deliveries owed if it is acked.
	recipients atomic.Int32
	deliveries atomic.Int32 // unique deliveries (duplicates not counted)
	state      atomic.Int32
}

// Step is one send phase: a target rate for a duration (chat, fanout and
// artillery have one; max has one per rate tried; idle one with no sends).
// Its messages carry the step index, so late deliveries are counted where
// they belong.
type Step struct {
	Index    int
	Rate     float64
	Duration time.Duration
	// msgs[s][n] is sender s's n-th message; sized before sending starts
	// (readers index it concurrently), a send beyond capacity is skipped.
	msgs [][]msgRec

	sent, acked, failed atomic.Int64
	delivered           atomic.Int64 // unique deliveries of this step's messages
	expected            atomic.Int64 // Σ recipients over acked messages
	dups, outOfOrder    atomic.Int64
	gaps, resyncs       atomic.Int64
	persisted           atomic.Int64
	errors              codeCounts

	ack, deliver, persist, ping *Latency

	started, sendEnd, drained time.Time
}

func newStep(index int, rate float64, d time.Duration, perSender []int, shards int) *Step {
	st := &Step{
		Index: index, Rate: rate, Duration: d,
		msgs: make([][]msgRec, len(perSender)),
		ack:  NewLatency(4), deliver: NewLatency(shards), persist: NewLatency(1), ping: NewLatency(4),
	}
	for i, n := range perSender {
		st.msgs[i] = make([]msgRec, n)
	}
	return st
}

// rec returns sender s's n-th message, or nil when out of range (a frame
// chatbench did not send, or a corrupt one).
func (st *Step) rec(s, n int) *msgRec {
	if s < 0 || s >= len(st.msgs) || n < 0 || n >= len(st.msgs[s]) {
		return nil
	}
	return &st.msgs[s][n]
}

// onAck marks r acked (first answer wins) and returns whether it was new.
func (st *Step) onAck(r *msgRec) bool {
	if !r.state.CompareAndSwap(msgPending, msgAcked) {
		return false
	}
	st.acked.Add(1)
	st.expected.Add(int64(r.recipients.Load()))
	return true
}

// onFail marks r failed (first answer wins).
func (st *Step) onFail(r *msgRec, code string) {
	if r.state.CompareAndSwap(msgPending, msgFailed) {
		st.failed.Add(1)
	}
	st.errors.Add(code)
}

// settled reports whether every sent message was answered and every owed
// delivery arrived (the drain can stop early).
func (st *Step) settled(pgPending int) bool {
	return st.acked.Load()+st.failed.Load() >= st.sent.Load() &&
		st.delivered.Load() >= st.expected.Load() && pgPending == 0
}

// Accounting is the final per-message bookkeeping of a step.
type Accounting struct {
	Sent     int64 `json:"sent"`
	Acked    int64 `json:"acked"`
	Failed   int64 `json:"failed"`
	Unacked  int64 `json:"unacked"` // neither ack nor error by the end of the drain
	Expected int64 `json:"expectedDeliveries"`
	// Delivered counts unique deliveries of acked messages, at most the
	// recipients each (a connection that joined after the send may get a
	// message it was not owed; that is not counted).
	Delivered int64 `json:"delivered"`
	// Lost is Σ over acked messages of recipients − unique deliveries.
	Lost int64 `json:"lost"`
	// DeliveredUnacked are deliveries of messages never acked (stored
	// after all, or acked too late).
	DeliveredUnacked int64 `json:"deliveredUnacked"`
	Duplicates       int64 `json:"duplicates"`
	OutOfOrder       int64 `json:"outOfOrder"`
	// Gaps are events whose prevSeq differed from the connection's last
	// seq of the room (the client would recover; chatbench only counts).
	Gaps    int64 `json:"gaps"`
	Resyncs int64 `json:"resyncRequired"`
}

// account walks every message record.
func (st *Step) account() Accounting {
	a := Accounting{
		Duplicates: st.dups.Load(), OutOfOrder: st.outOfOrder.Load(),
		Gaps: st.gaps.Load(), Resyncs: st.resyncs.Load(),
	}
	for s := range st.msgs {
		for n := range st.msgs[s] {
			r := &st.msgs[s][n]
			if r.sentAt.Load() == 0 {
				continue
			}
			a.Sent++
			rcpt, got := int64(r.recipients.Load()), int64(r.deliveries.Load())
			switch r.state.Load() {
			case msgAcked:
				a.Acked++
				a.Expected += rcpt
				a.Delivered += min(got, rcpt)
				a.Lost += max(rcpt-got, 0)
			case msgFailed:
				a.Failed++
				a.DeliveredUnacked += got
			default:
				a.Unacked++
				a.DeliveredUnacked += got
			}
		}
	}
	return a
}

// codeCounts counts errors by code (or reason).
type codeCounts struct {
	mu sync.Mutex
	m  map[string]int64
}

// Add counts one occurrence of code.
func (c *codeCounts) Add(code string) {
	c.mu.Lock()
	if c.m == nil {
		c.m = map[string]int64{}
	}
	c.m[code]++
	c.mu.Unlock()
}

// Snapshot copies the counts (nil when empty).
func (c *codeCounts) Snapshot() map[string]int64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.m) == 0 {
		return nil
	}
	out := make(map[string]int64, len(c.m))
	for k, v := range c.m {
		out[k] = v
	}
	return out
}

// Total is the sum of all counts.
func (c *codeCounts) Total() int64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	var n int64
	for _, v := range c.m {
		n += v
	}
	return n
}

// verdict classifies an event a connection received in a room.
type verdict int

const (
	inOrder    verdict = iota // seq above every seq seen before
	duplicate                 // this seq was already received
	outOfOrder                // new, but below a seq already received
)

// seqTrack is one connection's view of one room's log: the seqs received,
// to check that they only increase, never repeat, and follow prevSeq. Only
// the connection's reader goroutine touches it.
type seqTrack struct {
	known bool  // last is meaningful
	seen  bool  // an event arrived (the join ack no longer sets the base)
	last  int64 // highest seq received (or the join ack's lastSeq)
	// inOrder holds every seq that arrived in order, ascending by
	// construction; late holds the ones that arrived out of order.
	inOrder []int64
	late    map[int64]struct{}
}

// base applies a join ack's lastSeq when no event arrived yet: pushes may
// come before the ack, and then they are the better base.
func (t *seqTrack) base(lastSeq int64) {
	if t.seen {
		return
	}
	t.known, t.last = true, lastSeq
}

// observe classifies seq and reports a gap: prevSeq given (hasPrev), a
// last seq known, and the two differ.
func (t *seqTrack) observe(seq, prevSeq int64, hasPrev bool) (v verdict, gap bool) {
	if t.known && seq <= t.last {
		if t.has(seq) {
			return duplicate, false
		}
		if t.late == nil {
			t.late = map[int64]struct{}{}
		}
		t.late[seq] = struct{}{}
		return outOfOrder, false
	}
	gap = hasPrev && t.known && prevSeq != t.last
	t.inOrder = append(t.inOrder, seq)
	t.known, t.seen, t.last = true, true, seq
	return inOrder, gap
}

func (t *seqTrack) has(seq int64) bool {
	if _, ok := t.late[seq]; ok {
		return true
	}
	_, found := slices.BinarySearch(t.inOrder, seq)
	return found
}

// sortedKeys returns m's keys in order (stable report output).
func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
