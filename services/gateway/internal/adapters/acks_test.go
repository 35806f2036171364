package adapters

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"testing"
	"time"

	"relay/pkg/testenv"
)

// Every ack queued before close is in Redis once close returns, with its
// TTL, however the sends interleave; one recorded after close is written
// on the caller's path instead of being lost.
func TestAckRecorderWritesEveryAck(t *testing.T) {
	t.Parallel()
	rdb, prefix := testenv.Redis(t)
	r := newAckRecorder(rdb, time.Hour, slog.New(slog.NewTextHandler(io.Discard, nil)))
	go r.run()
	ctx := context.Background()
	const senders, each = 8, 200
	var wg sync.WaitGroup
	for g := range senders {
		wg.Go(func() {
			for i := range each {
				r.record(ctx, fmt.Sprintf("%sack:%d:%d", prefix, g, i), fmt.Appendf(nil, `{"n":%d}`, i))
			}
		})
	}
	wg.Wait()
	r.close()
	r.record(ctx, prefix+"late", []byte(`{"late":true}`))

	for g := range senders {
		for i := range each {
			key := fmt.Sprintf("%sack:%d:%d", prefix, g, i)
			if v, err := rdb.Get(ctx, key).Result(); err != nil || v != fmt.Sprintf(`{"n":%d}`, i) {
				t.Fatalf("%s = %q, %v", key, v, err)
			}
		}
	}
	if ttl := rdb.PTTL(ctx, fmt.Sprintf("%sack:0:0", prefix)).Val(); ttl < 59*time.Minute {
		t.Fatalf("ack kept only %v", ttl)
	}
	if v := rdb.Get(ctx, prefix+"late").Val(); v != `{"late":true}` {
		t.Fatalf("ack recorded after close: %q", v)
	}
}
