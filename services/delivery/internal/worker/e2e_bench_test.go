package worker_test

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"relay/pkg/protocol"
)

// BenchmarkEndToEnd measures send → delivery: from the producer's call
// (kafka.Producer.Publish, acks=all) through the topic and the worker to a
// Redis subscriber, on a 12-partition topic with 100 rooms. "rate=N" paces
// sends at N events/s; "max" sends from 32 goroutines as fast as they can.
// It reports events/s, the p50/p99/max send → delivery latency in ms, and
// the p50/p99 of the part after the broker's ack (ack → delivery), which is
// what the delivery worker adds; the rest is the acks=all produce.
//
//	go test ./delivery/ -run '^$' -bench EndToEnd -benchtime 5000x
func BenchmarkEndToEnd(b *testing.B) {
	for _, rate := range []int{1000, 2000, 0} {
		name := fmt.Sprintf("rate=%d", rate)
		if rate == 0 {
			name = "max"
		}
		b.Run(name, func(b *testing.B) { benchEndToEnd(b, rate) })
	}
}

func benchEndToEnd(b *testing.B, rate int) {
	const rooms = 100
	e := newEnv(b, 12)
	ctx := context.Background()
	// Shard channels have no pattern subscription: each room's by name.
	chans := make([]string, rooms)
	for r := range rooms {
		chans[r] = e.keys.RoomChannel(int64(r + 1))
	}
	sub := e.rdb.SSubscribe(ctx, chans...)
	defer sub.Close()
	for range chans {
		if _, err := sub.Receive(ctx); err != nil {
			b.Fatal(err)
		}
	}
	ch := sub.Channel()
	start(b, e.config())

	// Warm up: one event per room, so the group has joined and every
	// room's seq is cached.
	for r := range rooms {
		e.publish(b, ctx, message(int64(r+1), 1, "warm"))
	}
	for range rooms {
		select {
		case <-ch:
		case <-time.After(60 * time.Second):
			b.Fatal("warm-up not delivered")
		}
	}

	latencies := make([]time.Duration, 0, b.N)
	received := make([]time.Time, b.N)
	acked := make([]time.Time, b.N)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for len(latencies) < b.N {
			m, ok := <-ch
			if !ok {
				return
			}
			now := time.Now()
			p, err := protocol.DecodePublication([]byte(m.Payload))
			if err != nil {
				b.Error(err)
				return
			}
			var f protocol.Frame
			var msg protocol.Message
			if json.Unmarshal(p.Frame, &f) != nil || json.Unmarshal(f.Data, &msg) != nil {
				b.Error("bad frame")
				return
			}
			latencies = append(latencies, now.Sub(msg.CreatedAt))
			var i int
			if _, err := fmt.Sscan(msg.Content, &i); err != nil || i < 0 || i >= b.N {
				b.Errorf("unexpected content %q", msg.Content)
				return
			}
			received[i] = now
		}
	}()

	b.ResetTimer()
	began := time.Now()
	sem := make(chan struct{}, 64)
	var prodMu sync.Mutex
	var prodLat []time.Duration
	var wg sync.WaitGroup
	send := func(i int) {
		defer wg.Done()
		defer func() { <-sem }()
		ev := message(int64(i%rooms+1), 1, fmt.Sprint(i))
		ev.At = time.Now().UTC()
		if _, _, err := e.producer.Publish(ctx, ev); err != nil {
			b.Error(err)
		}
		acked[i] = time.Now() // each index is written by one goroutine only
		prodMu.Lock()
		prodLat = append(prodLat, acked[i].Sub(ev.At))
		prodMu.Unlock()
	}
	if rate > 0 {
		interval := time.Second / time.Duration(rate)
		for i := range b.N {
			time.Sleep(time.Until(began.Add(time.Duration(i) * interval)))
			sem <- struct{}{}
			wg.Add(1)
			go send(i)
		}
	} else {
		for i := range b.N {
			sem <- struct{}{}
			wg.Add(1)
			go send(i)
		}
	}
	wg.Wait()
	select {
	case <-done:
	case <-time.After(60 * time.Second):
		b.Fatalf("delivered %d of %d", len(latencies), b.N)
	}
	elapsed := time.Since(began)
	b.StopTimer()
	slices.Sort(latencies)
	q := func(p float64) float64 {
		return float64(latencies[min(int(p*float64(len(latencies))), len(latencies)-1)].Microseconds()) / 1000
	}
	b.ReportMetric(float64(b.N)/elapsed.Seconds(), "events/s")
	b.ReportMetric(q(0.50), "p50_ms")
	b.ReportMetric(q(0.99), "p99_ms")
	b.ReportMetric(q(1), "max_ms")
	afterAck := make([]time.Duration, b.N)
	for i := range afterAck {
		afterAck[i] = max(received[i].Sub(acked[i]), 0)
	}
	slices.Sort(afterAck)
	b.ReportMetric(float64(afterAck[b.N/2].Microseconds())/1000, "ack_to_delivery_p50_ms")
	b.ReportMetric(float64(afterAck[b.N*99/100].Microseconds())/1000, "ack_to_delivery_p99_ms")
	slices.Sort(prodLat)
	b.ReportMetric(float64(prodLat[len(prodLat)/2].Microseconds())/1000, "produce_p50_ms")
	b.ReportMetric(float64(prodLat[len(prodLat)*99/100].Microseconds())/1000, "produce_p99_ms")
}
