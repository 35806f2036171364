package kafka_test

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/IBM/sarama"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"relay/pkg/events"
	"relay/pkg/kafka"
	"relay/pkg/testenv"
)

// TestGroupLagWithoutConsumers checks the lag of a group that has no
// member: every partition has a series, one the group never committed
// counts from the log start, and a committed one from its offset.
func TestGroupLagWithoutConsumers(t *testing.T) {
	t.Parallel()
	p, brokers, topic := newProducer(t)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	part, last := int32(-1), int64(0)
	for i := 0; i < 5; i++ {
		pp, seq, err := p.Publish(ctx, &events.Event{Type: events.MemberJoined, RoomID: 5, UserID: int64(i + 1), At: time.Now()})
		if err != nil {
			t.Fatal(err)
		}
		part, last = pp, seq
	}
	group := testenv.RandomName("lag-")
	// A member commits up to (not including) the fourth record of the
	// room's partition and leaves: nobody owns a partition afterwards.
	cfg := kafka.ConsumerConfig("lag-test")
	cfg.Consumer.Offsets.AutoCommit.Enable = false
	cg, err := sarama.NewConsumerGroup(brokers, group, cfg)
	if err != nil {
		t.Fatal(err)
	}
	h := &commitUpTo{partition: part, offset: last - 1, done: make(chan struct{})}
	gctx, stop := context.WithCancel(ctx)
	go func() {
		for gctx.Err() == nil {
			if err := cg.Consume(gctx, []string{topic}, h); err != nil {
				return
			}
		}
	}()
	select {
	case <-h.done:
	case <-ctx.Done():
		t.Fatal("the member never committed")
	}
	stop()
	if err := cg.Close(); err != nil {
		t.Fatal(err)
	}

	client, err := sarama.NewClient(brokers, kafka.ConsumerConfig("lag-test"))
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	lag, err := kafka.NewGroupLag(client, group, topic)
	if err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(lag)
	if n, err := testutil.GatherAndCount(reg, "kafka_consumer_group_lag"); err != nil || n != 3 {
		t.Fatalf("%d lag series (err %v), want one per partition (3)", n, err)
	}
	var want strings.Builder
	want.WriteString("# HELP kafka_consumer_group_lag Records of the partition the consumer group has not committed (high water mark - committed offset), from the brokers.\n# TYPE kafka_consumer_group_lag gauge\n")
	for q := int32(0); q < 3; q++ {
		l := 0
		if q == part {
			l = 2
		}
		fmt.Fprintf(&want, "kafka_consumer_group_lag{group=%q,partition=\"%d\",topic=%q} %d\n", group, q, topic, l)
	}
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want.String()), "kafka_consumer_group_lag"); err != nil {
		t.Fatal(err)
	}
}

// commitUpTo marks and commits offset on partition once it is claimed.
type commitUpTo struct {
	partition int32
	offset    int64
	done      chan struct{}
	once      sync.Once
}

func (h *commitUpTo) Setup(sarama.ConsumerGroupSession) error { return nil }

func (h *commitUpTo) Cleanup(sarama.ConsumerGroupSession) error { return nil }

func (h *commitUpTo) ConsumeClaim(sess sarama.ConsumerGroupSession, claim sarama.ConsumerGroupClaim) error {
	if claim.Partition() == h.partition {
		sess.MarkOffset(claim.Topic(), h.partition, h.offset, "")
		sess.Commit()
		h.once.Do(func() { close(h.done) })
	}
	<-sess.Context().Done()
	return nil
}
