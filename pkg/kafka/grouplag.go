package kafka

import (
	"context"
	"fmt"
	"strconv"
	"time"

	"github.com/IBM/sarama"
	"github.com/prometheus/client_golang/prometheus"
)

// GroupLag exports a consumer group's lag per partition of a topic as the
// brokers see it: the partition's high water mark minus the group's
// committed offset. Unlike a consumer's own view (LagTracker) the series
// exists for every partition whether or not a member owns it, which is
// exactly when lag matters: a partition nobody consumes keeps growing. A
// partition the group never committed counts from the log start (where the
// group starts, sarama.OffsetOldest).
type GroupLag struct {
	client  sarama.Client
	admin   sarama.ClusterAdmin
	group   string
	topic   string
	timeout time.Duration

	lag, errors *prometheus.Desc
	failures    prometheus.Counter
}

// NewGroupLag reads offsets through client (which it does not close: the
// admin shares it and is never closed here) for group on topic.
func NewGroupLag(client sarama.Client, group, topic string) (*GroupLag, error) {
	admin, err := sarama.NewClusterAdminFromClient(client)
	if err != nil {
		return nil, fmt.Errorf("kafka: lag admin: %w", err)
	}
	return &GroupLag{
		client: client, admin: admin, group: group, topic: topic, timeout: 2 * time.Second,
		lag: prometheus.NewDesc("kafka_consumer_group_lag",
			"Records of the partition the consumer group has not committed (high water mark - committed offset), from the brokers.",
			[]string{"group", "topic", "partition"}, nil),
		failures: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "kafka_consumer_group_lag_errors_total", Help: "Lag collections that failed (the brokers did not answer in time).",
			ConstLabels: prometheus.Labels{"group": group, "topic": topic},
		}),
	}, nil
}

// Describe implements prometheus.Collector.
func (g *GroupLag) Describe(ch chan<- *prometheus.Desc) {
	ch <- g.lag
	g.failures.Describe(ch)
}

// Collect implements prometheus.Collector; a failed collection exports
// no lag (rather than a stale one) and counts the failure.
func (g *GroupLag) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), g.timeout)
	defer cancel()
	lags, err := g.Lags(ctx)
	if err != nil {
		g.failures.Inc()
	}
	for p, l := range lags {
		ch <- prometheus.MustNewConstMetric(g.lag, prometheus.GaugeValue, float64(l), g.group, g.topic, strconv.FormatInt(int64(p), 10))
	}
	g.failures.Collect(ch)
}

// Lags returns the lag of every partition of the topic.
func (g *GroupLag) Lags(ctx context.Context) (map[int32]int64, error) {
	type result struct {
		lags map[int32]int64
		err  error
	}
	done := make(chan result, 1)
	// sarama's calls take no context; the goroutine ends with its
	// requests (bounded by the client's network timeouts).
	go func() {
		l, err := g.lags()
		done <- result{l, err}
	}()
	select {
	case r := <-done:
		return r.lags, r.err
	case <-ctx.Done():
		return nil, fmt.Errorf("kafka: lag: %w", ctx.Err())
	}
}

func (g *GroupLag) lags() (map[int32]int64, error) {
	parts, err := g.client.Partitions(g.topic)
	if err != nil {
		return nil, fmt.Errorf("kafka: lag: partitions: %w", err)
	}
	committed, err := g.admin.ListConsumerGroupOffsets(g.group, map[string][]int32{g.topic: parts})
	if err != nil {
		return nil, fmt.Errorf("kafka: lag: committed offsets: %w", err)
	}
	out := make(map[int32]int64, len(parts))
	for _, p := range parts {
		hwm, err := g.client.GetOffset(g.topic, p, sarama.OffsetNewest)
		if err != nil {
			return nil, fmt.Errorf("kafka: lag: high water mark of %d: %w", p, err)
		}
		next := int64(-1)
		if b := committed.GetBlock(g.topic, p); b != nil && b.Err == sarama.ErrNoError {
			next = b.Offset
		}
		if next < 0 {
			if next, err = g.client.GetOffset(g.topic, p, sarama.OffsetOldest); err != nil {
				return nil, fmt.Errorf("kafka: lag: log start of %d: %w", p, err)
			}
		}
		out[p] = max(hwm-next, 0)
	}
	return out, nil
}
