package writer

import (
	"context"
	"time"

	"github.com/IBM/sarama"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"

	"relay/pkg/events"
	"relay/pkg/kafka"
	"relay/pkg/store"
)

// maxLinks bounds the links of a batch span (the SDK's default limit).
const maxLinks = 128

// item is one consumed record on its way to the database.
type item struct {
	sess sarama.ConsumerGroupSession
	msg  *sarama.ConsumerMessage
	// change is the record to write; its Event is nil for a record already
	// dead-lettered, which only needs its offset marked in turn.
	change store.Change
	// link is the span context the record's producer sent.
	link trace.SpanContext
}

// releaseReq asks the batcher to flush before a partition's claim ends, or
// to drop the partition's pending records when the flush fails (they stay
// unmarked, so the partition's next owner reads them again).
type releaseReq struct {
	sess      sarama.ConsumerGroupSession
	partition int32
	done      chan struct{}
}

// handler is the sarama consumer-group handler; sarama runs ConsumeClaim
// in one goroutine per claimed partition, and they all feed one batcher.
type handler struct {
	s           *Service
	batcherDone <-chan struct{}
}

var _ sarama.ConsumerGroupHandler = (*handler)(nil)

// Setup logs the partitions this member got.
func (h *handler) Setup(sess sarama.ConsumerGroupSession) error {
	h.s.log.Info("partitions assigned", "claims", sess.Claims(), "generation", sess.GenerationID())
	return nil
}

// Cleanup runs after every ConsumeClaim returned (each settled its own
// partition already).
func (h *handler) Cleanup(sarama.ConsumerGroupSession) error { return nil }

// ConsumeClaim decodes the partition's records in offset order and hands
// them to the batcher; when the claim ends it has the batcher settle the
// partition first.
func (h *handler) ConsumeClaim(sess sarama.ConsumerGroupSession, claim sarama.ConsumerGroupClaim) error {
	s := h.s
	p := claim.Partition()
	s.lag.Claimed(claim)
	defer s.lag.Released(p)
	defer h.settle(sess, p)
	ctx := sess.Context()
	for {
		select {
		case msg, ok := <-claim.Messages():
			if !ok {
				return nil
			}
			s.lag.Seen(p, msg.Offset)
			it, err := s.decode(ctx, sess, msg)
			if err != nil {
				return nil // ctx ended while dead-lettering; the record stays unmarked
			}
			select {
			case s.in <- it:
			case <-ctx.Done():
				return nil
			case <-h.batcherDone:
				return nil
			}
		case <-ctx.Done():
			return nil
		}
	}
}

// settle has the batcher flush (and mark) what is pending before the claim
// ends, so the offsets committed as the session ends are current.
func (h *handler) settle(sess sarama.ConsumerGroupSession, partition int32) {
	r := releaseReq{sess: sess, partition: partition, done: make(chan struct{})}
	select {
	case h.s.release <- r:
	case <-h.batcherDone:
		return
	}
	select {
	case <-r.done:
	case <-h.batcherDone:
	}
}

// decode turns a record into an item. A record that cannot be decoded or
// can never be written goes to the dead-letter topic first, so it does not
// stall its partition; decode fails only when ctx ends before that.
func (s *Service) decode(ctx context.Context, sess sarama.ConsumerGroupSession, msg *sarama.ConsumerMessage) (item, error) {
	headers := kafka.ConsumerHeaders(msg.Headers)
	link := trace.SpanContextFromContext(s.tel.Propagator.Extract(ctx, kafka.HeaderCarrier{Headers: &headers}))
	it := item{sess: sess, msg: msg, link: link}
	e, err := events.Unmarshal(msg.Value)
	if err == nil {
		err = store.ValidateChange(store.Change{Seq: msg.Offset, Event: e})
	}
	if err != nil {
		return it, s.deadLetter(ctx, msg, err)
	}
	it.change = store.Change{Seq: msg.Offset, Event: e, Raw: msg.Value}
	return it, nil
}

// deadLetter forwards an unusable record, retrying until Kafka takes it.
func (s *Service) deadLetter(ctx context.Context, msg *sarama.ConsumerMessage, cause error) error {
	s.log.WarnContext(ctx, "record sent to dead-letter topic", "err", cause,
		"partition", msg.Partition, "offset", msg.Offset, "dlq", s.dlq.Topic())
	if err := s.retry(ctx, "dead-letter", func() error { return s.dlq.Send(ctx, msg, cause) }); err != nil {
		return err
	}
	s.m.deadLetters.Inc()
	return nil
}

// batchLoop collects items from every claim and flushes them at BatchSize
// records or FlushInterval after the first, whichever comes first. One
// batch across partitions: the cost of a batch is mostly its commit, so
// fewer, fuller transactions write more rows per second than one per
// partition, and per-room order holds because each partition's records
// arrive in order and ApplyBatch keeps it.
func (s *Service) batchLoop(ctx context.Context) {
	var pending []item
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	defer timer.Stop()
	for {
		s.m.pending.Set(float64(len(pending)))
		select {
		case it := <-s.in:
			pending = append(pending, it)
			if len(pending) == 1 {
				timer.Reset(s.cfg.FlushInterval)
			}
			if len(pending) >= s.cfg.BatchSize {
				timer.Stop()
				pending = s.flushRetrying(ctx, pending)
			}
		case <-timer.C:
			pending = s.flushRetrying(ctx, pending)
		case r := <-s.release:
			pending = s.settle(ctx, pending, r)
			if len(pending) > 0 {
				timer.Reset(s.cfg.FlushInterval)
			}
		case <-ctx.Done():
			return
		}
	}
}

// flushRetrying writes pending until it succeeds, backing off between
// attempts and reading nothing new meanwhile. Claims that end during the
// wait are settled by dropping their records (unmarked). It returns what
// is still pending: nothing, unless ctx ended.
func (s *Service) flushRetrying(ctx context.Context, pending []item) []item {
	b := s.newBackoff()
	for len(pending) > 0 {
		err := s.flush(ctx, pending)
		if err == nil {
			return nil
		}
		if ctx.Err() != nil {
			return pending
		}
		s.m.pending.Set(float64(len(pending)))
		wait := b.NextBackOff()
		s.log.WarnContext(ctx, "batch write failed; retrying", "err", err, "records", len(pending), "retry_in", wait,
			"breaker", s.breaker.State().String())
		t := time.NewTimer(wait)
	waiting:
		for {
			select {
			case <-t.C:
				break waiting
			case r := <-s.release:
				pending = dropPartition(pending, r)
				close(r.done)
				if len(pending) == 0 {
					t.Stop()
					return nil
				}
			case <-ctx.Done():
				t.Stop()
				return pending
			}
		}
	}
	return nil
}

// settle answers a claim that ends: one flush attempt, and if it fails the
// claim's records are dropped from the batch (unmarked, so redelivered).
func (s *Service) settle(ctx context.Context, pending []item, r releaseReq) []item {
	defer close(r.done)
	if len(pending) == 0 {
		return nil
	}
	if err := s.flush(ctx, pending); err != nil {
		s.log.WarnContext(ctx, "flush before partition release failed; its records will be redelivered",
			"err", err, "partition", r.partition)
		return dropPartition(pending, r)
	}
	return nil
}

// dropPartition removes r's partition's records of r's session.
func dropPartition(pending []item, r releaseReq) []item {
	kept := pending[:0]
	for _, it := range pending {
		if it.sess != r.sess || it.msg.Partition != r.partition {
			kept = append(kept, it)
		}
	}
	clear(pending[len(kept):])
	return kept
}

// flush writes items in one transaction through the breaker and marks
// their offsets once it committed. If the batch fails on a record the
// database refuses for good, it is written record by record instead and
// the refused ones are dead-lettered.
func (s *Service) flush(ctx context.Context, items []item) error {
	changes := make([]store.Change, 0, len(items))
	links := make([]trace.Link, 0, min(len(items), maxLinks))
	for _, it := range items {
		if it.change.Event != nil {
			changes = append(changes, it.change)
		}
		if it.link.IsValid() && len(links) < maxLinks {
			links = append(links, trace.Link{SpanContext: it.link})
		}
	}
	start := time.Now()
	ctx, span := s.tel.Tracer.Start(ctx, "process "+s.cfg.Kafka.Topic, trace.WithLinks(links...), trace.WithSpanKind(trace.SpanKindConsumer),
		trace.WithAttributes(kafka.BatchAttrs(s.cfg.Kafka.Topic, s.cfg.Consumer.Group, len(items))...),
		trace.WithAttributes(attribute.Int("relay.batch.changes", len(changes))))
	defer span.End()
	if len(changes) > 0 {
		res, err := s.apply(ctx, changes)
		if err != nil && store.IsPermanent(err) {
			s.log.WarnContext(ctx, "batch refused by the database; writing record by record", "err", err)
			res, err = s.applyEach(ctx, items)
		}
		if err != nil {
			span.SetStatus(codes.Error, err.Error())
			return err
		}
		s.count(res)
	}
	s.mark(items)
	s.persisted(ctx, items, start)
	return nil
}

// persisted closes each record's trace with a span from the batch's start
// to its commit, linked to the batch span (which links back to it), and
// observes send->persisted. Dead-lettered records have no Event and get
// neither.
func (s *Service) persisted(ctx context.Context, items []item, start time.Time) {
	batch := trace.LinkFromContext(ctx)
	now := time.Now()
	for _, it := range items {
		e := it.change.Event
		if e == nil {
			continue
		}
		if e.Type == events.MessageCreated && !e.At.IsZero() {
			s.m.sendToPersisted.Observe(now.Sub(e.At).Seconds())
		}
		if !it.link.IsValid() {
			continue
		}
		_, span := kafka.StartProcess(context.Background(), s.tel.Tracer, s.tel.Propagator, it.msg, s.cfg.Consumer.Group, "persist",
			trace.WithTimestamp(start), trace.WithLinks(batch))
		span.AddEvent("committed", trace.WithTimestamp(now))
		span.End(trace.WithTimestamp(now))
	}
}

// apply runs one ApplyBatch through the breaker.
func (s *Service) apply(ctx context.Context, changes []store.Change) (store.BatchResult, error) {
	start := time.Now()
	res, err := s.breaker.Execute(func() (store.BatchResult, error) {
		ctx, cancel := context.WithTimeout(ctx, s.cfg.WriteTimeout)
		defer cancel()
		return store.ApplyBatch(ctx, s.db, changes)
	})
	if err != nil {
		if !store.IsPermanent(err) {
			s.m.failures.Inc()
		}
		return res, err
	}
	s.m.batchLatency.Observe(time.Since(start).Seconds())
	return res, nil
}

// applyEach writes items one transaction each, in order, dead-lettering
// those the database refuses for good. A transient failure stops it; the
// whole batch is retried later, and what was written is not written twice.
func (s *Service) applyEach(ctx context.Context, items []item) (store.BatchResult, error) {
	var total store.BatchResult
	for _, it := range items {
		if it.change.Event == nil {
			continue
		}
		res, err := s.apply(ctx, []store.Change{it.change})
		if err != nil && store.IsPermanent(err) {
			if err := s.deadLetter(ctx, it.msg, err); err != nil {
				return total, err
			}
			continue
		}
		if err != nil {
			return total, err
		}
		total.Created += res.Created
		total.Edited += res.Edited
		total.Deleted += res.Deleted
		total.ReadsMoved += res.ReadsMoved
		total.Members += res.Members
	}
	return total, nil
}

func (s *Service) count(res store.BatchResult) {
	s.m.batches.Inc()
	s.m.rows.WithLabelValues("created").Add(float64(res.Created))
	s.m.rows.WithLabelValues("edited").Add(float64(res.Edited))
	s.m.rows.WithLabelValues("deleted").Add(float64(res.Deleted))
	s.m.rows.WithLabelValues("read").Add(float64(res.ReadsMoved))
}

// mark marks, per session and partition, the offset after the highest
// persisted record; sarama commits marked offsets in the background and
// when the session ends.
func (s *Service) mark(items []item) {
	type key struct {
		sess      sarama.ConsumerGroupSession
		partition int32
	}
	next := map[key]*sarama.ConsumerMessage{}
	for _, it := range items {
		k := key{it.sess, it.msg.Partition}
		if m := next[k]; m == nil || it.msg.Offset > m.Offset {
			next[k] = it.msg
		}
		typ := "dead_letter"
		if it.change.Event != nil {
			typ = string(it.change.Event.Type)
		}
		s.m.records.WithLabelValues(typ).Inc()
	}
	for k, m := range next {
		k.sess.MarkMessage(m, "")
		s.lag.Done(k.partition, m.Offset+1)
	}
	s.m.batchSize.Observe(float64(len(items)))
}
