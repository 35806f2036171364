package redis_test

import (
	"context"
	"encoding/json"
	"fmt"
	"testing"

	"relay/pkg/protocol"
	"relay/pkg/redis"
	"relay/pkg/testenv"
)

func payload(t *testing.T, room, seq int64, prev *int64) []byte {
	t.Helper()
	b, err := json.Marshal(protocol.Publication{RoomID: room, Seq: seq, PrevSeq: prev, Frame: json.RawMessage(fmt.Sprintf(`{"event":"message","data":{"seq":%d}}`, seq))})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func ptr(v int64) *int64 { return &v }

func TestPublishScript(t *testing.T) {
	t.Parallel()
	rdb, prefix := testenv.Redis(t)
	ctx := context.Background()
	k := redis.Keys{Prefix: prefix}
	const room = 7
	sub := rdb.SSubscribe(ctx, k.RoomChannel(room))
	defer sub.Close()
	if _, err := sub.Receive(ctx); err != nil {
		t.Fatal(err)
	}

	// First event of an unknown room: expected prev nil.
	if res, _, err := redis.Publish(ctx, rdb, k, room, 3, nil, payload(t, room, 3, nil), 100); err != nil || res != redis.Published {
		t.Fatalf("first publish: %v %v", res, err)
	}
	// A stale expectation is refused and told the current seq.
	res, cur, err := redis.Publish(ctx, rdb, k, room, 8, ptr(1), payload(t, room, 8, ptr(1)), 100)
	if err != nil || res != redis.Stale || cur == nil || *cur != 3 {
		t.Fatalf("stale publish: %v %v %v", res, cur, err)
	}
	if res, _, err := redis.Publish(ctx, rdb, k, room, 8, ptr(3), payload(t, room, 8, ptr(3)), 100); err != nil || res != redis.Published {
		t.Fatalf("second publish: %v %v", res, err)
	}
	// A redelivery (seq not above the last) does nothing.
	if res, _, err := redis.Publish(ctx, rdb, k, room, 8, ptr(3), payload(t, room, 8, ptr(3)), 100); err != nil || res != redis.Duplicate {
		t.Fatalf("redelivery: %v %v", res, err)
	}
	last, err := redis.LastSeq(ctx, rdb, k, room)
	if err != nil || last == nil || *last != 8 {
		t.Fatalf("last seq %v %v", last, err)
	}
	// Exactly two messages reached subscribers, in order.
	for _, want := range []int64{3, 8} {
		m, err := sub.ReceiveMessage(ctx)
		if err != nil {
			t.Fatal(err)
		}
		p, err := protocol.DecodePublication([]byte(m.Payload))
		if err != nil || p.Seq != want {
			t.Fatalf("got %+v %v, want seq %d", p, err, want)
		}
	}

	pubs, complete, err := redis.History(ctx, rdb, k, room, 3, 10)
	if err != nil || !complete || len(pubs) != 1 || pubs[0].Seq != 8 {
		t.Fatalf("history after 3: %+v complete=%v %v", pubs, complete, err)
	}
	// The oldest entry has no prevSeq (the room's seq was unknown when it
	// was published), so from the start nothing proves no earlier event
	// existed: the reader must say so and let the caller fall back.
	all, complete, err := redis.History(ctx, rdb, k, room, -1, 10)
	if err != nil || len(all) != 2 || complete {
		t.Fatalf("history from start: %d complete=%v %v", len(all), complete, err)
	}
}

func TestHistoryReportsTrimming(t *testing.T) {
	t.Parallel()
	rdb, prefix := testenv.Redis(t)
	ctx := context.Background()
	k := redis.Keys{Prefix: prefix}
	const room = 9
	var prev *int64
	for seq := int64(10); seq < 40; seq += 2 {
		if res, _, err := redis.Publish(ctx, rdb, k, room, seq, prev, payload(t, room, seq, prev), 1); err != nil || res != redis.Published {
			t.Fatalf("publish %d: %v %v", seq, res, err)
		}
		prev = ptr(seq)
	}
	// Trim to the last few entries exactly, as a small cap eventually does.
	if err := rdb.XTrimMaxLen(ctx, k.RoomHistory(room), 3).Err(); err != nil {
		t.Fatal(err)
	}
	if _, complete, err := redis.History(ctx, rdb, k, room, 10, 100); err != nil || complete {
		t.Fatalf("history after a trimmed seq must say incomplete: complete=%v err=%v", complete, err)
	}
	pubs, complete, err := redis.History(ctx, rdb, k, room, 32, 100)
	if err != nil || !complete || len(pubs) != 3 || pubs[0].Seq != 34 {
		t.Fatalf("history after 32: %d complete=%v %v", len(pubs), complete, err)
	}
}

func TestDecodePublicationRefuses(t *testing.T) {
	for _, raw := range []string{`nope`, `{}`, `{"roomId":"1"}`, `{"roomId":"x","frame":{}}`} {
		if _, err := protocol.DecodePublication([]byte(raw)); err == nil {
			t.Errorf("%s decoded", raw)
		}
	}
}

// Encode writes what json.Marshal writes, for every optional field set or
// not, and refuses a publication without a frame.
func TestPublicationEncodeIsJSONMarshal(t *testing.T) {
	frame, err := json.Marshal(map[string]any{"event": "message", "data": map[string]string{"content": `<b>"hi"</b> & é`}})
	if err != nil {
		t.Fatal(err)
	}
	prev := int64(41)
	zero := int64(0)
	for i, p := range []protocol.Publication{
		{RoomID: 1, Seq: 0, Frame: frame},
		{RoomID: 9223372036854775807, Seq: 42, PrevSeq: &prev, Frame: frame},
		{RoomID: 7, Seq: 3, PrevSeq: &zero, Trace: map[string]string{"traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01", "tracestate": `a=<&>"`}, Frame: frame, PublishedAt: 1764860000123456789, EventAt: 1764860000000000001},
		{RoomID: 7, Ephemeral: true, SkipUserID: 12, Trace: map[string]string{}, Frame: frame},
	} {
		got, err := p.Encode()
		if err != nil {
			t.Fatal(err)
		}
		want, err := json.Marshal(p)
		if err != nil {
			t.Fatal(err)
		}
		if string(got) != string(want) {
			t.Errorf("%d: Encode\n%s\nwant\n%s", i, got, want)
		}
		back, err := protocol.DecodePublication(got)
		if err != nil || back.RoomID != p.RoomID || back.Seq != p.Seq || string(back.Frame) != string(frame) {
			t.Errorf("%d: decodes to %+v, %v", i, back, err)
		}
	}
	if _, err := (&protocol.Publication{RoomID: 1}).Encode(); err == nil {
		t.Error("a publication without a frame encoded")
	}
}
