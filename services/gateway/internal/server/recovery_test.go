package server

import (
	"context"
	"encoding/json"
	"net/http"
	"strconv"
	"testing"
	"time"

	"github.com/fasthttp/websocket"
	"github.com/google/uuid"
	"github.com/prometheus/client_golang/prometheus/testutil"
	goredis "github.com/redis/go-redis/v9"

	"relay/pkg/chat"
	"relay/pkg/events"
	"relay/pkg/protocol"
	"relay/pkg/redis"
	"relay/pkg/store"
	"relay/services/gateway/internal/adapters"
)

// roomLog is a room's log as the test writes it to both stores: Redis
// through the delivery worker's script, PostgreSQL through the persister's
// ApplyBatch.
type roomLog struct {
	e    *env
	room int64
	user int64
	// events by seq, and the seqs in order.
	events map[int64]*events.Event
	seqs   []int64
	// cap is the history cap the publications are written with.
	cap int
}

func (e *env) roomLog(room, user int64, historyCap int) *roomLog {
	return &roomLog{e: e, room: room, user: user, events: map[int64]*events.Event{}, cap: historyCap}
}

// event returns the message_created event of seq, made on first use.
func (l *roomLog) event(seq int64) *events.Event {
	if ev, ok := l.events[seq]; ok {
		return ev
	}
	ev := &events.Event{
		Type: events.MessageCreated, RoomID: l.room, UserID: l.user, Username: "alice",
		MessageID: uuid.Must(uuid.NewV7()).String(), Content: "m" + strconv.FormatInt(seq, 10),
		MessageType: "text", At: time.Now().UTC().Truncate(time.Microsecond),
	}
	l.events[seq] = ev
	l.seqs = append(l.seqs, seq)
	return ev
}

// payload renders seq the way the delivery worker does.
func (l *roomLog) payload(seq int64, prev *int64) []byte {
	l.e.t.Helper()
	frame, err := protocol.RenderEvent(l.event(seq), seq, prev)
	if err != nil {
		l.e.t.Fatal(err)
	}
	b, _ := json.Marshal(protocol.Publication{RoomID: l.room, Seq: seq, PrevSeq: prev, Frame: frame})
	return b
}

// publish runs the publish script for seq with the room's current last seq
// as prevSeq (absent when Redis has none).
func (l *roomLog) publish(seq int64) {
	l.e.t.Helper()
	prev, err := redis.LastSeq(context.Background(), l.e.rdb, l.e.keys, l.room)
	if err != nil {
		l.e.t.Fatal(err)
	}
	res, _, err := redis.Publish(context.Background(), l.e.rdb, l.e.keys, l.room, seq, prev, l.payload(seq, prev), l.cap)
	if err != nil || res != redis.Published {
		l.e.t.Fatalf("publish seq %d: %v %v", seq, res, err)
	}
}

// appendUnpublished writes seq to the history and moves the room's seq as
// the script does, but publishes nothing: a publication this gateway
// missed.
func (l *roomLog) appendUnpublished(seq int64) {
	l.e.t.Helper()
	ctx := context.Background()
	prev, err := redis.LastSeq(ctx, l.e.rdb, l.e.keys, l.room)
	if err != nil {
		l.e.t.Fatal(err)
	}
	pipe := l.e.rdb.TxPipeline()
	pipe.XAdd(ctx, &goredis.XAddArgs{Stream: l.e.keys.RoomHistory(l.room), ID: strconv.FormatInt(seq, 10) + "-1",
		Values: []any{"d", l.payload(seq, prev)}})
	pipe.Set(ctx, l.e.keys.RoomSeq(l.room), seq, 0)
	if _, err := pipe.Exec(ctx); err != nil {
		l.e.t.Fatal(err)
	}
}

// persist writes the events of seqs to PostgreSQL as the persister does.
func (l *roomLog) persist(seqs ...int64) {
	l.e.t.Helper()
	changes := make([]store.Change, 0, len(seqs))
	for _, s := range seqs {
		changes = append(changes, store.Change{Seq: s, Event: l.event(s)})
	}
	if _, err := store.ApplyBatch(context.Background(), l.e.db, changes); err != nil {
		l.e.t.Fatal(err)
	}
}

// oldestInHistory returns the seq of the history's oldest entry.
func (l *roomLog) oldestInHistory() int64 {
	l.e.t.Helper()
	first, err := l.e.rdb.XRangeN(context.Background(), l.e.keys.RoomHistory(l.room), "-", "+", 1).Result()
	if err != nil || len(first) != 1 {
		l.e.t.Fatalf("history: %v %v", first, err)
	}
	p, err := protocol.DecodePublication([]byte(first[0].Values["d"].(string)))
	if err != nil {
		l.e.t.Fatal(err)
	}
	return p.Seq
}

// expectMessages reads pushes and requires messages with exactly seqs, in
// order, each with the content its event has.
func (l *roomLog) expectMessages(c *wsClient, seqs []int64) {
	l.e.t.Helper()
	var prev *int64
	for i, want := range seqs {
		f := c.next()
		if f.Event != protocol.EventMessage {
			l.e.t.Fatalf("push %d: got %s %s, want message %d", i, f.Event, f.Data, want)
		}
		var m protocol.Message
		if err := json.Unmarshal(f.Data, &m); err != nil {
			l.e.t.Fatal(err)
		}
		if m.Seq != want {
			l.e.t.Fatalf("push %d: seq %d, want %d", i, m.Seq, want)
		}
		if ev := l.events[want]; m.Content != ev.Content || m.ID != ev.MessageID {
			l.e.t.Fatalf("seq %d: content %q id %s, want %q %s", want, m.Content, m.ID, ev.Content, ev.MessageID)
		}
		if i > 0 && (m.PrevSeq == nil || *m.PrevSeq != *prev) {
			l.e.t.Fatalf("seq %d: prevSeq %v, want %d", want, m.PrevSeq, *prev)
		}
		prev = &seqs[i]
	}
}

// expectResync reads the next push and requires a resync_required.
func expectResync(t *testing.T, c *wsClient) protocol.ResyncRequired {
	t.Helper()
	f := c.next()
	var rr protocol.ResyncRequired
	if f.Event != protocol.EventResyncRequired || json.Unmarshal(f.Data, &rr) != nil {
		t.Fatalf("got %s %s, want resync_required", f.Event, f.Data)
	}
	return rr
}

// seqRange returns from, from+step, ... up to to.
func seqRange(from, to, step int64) []int64 {
	var out []int64
	for s := from; s <= to; s += step {
		out = append(out, s)
	}
	return out
}

// A client resuming from before what the recent history still holds gets
// the complete log: PostgreSQL up to where the history begins, then the
// history, then live events, in order and each once. The replay is longer
// than a connection's queue and is not taken for a slow consumer.
func TestResumeAfterHistoryTrimmedReadsPostgres(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	g := e.start(nil)
	alice, at := e.user("alice")
	room := e.room(chat.RoomGroup, alice)
	// seqs are not contiguous: 10, 13, 16, ... (other rooms share the partition)
	l := e.roomLog(room, alice, 10)
	all := seqRange(10, 10+3*399, 3)
	for _, s := range all {
		l.publish(s)
	}
	l.persist(all...)
	if oldest := l.oldestInHistory(); oldest <= all[2] {
		t.Fatalf("history was not trimmed (oldest %d); the test needs it", oldest)
	}

	c := e.dial(g, at)
	// Live events keep coming while the client resumes.
	live := seqRange(all[len(all)-1]+3, all[len(all)-1]+3*20, 3)
	next := live[len(live)-1] + 3
	// The persister keeps up (the history cap of 10 trims faster than any
	// real one would).
	l.persist(append(live, next)...)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for _, s := range live {
			l.publish(s)
		}
	}()
	c.join(room, ptr(all[1])) // the client had 10 and 13
	<-done
	l.expectMessages(c, append(append([]int64{}, all[2:]...), live...))
	l.publish(next)
	l.expectMessages(c, []int64{next})
	if n := testutil.ToFloat64(g.svc.metrics.Resyncs.WithLabelValues(protocol.ResyncPersisterBehind)); n != 0 {
		t.Fatalf("%v resyncs", n)
	}

	// A client whose lastSeq falls between two seqs is not missing anything
	// between them.
	c2 := e.dial(g, at)
	c2.join(room, ptr(all[5]+1))
	l.expectMessages(c2, append(append([]int64{}, all[6:]...), append(live, next)...))
}

// When the events a client missed are past the recent history and the
// persister has not written them yet, the client gets what PostgreSQL has,
// then resync_required persister_behind with a retry hint, then live
// events; joining again once the persister caught up replays the rest.
func TestResumePersisterBehindAsksToRetry(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	g := e.start(nil)
	alice, at := e.user("alice")
	room := e.room(chat.RoomGroup, alice)
	l := e.roomLog(room, alice, 10)
	all := seqRange(0, 299, 1)
	for _, s := range all {
		l.publish(s)
	}
	l.persist(all[:50]...) // 0..49
	oldest := l.oldestInHistory()
	if oldest <= 50 {
		t.Fatalf("history was not trimmed (oldest %d); the test needs it", oldest)
	}

	c := e.dial(g, at)
	c.join(room, ptr(int64(4)))
	l.expectMessages(c, seqRange(5, 49, 1))
	rr := expectResync(t, c)
	if rr.RoomID != rid(room) || rr.FromSeq != 49 || rr.Reason != protocol.ResyncPersisterBehind || rr.RetryAfterMs != 1000 {
		t.Fatalf("resync %+v, want fromSeq 49, persister_behind, retryAfterMs 1000", rr)
	}
	l.publish(300)
	l.expectMessages(c, []int64{300})

	// Nothing in PostgreSQL at all: the same, from the client's own seq.
	c2 := e.dial(g, at)
	room2 := e.room(chat.RoomGroup, alice)
	l2 := e.roomLog(room2, alice, 10)
	for _, s := range all {
		l2.publish(s)
	}
	c2.join(room2, ptr(int64(-1)))
	if rr := expectResync(t, c2); rr.FromSeq != -1 || rr.Reason != protocol.ResyncPersisterBehind {
		t.Fatalf("resync %+v, want fromSeq -1, persister_behind", rr)
	}

	// The persister caught up: the retry the hint asks for fills the gap.
	l.persist(all[50:]...)
	c.join(room, ptr(rr.FromSeq))
	l.expectMessages(c, append(seqRange(50, 299, 1), 300))
}

// REPLAY_LIMIT bounds a resume: the first events are replayed, then
// resync_required replay_limit.
func TestResumeBeyondReplayLimit(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	g := e.start(func(c *Config) { c.ReplayLimit = 20 })
	alice, at := e.user("alice")
	room := e.room(chat.RoomGroup, alice)
	l := e.roomLog(room, alice, 1000)
	for s := int64(0); s < 50; s++ {
		l.publish(s)
	}
	c := e.dial(g, at)
	c.join(room, ptr(int64(9)))
	l.expectMessages(c, seqRange(10, 29, 1))
	if rr := expectResync(t, c); rr.FromSeq != 29 || rr.Reason != protocol.ResyncReplayLimit || rr.RetryAfterMs != 0 {
		t.Fatalf("resync %+v, want fromSeq 29, replay_limit", rr)
	}
	// The same from PostgreSQL.
	room2 := e.room(chat.RoomGroup, alice)
	l2 := e.roomLog(room2, alice, 10)
	for s := int64(0); s < 300; s++ {
		l2.publish(s)
	}
	l2.persist(seqRange(0, 299, 1)...)
	c.join(room2, ptr(int64(9)))
	l2.expectMessages(c, seqRange(10, 29, 1))
	if rr := expectResync(t, c); rr.FromSeq != 29 || rr.Reason != protocol.ResyncReplayLimit {
		t.Fatalf("resync %+v, want fromSeq 29, replay_limit", rr)
	}
}

// A live publication whose prevSeq is not the last seq this gateway
// delivered for the room (a publish it missed) makes the gateway fetch the
// missing events and deliver them in order before it.
func TestGapInFlightIsRepairedFromHistory(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	g := e.start(nil)
	alice, at := e.user("alice")
	room := e.room(chat.RoomGroup, alice)
	l := e.roomLog(room, alice, 1000)
	a, b := e.dial(g, at), e.dial(g, at)
	a.join(room, nil)
	b.join(room, nil)
	l.publish(10)
	l.expectMessages(a, []int64{10})
	l.expectMessages(b, []int64{10})
	l.appendUnpublished(12)
	l.publish(14) // prevSeq 12
	for _, c := range []*wsClient{a, b} {
		l.expectMessages(c, []int64{12, 14})
	}
	l.publish(15)
	l.expectMessages(a, []int64{15})
	l.expectMessages(b, []int64{15})
	m := g.svc.metrics
	if gaps, repaired := testutil.ToFloat64(m.Gaps), testutil.ToFloat64(m.Repaired); gaps != 1 || repaired != 1 {
		t.Fatalf("gaps %v repaired %v, want 1 and 1", gaps, repaired)
	}

	// Several missed in a row, with live ones arriving during the repair.
	for s := int64(16); s < 40; s++ {
		l.appendUnpublished(s)
	}
	for s := int64(40); s < 60; s++ {
		l.publish(s)
	}
	l.expectMessages(a, seqRange(16, 59, 1))
	l.expectMessages(b, seqRange(16, 59, 1))
}

// When Redis lost the room's seq, a publication has no prevSeq: the
// gateway repairs from the last seq it delivered, proving the order from
// PostgreSQL, and when PostgreSQL cannot prove it within REPAIR_WAIT the
// room's connections get resync_required.
func TestGapWithoutPrevSeqIsRepaired(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	g := e.start(func(c *Config) { c.RepairWait = 300 * time.Millisecond })
	alice, at := e.user("alice")
	loseSeq := func(l *roomLog) {
		if err := e.rdb.Del(context.Background(), e.keys.RoomSeq(l.room)).Err(); err != nil {
			t.Fatal(err)
		}
	}

	room := e.room(chat.RoomGroup, alice)
	l := e.roomLog(room, alice, 1000)
	c := e.dial(g, at)
	c.join(room, nil)
	l.publish(10)
	l.expectMessages(c, []int64{10})
	l.appendUnpublished(11)
	loseSeq(l)
	l.persist(10, 11, 12) // the persister has what Redis forgot
	l.publish(12)         // no prevSeq
	l.expectMessages(c, []int64{11, 12})

	// PostgreSQL has not caught up: tell the client, then go on live.
	room2 := e.room(chat.RoomGroup, alice)
	l2 := e.roomLog(room2, alice, 1000)
	c.join(room2, nil)
	l2.publish(10)
	l2.expectMessages(c, []int64{10})
	l2.appendUnpublished(11)
	loseSeq(l2)
	l2.publish(12)
	l2.expectMessages(c, []int64{11})
	if rr := expectResync(t, c); rr.RoomID != rid(room2) || rr.FromSeq != 11 || rr.Reason != protocol.ResyncPersisterBehind {
		t.Fatalf("resync %+v, want room %d from 11 persister_behind", rr, room2)
	}
	f := c.next()
	if seqOf(t, f) != 12 {
		t.Fatalf("got %s, want 12", f.Data)
	}
	l2.publish(13)
	l2.expectMessages(c, []int64{13})
}

// A repair holds the room's later live publications only up to
// REPAIR_HOLD; beyond it they are dropped and the room's connections are
// told to resync (overflow), and live delivery resumes.
func TestRepairHoldOverflowAsksForResync(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	g := e.start(func(c *Config) { c.RepairHold = 3; c.RepairWait = time.Minute })
	alice, at := e.user("alice")
	room := e.room(chat.RoomGroup, alice)
	l := e.roomLog(room, alice, 1000)
	c := e.dial(g, at)
	c.join(room, nil)
	l.publish(10)
	l.expectMessages(c, []int64{10})
	// 11 is lost and its successor has no prevSeq; nothing in PostgreSQL:
	// the repair waits for the persister and holds what comes live.
	l.appendUnpublished(11)
	if err := e.rdb.Del(context.Background(), e.keys.RoomSeq(room)).Err(); err != nil {
		t.Fatal(err)
	}
	for s := int64(12); s <= 20; s++ {
		l.publish(s)
	}
	// Depending on when the hold overflows, the repair first gives up on the
	// gap (11, then resync persister_behind, then 12) or drops everything
	// it held at once. Either way an overflow resync follows, and then live
	// events again (publications of 13..20 still on their way may be
	// among them), in order.
	last, overflow, published := int64(10), false, false
	for last != 21 {
		if overflow && !published {
			// The repair is over; the next publication is live again.
			l.publish(21)
			published = true
		}
		f := c.next()
		if f.Event == protocol.EventResyncRequired {
			var rr protocol.ResyncRequired
			_ = json.Unmarshal(f.Data, &rr)
			if rr.FromSeq != last || (rr.Reason != protocol.ResyncOverflow && rr.Reason != protocol.ResyncPersisterBehind) {
				t.Fatalf("resync %+v after seq %d", rr, last)
			}
			overflow = overflow || rr.Reason == protocol.ResyncOverflow
			continue
		}
		seq := seqOf(t, f)
		if seq <= last {
			t.Fatalf("seq %d after %d", seq, last)
		}
		if seq > 12 && !overflow {
			t.Fatalf("seq %d before the overflow resync", seq)
		}
		last = seq
	}
	if d := testutil.ToFloat64(g.svc.metrics.RepairDropped); d < 1 {
		t.Fatalf("dropped %v", d)
	}
}

// gatedProducer is a Kafka producer whose produces wait for release.
type gatedProducer struct {
	adapters.Publisher
	started chan struct{}
	release chan struct{}
}

func (p *gatedProducer) Publish(ctx context.Context, e *events.Event) (int32, int64, error) {
	p.started <- struct{}{}
	<-p.release
	return p.Publisher.Publish(ctx, e)
}

// On shutdown a send whose produce is in flight gets its ack before the
// 1012 close; meanwhile new upgrades get 503 and new frames UNAVAILABLE.
func TestShutdownAcksTheSendInFlightThenCloses1012(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	g := e.start(nil)
	gp := &gatedProducer{started: make(chan struct{}, 1), release: make(chan struct{})}
	// Swapped before any connection exists, so no reader sees the change.
	gp.Publisher = g.svc.prod.Replace(gp)
	alice, at := e.user("alice")
	room := e.room(chat.RoomGroup, alice)
	c, other := e.dial(g, at), e.dial(g, at)
	other.ack(protocol.EventPing, struct{}{}, nil)
	c.send(protocol.EventSendMessage, protocol.SendMessage{RoomID: rid(room), Content: "in flight", ClientMsgID: "sigterm-1"}, "s1")
	<-gp.started
	g.stop()
	eventually(t, "upgrades refused", func() bool {
		status, err := dialStatus(g.url, at)
		return err != nil && status == http.StatusServiceUnavailable
	})
	// The other connection is still open, but refuses new work.
	other.fail(protocol.EventPing, struct{}{}, chat.CodeUnavailable)
	close(gp.release)
	reply := c.reply("s1")
	var ack protocol.SendAck
	if reply.Event != protocol.EventAck || json.Unmarshal(reply.Data, &ack) != nil || ack.ClientMsgID != "sigterm-1" {
		t.Fatalf("got %s %s, want the send's ack", reply.Event, reply.Data)
	}
	if code := c.closeCode(); code != protocol.CloseServiceRestart {
		t.Fatalf("close code %d after the ack, want 1012", code)
	}
	if recs := e.records(1); len(recs) != 1 || recs[0].Offset != ack.Seq {
		t.Fatalf("records %d, ack seq %d", len(recs), ack.Seq)
	}
}

// dialStatus tries an upgrade and returns the HTTP status it got.
func dialStatus(url, token string) (int, error) {
	c, resp, err := websocket.DefaultDialer.Dial(url+"?token="+token, nil)
	status := 0
	if resp != nil {
		status = resp.StatusCode
		if resp.Body != nil {
			resp.Body.Close()
		}
	}
	if c != nil {
		_ = c.Close()
	}
	return status, err
}

func TestBreakerStateGauge(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	g := e.start(func(c *Config) { c.BreakerFailures = 1; c.BreakerOpenTimeout = time.Minute })
	state := func(s string) float64 {
		return testutil.ToFloat64(g.svc.metrics.BreakerState.WithLabelValues("kafka-produce", s))
	}
	if state("closed") != 1 || state("open") != 0 {
		t.Fatalf("closed %v open %v at start", state("closed"), state("open"))
	}
	kp := g.svc.prod.Replace(&failingProducer{})
	t.Cleanup(func() { _ = kp.Close() })
	alice, at := e.user("alice")
	room := e.room(chat.RoomGroup, alice)
	e.dial(g, at).fail(protocol.EventSendMessage, protocol.SendMessage{RoomID: rid(room), Content: "x"}, chat.CodeUnavailable)
	if state("closed") != 0 || state("open") != 1 {
		t.Fatalf("closed %v open %v after the failure", state("closed"), state("open"))
	}
}

// Joins that replay count against the connection's replay limit: past the
// burst a join with lastSeq is RATE_LIMITED with retryAfterMs, and the
// membership it would have restarted stays (live events still arrive).
// Joins with nothing to replay do not count.
func TestReplaysAreRateLimitedPerConnection(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	g := e.start(func(c *Config) { c.ReplayRate = 0.2; c.ReplayBurst = 2 })
	alice, at := e.user("alice")
	room := e.room(chat.RoomGroup, alice)
	l := e.roomLog(room, alice, 100)
	for s := int64(0); s < 5; s++ {
		l.publish(s)
	}
	c := e.dial(g, at)
	for range 5 { // up to date: nothing replayed, nothing counted
		c.join(room, ptr(int64(4)))
	}
	for range 2 {
		c.join(room, ptr(int64(1)))
		l.expectMessages(c, seqRange(2, 4, 1))
	}
	ed := c.fail(protocol.EventJoinRoom, protocol.JoinRoom{RoomID: rid(room), LastSeq: ptr(int64(1))}, chat.CodeRateLimited)
	if ed.RetryAfterMs < 4000 || ed.RetryAfterMs > 5000 {
		t.Fatalf("retryAfterMs %d, want about 5000 (one replay per 5 s)", ed.RetryAfterMs)
	}
	// The refused rejoin left the membership as it was.
	l.publish(5)
	l.expectMessages(c, []int64{5})
	// Another connection has a limit of its own.
	c2 := e.dial(g, at)
	c2.join(room, ptr(int64(1)))
	l.expectMessages(c2, seqRange(2, 5, 1))
}
