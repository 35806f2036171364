// Package kafka wraps IBM/sarama for the room event log: client settings that
// give the guarantees of docs/architecture.md (acks=all, idempotent producer,
// offsets committed only after handling), a producer that returns each record's
// offset (its seq), trace context in record headers, and the consumer-group
// loop shared by the delivery worker and the persister.
package kafka

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/IBM/sarama"
	"github.com/eapache/go-resiliency/breaker"
	"github.com/rcrowley/go-metrics"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"

	"relay/pkg/events"
)

// Sarama records its client metrics (go-metrics histograms, updated per
// request) unless this is set before it creates any; we export our own
// Prometheus metrics and never read them, and the updates cost 2-5% of each
// service's CPU under load. Sarama's documented switch is this package
// variable of go-metrics, set once here before any client exists.
func init() { metrics.UseNilMetrics = true }

// Version is the protocol version we speak; Apache Kafka 3.x and the
// embedded broker both support it.
var version = sarama.V3_6_0_0

// ProducerConfig returns sarama settings for an idempotent, acks=all producer
// whose sends return their offsets.
func ProducerConfig(clientID string) *sarama.Config {
	c := sarama.NewConfig()
	c.ClientID = clientID
	c.Version = version
	c.Producer.RequiredAcks = sarama.WaitForAll
	c.Producer.Idempotent = true
	c.Net.MaxOpenRequests = 1 // required by the idempotent producer
	c.Producer.Retry.Max = 5
	c.Producer.Retry.Backoff = 100 * time.Millisecond
	c.Producer.Return.Successes = true
	c.Producer.Return.Errors = true
	c.Producer.Partitioner = sarama.NewHashPartitioner
	c.Producer.Timeout = 5 * time.Second
	// Linger briefly so concurrent sends share a request.
	c.Producer.Flush.Frequency = time.Millisecond
	c.Producer.Flush.MaxMessages = 500
	c.Metadata.Retry.Max = 5
	c.Metadata.Retry.Backoff = 200 * time.Millisecond
	c.Net.DialTimeout = 5 * time.Second
	return c
}

// GroupConfig is ConsumerConfig for a group member. A non-empty instanceID
// makes the member static (KIP-345): a process restarted with the same id
// takes its partitions back at once instead of waiting for the dead
// member's session to time out, at the price of no rebalance on a clean
// stop either (a static member does not leave the group).
func GroupConfig(clientID, instanceID string) *sarama.Config {
	c := ConsumerConfig(clientID)
	c.Consumer.Group.InstanceId = instanceID
	return c
}

// ConsumerConfig returns sarama settings for a consumer group that commits
// only offsets marked after handling.
func ConsumerConfig(clientID string) *sarama.Config {
	c := sarama.NewConfig()
	c.ClientID = clientID
	c.Version = version
	c.Consumer.Return.Errors = true
	c.Consumer.Offsets.Initial = sarama.OffsetOldest
	c.Consumer.Offsets.AutoCommit.Enable = true
	c.Consumer.Offsets.AutoCommit.Interval = 200 * time.Millisecond
	c.Consumer.Group.Rebalance.GroupStrategies = []sarama.BalanceStrategy{sarama.NewBalanceStrategySticky()}
	c.Consumer.Group.Session.Timeout = 10 * time.Second
	c.Consumer.Group.Heartbeat.Interval = 3 * time.Second
	c.Consumer.Fetch.Default = 1 << 20
	// With Fetch.Min at 1 byte the broker answers a fetch as soon as one
	// record arrives, so the wait only decides how often an idle consumer
	// polls: 500 ms is two requests a second instead of ten.
	c.Consumer.MaxWaitTime = 500 * time.Millisecond
	c.Metadata.Retry.Max = 5
	c.Metadata.Retry.Backoff = 200 * time.Millisecond
	c.Net.DialTimeout = 5 * time.Second
	return c
}

// TopicOption sets how EnsureTopic creates a missing topic.
type TopicOption func(*sarama.TopicDetail)

// Replication creates the topic with factor copies of each partition and
// min.insync.replicas = minInsync (with acks=all, a write is acknowledged
// once that many copies have it). Zero for either leaves it to the brokers'
// defaults (default.replication.factor, min.insync.replicas), which is
// also what EnsureTopic does without this option.
func Replication(factor int16, minInsync int) TopicOption {
	return func(d *sarama.TopicDetail) {
		if factor > 0 {
			d.ReplicationFactor = factor
		}
		if minInsync > 0 {
			v := strconv.Itoa(minInsync)
			if d.ConfigEntries == nil {
				d.ConfigEntries = map[string]*string{}
			}
			d.ConfigEntries["min.insync.replicas"] = &v
		}
	}
}

// EnsureTopic creates topic with the given partitions when it does not
// exist. An existing topic is left as it is: its partition count decides
// where rooms live. Without options the replication factor is -1, which
// asks the brokers for their default.replication.factor (KIP-464).
func EnsureTopic(ctx context.Context, brokers []string, topic string, partitions int32, opts ...TopicOption) error {
	cfg := sarama.NewConfig()
	cfg.Version = version
	admin, err := sarama.NewClusterAdmin(brokers, cfg)
	if err != nil {
		return fmt.Errorf("kafka: admin: %w", err)
	}
	defer admin.Close()
	detail := &sarama.TopicDetail{NumPartitions: partitions, ReplicationFactor: -1}
	for _, o := range opts {
		o(detail)
	}
	err = admin.CreateTopic(topic, detail, false)
	if err != nil && !errors.Is(err, sarama.ErrTopicAlreadyExists) {
		return fmt.Errorf("kafka: create topic %s: %w", topic, err)
	}
	return ctx.Err()
}

// Ping checks that a broker answers a metadata request for topic.
func Ping(ctx context.Context, client sarama.Client, topic string) error {
	done := make(chan error, 1)
	go func() { done <- client.RefreshMetadata(topic) }()
	select {
	case err := <-done:
		if err != nil {
			return fmt.Errorf("kafka: metadata: %w", err)
		}
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// HeaderCarrier adapts record headers to OpenTelemetry propagation.
type HeaderCarrier struct {
	Headers *[]sarama.RecordHeader
}

var _ propagation.TextMapCarrier = HeaderCarrier{}

// Get returns the value of header key.
func (c HeaderCarrier) Get(key string) string {
	for _, h := range *c.Headers {
		if string(h.Key) == key {
			return string(h.Value)
		}
	}
	return ""
}

// Set replaces or adds header key.
func (c HeaderCarrier) Set(key, value string) {
	for i, h := range *c.Headers {
		if string(h.Key) == key {
			(*c.Headers)[i].Value = []byte(value)
			return
		}
	}
	*c.Headers = append(*c.Headers, sarama.RecordHeader{Key: []byte(key), Value: []byte(value)})
}

// Keys lists the header keys.
func (c HeaderCarrier) Keys() []string {
	keys := make([]string, 0, len(*c.Headers))
	for _, h := range *c.Headers {
		keys = append(keys, string(h.Key))
	}
	return keys
}

// ConsumerHeaders turns consumed record headers into the slice the carrier edits.
func ConsumerHeaders(hs []*sarama.RecordHeader) []sarama.RecordHeader {
	out := make([]sarama.RecordHeader, 0, len(hs))
	for _, h := range hs {
		if h != nil {
			out = append(out, *h)
		}
	}
	return out
}

// Producer produces room events and returns the offset each got.
type Producer struct {
	brokers  []string
	clientID string
	topic    string
	prop     propagation.TextMapPropagator

	mu sync.RWMutex
	sp sarama.SyncProducer
	// renewing is set while a replacement producer is being connected.
	renewing atomic.Bool
	closed   bool
}

// NewProducer connects an idempotent producer for topic.
func NewProducer(brokers []string, topic, clientID string, prop propagation.TextMapPropagator) (*Producer, error) {
	sp, err := sarama.NewSyncProducer(brokers, ProducerConfig(clientID))
	if err != nil {
		return nil, fmt.Errorf("kafka: producer: %w", err)
	}
	return &Producer{brokers: brokers, clientID: clientID, sp: sp, topic: topic, prop: prop}, nil
}

func (p *Producer) current() sarama.SyncProducer {
	p.mu.RLock()
	defer p.mu.RUnlock()
	return p.sp
}

// renew replaces a producer whose internal circuit breaker opened. sarama
// keeps that breaker (3 failures, then 10 s of refusals, not configurable)
// open after the brokers are back, so every send would fail for up to 10 s
// after an outage; a fresh producer sends at once. Only one renewal runs at
// a time, and none while the brokers still cannot be reached.
func (p *Producer) renew(failed sarama.SyncProducer) {
	if !p.renewing.CompareAndSwap(false, true) {
		return
	}
	go func() {
		defer p.renewing.Store(false)
		sp, err := sarama.NewSyncProducer(p.brokers, ProducerConfig(p.clientID))
		if err != nil {
			return // still down: the next refused send tries again
		}
		p.mu.Lock()
		if p.closed || p.sp != failed {
			p.mu.Unlock()
			_ = sp.Close()
			return
		}
		p.sp = sp
		p.mu.Unlock()
		_ = failed.Close()
	}()
}

// Publish appends e to its room's partition and returns the record's
// partition and offset (the event's seq) once the broker stored it with
// acks=all. The trace context of ctx travels in the headers. ctx bounds how
// long the caller waits; a send abandoned on ctx may still be stored.
func (p *Producer) Publish(ctx context.Context, e *events.Event) (partition int32, seq int64, err error) {
	var span trace.Span
	msg, err := p.message(e, func(msg *sarama.ProducerMessage, e *events.Event, key []byte, size int) {
		span = startSend(ctx, p.prop, msg, key, size, e.MessageID)
	})
	if err != nil {
		return 0, 0, err
	}
	defer func() { endSend(span, partition, seq, err) }()
	type result struct {
		partition int32
		offset    int64
		err       error
	}
	done := make(chan result, 1)
	sp := p.current()
	go func() {
		part, off, err := sp.SendMessage(msg)
		done <- result{part, off, err}
	}()
	select {
	case r := <-done:
		if r.err != nil {
			if errors.Is(r.err, breaker.ErrBreakerOpen) {
				p.renew(sp)
			}
			return 0, 0, fmt.Errorf("kafka: produce: %w", r.err)
		}
		return r.partition, r.offset, nil
	case <-ctx.Done():
		return 0, 0, fmt.Errorf("kafka: produce: %w", ctx.Err())
	}
}

// message is e as a record of the topic, keyed by its room, with its type
// header; traced starts the record's producer span, which adds the trace
// context headers.
func (p *Producer) message(e *events.Event, traced func(msg *sarama.ProducerMessage, e *events.Event, key []byte, size int)) (*sarama.ProducerMessage, error) {
	value, err := events.Marshal(e)
	if err != nil {
		return nil, err
	}
	key := e.Key()
	msg := &sarama.ProducerMessage{Topic: p.topic, Key: sarama.ByteEncoder(key), Value: sarama.ByteEncoder(value),
		Headers: []sarama.RecordHeader{{Key: []byte(events.HeaderType), Value: []byte(e.Type)}}}
	traced(msg, e, key, len(value))
	return msg, nil
}

// Record is one event for PublishBatch with the trace context it belongs
// to (a W3C carrier, e.g. the one stored with an outbox row; nil for none).
type Record struct {
	Event *events.Event
	Trace map[string]string
}

// PublishBatch appends records in order, as few produce requests as sarama
// needs (records of one room share a partition, so they usually go as one
// batch), and returns how many of them, from the first, the broker stored
// with acks=all. When stored < len(records) err says why; a record after
// the first failed one may have been stored too (sarama reports failures
// per record), so a caller that retries the rest must tolerate a
// duplicate. ctx bounds how long the caller waits; a batch abandoned on ctx
// may still be stored.
func (p *Producer) PublishBatch(ctx context.Context, records []Record) (stored int, err error) {
	msgs := make([]*sarama.ProducerMessage, len(records))
	spans := make([]trace.Span, 0, len(records))
	index := make(map[*sarama.ProducerMessage]int, len(records))
	for i, r := range records {
		// Each record's producer span continues the trace it was written
		// under (the outbox row's), not the relay's.
		rctx := p.prop.Extract(ctx, propagation.MapCarrier(r.Trace))
		if len(r.Trace) == 0 {
			rctx = ctx
		}
		msg, err := p.message(r.Event, func(msg *sarama.ProducerMessage, e *events.Event, key []byte, size int) {
			spans = append(spans, startSend(rctx, p.prop, msg, key, size, e.MessageID))
		})
		if err != nil {
			for _, sp := range spans {
				endSend(sp, 0, 0, err)
			}
			return 0, err
		}
		msgs[i] = msg
		index[msg] = i
	}
	defer func() {
		// Only a stored record's position is read: after ctx ended, sarama
		// may still be writing the others.
		for i, sp := range spans {
			if i < stored {
				endSend(sp, msgs[i].Partition, msgs[i].Offset, nil)
			} else {
				endSend(sp, 0, 0, err)
			}
		}
	}()
	done := make(chan error, 1)
	sp := p.current()
	go func() { done <- sp.SendMessages(msgs) }()
	select {
	case err := <-done:
		if err == nil {
			return len(records), nil
		}
		var perrs sarama.ProducerErrors
		if !errors.As(err, &perrs) {
			return 0, fmt.Errorf("kafka: produce: %w", err)
		}
		stored = len(records)
		for _, pe := range perrs {
			if i, ok := index[pe.Msg]; ok && i < stored {
				stored = i
			}
			if errors.Is(pe.Err, breaker.ErrBreakerOpen) {
				p.renew(sp)
			}
		}
		return stored, fmt.Errorf("kafka: produce: %d of %d records failed: %w", len(perrs), len(records), perrs[0].Err)
	case <-ctx.Done():
		return 0, fmt.Errorf("kafka: produce: %w", ctx.Err())
	}
}

// Close flushes and closes the producer.
func (p *Producer) Close() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.closed = true
	return p.sp.Close()
}

// RunGroup consumes topics with handler until ctx is cancelled. Consume
// returns on every rebalance, so it runs in a loop; errors are logged and
// retried with a pause rather than ending the loop.
func RunGroup(ctx context.Context, group sarama.ConsumerGroup, topics []string, handler sarama.ConsumerGroupHandler, log *slog.Logger) error {
	go func() {
		for err := range group.Errors() {
			log.Warn("consumer group error", "err", err)
		}
	}()
	for {
		if err := group.Consume(ctx, topics, handler); err != nil {
			if errors.Is(err, sarama.ErrClosedConsumerGroup) {
				return nil
			}
			log.Warn("consume failed; retrying", "err", err)
			select {
			case <-ctx.Done():
				return nil
			case <-time.After(time.Second):
			}
		}
		if ctx.Err() != nil {
			return nil
		}
	}
}
