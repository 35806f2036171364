package fanout

import (
	"context"
	"sync"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"

	"relay/pkg/protocol"
	"relay/pkg/redis"
)

// sequencer checks, per subscribed room, that the publications this
// instance fans out form the room's log without a gap, and repairs gaps.
//
// It keeps the seq of the last event fanned out for each room with a
// subscription. A live publication whose prevSeq is not at most that seq
// (a publish this instance missed, a subscription that was down, or Redis
// having lost the room's seq so prevSeq is absent) starts a repair: one
// goroutine per room reads what is missing (Redis history, then
// PostgreSQL), fans it out in order and then the publications of the room
// held meanwhile (at most RepairHold; beyond that they are dropped and the
// room's local connections get resync_required). The receive goroutine
// never waits for a repair, so other rooms go on.
//
// Whoever delivers a room's events (the receive goroutine, or the room's
// repair goroutine while repairing is set) is the only one doing so, which
// keeps hub.Publish's one-goroutine-per-room rule.
type sequencer struct {
	b *roomBroker

	mu    sync.Mutex
	rooms map[int64]*roomSeq
	// stopped is set by stop; no repair starts after it.
	stopped bool
	// repairs tracks the repair goroutines, for shutdown.
	repairs sync.WaitGroup
	ctx     context.Context
	cancel  context.CancelFunc
}

// roomSeq is one subscribed room's position. Guarded by sequencer.mu.
type roomSeq struct {
	// known is false until the first publication or join baseline.
	known bool
	// last is the seq of the last event fanned out (or known to members).
	last int64
	// repairing is set while a repair goroutine owns the room's delivery.
	repairing bool
	// held are live publications that arrived during the repair, in order.
	held []*redis.Publication
	// overflow is set when held outgrew RepairHold; held was dropped.
	overflow bool
	// recheck asks the repair goroutine to read the log after last once
	// more (the subscription was re-established; publications were lost).
	recheck bool
	// closed is set when the room's subscription ended.
	closed bool
}

func newSequencer(b *roomBroker) *sequencer {
	ctx, cancel := context.WithCancel(context.Background())
	return &sequencer{b: b, rooms: make(map[int64]*roomSeq), ctx: ctx, cancel: cancel}
}

// open starts tracking a room whose subscription begins.
func (q *sequencer) open(room int64) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if st := q.rooms[room]; st != nil {
		st.closed = true
	}
	q.rooms[room] = &roomSeq{}
}

// close stops tracking a room whose subscription ended; a repair still
// running for it stops delivering.
func (q *sequencer) close(room int64) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if st := q.rooms[room]; st != nil {
		st.closed = true
		delete(q.rooms, room)
	}
}

// baseline tells the room's position when nothing was fanned out yet: the
// room's last seq read after the subscription was confirmed (a join), so a
// publication lost right after it is noticed too.
func (q *sequencer) baseline(room int64, last *int64) {
	if last == nil {
		return
	}
	q.mu.Lock()
	defer q.mu.Unlock()
	if st := q.rooms[room]; st != nil && !st.known && !st.repairing {
		st.known, st.last = true, *last
	}
}

// admit decides, on the receive goroutine, what happens to a live
// publication: true means deliver it now; false means it was held for a
// repair (possibly one it just started).
func (q *sequencer) admit(p *redis.Publication) bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	st := q.rooms[p.RoomID]
	if st == nil {
		// Not subscribed (any more): a late message of an ended
		// subscription. Members, if any, drop what they had.
		return true
	}
	if st.repairing {
		q.hold(st, p)
		return false
	}
	if st.advance(p) {
		return true
	}
	q.b.f.o.Metrics.Gaps.Inc()
	st.repairing = true
	st.held = append(st.held[:0], p)
	q.startRepair(p.RoomID, st)
	return false
}

// advance moves the position past p when p follows it (or is one already
// passed, which members drop) and reports whether it did.
func (st *roomSeq) advance(p *redis.Publication) bool {
	switch {
	case !st.known:
		st.known, st.last = true, p.Seq
	case p.Seq <= st.last:
	case follows(p.PrevSeq, st.last):
		st.last = p.Seq
	default:
		return false
	}
	return true
}

// hold queues p behind a running repair. Callers hold q.mu.
func (q *sequencer) hold(st *roomSeq, p *redis.Publication) {
	if st.overflow {
		q.b.f.o.Metrics.RepairDropped.Inc()
		return
	}
	if len(st.held) >= q.b.f.o.RepairHold {
		q.b.f.o.Metrics.RepairDropped.Add(float64(len(st.held) + 1))
		st.overflow = true
		st.held = nil
		return
	}
	st.held = append(st.held, p)
}

// resubscribed is called on the receive goroutine when the room's
// subscription came back after a dropped connection: what was published
// meanwhile is read from the log.
func (q *sequencer) resubscribed(room int64) {
	q.mu.Lock()
	defer q.mu.Unlock()
	st := q.rooms[room]
	if st == nil {
		return
	}
	if !st.known {
		// Nothing fanned out yet: start from what the members have.
		from, ok := int64(0), false
		for _, m := range q.b.f.hub.Members(room) {
			if l := m.LastSeq(); l >= 0 && (!ok || l < from) {
				from, ok = l, true
			}
		}
		if !ok {
			return
		}
		st.known, st.last = true, from
	}
	st.recheck = true
	if !st.repairing {
		st.repairing = true
		q.startRepair(room, st)
	}
}

// startRepair starts the room's repair goroutine. Callers hold q.mu.
func (q *sequencer) startRepair(room int64, st *roomSeq) {
	if q.stopped {
		st.repairing, st.held = false, nil
		return
	}
	q.repairs.Add(1)
	go func() {
		defer q.repairs.Done()
		q.repair(room, st)
	}()
}

// repair owns the room's delivery until nothing is held any more.
func (q *sequencer) repair(room int64, st *roomSeq) {
	f := q.b.f
	for {
		q.mu.Lock()
		switch {
		case st.closed || q.ctx.Err() != nil:
			st.repairing, st.held = false, nil
			q.mu.Unlock()
			return
		case st.overflow:
			// Live events were dropped: the members cannot be brought up
			// to date here. The next publication starts a new position.
			st.overflow, st.held, st.known = false, nil, false
			q.mu.Unlock()
			f.log.Warn("gap repair overflowed; members told to resync", "room_id", room, "hold", f.o.RepairHold)
			q.resyncMembers(room, protocol.ResyncOverflow)
			continue
		case st.recheck:
			st.recheck = false
			q.mu.Unlock()
			last, err := redis.LastSeq(q.ctx, f.o.Redis, f.o.Keys, room)
			if err != nil {
				f.log.Warn("read room seq for recovery", "room_id", room, "err", err)
			}
			q.fill(room, st, last, nil)
			continue
		case len(st.held) == 0:
			st.repairing = false
			q.mu.Unlock()
			return
		}
		p := st.held[0]
		st.held = st.held[1:]
		ok := st.advance(p)
		q.mu.Unlock()
		if !ok {
			until := p.Seq
			if p.PrevSeq != nil {
				until = *p.PrevSeq
			}
			q.fill(room, st, &until, p)
			q.mu.Lock()
			// Whether or not the gap was filled, p is the present now.
			st.known, st.last = true, max(st.last, p.Seq)
			q.mu.Unlock()
		}
		q.b.deliver(p)
	}
}

// fill reads the room's log after the current position up to until and
// fans it out. When the log cannot be read that far, it retries for a
// while if PostgreSQL may catch up, then tells the room's local
// connections to resync. p, when set, is the live publication waiting
// behind the gap: reaching it is enough.
func (q *sequencer) fill(room int64, st *roomSeq, until *int64, p *redis.Publication) {
	f := q.b.f
	deadline := time.Now().Add(f.o.RepairWait)
	wait := 50 * time.Millisecond
	for {
		q.mu.Lock()
		from := st.last
		q.mu.Unlock()
		if p != nil && (p.Seq <= from || follows(p.PrevSeq, from)) {
			return
		}
		ctx, cancel := context.WithTimeout(q.ctx, f.o.SendTimeout)
		res, err := f.ReadLog(ctx, room, from, until, f.o.ReplayLimit)
		cancel()
		reason := res.Gap
		if err != nil {
			f.log.Warn("read room history for gap repair", "room_id", room, "err", err)
			reason = protocol.ResyncUnavailable
		}
		if len(res.Pubs) > 0 {
			q.deliverRun(room, res.Pubs)
			q.mu.Lock()
			st.last = max(st.last, res.Last)
			q.mu.Unlock()
			n := 0
			for _, r := range res.Pubs {
				if p == nil || r.Seq < p.Seq {
					n++
				}
			}
			f.o.Metrics.Repaired.Add(float64(n))
		}
		if reason == "" && p == nil {
			return
		}
		if reason == "" {
			// The chain reached until; it proves p follows unless p's
			// predecessor was unknown and nothing showed it.
			if p.Seq <= res.Last || follows(p.PrevSeq, res.Last) {
				return
			}
			reason = protocol.ResyncPersisterBehind
		}
		retriable := reason == protocol.ResyncPersisterBehind || reason == protocol.ResyncUnavailable
		q.mu.Lock()
		// Live events are being dropped already: waiting longer helps no one.
		overflow := st.overflow
		q.mu.Unlock()
		if retriable && !overflow && time.Now().Add(wait).Before(deadline) {
			t := time.NewTimer(wait)
			select {
			case <-q.ctx.Done():
				t.Stop()
				return
			case <-t.C:
			}
			wait = min(2*wait, 500*time.Millisecond)
			continue
		}
		f.log.Warn("gap not repaired; members told to resync", "room_id", room, "from_seq", from, "reason", reason)
		q.resyncMembers(room, reason)
		return
	}
}

// deliverRun fans a repaired run out to the room's members, one burst each.
func (q *sequencer) deliverRun(room int64, run []*redis.Publication) {
	f := q.b.f
	_, span := f.o.Tel.Tracer.Start(q.ctx, "gateway.repair", trace.WithSpanKind(trace.SpanKindInternal))
	for _, p := range run {
		f.membershipEvent(p)
	}
	n := f.hub.PublishRun(room, run)
	for _, p := range run {
		f.userLeft(p)
	}
	if span.IsRecording() {
		span.SetAttributes(attribute.Int64("room.id", room), attribute.Int64("seq.first", run[0].Seq),
			attribute.Int64("seq.last", run[len(run)-1].Seq), attribute.Int("recipients", n))
	}
	span.End()
}

// resyncMembers tells every local connection of the room to fetch what it
// missed after the last event it got.
func (q *sequencer) resyncMembers(room int64, reason string) {
	for _, m := range q.b.f.hub.Members(room) {
		m.Notify(func(last int64) []byte { return q.b.f.o.Frames.Resync(room, last, reason) })
	}
}

// stop ends the repairs and waits for them.
func (q *sequencer) stop() {
	q.mu.Lock()
	q.stopped = true
	q.mu.Unlock()
	q.cancel()
	q.repairs.Wait()
}
