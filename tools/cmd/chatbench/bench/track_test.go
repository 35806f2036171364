package bench

import (
	"fmt"
	"math"
	"sync/atomic"
	"testing"
	"time"
)

func ptr(v int64) *int64 { return &v }

func derefOr(p *int64) int64 {
	if p == nil {
		return 0
	}
	return *p
}

func TestSeqTrackVerdicts(t *testing.T) {
	t.Parallel()
	var tr seqTrack
	tr.base(100) // join ack: the room's last seq was 100
	steps := []struct {
		seq     int64
		prev    *int64
		verdict verdict
		gap     bool
	}{
		{105, ptr(100), inOrder, false},
		{107, ptr(105), inOrder, false},
		{107, ptr(105), duplicate, false},
		{112, ptr(110), inOrder, true}, // 110 never arrived: a gap
		{110, ptr(107), outOfOrder, false},
		{110, ptr(107), duplicate, false}, // a late one repeated
		{105, nil, duplicate, false},
		{106, nil, outOfOrder, false}, // below the highest, never seen
		{120, nil, inOrder, false},    // no prevSeq: no gap judgement
	}
	for i, s := range steps {
		v, gap := tr.observe(s.seq, derefOr(s.prev), s.prev != nil)
		if v != s.verdict || gap != s.gap {
			t.Errorf("step %d (seq %d): got %v gap=%v, want %v gap=%v", i, s.seq, v, gap, s.verdict, s.gap)
		}
	}
}

func TestSeqTrackPushBeforeJoinAck(t *testing.T) {
	t.Parallel()
	var tr seqTrack
	if v, gap := tr.observe(50, 40, true); v != inOrder || gap {
		t.Fatalf("first event: %v gap=%v", v, gap)
	}
	tr.base(40) // the ack came after the push: it must not rewind
	if v, gap := tr.observe(51, 50, true); v != inOrder || gap {
		t.Errorf("got %v gap=%v, want in order without gap", v, gap)
	}
}

// fakeRun builds a runner and connections without sockets: handle() only
// reads frames, so the accounting is tested with the frames a gateway sends.
func fakeRun(t *testing.T, rooms, conns int, perSender []int) (*runner, []*conn, *Step) {
	t.Helper()
	r := &runner{runID: "run1", roomIDs: make([]string, rooms), joined: make([]atomic.Int32, rooms), tr: native{}}
	for i := range r.roomIDs {
		r.roomIDs[i] = fmt.Sprint(40 + i)
	}
	r.steps = make([]atomic.Pointer[Step], 1)
	st := newStep(0, 10, time.Second, perSender, 2)
	r.steps[0].Store(st)
	r.cur.Store(st)
	cs := make([]*conn, conns)
	for i := range cs {
		cs[i] = &conn{r: r, idx: i, tracks: map[string]*seqTrack{}}
	}
	return r, cs, st
}

func messageFrame(room string, seq int64, prev int64, sender, n int, sent time.Time) []byte {
	return fmt.Appendf(nil, `{"event":"message","data":{"id":"0190a7d2-6a10-7c3e-8d21-0b5f2c9e7a44","roomId":%q,"userId":"7","username":"u","content":"x","type":"text","metadata":{"bench":{"r":"run1","p":0,"s":%d,"n":%d,"t":%d}},"seq":%d,"prevSeq":%d,"createdAt":"2026-11-26T21:04:05Z"}}`,
		room, sender, n, sent.UnixNano(), seq, prev)
}

func TestAccountingFromFrames(t *testing.T) {
	t.Parallel()
	// One room, three connections joined; sender 0 sends three messages.
	r, cs, st := fakeRun(t, 1, 3, []int{3})
	for _, c := range cs {
		c.handle([]byte(`{"event":"ack","ref":"j0","data":{"roomId":"40","lastSeq":9}}`))
	}
	if got := r.joined[0].Load(); got != 3 {
		t.Fatalf("joined %d, want 3", got)
	}
	sent := time.Now().Add(-5 * time.Millisecond)
	for n := range 3 {
		rec := st.rec(0, n)
		rec.recipients.Store(r.joined[0].Load())
		rec.sentAt.Store(sent.UnixNano())
		st.sent.Add(1)
	}
	// Message 0 (seq 10) and 1 (seq 12) acked; message 2 gets an error.
	cs[0].handle([]byte(`{"event":"ack","ref":"m0.0.0","data":{"id":"a","roomId":"40","seq":10,"createdAt":"2026-11-26T21:04:05Z"}}`))
	cs[0].handle([]byte(`{"event":"ack","ref":"m0.0.1","data":{"id":"b","roomId":"40","seq":12,"createdAt":"2026-11-26T21:04:05Z"}}`))
	cs[0].handle([]byte(`{"event":"ack","ref":"m0.0.1","data":{"id":"b","roomId":"40","seq":12,"createdAt":"2026-11-26T21:04:05Z"}}`)) // a repeated ack counts once
	cs[0].handle([]byte(`{"event":"error","ref":"m0.0.2","data":{"code":"RATE_LIMITED","message":"slow down"}}`))

	// conn 0: both, in order. conn 1: seq 12 first, then 10 (out of order),
	// then 12 again (duplicate). conn 2: only seq 12, which skips 10 (gap).
	cs[0].handle(messageFrame("40", 10, 9, 0, 0, sent))
	cs[0].handle(messageFrame("40", 12, 10, 0, 1, sent))
	cs[1].handle(messageFrame("40", 12, 10, 0, 1, sent))
	cs[1].handle(messageFrame("40", 10, 9, 0, 0, sent))
	cs[1].handle(messageFrame("40", 12, 10, 0, 1, sent))
	cs[2].handle(messageFrame("40", 12, 10, 0, 1, sent))
	// Noise that must not count: another run's message, a corrupt frame, an
	// out-of-range record, a non-message log event in order.
	cs[2].handle([]byte(`{"event":"message","data":{"roomId":"40","seq":13,"prevSeq":12,"metadata":{"bench":{"r":"other","p":0,"s":0,"n":0,"t":1}}}}`))
	cs[2].handle([]byte(`not json`))
	cs[2].handle(messageFrame("40", 14, 13, 5, 99, sent))
	cs[2].handle([]byte(`{"event":"user_joined","data":{"roomId":"40","userId":"3","username":"c","seq":15,"prevSeq":14}}`))

	a := st.account()
	want := Accounting{
		Sent: 3, Acked: 2, Failed: 1, Expected: 6, Delivered: 5, Lost: 1,
		Duplicates: 1, OutOfOrder: 1, Gaps: 2, // conn 1's first frame jumps from the join's 9; conn 2 too
	}
	if a != want {
		t.Errorf("accounting\n got %+v\nwant %+v", a, want)
	}
	if e := st.errors.Snapshot(); e["RATE_LIMITED"] != 1 || len(e) != 1 {
		t.Errorf("errors %v", e)
	}
	if r.undecodable.Load() != 1 {
		t.Errorf("undecodable %d, want 1", r.undecodable.Load())
	}
	if s := st.deliver.Total(); s.Count != 5 || s.P50 < 5 {
		t.Errorf("delivery latency %+v: want 5 values of at least 5 ms", s)
	}
	if s := st.ack.Total(); s.Count != 2 {
		t.Errorf("ack latency count %d, want 2", s.Count)
	}
	if st.settled(0) {
		t.Error("a step that lost a delivery is not settled")
	}
}

func TestAccountingUnackedAndLateJoiner(t *testing.T) {
	t.Parallel()
	r, cs, st := fakeRun(t, 1, 2, []int{2})
	cs[0].handle([]byte(`{"event":"ack","ref":"j0","data":{"roomId":"40","lastSeq":null}}`))
	sent := time.Now()
	for n := range 2 {
		rec := st.rec(0, n)
		rec.recipients.Store(r.joined[0].Load()) // 1: only conn 0 had joined
		rec.sentAt.Store(sent.UnixNano())
		st.sent.Add(1)
	}
	cs[0].handle([]byte(`{"event":"ack","ref":"m0.0.0","data":{"id":"a","roomId":"40","seq":3}}`))
	// conn 1 joined after the send and still got message 0: not owed, not
	// counted; message 1 was never answered but delivered.
	cs[0].handle(messageFrame("40", 3, 1, 0, 0, sent))
	cs[1].handle(messageFrame("40", 3, 1, 0, 0, sent))
	cs[0].handle(messageFrame("40", 4, 3, 0, 1, sent))
	a := st.account()
	want := Accounting{Sent: 2, Acked: 1, Unacked: 1, Expected: 1, Delivered: 1, DeliveredUnacked: 1}
	if a != want {
		t.Errorf("accounting\n got %+v\nwant %+v", a, want)
	}
	if st.settled(0) {
		t.Error("a step with an unanswered send is not settled")
	}
}

func TestParseSendRef(t *testing.T) {
	t.Parallel()
	r, _, st := fakeRun(t, 1, 1, []int{3})
	if got, rec := r.parseSendRef([]byte("0.0.2")); got != st || rec != &st.msgs[0][2] {
		t.Errorf("0.0.2: got %p %p", got, rec)
	}
	for _, bad := range []string{"", "0", "0.0", "0.0.3", "0.1.0", "1.0.0", "a.b.c", "0.0.2.1", "-1.0.0", "0..1", "99999999999999999999.0.0"} {
		if _, rec := r.parseSendRef([]byte(bad)); rec != nil {
			t.Errorf("%q: found a record", bad)
		}
	}
}

func TestMalformedFramesAreCounted(t *testing.T) {
	t.Parallel()
	r, cs, st := fakeRun(t, 1, 1, []int{1})
	for _, f := range []string{
		`[]`, `"x"`, `{"event":"message","data":{"roomId":"40","seq":"12"}}`, `{"event":"message","data":{"roomId":"40"}}`,
		`{"event":"message"}`,
	} {
		cs[0].handle([]byte(f))
	}
	if got := r.undecodable.Load(); got != 5 {
		t.Errorf("undecodable %d, want 5", got)
	}
	// Replies with refs chatbench never sends are ignored; an error reply
	// without a code is still counted.
	cs[0].handle([]byte(`{"event":"ack","ref":"zzz","data":{}}`))
	cs[0].handle([]byte(`{"event":"ack","ref":"j7","data":{}}`))
	cs[0].handle([]byte(`{"event":"error","data":{"message":"?"}}`))
	if e := st.errors.Snapshot(); e["UNKNOWN (no ref)"] != 1 || len(e) != 1 {
		t.Errorf("errors %v", e)
	}
	if r.joinsOK.Load() != 0 {
		t.Error("a join ack for a room that does not exist was counted")
	}
}

func TestParseInt(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]int64{"0": 0, "42": 42, "1780000000123456789": 1780000000123456789, "9223372036854775807": math.MaxInt64} {
		if got, ok := parseInt([]byte(in)); !ok || got != want {
			t.Errorf("%q: got %d %v", in, got, ok)
		}
	}
	for _, in := range []string{"", "-1", "1a", "9223372036854775808", "99999999999999999999"} {
		if _, ok := parseInt([]byte(in)); ok {
			t.Errorf("%q: accepted", in)
		}
	}
}

func TestPingAckIsTimed(t *testing.T) {
	t.Parallel()
	_, cs, st := fakeRun(t, 1, 1, []int{1})
	sent := time.Now().Add(-3 * time.Millisecond).UnixNano()
	cs[0].handle(fmt.Appendf(nil, `{"event":"ack","ref":"p%d","data":{}}`, sent))
	if s := st.ping.Total(); s.Count != 1 || s.P50 < 3 {
		t.Errorf("ping latency %+v", s)
	}
}
