package kafka

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/IBM/sarama"
	"github.com/prometheus/client_golang/prometheus"
)

// ConsumerOptions says what a Consumer reads and where its dead letters go.
type ConsumerOptions struct {
	Brokers []string
	// Topic is consumed; it and DLQTopic are created when missing, Topic
	// with Partitions.
	Topic      string
	Partitions int32
	// ReplicationFactor and MinInsyncReplicas create missing topics (see
	// Replication); zero leaves them to the brokers' defaults.
	ReplicationFactor int16
	MinInsyncReplicas int
	Group             string
	DLQTopic          string
	// ClientID names the service to the brokers.
	ClientID string
	// InstanceID makes the member static (see GroupConfig); "" is dynamic.
	InstanceID string
	// FetchWait lets the broker hold a fetch this long to gather a batch
	// (up to the fetch size) rather than answer as soon as one record is
	// there: fewer, larger fetches for a consumer that can wait. Zero
	// answers at once.
	FetchWait time.Duration
	// Metrics, when set, gets the group's lag per partition from the
	// brokers (GroupLag).
	Metrics prometheus.Registerer
}

// Consumer is what a service consuming the room event log holds in Kafka:
// its consumer group on a client of its own, and a dead-letter producer on
// a second client that also answers readiness checks (a JoinGroup waiting
// for a rebalance would otherwise hold the metadata request behind it).
type Consumer struct {
	topic       string
	group       sarama.ConsumerGroup
	client      sarama.Client
	dlqProducer sarama.SyncProducer
	dlqClient   sarama.Client
	// DeadLetters sends records that can never be handled.
	DeadLetters *DeadLetters
}

// NewConsumer creates the topics when missing and connects; it joins the
// group only when Consume starts.
func NewConsumer(ctx context.Context, o ConsumerOptions) (c *Consumer, err error) {
	c = &Consumer{topic: o.Topic}
	defer func() {
		if err != nil {
			_ = c.Close()
			c = nil
		}
	}()
	repl := Replication(o.ReplicationFactor, o.MinInsyncReplicas)
	if err := EnsureTopic(ctx, o.Brokers, o.Topic, o.Partitions, repl); err != nil {
		return nil, err
	}
	// One partition: dead letters are rare and read by people, not by rooms.
	if err := EnsureTopic(ctx, o.Brokers, o.DLQTopic, 1, repl); err != nil {
		return nil, err
	}
	cfg := GroupConfig(o.ClientID, o.InstanceID)
	if o.FetchWait > 0 {
		cfg.Consumer.Fetch.Min = cfg.Consumer.Fetch.Default
		cfg.Consumer.MaxWaitTime = o.FetchWait
	}
	if c.client, err = sarama.NewClient(o.Brokers, cfg); err != nil {
		return nil, fmt.Errorf("kafka client: %w", err)
	}
	if c.group, err = sarama.NewConsumerGroupFromClient(o.Group, c.client); err != nil {
		return nil, fmt.Errorf("consumer group: %w", err)
	}
	if c.dlqClient, err = sarama.NewClient(o.Brokers, ProducerConfig(o.ClientID+"-dlq")); err != nil {
		return nil, fmt.Errorf("kafka client: %w", err)
	}
	if c.dlqProducer, err = sarama.NewSyncProducerFromClient(c.dlqClient); err != nil {
		return nil, fmt.Errorf("dead-letter producer: %w", err)
	}
	c.DeadLetters = NewDeadLetters(c.dlqProducer, o.DLQTopic, o.Group)
	if o.Metrics != nil {
		// On the dead-letter client, which is never busy with a rebalance.
		lag, err := NewGroupLag(c.dlqClient, o.Group, o.Topic)
		if err != nil {
			return nil, err
		}
		if err := o.Metrics.Register(lag); err != nil {
			return nil, fmt.Errorf("kafka: lag metrics: %w", err)
		}
	}
	return c, nil
}

// Ping checks that the brokers answer for the consumed topic.
func (c *Consumer) Ping(ctx context.Context) error { return Ping(ctx, c.dlqClient, c.topic) }

// Consume consumes the topic with handler until ctx ends (RunGroup).
func (c *Consumer) Consume(ctx context.Context, handler sarama.ConsumerGroupHandler, log *slog.Logger) error {
	return RunGroup(ctx, c.group, []string{c.topic}, handler, log)
}

// Leave leaves the group once consuming is over (committing marked
// offsets), so another instance takes the partitions at once instead of
// after the session timeout.
func (c *Consumer) Leave(log *slog.Logger) {
	if err := c.group.Close(); err != nil && !errors.Is(err, sarama.ErrClosedConsumerGroup) {
		log.Warn("closing consumer group", "err", err)
	}
}

// Close closes, in order, the group (which commits marked offsets), the
// group's client, and the dead-letter producer with its client. Parts never
// opened or already closed are skipped, so it is safe after a partial
// NewConsumer, after Run and more than once.
func (c *Consumer) Close() error {
	if c == nil {
		return nil
	}
	var errs []error
	if c.group != nil {
		if err := c.group.Close(); err != nil && !errors.Is(err, sarama.ErrClosedConsumerGroup) {
			errs = append(errs, err)
		}
	}
	if c.client != nil && !c.client.Closed() {
		if err := c.client.Close(); err != nil && !errors.Is(err, sarama.ErrClosedClient) {
			errs = append(errs, err)
		}
	}
	if c.dlqProducer != nil {
		if err := c.dlqProducer.Close(); err != nil && !errors.Is(err, sarama.ErrClosedClient) {
			errs = append(errs, err)
		}
		c.dlqProducer = nil
	}
	if c.dlqClient != nil && !c.dlqClient.Closed() {
		errs = append(errs, c.dlqClient.Close())
	}
	return errors.Join(errs...)
}
