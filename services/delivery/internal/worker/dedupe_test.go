package worker_test

import (
	"context"
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"relay/pkg/dedupe"
	"relay/pkg/protocol"
)

// A gateway that died between Kafka's ack and recording it leaves only the
// pending marker: the worker records the ack, so the sender's retry gets
// the first ack back. An ack the gateway did record is never replaced.
func TestDeliveryRecordsAcksGatewaysCouldNot(t *testing.T) {
	t.Parallel()
	e := newEnv(t, 2)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	pending := dedupe.Keys{Prefix: e.keys.Prefix}.Key(5, "lost-ack")
	recorded := dedupe.Keys{Prefix: e.keys.Prefix}.Key(5, "recorded")
	if err := e.rdb.Set(ctx, pending, dedupe.Pending, time.Minute).Err(); err != nil {
		t.Fatal(err)
	}
	if err := e.rdb.Set(ctx, recorded, `{"id":"first"}`, time.Minute).Err(); err != nil {
		t.Fatal(err)
	}
	ch := e.subscribe(t, 41)
	lost := message(41, 5, "the gateway died before recording this ack")
	lost.ClientMsgID = "lost-ack"
	kept := message(41, 5, "this one was recorded")
	kept.ClientMsgID = "recorded"
	seq := e.publish(t, ctx, lost)
	e.publish(t, ctx, kept)
	start(t, e.config())
	receive(t, ch, 2)

	// The fill may land just after the publication (a fill that failed in
	// the pipeline is retried record by record), so wait for it.
	var ack protocol.SendAck
	eventually(t, "the pending marker replaced by the ack", func() (bool, string) {
		v, err := e.rdb.Get(ctx, pending).Result()
		return err == nil && json.Unmarshal([]byte(v), &ack) == nil, fmt.Sprintf("%q %v", v, err)
	})
	if ack.ID != lost.MessageID || ack.Seq != seq || ack.ClientMsgID != "lost-ack" || ack.RoomID != "41" || !ack.CreatedAt.Equal(lost.At) {
		t.Fatalf("ack %+v, want id %s seq %d", ack, lost.MessageID, seq)
	}
	if ttl := e.rdb.PTTL(ctx, pending).Val(); ttl < time.Hour {
		t.Fatalf("ack kept only %v", ttl)
	}
	if v := e.rdb.Get(ctx, recorded).Val(); v != `{"id":"first"}` {
		t.Fatalf("a recorded ack was replaced: %s", v)
	}
}
