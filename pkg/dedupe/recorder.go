package dedupe

import (
	"context"
	"log/slog"
	"sync"
	"time"
)

// maxRecordBatch bounds the acks one pipeline records.
const maxRecordBatch = 256

// Recorder records the acks of sends made with a clientMsgId off the send
// path: the ack goes to the client without waiting for Redis, and one
// pipeline carries every ack queued meanwhile instead of a round trip per
// send. Until its ack is recorded the key holds Pending, so a retry in that
// window waits for the ack (Claim); if the gateway dies first, the delivery
// worker fills it (Store.Fill).
type Recorder struct {
	s   *Store
	log *slog.Logger

	mu     sync.RWMutex // guards closed against sends on a closed in
	closed bool
	in     chan record
	done   chan struct{}
}

type record struct {
	key string
	ack []byte
}

// NewRecorder returns a Recorder writing through s; Run writes until Close.
func NewRecorder(s *Store, log *slog.Logger) *Recorder {
	return &Recorder{s: s, log: log, in: make(chan record, 4*maxRecordBatch), done: make(chan struct{})}
}

// Record queues ack as the answer to key. When the queue is full (Redis
// slow) or the recorder closed, it writes the ack itself rather than drop
// it.
func (r *Recorder) Record(ctx context.Context, key string, ack []byte) {
	r.mu.RLock()
	if !r.closed {
		select {
		case r.in <- record{key: key, ack: ack}:
			r.mu.RUnlock()
			return
		default:
		}
	}
	r.mu.RUnlock()
	if err := r.s.Record(context.WithoutCancel(ctx), key, ack); err != nil {
		r.log.WarnContext(ctx, "record ack in redis", "err", err)
	}
}

// Run writes queued acks until Close; each batch is what was queued while
// the previous one was written.
func (r *Recorder) Run() {
	defer close(r.done)
	batch := make([]record, 0, maxRecordBatch)
	for rec := range r.in {
		batch = append(batch[:0], rec)
	collect:
		for len(batch) < maxRecordBatch {
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
// retries of these clientMsgIds the wait for the delivery worker's fill.
func (r *Recorder) write(batch []record) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	pipe := r.s.rdb.Pipeline()
	for _, rec := range batch {
		r.s.QueueRecord(ctx, pipe, rec.key, rec.ack)
	}
	if _, err := pipe.Exec(ctx); err != nil {
		r.log.Warn("record acks in redis", "acks", len(batch), "err", err)
	}
}

// Close stops queueing and returns once the queued acks are written (Run
// has returned). Calling it again is harmless.
func (r *Recorder) Close() {
	r.mu.Lock()
	if !r.closed {
		r.closed = true
		close(r.in)
	}
	r.mu.Unlock()
	<-r.done
}
