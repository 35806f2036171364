package kafka_test

import (
	"context"
	"testing"
	"time"

	"github.com/IBM/sarama"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"

	"relay/pkg/events"
	"relay/pkg/kafka"
	"relay/pkg/testenv"
)

func TestPublishReturnsOffsetsAndCarriesTrace(t *testing.T) {
	t.Parallel()
	brokers, topic := testenv.Kafka(t, 3)
	prop := propagation.TraceContext{}
	p, err := kafka.NewProducer(brokers, topic, "test", prop)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()

	tid, _ := trace.TraceIDFromHex("0102030405060708090a0b0c0d0e0f10")
	sid, _ := trace.SpanIDFromHex("0102030405060708")
	ctx := trace.ContextWithSpanContext(context.Background(), trace.NewSpanContext(trace.SpanContextConfig{TraceID: tid, SpanID: sid, TraceFlags: trace.FlagsSampled}))
	ctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()

	var parts []int32
	var seqs []int64
	for i := 0; i < 3; i++ {
		part, seq, err := p.Publish(ctx, &events.Event{Type: events.MemberJoined, RoomID: 77, UserID: int64(i + 1), At: time.Now()})
		if err != nil {
			t.Fatal(err)
		}
		parts, seqs = append(parts, part), append(seqs, seq)
	}
	// One room, one partition, strictly increasing seqs.
	if parts[0] != parts[1] || parts[1] != parts[2] || !(seqs[0] < seqs[1] && seqs[1] < seqs[2]) {
		t.Fatalf("partitions %v seqs %v", parts, seqs)
	}
	if _, _, err := p.Publish(ctx, &events.Event{Type: "bogus", RoomID: 1, UserID: 1, At: time.Now()}); err == nil {
		t.Fatal("invalid event produced")
	}

	consumer, err := sarama.NewConsumer(brokers, kafka.ConsumerConfig("test"))
	if err != nil {
		t.Fatal(err)
	}
	defer consumer.Close()
	pc, err := consumer.ConsumePartition(topic, parts[0], seqs[0])
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	select {
	case m := <-pc.Messages():
		hs := kafka.ConsumerHeaders(m.Headers)
		carrier := kafka.HeaderCarrier{Headers: &hs}
		got := trace.SpanContextFromContext(prop.Extract(context.Background(), carrier))
		if got.TraceID() != tid || string(m.Key) != "77" || carrier.Get(events.HeaderType) != string(events.MemberJoined) {
			t.Fatalf("record: key %q trace %v type %q", m.Key, got.TraceID(), carrier.Get(events.HeaderType))
		}
		e, err := events.Unmarshal(m.Value)
		if err != nil || e.UserID != 1 {
			t.Fatalf("value %s: %v", m.Value, err)
		}
	case <-ctx.Done():
		t.Fatal("record not consumed")
	}
}
