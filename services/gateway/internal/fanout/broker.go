package fanout

import (
	"context"
	"errors"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	goredis "github.com/redis/go-redis/v9"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"

	"relay/pkg/protocol"
	"relay/pkg/redis"
	"relay/services/gateway/internal/conn"
	"relay/services/gateway/internal/fanout/hub"
	"relay/services/gateway/internal/metrics"
)

// roomBroker is the hub's Broker on Redis sharded pub/sub (SSUBSCRIBE):
// the channels of the rooms with local members, each received by one
// goroutine that fans its publications out in order.
//
// On one Redis server a single connection carries every channel. On Redis
// Cluster a room's channel lives on the shard that owns its hash slot (the
// room's keys' slot: the publish script SPUBLISHes from there), and one
// SSUBSCRIBE (like go-redis' resubscription after a reconnect, which sends
// all of a connection's channels in one command) may only name channels of
// one slot; so there is one connection per slot in use, opened on the
// slot's first subscription and closed once its last channel is
// unsubscribed. A connection whose master died reconnects to the promoted
// replica and resubscribes; a slot migrated to another shard (the server
// unsubscribes its channels) gets a new connection.
type roomBroker struct {
	f *Fanout
	// cluster: one shard per slot; else one shard for everything.
	cluster bool

	mu     sync.Mutex
	shards map[int]*shard
	// expected holds, per channel, the confirmations still due for our own
	// SSUBSCRIBE (a waiter) and SUNSUBSCRIBE (nil) commands, in command
	// order (Redis answers in order). A subscribe confirmation nobody waits
	// for is go-redis resubscribing after a reconnect.
	expected map[string][]chan struct{}
	closed   bool
	// done is closed by close; run waits for it.
	done chan struct{}
	// receivers tracks the shards' receive goroutines.
	receivers sync.WaitGroup

	// seq checks each room's publications for gaps and repairs them.
	seq *sequencer
}

// shard is one pub/sub connection and the channels it carries. Guarded
// by roomBroker.mu, except ps, which is set at creation.
type shard struct {
	slot  int
	ps    *goredis.PubSub
	chans map[string]struct{}
	// retired is set once the shard left roomBroker.shards; what it still
	// receives is ignored.
	retired bool
}

var _ hub.Broker = (*roomBroker)(nil)

func newRoomBroker(f *Fanout) *roomBroker {
	b := &roomBroker{
		f:        f,
		cluster:  redis.IsCluster(f.o.Redis),
		shards:   make(map[int]*shard),
		expected: make(map[string][]chan struct{}),
		done:     make(chan struct{}),
	}
	b.seq = newSequencer(b)
	return b
}

// slotOf is the shard key of a channel: its hash slot on a cluster, 0 on
// one server.
func (b *roomBroker) slotOf(ch string) int {
	if !b.cluster {
		return 0
	}
	return redis.Slot(ch)
}

// shardLocked returns the shard of slot, opening it (and its receive
// goroutine) when there is none; nil once the broker is closed.
func (b *roomBroker) shardLocked(slot int) *shard {
	if b.closed {
		return nil
	}
	if sh := b.shards[slot]; sh != nil {
		return sh
	}
	sh := &shard{slot: slot, ps: b.f.o.Redis.SSubscribe(context.Background()), chans: make(map[string]struct{})}
	b.shards[slot] = sh
	b.receivers.Go(func() { b.receive(sh) })
	return sh
}

// Subscribe implements hub.Broker.
func (b *roomBroker) Subscribe(ctx context.Context, roomID int64) (<-chan struct{}, error) {
	// Before the SSUBSCRIBE, so the first publication finds the room.
	b.seq.open(roomID)
	ready, err := b.subscribe(ctx, b.f.o.Keys.RoomChannel(roomID))
	if err != nil {
		b.seq.close(roomID)
	}
	return ready, err
}

func (b *roomBroker) subscribe(ctx context.Context, ch string) (<-chan struct{}, error) {
	ready := make(chan struct{})
	b.mu.Lock()
	sh := b.shardLocked(b.slotOf(ch))
	if sh == nil {
		b.mu.Unlock()
		return nil, errors.New("fanout: closed")
	}
	sh.chans[ch] = struct{}{}
	b.expected[ch] = append(b.expected[ch], ready)
	b.mu.Unlock()
	if err := sh.ps.SSubscribe(ctx, ch); err != nil {
		b.mu.Lock()
		q := b.expected[ch]
		for i, w := range q {
			if w == ready {
				b.expected[ch] = append(q[:i:i], q[i+1:]...)
				break
			}
		}
		if len(b.expected[ch]) == 0 {
			delete(b.expected, ch)
		}
		delete(sh.chans, ch)
		b.mu.Unlock()
		return nil, err
	}
	return ready, nil
}

// Unsubscribe implements hub.Broker.
func (b *roomBroker) Unsubscribe(ctx context.Context, roomID int64) error {
	ch := b.f.o.Keys.RoomChannel(roomID)
	b.seq.close(roomID)
	b.mu.Lock()
	sh := b.shards[b.slotOf(ch)]
	if sh == nil {
		b.mu.Unlock()
		return nil // closed
	}
	delete(sh.chans, ch)
	b.expected[ch] = append(b.expected[ch], nil)
	b.mu.Unlock()
	return sh.ps.SUnsubscribe(ctx, ch)
}

// confirmed handles a (un)subscribe confirmation on sh and reports whether
// it was one nobody waited for: a resubscription after a reconnect, or
// (migrated) the server ending a subscription we still want, as it does
// for the channels of a slot that moved to another shard.
func (b *roomBroker) confirmed(sh *shard, kind, ch string) (resubscribed, migrated bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	q := b.expected[ch]
	defer func() {
		if len(b.expected[ch]) == 0 {
			delete(b.expected, ch)
		}
	}()
	switch kind {
	case "ssubscribe":
		// Unsubscribe markers before the first waiter were lost with a
		// dropped connection; skip them.
		for i, w := range q {
			if w != nil {
				close(w)
				b.expected[ch] = q[i+1:]
				return false, false
			}
		}
		b.expected[ch] = nil
		return true, false
	case "sunsubscribe":
		if len(q) > 0 && q[0] == nil {
			b.expected[ch] = q[1:]
			// The slot's last channel is gone: its connection too.
			if b.cluster && len(sh.chans) == 0 && !sh.retired && b.shards[sh.slot] == sh {
				delete(b.shards, sh.slot)
				sh.retired = true
				// Closed beside: receive drains the channel Close ends.
				b.receivers.Go(func() { _ = sh.ps.Close() })
			}
			return false, false
		}
		_, want := sh.chans[ch]
		return false, want && !sh.retired
	}
	return false, false
}

// receive reads one shard's channels until its connection is closed.
// go-redis reconnects (to the slot's new master after a failover) and
// resubscribes by itself; rooms resubscribed that way are recovered from
// the log by the sequencer, since publications sent meanwhile were lost.
func (b *roomBroker) receive(sh *shard) {
	msgs := sh.ps.ChannelWithSubscriptions(goredis.WithChannelSize(4096))
	for msg := range msgs {
		switch m := msg.(type) {
		case *goredis.Message:
			b.mu.Lock()
			retired := sh.retired
			b.mu.Unlock()
			if !retired {
				b.fanout([]byte(m.Payload))
			}
		case *goredis.Subscription:
			resubscribed, migrated := b.confirmed(sh, m.Kind, m.Channel)
			switch {
			case resubscribed:
				if room, ok := b.roomOf(m.Channel); ok {
					b.seq.resubscribed(room)
				}
			case migrated:
				b.migrate(sh)
			}
		}
	}
}

// migrate replaces a shard whose slot the server says it no longer owns:
// the cluster's slot map is reloaded, a new connection subscribes the
// shard's channels on the slot's new owner, and the old one is closed.
// The new subscriptions' confirmations have no waiter, so the sequencer
// recovers what was published in between.
func (b *roomBroker) migrate(old *shard) {
	if cc, ok := b.f.o.Redis.(*goredis.ClusterClient); ok {
		ctx, cancel := context.WithTimeout(context.Background(), b.f.o.SendTimeout)
		cc.ReloadState(ctx)
		cancel()
	}
	b.mu.Lock()
	if old.retired || b.closed {
		b.mu.Unlock()
		return
	}
	old.retired = true
	delete(b.shards, old.slot)
	sh := b.shardLocked(old.slot)
	chans := make([]string, 0, len(old.chans))
	for ch := range old.chans {
		sh.chans[ch] = struct{}{}
		chans = append(chans, ch)
	}
	b.mu.Unlock()
	b.f.log.Info("fanout: slot moved to another shard; resubscribing", "slot", old.slot, "channels", len(chans))
	b.receivers.Go(func() { _ = old.ps.Close() })
	if len(chans) > 0 {
		if err := sh.ps.SSubscribe(context.Background(), chans...); err != nil {
			b.f.log.Warn("fanout: resubscribing a moved slot", "slot", old.slot, "err", err)
		}
	}
}

// run returns once the broker is closed: the shards' receivers run on
// their own goroutines, started with their connections.
func (b *roomBroker) run() { <-b.done }

// close ends the subscriptions and the gap repairs.
func (b *roomBroker) close() error {
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		return nil
	}
	b.closed = true
	close(b.done)
	shards := b.shards
	b.shards = map[int]*shard{}
	for _, sh := range shards {
		sh.retired = true
	}
	b.mu.Unlock()
	var errs []error
	for _, sh := range shards {
		errs = append(errs, sh.ps.Close())
	}
	b.receivers.Wait()
	b.seq.stop()
	return errors.Join(errs...)
}

// roomOf parses the room id out of a room channel name.
func (b *roomBroker) roomOf(ch string) (int64, bool) {
	rest, ok := strings.CutPrefix(ch, b.f.o.Keys.Prefix+"{r:")
	if !ok {
		return 0, false
	}
	id, ok := strings.CutSuffix(rest, "}:ch")
	if !ok {
		return 0, false
	}
	room, err := strconv.ParseInt(id, 10, 64)
	return room, err == nil
}

// fanout delivers one live publication to the local members of its room,
// unless the sequencer holds it behind a gap repair.
func (b *roomBroker) fanout(payload []byte) {
	p, err := protocol.DecodePublication(payload)
	if err != nil {
		b.f.log.Warn("undecodable publication", "err", err)
		return
	}
	if p.PublishedAt > 0 {
		b.f.o.Metrics.PubSub.Observe(max(time.Since(time.Unix(0, p.PublishedAt)).Seconds(), 0))
	}
	if !p.Ephemeral && !b.seq.admit(p) {
		return
	}
	b.deliver(p)
}

// deliver queues one publication to the local members of its room, as a
// span that continues the trace of the event (sender → Kafka → delivery →
// Redis publish) and ends once every recipient's socket was written.
func (b *roomBroker) deliver(p *protocol.Publication) {
	f := b.f
	start := time.Now()
	ctx := context.Background()
	if len(p.Trace) > 0 {
		ctx = f.o.Tel.Propagator.Extract(ctx, propagation.MapCarrier(p.Trace))
	}
	channel := f.o.Keys.RoomChannel(p.RoomID)
	_, span := f.o.Tel.Tracer.Start(ctx, "process "+channel, trace.WithSpanKind(trace.SpanKindConsumer),
		trace.WithTimestamp(start))
	event := metrics.FrameEvent(p.Frame)
	f.membershipEvent(p)
	n := f.hub.Publish(p)
	if event == protocol.EventUserLeft {
		f.userLeft(p)
	}
	if span.IsRecording() {
		span.SetAttributes(attribute.String("messaging.system", "redis"), attribute.String("messaging.operation.type", "process"),
			attribute.String("messaging.destination.name", channel),
			attribute.Int64("relay.room.id", p.RoomID), attribute.Int64("relay.room.seq", p.Seq), attribute.Int("relay.recipients", n))
	}
	f.awaitWritten(p, n, span)
	f.o.Metrics.Fanout.Observe(time.Since(start).Seconds())
	if n > 0 {
		f.o.Metrics.FramesOut.WithLabelValues(event).Add(float64(n))
	}
}

// written follows one publication until every recipient's socket has it:
// each recipient's writer reports (conn.Client.Flushed), the delivery
// latency is observed per recipient, and the span ends with the last.
type written struct {
	m       *metrics.Metrics
	span    trace.Span
	eventAt int64
	pending atomic.Int64
}

// flusher is a connection that reports when its queued frames are out.
type flusher interface {
	Flushed(w conn.FlushWaiter)
}

// awaitWritten ends span once the n recipients of p wrote it (at once when
// there are none).
func (f *Fanout) awaitWritten(p *protocol.Publication, n int, span trace.Span) {
	if n == 0 {
		span.End()
		return
	}
	w := &written{m: f.o.Metrics, span: span, eventAt: p.EventAt}
	if p.Ephemeral {
		w.eventAt = 0 // typing: not a logged event, no delivery latency
	}
	members := f.hub.Members(p.RoomID)
	var fl []flusher
	for _, m := range members {
		if c, ok := m.Conn().(flusher); ok && !m.Removed() {
			fl = append(fl, c)
		}
	}
	if len(fl) == 0 {
		span.End()
		return
	}
	w.pending.Store(int64(len(fl)))
	for _, c := range fl {
		c.Flushed(w)
	}
}

// Flushed implements conn.FlushWaiter.
func (w *written) Flushed(ok bool) {
	if ok {
		w.m.Deliveries.WithLabelValues("written").Inc()
		if w.eventAt > 0 {
			w.m.Delivery.Observe(max(time.Since(time.Unix(0, w.eventAt)).Seconds(), 0))
		}
	} else {
		w.m.Deliveries.WithLabelValues("dropped").Inc()
	}
	if w.pending.Add(-1) == 0 {
		w.span.End()
	}
}
