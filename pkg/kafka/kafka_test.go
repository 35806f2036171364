package kafka_test

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/IBM/sarama"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"

	"relay/pkg/events"
	"relay/pkg/kafka"
	"relay/pkg/testenv"
)

// newProducer connects a producer (W3C trace context) to a topic of its
// own with 3 partitions, closed when the test ends.
func newProducer(t *testing.T) (p *kafka.Producer, brokers []string, topic string) {
	t.Helper()
	brokers, topic = testenv.Kafka(t, 3)
	p, err := kafka.NewProducer(brokers, topic, "test", propagation.TraceContext{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = p.Close() })
	return p, brokers, topic
}

func TestPublishReturnsOffsetsAndCarriesTrace(t *testing.T) {
	t.Parallel()
	p, brokers, topic := newProducer(t)
	prop := propagation.TraceContext{}

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

// A batch of one room's records is stored in order, each with its own
// trace context; an invalid record refuses the batch before anything is
// sent.
func TestPublishBatchKeepsOrderAndTraces(t *testing.T) {
	t.Parallel()
	p, brokers, topic := newProducer(t)
	prop := propagation.TraceContext{}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()

	const n = 50
	records := make([]kafka.Record, n)
	for i := range records {
		records[i] = kafka.Record{
			Event: &events.Event{Type: events.MemberJoined, RoomID: 88, UserID: int64(i + 1), At: time.Now()},
			Trace: map[string]string{"traceparent": fmt.Sprintf("00-0102030405060708090a0b0c0d0e0f10-%016x-01", i+1)},
		}
	}
	bad := append(slices.Clone(records[:2]), kafka.Record{Event: &events.Event{Type: "bogus", RoomID: 88, UserID: 1, At: time.Now()}})
	if stored, err := p.PublishBatch(ctx, bad); err == nil || stored != 0 {
		t.Fatalf("batch with an invalid event: stored %d, err %v", stored, err)
	}
	if stored, err := p.PublishBatch(ctx, records); err != nil || stored != n {
		t.Fatalf("stored %d of %d: %v", stored, n, err)
	}

	consumer, err := sarama.NewConsumer(brokers, kafka.ConsumerConfig("test"))
	if err != nil {
		t.Fatal(err)
	}
	defer consumer.Close()
	part := int32(-1)
	parts, err := consumer.Partitions(topic)
	if err != nil {
		t.Fatal(err)
	}
	for _, pt := range parts {
		pc, err := consumer.ConsumePartition(topic, pt, sarama.OffsetOldest)
		if err != nil {
			t.Fatal(err)
		}
		defer pc.Close()
		if pc.HighWaterMarkOffset() > 0 {
			part = pt
			for i := range n {
				select {
				case m := <-pc.Messages():
					e, err := events.Unmarshal(m.Value)
					if err != nil || e.UserID != int64(i+1) || m.Offset != int64(i) {
						t.Fatalf("record %d: offset %d value %s: %v", i, m.Offset, m.Value, err)
					}
					hs := kafka.ConsumerHeaders(m.Headers)
					sc := trace.SpanContextFromContext(prop.Extract(context.Background(), kafka.HeaderCarrier{Headers: &hs}))
					if want := fmt.Sprintf("%016x", i+1); sc.SpanID().String() != want {
						t.Fatalf("record %d: span %s, want %s", i, sc.SpanID(), want)
					}
				case <-ctx.Done():
					t.Fatalf("record %d not consumed", i)
				}
			}
		}
	}
	if part < 0 {
		t.Fatal("no partition holds the batch")
	}
}
