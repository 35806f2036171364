package worker

import (
	"context"
	"testing"
	"time"

	"relay/pkg/events"
	"relay/pkg/redis"
	"relay/pkg/testenv"
)

// BenchmarkRenderPublish is the worker's per-event cost: render the
// publication, then one publish script call (seq check, SET, XADD, PUBLISH)
// on the real Redis, one room, each event following the previous one.
func BenchmarkRenderPublish(b *testing.B) {
	if testenv.Short() {
		b.Skip("integration")
	}
	rdb, prefix := testenv.Redis(b)
	keys := redis.Keys{Prefix: prefix}
	ctx := context.Background()
	e := &events.Event{Type: events.MessageCreated, RoomID: 4242, UserID: 678, Username: "someone",
		MessageID: "0190f3c6-8a9b-7cde-8f01-23456789abcd", Content: "a message of ordinary length, about sixty bytes long",
		MessageType: "text", ClientMsgID: "c-123", At: time.Now().UTC()}
	tc := map[string]string{"traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"}
	var prev *int64
	seq := int64(0)
	b.ReportAllocs()
	for b.Loop() {
		payload, err := renderPublication(e, seq, prev, tc)
		if err != nil {
			b.Fatal(err)
		}
		res, _, err := redis.Publish(ctx, rdb, keys, e.RoomID, seq, prev, payload, DefaultHistoryCap)
		if err != nil || res != redis.Published {
			b.Fatalf("publish: %v %v", res, err)
		}
		s := seq
		prev = &s
		seq++
	}
}
