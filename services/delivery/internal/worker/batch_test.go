package worker_test

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/IBM/sarama"

	"relay/pkg/dedupe"
	"relay/pkg/events"
	"relay/pkg/protocol"
	"relay/pkg/redis"
)

// One pipelined batch meets every outcome at once: a room whose cached
// seq Redis lost (stale, re-rendered without prevSeq), a room already past
// some of the records (duplicates, then a stale render behind them), a
// fresh room, and an undecodable record. Every room's history must come
// out as a chain in offset order, each record published once, every
// clientMsgId's ack recorded.
func TestDeliveryBatchMixedOutcomes(t *testing.T) {
	t.Parallel()
	e := newEnv(t, 1)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	r := start(t, e.config())
	const lost, behind, fresh = 1, 2, 3
	if err := e.rdb.Set(ctx, e.keys.RoomSeq(behind), 10, 0).Err(); err != nil {
		t.Fatal(err)
	}
	record := func(offset int64, ev *events.Event) *sarama.ConsumerMessage {
		ev.At = time.Now().UTC()
		v, err := json.Marshal(ev)
		if err != nil {
			t.Fatal(err)
		}
		return &sarama.ConsumerMessage{Topic: e.topic, Partition: 0, Offset: offset, Value: v}
	}
	withID := func(ev *events.Event, id string) *events.Event { ev.ClientMsgID = id; return ev }
	msgs := []*sarama.ConsumerMessage{
		record(6, message(lost, 1, "six")),
		record(7, withID(message(fresh, 1, "seven"), "c7")),
		record(8, message(behind, 1, "eight")),
		record(9, message(behind, 1, "nine")),
		{Topic: e.topic, Partition: 0, Offset: 10, Value: []byte("not an event")},
		record(11, withID(message(behind, 1, "eleven"), "c11")),
		record(12, message(lost, 1, "twelve")),
		record(13, message(fresh, 1, "thirteen")),
	}
	// The worker believes room lost is at 5; Redis has no seq for it.
	if err := r.svc.PublishBatch(ctx, map[int64]int64{lost: 5}, msgs); err != nil {
		t.Fatal(err)
	}
	history := func(room int64) []*protocol.Publication {
		t.Helper()
		h, _, err := redis.History(ctx, e.rdb, e.keys, room, -1, 100)
		if err != nil {
			t.Fatal(err)
		}
		return h
	}
	ten := int64(10)
	checkChain(t, history(lost), nil, []int64{6, 12})
	checkChain(t, history(behind), &ten, []int64{11})
	checkChain(t, history(fresh), nil, []int64{7, 13})
	for id, seq := range map[string]int64{"c7": 7, "c11": 11} {
		var ack protocol.SendAck
		v, err := e.rdb.Get(ctx, dedupe.Keys{Prefix: e.keys.Prefix}.Key(1, id)).Result()
		if err != nil || json.Unmarshal([]byte(v), &ack) != nil || ack.Seq != seq || ack.ClientMsgID != id {
			t.Fatalf("dedupe %s: %q %v, want the ack of seq %d", id, v, err, seq)
		}
	}
	for name, want := range map[string]float64{
		"delivery_events_published_total": 5,
		"delivery_duplicates_total":       2,
		"delivery_stale_retries_total":    1,
		"delivery_dead_letters_total":     1,
	} {
		if got := r.counter(t, name); got != want {
			t.Errorf("%s = %v, want %v", name, got, want)
		}
	}
}
