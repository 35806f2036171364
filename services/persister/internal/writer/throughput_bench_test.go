package writer_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"

	"relay/pkg/events"
)

// BenchmarkPersisterCatchUp measures the whole write path: b.N
// message_created records (2 rooms, 12-partition topic) are produced first, then a persister with default batching
// starts and the clock runs until every record is persisted and its offset
// committed. It reports rows/s.
//
//	go test ./persister/ -run '^$' -bench CatchUp -benchtime 20000x
func BenchmarkPersisterCatchUp(b *testing.B) {
	e := newEnv(b, 12)
	ctx := context.Background()
	var wg sync.WaitGroup
	sem := make(chan struct{}, 64)
	for i := range b.N {
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			id := uuid.Must(uuid.NewV7()).String()
			ev := &events.Event{Type: events.MessageCreated, RoomID: e.rooms[i%2], UserID: e.alice, Username: "u",
				MessageID: id, Content: fmt.Sprint("message ", i), MessageType: "text", At: time.Now().UTC()}
			if _, _, err := e.producer.Publish(ctx, ev); err != nil {
				b.Error(err)
			}
		}()
	}
	wg.Wait()
	cfg := e.config(e.dbURL)
	cfg.FlushInterval, cfg.BatchSize = 0, 0 // defaults: 50 ms, 500
	b.ResetTimer()
	began := time.Now()
	start(b, cfg)
	eventually(b, "caught up", func() (bool, string) { return e.caughtUp(b, cfg.Group) })
	elapsed := time.Since(began)
	b.StopTimer()
	if n := e.count(b); n != int64(b.N) {
		b.Fatalf("%d rows, want %d", n, b.N)
	}
	b.ReportMetric(float64(b.N)/elapsed.Seconds(), "rows/s")
}
