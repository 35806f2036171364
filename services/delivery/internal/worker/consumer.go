package worker

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/IBM/sarama"
	"github.com/hashicorp/golang-lru/v2/simplelru"
	goredis "github.com/redis/go-redis/v9"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"
	"go.opentelemetry.io/otel/trace"

	"relay/pkg/events"
	"relay/pkg/kafka"
	"relay/pkg/protocol"
	"relay/pkg/redis"
)

// handler is the sarama consumer-group handler; sarama runs ConsumeClaim
// in one goroutine per claimed partition.
type handler struct{ s *Service }

var _ sarama.ConsumerGroupHandler = (*handler)(nil)

// Setup logs the partitions this member got.
func (h *handler) Setup(sess sarama.ConsumerGroupSession) error {
	h.s.log.Info("partitions assigned", "claims", sess.Claims(), "generation", sess.GenerationID())
	return nil
}

// Cleanup runs after every ConsumeClaim returned.
func (h *handler) Cleanup(sarama.ConsumerGroupSession) error { return nil }

// ConsumeClaim publishes the partition's records in batches, in offset
// order, marking a batch's offsets only after all of it was published.
func (h *handler) ConsumeClaim(sess sarama.ConsumerGroupSession, claim sarama.ConsumerGroupClaim) error {
	s := h.s
	// The cache is per claim: rooms live in one partition, so no other
	// goroutine of ours writes them, and a revoked partition's entries go
	// with its claim (another instance may publish them meanwhile).
	cache, err := simplelru.NewLRU[int64, int64](s.cfg.SeqCacheRooms, nil)
	if err != nil {
		return err
	}
	p := claim.Partition()
	s.lag.Claimed(claim)
	defer s.lag.Released(p)
	w := &partitionWorker{s: s, cache: cache}
	ctx := sess.Context()
	batch := make([]*sarama.ConsumerMessage, 0, s.cfg.Batch)
	for {
		select {
		case msg, ok := <-claim.Messages():
			if !ok {
				return nil
			}
			s.lag.Seen(p, msg.Offset)
			var open bool
			batch, open = w.collect(append(batch[:0], msg), claim.Messages())
			if err := w.publish(ctx, batch); err != nil {
				// Only ctx ends publish without success: the session is
				// over and the records stay unmarked, to be redelivered.
				return nil
			}
			// Marking the last record marks the batch: a partition's
			// committed offset is the next one to read.
			last := batch[len(batch)-1]
			sess.MarkMessage(last, "")
			s.lag.Done(p, last.Offset+1)
			if !open {
				return nil
			}
		case <-ctx.Done():
			return nil
		}
	}
}

// partitionWorker publishes one partition's records.
type partitionWorker struct {
	s *Service
	// cache maps room id to the last seq this worker published or read.
	cache *simplelru.LRU[int64, int64]
}

// handle publishes msg, or dead-letters it when it cannot be decoded. It
// retries failed Redis and Kafka calls until they succeed and returns an
// error only when ctx ends first.
func (w *partitionWorker) handle(ctx context.Context, msg *sarama.ConsumerMessage) error {
	e, err := events.Unmarshal(msg.Value)
	if err != nil {
		return w.deadLetter(w.traced(ctx, msg), msg, err)
	}
	s := w.s
	ctx, span, tc := w.startSpan(ctx, msg, e)
	defer span.End()

	seq := msg.Offset
	prev, err := w.lastSeq(ctx, e.RoomID)
	if err != nil {
		span.SetStatus(codes.Error, err.Error())
		return err
	}
	// Stale means another writer moved the room's seq (a previous owner of
	// the partition, or Redis lost it): render again against what is there.
	// Each round either publishes, detects a duplicate, or learns a newer
	// seq, so it ends.
	for {
		payload, err := renderPublication(e, seq, prev, tc)
		if err != nil {
			return w.deadLetter(ctx, msg, err)
		}
		var (
			res     redis.PublishResult
			current *int64
		)
		err = s.retry(ctx, "publish", func() error {
			start := time.Now()
			var err error
			res, current, err = redis.Publish(ctx, s.rdb, s.keys, e.RoomID, seq, prev, payload, s.cfg.HistoryCap, redactionOf(e)...)
			if err != nil {
				s.m.redisErrors.Inc()
				return err
			}
			s.m.publish.Observe(time.Since(start).Seconds())
			return nil
		})
		if err != nil {
			span.SetStatus(codes.Error, err.Error())
			return err
		}
		if res != redis.Stale {
			if err := w.fillDedupe(ctx, e, seq); err != nil {
				span.SetStatus(codes.Error, err.Error())
				return err
			}
		}
		switch res {
		case redis.Published:
			w.published(e, seq)
			return nil
		case redis.Duplicate:
			w.duplicate(e, span)
			return nil
		case redis.Stale:
			s.m.staleRetry.Inc()
			prev = current
			if current == nil {
				w.cache.Remove(e.RoomID)
			} else {
				w.cache.Add(e.RoomID, *current)
			}
		}
	}
}

// redactionOf is what an edit or delete changes in the room's recent
// history (redis.Redaction), recorded with its publication so a replay
// never shows a deleted message's content or an edited one's old text.
func redactionOf(e *events.Event) []redis.Redaction {
	switch e.Type {
	case events.MessageDeleted:
		return []redis.Redaction{{MessageID: e.MessageID, Deleted: true}}
	case events.MessageEdited:
		return []redis.Redaction{{MessageID: e.MessageID, Content: e.Content}}
	}
	return nil
}

// traced continues the producer's trace carried in msg's headers.
func (w *partitionWorker) traced(ctx context.Context, msg *sarama.ConsumerMessage) context.Context {
	return kafka.RecordContext(ctx, w.s.tel.Propagator, msg)
}

// recordSpans are the spans of publishing one record: the consumer's
// process span (a child of the record's producer span) and the Redis
// publish under it, whose context the publication carries to the gateways.
type recordSpans struct{ process, publish trace.Span }

// SetAttributes sets attributes on the process span.
func (r recordSpans) SetAttributes(kv ...attribute.KeyValue) { r.process.SetAttributes(kv...) }

// SetStatus marks both spans failed.
func (r recordSpans) SetStatus(c codes.Code, d string) {
	r.publish.SetStatus(c, d)
	r.process.SetStatus(c, d)
}

// End ends both spans.
func (r recordSpans) End() {
	r.publish.End()
	r.process.End()
}

// startSpan starts the spans of publishing e and returns the trace context
// receivers continue it from (carried in the publication).
func (w *partitionWorker) startSpan(ctx context.Context, msg *sarama.ConsumerMessage, e *events.Event) (context.Context, recordSpans, map[string]string) {
	s := w.s
	ctx, process := kafka.StartProcess(ctx, s.tel.Tracer, s.tel.Propagator, msg, s.cfg.Consumer.Group, "process",
		trace.WithAttributes(attribute.Int64("relay.room.id", e.RoomID), attribute.Int64("relay.room.seq", msg.Offset),
			attribute.String("relay.event.type", string(e.Type)), semconv.MessagingMessageID(e.MessageID)))
	channel := s.keys.RoomChannel(e.RoomID)
	// The publish script appends to the history and publishes on the
	// room's channel: a Redis client span named for what it does.
	ctx, publish := s.tel.Tracer.Start(ctx, "publish "+channel, trace.WithSpanKind(trace.SpanKindClient),
		trace.WithAttributes(semconv.DBSystemNameRedis, semconv.DBOperationName("EVALSHA"),
			semconv.DBQuerySummary("publish "+channel), semconv.DBStoredProcedureName("publish")))
	tc := make(map[string]string, 2)
	s.tel.Propagator.Inject(ctx, propagation.MapCarrier(tc))
	return ctx, recordSpans{process: process, publish: publish}, tc
}

// published records that e went out at seq.
func (w *partitionWorker) published(e *events.Event, seq int64) {
	w.cache.Add(e.RoomID, seq)
	w.s.m.published.WithLabelValues(string(e.Type)).Inc()
	if !e.At.IsZero() {
		w.s.m.age.Observe(time.Since(e.At).Seconds())
	}
}

// duplicate records that e's seq was published before (a redelivery): the
// room is already past it, its actual seq unknown here.
func (w *partitionWorker) duplicate(e *events.Event, span recordSpans) {
	w.cache.Remove(e.RoomID)
	w.s.m.duplicates.Inc()
	span.SetAttributes(attribute.Bool("relay.delivery.duplicate", true))
}

// dedupeAck is the ack a sender's retry of e's clientMsgId must get, or
// nil when e is not a message sent with one.
func dedupeAck(e *events.Event, seq int64) ([]byte, error) {
	if e.Type != events.MessageCreated || e.ClientMsgID == "" {
		return nil, nil
	}
	ack, err := json.Marshal(protocol.SendAck{ID: e.MessageID, RoomID: strconv.FormatInt(e.RoomID, 10), Seq: seq, ClientMsgID: e.ClientMsgID, CreatedAt: e.At})
	if err != nil {
		return nil, fmt.Errorf("delivery: ack: %w", err)
	}
	return ack, nil
}

// fillDedupe records the ack of a message sent with a clientMsgId, unless its
// gateway already did: a gateway that died between Kafka's ack and writing
// the ack leaves only a pending marker, and the sender's retry must get this
// message's ack rather than produce a second one.
func (w *partitionWorker) fillDedupe(ctx context.Context, e *events.Event, seq int64) error {
	s := w.s
	ack, err := dedupeAck(e, seq)
	if err != nil || ack == nil {
		return err
	}
	return s.retry(ctx, "fill dedupe", func() error {
		err := s.dedupe.Fill(ctx, s.dedupe.Key(e.UserID, e.ClientMsgID), ack)
		if err != nil {
			s.m.redisErrors.Inc()
		}
		return err
	})
}

// collect adds the records already waiting behind the first, up to the
// batch size, without waiting for more; false means the claim ended.
func (w *partitionWorker) collect(batch []*sarama.ConsumerMessage, in <-chan *sarama.ConsumerMessage) ([]*sarama.ConsumerMessage, bool) {
	for len(batch) < w.s.cfg.Batch {
		select {
		case m, ok := <-in:
			if !ok {
				return batch, false
			}
			batch = append(batch, m)
		default:
			return batch, true
		}
	}
	return batch, true
}

// pending is one record of a batch on its way through the pipeline.
type pending struct {
	msg  *sarama.ConsumerMessage
	e    *events.Event // nil: handled alone (undecodable or unrenderable)
	span recordSpans
	pub  *goredis.Cmd
	fill *goredis.Cmd
}

// publish publishes a partition's records in offset order. A batch (of one
// record too) goes to Redis as one pipeline: each record's publication rendered against the
// previous record of its room in the batch, plus its dedupe fill. The
// script checks every publication against the room's actual seq, so one
// that went out continues its room's chain whatever happened to the
// records before it, and one found a duplicate is a no-op: both are done.
// What is left (a stale previous seq, a failed command, a record that
// cannot be decoded) is handled one by one, in order, as handle does alone;
// a record after a stale one in its room is stale too, so the room's order
// holds.
func (w *partitionWorker) publish(ctx context.Context, msgs []*sarama.ConsumerMessage) error {
	s := w.s
	batch := make([]pending, len(msgs))
	// last is each room's seq as the batch leaves it when all goes well.
	last := make(map[int64]*int64)
	pipe := s.rdb.Pipeline()
	for i, msg := range msgs {
		b := &batch[i]
		b.msg = msg
		e, err := events.Unmarshal(msg.Value)
		if err != nil {
			continue
		}
		prev, known := last[e.RoomID]
		if !known {
			if prev, err = w.lastSeq(ctx, e.RoomID); err != nil {
				endAll(batch)
				return err
			}
		}
		pctx, span, tc := w.startSpan(ctx, msg, e)
		seq := msg.Offset
		payload, err := renderPublication(e, seq, prev, tc)
		if err != nil {
			span.End()
			continue
		}
		ack, err := dedupeAck(e, seq)
		if err != nil {
			span.End()
			continue
		}
		b.e, b.span = e, span
		last[e.RoomID] = &seq
		b.pub = redis.QueuePublish(pctx, pipe, s.keys, e.RoomID, seq, prev, payload, s.cfg.HistoryCap, redactionOf(e)...)
		if ack != nil {
			b.fill = s.dedupe.QueueFill(pctx, pipe, s.dedupe.Key(e.UserID, e.ClientMsgID), ack)
		}
	}
	start := time.Now()
	if _, err := pipe.Exec(ctx); err != nil {
		// Each failed command is handled again below.
		s.m.redisErrors.Inc()
		if ctx.Err() != nil {
			endAll(batch)
			return ctx.Err()
		}
		if isNoScript(err) {
			s.loadScripts(ctx)
		}
	} else {
		s.m.publish.Observe(time.Since(start).Seconds())
	}
	for i := range batch {
		b := &batch[i]
		if b.e != nil {
			done := w.settled(b)
			b.span.End()
			if done {
				continue
			}
		}
		if err := w.handle(ctx, b.msg); err != nil {
			endAll(batch[i+1:])
			return err
		}
	}
	return nil
}

// settled accounts for a pipelined record that needs nothing more: its
// publication went out or was a duplicate, and its dedupe fill succeeded.
func (w *partitionWorker) settled(b *pending) bool {
	res, _, err := redis.PublishReply(b.pub)
	if err != nil || res == redis.Stale || (b.fill != nil && b.fill.Err() != nil) {
		return false
	}
	if res == redis.Published {
		w.published(b.e, b.msg.Offset)
		return true
	}
	w.duplicate(b.e, b.span)
	return true
}

// endAll ends the spans of records not handled yet.
func endAll(batch []pending) {
	for i := range batch {
		if batch[i].e != nil && batch[i].span.process != nil {
			batch[i].span.End()
		}
	}
}

func isNoScript(err error) bool {
	return err != nil && strings.HasPrefix(err.Error(), "NOSCRIPT")
}

// lastSeq returns the room's last published seq from the cache, or from
// Redis on a miss; nil means the room has none (or Redis lost it).
func (w *partitionWorker) lastSeq(ctx context.Context, roomID int64) (*int64, error) {
	if v, ok := w.cache.Get(roomID); ok {
		return &v, nil
	}
	var last *int64
	err := w.s.retry(ctx, "read last seq", func() error {
		var err error
		last, err = redis.LastSeq(ctx, w.s.rdb, w.s.keys, roomID)
		if err != nil {
			w.s.m.redisErrors.Inc()
		}
		return err
	})
	if err != nil {
		return nil, err
	}
	if last != nil {
		w.cache.Add(roomID, *last)
	}
	return last, nil
}

// deadLetter forwards an unusable record, retrying until Kafka takes it.
func (w *partitionWorker) deadLetter(ctx context.Context, msg *sarama.ConsumerMessage, cause error) error {
	w.s.log.WarnContext(ctx, "record sent to dead-letter topic", "err", cause,
		"partition", msg.Partition, "offset", msg.Offset, "dlq", w.s.dlq.Topic())
	err := w.s.retry(ctx, "dead-letter", func() error { return w.s.dlq.Send(ctx, msg, cause) })
	if err != nil {
		return err
	}
	w.s.m.deadLetters.Inc()
	return nil
}
