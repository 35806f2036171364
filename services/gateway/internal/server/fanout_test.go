package server

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"go.opentelemetry.io/otel/trace"

	"relay/pkg/chat"
	"relay/pkg/events"
	"relay/pkg/protocol"
	"relay/pkg/redis"
)

// numsub returns how many subscribers the room's shard channel has on Redis.
func (e *env) numsub(room int64) int64 {
	e.t.Helper()
	ch := e.keys.RoomChannel(room)
	m, err := e.rdb.PubSubShardNumSub(context.Background(), ch).Result()
	if err != nil {
		e.t.Fatal(err)
	}
	return m[ch]
}

func TestFanoutInOrderOnceAndUnsubscribeAfterLastLeave(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	g := e.start(nil)
	alice, at := e.user("alice")
	bob, bt := e.user("bob")
	room := e.room(chat.RoomGroup, alice, bob)
	clients := []*wsClient{e.dial(g, at), e.dial(g, at), e.dial(g, bt)}
	for _, c := range clients {
		c.join(room, nil)
	}
	if n := e.numsub(room); n != 1 {
		t.Fatalf("room channel has %d subscribers, want 1 for the instance", n)
	}
	e.publishRun(room, 1, 50)
	// A redelivered publication (same seq again) reaches nobody.
	if err := e.rdb.Publish(t.Context(), e.keys.RoomChannel(room), e.publication(room, 25, ptr(int64(24)), nil, "")).Err(); err != nil {
		t.Fatal(err)
	}
	e.publishRun(room, 51, 60)
	for i, c := range clients {
		for want := int64(1); want <= 60; want++ {
			if got := seqOf(t, c.next()); got != want {
				t.Fatalf("client %d got seq %d, want %d", i, got, want)
			}
		}
	}
	for _, c := range clients {
		c.ack(protocol.EventLeaveRoom, protocol.LeaveRoom{RoomID: rid(room)}, nil)
	}
	eventually(t, "unsubscribe after the last leave", func() bool { return e.numsub(room) == 0 })
	// After leaving, nothing more arrives: the next frame is the ping ack.
	e.publishNext(room, 61)
	clients[0].ack(protocol.EventPing, struct{}{}, nil)
	if len(clients[0].pending) != 0 {
		t.Fatalf("got %v after leaving", clients[0].pending)
	}

	// A disconnect leaves too.
	c := e.dial(g, at)
	c.join(room, nil)
	eventually(t, "subscribe", func() bool { return e.numsub(room) == 1 })
	_ = c.conn.Close()
	eventually(t, "unsubscribe after disconnect", func() bool { return e.numsub(room) == 0 })
}

func TestSlowConsumerIsClosedWith4000AndOthersKeepReceiving(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	// A long write deadline: the 4000 close frame can only follow the
	// frames already on the wire, once the slow client reads.
	g := e.start(func(c *Config) { c.QueueSize = 128; c.WriteTimeout = time.Minute })
	alice, at := e.user("alice")
	room := e.room(chat.RoomGroup, alice)
	fast := e.dial(g, at)
	fast.join(room, nil)
	// The slow client does not read: the socket buffers fill, the writer
	// blocks and the queue overflows.
	sc, err := dialWS(g.url, at)
	if err != nil {
		t.Fatal(err)
	}
	defer sc.Close()
	slow := &wsClient{t: t, conn: sc}
	slow.join(room, nil)

	pad := strings.Repeat("p", 32<<10)
	seqs := make(chan int64, 4096)
	go func() {
		for {
			f, err := fast.read()
			if err != nil {
				close(seqs)
				return
			}
			var m protocol.Message
			_ = json.Unmarshal(f.Data, &m)
			seqs <- m.Seq
		}
	}()
	var prev *int64
	total := int64(0)
	start := time.Now()
	for seq := int64(1); seq <= 3000 && slowDisconnects(g) == 0; seq++ {
		payload := e.publication(room, seq, prev, nil, pad)
		if _, _, err := redis.Publish(t.Context(), e.rdb, e.keys, room, seq, prev, payload, 100); err != nil {
			t.Fatal(err)
		}
		prev = ptr(seq)
		total = seq
	}
	if slowDisconnects(g) == 0 {
		t.Fatal("the slow consumer was never disconnected")
	}
	t.Logf("slow consumer disconnected after %d publications of 32 KiB in %v", total, time.Since(start))
	// The fast client got everything, in order.
	for want := int64(1); want <= total; want++ {
		if got, ok := <-seqs; !ok || got != want {
			t.Fatalf("fast client got seq %d (open %v), want %d", got, ok, want)
		}
	}
	// Once the slow client reads, it finds the 4000 close after what was
	// already on the wire.
	if code := slow.closeCode(); code != protocol.CloseSlowConsumer {
		t.Fatalf("slow client close code %d, want 4000", code)
	}
}

func slowDisconnects(g *gateway) float64 {
	mfs, _ := g.svc.tel.Registry.Gather()
	for _, mf := range mfs {
		if mf.GetName() == "gateway_slow_consumer_disconnects_total" {
			return mf.GetMetric()[0].GetCounter().GetValue()
		}
	}
	return 0
}

func TestTwoInstancesSeeTheSameOrder(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	g1, g2 := e.start(nil), e.start(nil)
	alice, at := e.user("alice")
	bob, bt := e.user("bob")
	room := e.room(chat.RoomGroup, alice, bob)
	c1, c2 := e.dial(g1, at), e.dial(g2, bt)
	c1.join(room, nil)
	c2.join(room, nil)
	if n := e.numsub(room); n != 2 {
		t.Fatalf("%d subscribers, want one per instance", n)
	}
	// Publish concurrently with sends through both gateways so the live
	// order is decided by the log, not by the test.
	e.publishRun(room, 1, 40)
	for want := int64(1); want <= 40; want++ {
		if s1, s2 := seqOf(t, c1.next()), seqOf(t, c2.next()); s1 != want || s2 != want {
			t.Fatalf("instances got %d and %d, want %d", s1, s2, want)
		}
	}
}

func TestJoinWithLastSeqReplaysWithoutDuplicateAtTheSeam(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	g := e.start(nil)
	alice, at := e.user("alice")
	room := e.room(chat.RoomGroup, alice)
	e.publishRun(room, 1, 10)

	// Live events keep coming while the client joins.
	done := make(chan struct{})
	go func() {
		defer close(done)
		e.publishRun(room, 11, 60)
	}()
	c := e.dial(g, at)
	c.join(room, ptr(int64(5)))
	<-done
	for want := int64(6); want <= 60; want++ {
		if got := seqOf(t, c.next()); got != want {
			t.Fatalf("got seq %d, want %d", got, want)
		}
	}
	e.publishNext(room, 61)
	if got := seqOf(t, c.next()); got != 61 {
		t.Fatalf("got seq %d, want 61", got)
	}

	// Without lastSeq the ack tells where the room is and only newer
	// events follow.
	c2 := e.dial(g, at)
	last := c2.join(room, nil)
	if last == nil || *last != 61 {
		t.Fatalf("join ack lastSeq %v, want 61", last)
	}
	e.publishNext(room, 62)
	if got := seqOf(t, c2.next()); got != 62 {
		t.Fatalf("got seq %d, want 62", got)
	}

	// A client that is up to date gets no replay and no resync.
	c3 := e.dial(g, at)
	c3.join(room, ptr(int64(62)))
	e.publishNext(room, 63)
	if got := seqOf(t, c3.next()); got != 63 {
		t.Fatalf("got seq %d, want 63", got)
	}
}

func TestJoinWithLastSeqBeyondHistoryAsksForResync(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	g := e.start(nil)
	alice, at := e.user("alice")
	room := e.room(chat.RoomGroup, alice)
	// The history starts at 100 and its oldest entry says 99 came before:
	// 6..99 are not in Redis.
	if err := e.rdb.Set(t.Context(), e.keys.RoomSeq(room), 99, 0).Err(); err != nil {
		t.Fatal(err)
	}
	e.publishRun(room, 100, 102)
	c := e.dial(g, at)
	c.join(room, ptr(int64(5)))
	f := c.next()
	var rr protocol.ResyncRequired
	_ = json.Unmarshal(f.Data, &rr)
	if f.Event != protocol.EventResyncRequired || rr.RoomID != rid(room) || rr.FromSeq != 5 {
		t.Fatalf("got %s %s, want resync_required from 5", f.Event, f.Data)
	}
	e.publishNext(room, 103)
	if got := seqOf(t, c.next()); got != 103 {
		t.Fatalf("got seq %d, want live 103", got)
	}
}

func TestFanoutSpanContinuesTheEventTrace(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	g := e.start(nil)
	alice, at := e.user("alice")
	room := e.room(chat.RoomGroup, alice)
	c := e.dial(g, at)
	c.join(room, nil)
	const traceID = "4bf92f3577b34da6a3ce929d0e0e4736"
	e.publish(room, 1, nil, map[string]string{"traceparent": "00-" + traceID + "-00f067aa0ba902b7-01"})
	seqOf(t, c.next())
	eventually(t, "fanout span", func() bool {
		for _, s := range g.spans.Ended() {
			if strings.HasPrefix(s.Name(), "process ") && s.SpanContext().TraceID().String() == traceID &&
				s.Parent().SpanID().String() == "00f067aa0ba902b7" && s.Parent().IsRemote() {
				for _, a := range s.Attributes() {
					if a.Key == "relay.recipients" && a.Value.AsInt64() == 1 {
						return true
					}
				}
			}
		}
		return false
	})
	var _ trace.SpanContext
}

func TestGracefulShutdownClosesWith1012(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	g := e.start(nil)
	_, at := e.user("alice")
	c := e.dial(g, at)
	c.ack(protocol.EventPing, struct{}{}, nil)
	g.stop()
	if code := c.closeCode(); code != protocol.CloseServiceRestart {
		t.Fatalf("close code %d, want 1012", code)
	}
	select {
	case err := <-g.done:
		if err != nil {
			t.Fatalf("Run: %v", err)
		}
		g.done <- nil // for the cleanup's shutdown
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not return")
	}
	if _, err := dialWS(g.url, at); err == nil {
		t.Fatal("connection accepted after shutdown")
	}
}

// failingProducer is Kafka being down.
type failingProducer struct{ calls int }

func (f *failingProducer) Publish(context.Context, *events.Event) (int32, int64, error) {
	f.calls++
	return 0, 0, errors.New("kafka: broker down")
}
func (f *failingProducer) Close() error { return nil }

func TestKafkaDownIsUnavailableAndOpensTheBreaker(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	g := e.start(func(c *Config) { c.BreakerFailures = 2; c.BreakerOpenTimeout = time.Minute })
	fp := &failingProducer{}
	// Swapped before any connection exists, so no reader sees the change.
	kafkaProducer := g.svc.prod.Replace(fp)
	t.Cleanup(func() { _ = kafkaProducer.Close() })
	alice, at := e.user("alice")
	room := e.room(chat.RoomGroup, alice)
	c := e.dial(g, at)
	send := protocol.SendMessage{RoomID: rid(room), Content: "x", ClientMsgID: "k1"}
	c.fail(protocol.EventSendMessage, send, chat.CodeUnavailable)
	// The failed send released its clientMsgId.
	if n, _ := e.rdb.Exists(t.Context(), dedupeKeys(e).Key(alice, "k1")).Result(); n != 0 {
		t.Fatal("dedupe marker left after a failed produce")
	}
	c.fail(protocol.EventSendMessage, send, chat.CodeUnavailable)
	// Open: refused at once, Kafka not even tried.
	c.fail(protocol.EventSendMessage, send, chat.CodeUnavailable)
	if fp.calls != 2 {
		t.Fatalf("producer called %d times, want 2 (then the breaker is open)", fp.calls)
	}
	resp, err := http.Get(g.http + "/ready")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("/ready %d with the breaker open, want 503", resp.StatusCode)
	}
}

func TestReady(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	g := e.start(nil)
	for _, path := range []string{"/health", "/ready", "/metrics"} {
		resp, err := http.Get(g.http + path)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("%s: %d", path, resp.StatusCode)
		}
	}
}

func TestRejoinWithLastSeqRecoversAGap(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	g := e.start(nil)
	alice, at := e.user("alice")
	room := e.room(chat.RoomGroup, alice)
	c := e.dial(g, at)
	c.join(room, nil)
	e.publishRun(room, 1, 5)
	for want := int64(1); want <= 5; want++ {
		if got := seqOf(t, c.next()); got != want {
			t.Fatalf("got %d, want %d", got, want)
		}
	}
	// The client lost 3..5 (say its UI dropped them) and asks again.
	c.join(room, ptr(int64(2)))
	for want := int64(3); want <= 5; want++ {
		if got := seqOf(t, c.next()); got != want {
			t.Fatalf("replay got %d, want %d", got, want)
		}
	}
	// A plain rejoin changes nothing.
	if last := c.join(room, nil); last == nil || *last != 5 {
		t.Fatalf("join ack lastSeq %v, want 5", last)
	}
	e.publishNext(room, 6)
	if got := seqOf(t, c.next()); got != 6 {
		t.Fatalf("got %d, want 6", got)
	}
	if n := e.numsub(room); n != 1 {
		t.Fatalf("%d subscriptions, want 1", n)
	}
}

// When the gateway's pub/sub connection drops, go-redis reconnects and
// resubscribes; what was published meanwhile is recovered from the history,
// in order and without duplicates.
func TestRedisReconnectRecoversFromHistory(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	name := testenvName()
	g := e.start(func(c *Config) { c.Redis.URL = "redis://127.0.0.1:6379/0?client_name=" + name })
	alice, at := e.user("alice")
	room := e.room(chat.RoomGroup, alice)
	c := e.dial(g, at)
	c.join(room, nil)
	e.publishRun(room, 1, 3)
	for want := int64(1); want <= 3; want++ {
		if got := seqOf(t, c.next()); got != want {
			t.Fatalf("got %d, want %d", got, want)
		}
	}
	killPubSub(t, e, name)
	e.publishRun(room, 4, 6) // likely lost by pub/sub, kept in the history
	eventually(t, "resubscribe", func() bool { return e.numsub(room) == 1 })
	e.publishNext(room, 7)
	for want := int64(4); want <= 7; want++ {
		if got := seqOf(t, c.next()); got != want {
			t.Fatalf("got %d, want %d", got, want)
		}
	}
}

func testenvName() string { return "gw-" + strconv.FormatInt(time.Now().UnixNano(), 36) }

// killPubSub kills the named client's connections that hold shard channel
// subscriptions (ssub in CLIENT LIST).
func killPubSub(t *testing.T, e *env, name string) {
	t.Helper()
	list, err := e.rdb.ClientList(t.Context()).Result()
	if err != nil {
		t.Fatal(err)
	}
	killed := 0
	for _, line := range strings.Split(list, "\n") {
		fields := map[string]string{}
		for _, kv := range strings.Fields(line) {
			if k, v, ok := strings.Cut(kv, "="); ok {
				fields[k] = v
			}
		}
		if fields["name"] == name && fields["ssub"] != "0" && fields["ssub"] != "" {
			id, _ := strconv.ParseInt(fields["id"], 10, 64)
			if err := e.rdb.ClientKillByFilter(t.Context(), "ID", strconv.FormatInt(id, 10)).Err(); err != nil {
				t.Fatal(err)
			}
			killed++
		}
	}
	if killed != 1 {
		t.Fatalf("killed %d pub/sub connections, want 1", killed)
	}
}
