package adapters

import (
	"context"
	"log/slog"
	"sync"
	"time"

	goredis "github.com/redis/go-redis/v9"
)

// maxAckBatch bounds the acks one pipeline records.
const maxAckBatch = 256

// ackRecorder records the acks of sends made with a clientMsgId in Redis,
// off the send path: the ack goes to the client without waiting for Redis,
// and one pipeline carries every ack queued meanwhile, instead of a round
// trip per send. Until its ack is recorded the clientMsgId holds the
// pending marker, so a retry in that window waits for the ack
// (claimClientMsgID); if the gateway dies first, the delivery worker
// records the ack (redis.FillDedupe).
type ackRecorder struct {
	rdb goredis.Cmdable
	ttl time.Duration
	log *slog.Logger

	mu     sync.RWMutex // guards closed against sends on a closed in
	closed bool
	in     chan ackRecord
	done   chan struct{}
}

type ackRecord struct {
	key string
	ack []byte
}

func newAckRecorder(rdb goredis.Cmdable, ttl time.Duration, log *slog.Logger) *ackRecorder {
	return &ackRecorder{rdb: rdb, ttl: ttl, log: log, in: make(chan ackRecord, 4*maxAckBatch), done: make(chan struct{})}
}

// record queues ack as the answer to the dedupe key. When the queue is
// full (Redis slow) or the recorder closed, it writes the ack itself
// rather than drop it.
func (r *ackRecorder) record(ctx context.Context, key string, ack []byte) {
	r.mu.RLock()
	if !r.closed {
		select {
		case r.in <- ackRecord{key: key, ack: ack}:
			r.mu.RUnlock()
			return
		default:
		}
	}
	r.mu.RUnlock()
	if err := r.rdb.Set(context.WithoutCancel(ctx), key, ack, r.ttl).Err(); err != nil {
		r.log.WarnContext(ctx, "record ack in redis", "err", err)
	}
}

// run writes queued acks until close; each batch is what was queued when
// the previous one was written.
func (r *ackRecorder) run() {
	defer close(r.done)
	batch := make([]ackRecord, 0, maxAckBatch)
	for rec := range r.in {
		batch = append(batch[:0], rec)
	collect:
		for len(batch) < maxAckBatch {
			select {
			case rec, ok := <-r.in:
				if !ok {
					break collect
				}
				batch = append(batch, rec)
			default:
				break collect
			}
		}
		r.write(batch)
	}
}

// write records a batch with one pipeline. A failure only costs the
// retries of these clientMsgIds the wait for the delivery worker's copy.
func (r *ackRecorder) write(batch []ackRecord) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	pipe := r.rdb.Pipeline()
	for _, rec := range batch {
		pipe.Set(ctx, rec.key, rec.ack, r.ttl)
	}
	if _, err := pipe.Exec(ctx); err != nil {
		r.log.Warn("record acks in redis", "acks", len(batch), "err", err)
	}
}

// close stops queueing and returns once the queued acks are written.
func (r *ackRecorder) close() {
	r.mu.Lock()
	if !r.closed {
		r.closed = true
		close(r.in)
	}
	r.mu.Unlock()
	<-r.done
}
