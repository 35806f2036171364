package delivery

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"time"

	"github.com/IBM/sarama"
	"github.com/hashicorp/golang-lru/v2/simplelru"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
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

// ConsumeClaim publishes the partition's records one at a time, in offset
// order, marking each offset only after its publication succeeded.
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
	for {
		select {
		case msg, ok := <-claim.Messages():
			if !ok {
				return nil
			}
			s.lag.Seen(p, msg.Offset)
			if err := w.handle(ctx, msg); err != nil {
				// Only ctx ends handle without success: the session is
				// over and the record stays unmarked, to be redelivered.
				return nil
			}
			sess.MarkMessage(msg, "")
			s.lag.Done(p, msg.Offset+1)
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
	s := w.s
	headers := kafka.ConsumerHeaders(msg.Headers)
	ctx = s.tel.Propagator.Extract(ctx, kafka.HeaderCarrier{Headers: &headers})
	e, err := events.Unmarshal(msg.Value)
	if err != nil {
		return w.deadLetter(ctx, msg, err)
	}
	ctx, span := s.tel.Tracer.Start(ctx, "delivery.publish", trace.WithSpanKind(trace.SpanKindConsumer),
		trace.WithAttributes(
			attribute.Int64("room.id", e.RoomID), attribute.Int64("room.seq", msg.Offset),
			attribute.String("event.type", string(e.Type)), attribute.Int64("messaging.kafka.partition", int64(msg.Partition)),
		))
	defer span.End()
	// Receivers continue this trace from the publication.
	tc := make(map[string]string, 2)
	s.tel.Propagator.Inject(ctx, propagation.MapCarrier(tc))

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
			res, current, err = redis.Publish(ctx, s.rdb, s.keys, e.RoomID, seq, prev, payload, s.cfg.HistoryCap)
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
			if err := s.fillDedupe(ctx, e, seq); err != nil {
				span.SetStatus(codes.Error, err.Error())
				return err
			}
		}
		switch res {
		case redis.Published:
			w.cache.Add(e.RoomID, seq)
			s.m.published.WithLabelValues(string(e.Type)).Inc()
			if !e.At.IsZero() {
				s.m.age.Observe(time.Since(e.At).Seconds())
			}
			return nil
		case redis.Duplicate:
			// The room is already past seq; its actual seq is unknown here.
			w.cache.Remove(e.RoomID)
			s.m.duplicates.Inc()
			span.SetAttributes(attribute.Bool("delivery.duplicate", true))
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

// fillDedupe records the ack of a message sent with a clientMsgId, unless its
// gateway already did: a gateway that died between Kafka's ack and writing
// the ack leaves only a pending marker, and the sender's retry must get this
// message's ack rather than produce a second one.
func (s *Service) fillDedupe(ctx context.Context, e *events.Event, seq int64) error {
	if e.Type != events.MessageCreated || e.ClientMsgID == "" {
		return nil
	}
	ack, err := json.Marshal(protocol.SendAck{ID: e.MessageID, RoomID: strconv.FormatInt(e.RoomID, 10), Seq: seq, ClientMsgID: e.ClientMsgID, CreatedAt: e.At})
	if err != nil {
		return fmt.Errorf("delivery: ack: %w", err)
	}
	return s.retry(ctx, "fill dedupe", func() error {
		err := redis.FillDedupe(ctx, s.rdb, s.keys, e.UserID, e.ClientMsgID, ack, s.cfg.DedupeTTL)
		if err != nil {
			s.m.redisErrors.Inc()
		}
		return err
	})
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
