package kafka_test

import (
	"context"
	"slices"
	"sync"
	"testing"
	"time"

	"go.opentelemetry.io/otel/propagation"

	"relay/pkg/events"
	"relay/pkg/kafka"
	"relay/pkg/testenv"
)

// BenchmarkPublishAck measures send→ack of Producer.Publish the way the
// gateways produce in the chat scenario: b.N sends at 1,000/s, each on its
// own goroutine, spread over 100 rooms. It reports the p50 and p99 in ms;
// ns/op is just the pacing. Compare brokers with and without fsync, e.g.
//
//	go test -run '^$' -bench PublishAck -benchtime 5000x ./kafka
//	KAFKA_BROKERS=127.0.0.1:19093 go test -run '^$' -bench PublishAck -benchtime 5000x ./kafka
func BenchmarkPublishAck(b *testing.B) {
	brokers, topic := testenv.Kafka(b, 12)
	p, err := kafka.NewProducer(brokers, topic, "bench", propagation.TraceContext{})
	if err != nil {
		b.Fatal(err)
	}
	defer p.Close()
	ctx := context.Background()
	// Warm up: metadata and the producer id.
	if _, _, err := p.Publish(ctx, &events.Event{Type: events.MessageCreated, RoomID: 1, UserID: 1, MessageID: "00000000-0000-7000-8000-000000000000", MessageType: "text", Content: "warm", At: time.Now()}); err != nil {
		b.Fatal(err)
	}
	lat := make([]time.Duration, b.N)
	var wg sync.WaitGroup
	tick := time.NewTicker(time.Millisecond)
	defer tick.Stop()
	b.ResetTimer()
	for i := range b.N {
		<-tick.C
		wg.Add(1)
		go func() {
			defer wg.Done()
			start := time.Now()
			e := &events.Event{Type: events.MessageCreated, RoomID: int64(i%100 + 1), UserID: 1, MessageID: "00000000-0000-7000-8000-000000000001", MessageType: "text", Content: "0123456789012345678901234567890123456789012345678901234567890123456789012345678901234567890123456789", At: start}
			if _, _, err := p.Publish(ctx, e); err != nil {
				b.Error(err)
			}
			lat[i] = time.Since(start)
		}()
	}
	wg.Wait()
	b.StopTimer()
	slices.Sort(lat)
	b.ReportMetric(float64(lat[len(lat)/2])/1e6, "p50-ms")
	b.ReportMetric(float64(lat[len(lat)*99/100])/1e6, "p99-ms")
	b.ReportMetric(float64(lat[len(lat)-1])/1e6, "max-ms")
}
