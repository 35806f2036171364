package fanout

import (
	"context"
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

// roomBroker is the hub's Broker on Redis pub/sub: one PubSub connection
// per instance carries every room channel with local members, and one
// goroutine receives from it and fans each publication out in order.
type roomBroker struct {
	f  *Fanout
	ps *goredis.PubSub

	mu sync.Mutex
	// expected holds, per channel, the confirmations still due for our own
	// SUBSCRIBE (a waiter) and UNSUBSCRIBE (nil) commands, in command order
	// (Redis answers in order). A subscribe confirmation nobody waits for is
	// go-redis resubscribing after a reconnect.
	expected map[string][]chan struct{}
	closed   bool

	// seq checks each room's publications for gaps and repairs them.
	seq *sequencer
}

var _ hub.Broker = (*roomBroker)(nil)

func newRoomBroker(f *Fanout) *roomBroker {
	b := &roomBroker{
		f:        f,
		ps:       f.o.Redis.Subscribe(context.Background()),
		expected: make(map[string][]chan struct{}),
	}
	b.seq = newSequencer(b)
	return b
}

// Subscribe implements hub.Broker.
func (b *roomBroker) Subscribe(ctx context.Context, roomID int64) (<-chan struct{}, error) {
	// Before the SUBSCRIBE, so the first publication finds the room.
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
	b.expected[ch] = append(b.expected[ch], ready)
	b.mu.Unlock()
	if err := b.ps.Subscribe(ctx, ch); err != nil {
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
	b.expected[ch] = append(b.expected[ch], nil)
	b.mu.Unlock()
	return b.ps.Unsubscribe(ctx, ch)
}

// confirmed handles a (un)subscribe confirmation and reports whether it was
// one nobody waited for: a resubscription after a reconnect.
func (b *roomBroker) confirmed(kind, ch string) (resubscribed bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	q := b.expected[ch]
	defer func() {
		if len(b.expected[ch]) == 0 {
			delete(b.expected, ch)
		}
	}()
	switch kind {
	case "subscribe":
		// Unsubscribe markers before the first waiter were lost with a
		// dropped connection; skip them.
		for i, w := range q {
			if w != nil {
				close(w)
				b.expected[ch] = q[i+1:]
				return false
			}
		}
		b.expected[ch] = nil
		return true
	case "unsubscribe":
		if len(q) > 0 && q[0] == nil {
			b.expected[ch] = q[1:]
		}
	}
	return false
}

// run receives from the room channels until close. go-redis reconnects
// and resubscribes by itself; rooms resubscribed that way are recovered
// from the log by the sequencer, since publications sent meanwhile were
// lost.
func (b *roomBroker) run() {
	msgs := b.ps.ChannelWithSubscriptions(goredis.WithChannelSize(4096))
	for msg := range msgs {
		switch m := msg.(type) {
		case *goredis.Message:
			b.fanout([]byte(m.Payload))
		case *goredis.Subscription:
			if b.confirmed(m.Kind, m.Channel) {
				if room, ok := b.roomOf(m.Channel); ok {
					b.seq.resubscribed(room)
				}
			}
		}
	}
}

// close ends the subscriptions and the gap repairs.
func (b *roomBroker) close() error {
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		return nil
	}
	b.closed = true
	b.mu.Unlock()
	err := b.ps.Close()
	b.seq.stop()
	return err
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
	p, err := redis.DecodePublication(payload)
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
func (b *roomBroker) deliver(p *redis.Publication) {
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
func (f *Fanout) awaitWritten(p *redis.Publication, n int, span trace.Span) {
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
