package kafka

import (
	"context"
	"fmt"
	"strconv"

	"github.com/IBM/sarama"
)

// Headers added to a dead-lettered record, besides its original ones.
const (
	// HeaderDLQError says why the record could not be handled.
	HeaderDLQError = "dlq-error"
	// HeaderDLQTopic, HeaderDLQPartition and HeaderDLQOffset locate the original record.
	HeaderDLQTopic     = "dlq-original-topic"
	HeaderDLQPartition = "dlq-original-partition"
	HeaderDLQOffset    = "dlq-original-offset"
	// HeaderDLQGroup names the consumer group that gave up on it.
	HeaderDLQGroup = "dlq-group"
)

// maxErrorHeader bounds the error text copied into a header.
const maxErrorHeader = 1024

// DeadLetters forwards records that can never be handled to a topic of
// their own, so they do not stall their partition (docs/architecture.md).
type DeadLetters struct {
	producer sarama.SyncProducer
	topic    string
	group    string
}

// NewDeadLetters returns a sender to topic on behalf of consumer group
// group; it does not own producer.
func NewDeadLetters(producer sarama.SyncProducer, topic, group string) *DeadLetters {
	return &DeadLetters{producer: producer, topic: topic, group: group}
}

// Topic is the dead-letter topic.
func (d *DeadLetters) Topic() string { return d.topic }

// Send copies msg with its key, value and headers to the dead-letter
// topic, adding why and where it came from. It returns once the broker
// stored it, or with ctx's error (the copy may still be stored: a
// redelivered record can appear twice in the dead-letter topic).
func (d *DeadLetters) Send(ctx context.Context, msg *sarama.ConsumerMessage, cause error) error {
	reason := cause.Error()
	if len(reason) > maxErrorHeader {
		reason = reason[:maxErrorHeader]
	}
	headers := ConsumerHeaders(msg.Headers)
	headers = append(headers,
		sarama.RecordHeader{Key: []byte(HeaderDLQError), Value: []byte(reason)},
		sarama.RecordHeader{Key: []byte(HeaderDLQTopic), Value: []byte(msg.Topic)},
		sarama.RecordHeader{Key: []byte(HeaderDLQPartition), Value: []byte(strconv.FormatInt(int64(msg.Partition), 10))},
		sarama.RecordHeader{Key: []byte(HeaderDLQOffset), Value: []byte(strconv.FormatInt(msg.Offset, 10))},
		sarama.RecordHeader{Key: []byte(HeaderDLQGroup), Value: []byte(d.group)},
	)
	pm := &sarama.ProducerMessage{Topic: d.topic, Value: sarama.ByteEncoder(msg.Value), Headers: headers}
	if msg.Key != nil {
		pm.Key = sarama.ByteEncoder(msg.Key)
	}
	done := make(chan error, 1)
	go func() {
		_, _, err := d.producer.SendMessage(pm)
		done <- err
	}()
	select {
	case err := <-done:
		if err != nil {
			return fmt.Errorf("dead-letter %s/%d@%d: %w", msg.Topic, msg.Partition, msg.Offset, err)
		}
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
