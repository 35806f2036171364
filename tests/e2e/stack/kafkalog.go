package stack

import (
	"context"
	"fmt"
	"time"

	"github.com/IBM/sarama"

	"relay/pkg/events"
)

// Record is one event of a room's log as Kafka holds it.
type Record struct {
	// Partition is where the room lives.
	Partition int32
	// Seq is the record's offset, the event's seq.
	Seq int64
	// Event is the decoded value.
	Event *events.Event
}

// RoomLog reads the stack's topic from the start up to its current end and
// returns the records keyed by roomID, in offset order (a room lives in
// one partition): the ground truth
// the pushes and rows are checked against.
func (s *Stack) RoomLog(ctx context.Context, roomID string) ([]Record, error) {
	logs, err := s.TopicLog(ctx)
	if err != nil {
		return nil, err
	}
	return logs[roomID], nil
}

// TopicLog reads the whole topic once, up to its current end, and returns
// every room's records by room id (the record key), in offset order.
func (s *Stack) TopicLog(ctx context.Context) (map[string][]Record, error) {
	cfg := sarama.NewConfig()
	cfg.Version = sarama.V3_6_0_0
	// Reading up to a known end: no reason to wait for more on a fetch.
	cfg.Consumer.MaxWaitTime = 50 * time.Millisecond
	client, err := sarama.NewClient(s.Brokers, cfg)
	if err != nil {
		return nil, fmt.Errorf("kafka client: %w", err)
	}
	defer client.Close()
	parts, err := client.Partitions(s.Topic)
	if err != nil {
		return nil, fmt.Errorf("partitions: %w", err)
	}
	consumer, err := sarama.NewConsumerFromClient(client)
	if err != nil {
		return nil, fmt.Errorf("consumer: %w", err)
	}
	defer consumer.Close()
	out := map[string][]Record{}
	for _, p := range parts {
		end, err := client.GetOffset(s.Topic, p, sarama.OffsetNewest)
		if err != nil {
			return nil, fmt.Errorf("end of partition %d: %w", p, err)
		}
		if end == 0 {
			continue
		}
		pc, err := consumer.ConsumePartition(s.Topic, p, sarama.OffsetOldest)
		if err != nil {
			return nil, fmt.Errorf("consume partition %d: %w", p, err)
		}
		for done := false; !done; {
			select {
			case m := <-pc.Messages():
				e, err := events.Unmarshal(m.Value)
				if err != nil {
					pc.Close()
					return nil, fmt.Errorf("record %d/%d: %w", p, m.Offset, err)
				}
				key := string(m.Key)
				out[key] = append(out[key], Record{Partition: p, Seq: m.Offset, Event: e})
				done = m.Offset >= end-1
			case <-ctx.Done():
				pc.Close()
				return nil, fmt.Errorf("reading partition %d: %w", p, ctx.Err())
			}
		}
		pc.Close()
	}
	return out, nil
}

// Committed returns the next offset the consumer group of service
// ("delivery" or "persister") has committed on partition, -1 when none.
// Both commit only what they have handled (published or persisted).
func (s *Stack) Committed(ctx context.Context, service string, partition int32) (int64, error) {
	env := map[string]string{"delivery": "DELIVERY_GROUP", "persister": "PERSIST_GROUP"}[service]
	group := s.proc(service).env[env]
	if env == "" || group == "" {
		return 0, fmt.Errorf("no consumer group for %q", service)
	}
	cfg := sarama.NewConfig()
	cfg.Version = sarama.V3_6_0_0
	admin, err := sarama.NewClusterAdmin(s.Brokers, cfg)
	if err != nil {
		return 0, fmt.Errorf("kafka admin: %w", err)
	}
	defer admin.Close()
	res, err := admin.ListConsumerGroupOffsets(group, map[string][]int32{s.Topic: {partition}})
	if err != nil {
		return 0, fmt.Errorf("offsets of %s: %w", group, err)
	}
	b := res.GetBlock(s.Topic, partition)
	if b == nil {
		return -1, nil
	}
	if b.Err != sarama.ErrNoError {
		return 0, fmt.Errorf("offsets of %s: %w", group, b.Err)
	}
	return b.Offset, ctx.Err()
}

// PartitionEnds returns the next offset of every partition of the topic.
func (s *Stack) PartitionEnds(ctx context.Context) (map[int32]int64, error) {
	cfg := sarama.NewConfig()
	cfg.Version = sarama.V3_6_0_0
	client, err := sarama.NewClient(s.Brokers, cfg)
	if err != nil {
		return nil, fmt.Errorf("kafka client: %w", err)
	}
	defer client.Close()
	parts, err := client.Partitions(s.Topic)
	if err != nil {
		return nil, fmt.Errorf("partitions: %w", err)
	}
	ends := make(map[int32]int64, len(parts))
	for _, p := range parts {
		if ends[p], err = client.GetOffset(s.Topic, p, sarama.OffsetNewest); err != nil {
			return nil, fmt.Errorf("end of partition %d: %w", p, err)
		}
	}
	return ends, ctx.Err()
}
