package delivery

import (
	"fmt"
	"strconv"
	"sync"

	"github.com/IBM/sarama"
	"github.com/prometheus/client_golang/prometheus"
)

// metrics are the worker's Prometheus series (docs/architecture.md).
type metrics struct {
	published   *prometheus.CounterVec
	duplicates  prometheus.Counter
	staleRetry  prometheus.Counter
	deadLetters prometheus.Counter
	redisErrors prometheus.Counter
	publish     prometheus.Histogram
	age         prometheus.Histogram
}

func newMetrics(reg prometheus.Registerer, lag *lagTracker) (*metrics, error) {
	m := &metrics{
		published: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "delivery_events_published_total", Help: "Room events published to Redis, by event type.",
		}, []string{"type"}),
		duplicates: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "delivery_duplicates_total", Help: "Redelivered records skipped because their seq was already published.",
		}),
		staleRetry: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "delivery_stale_retries_total", Help: "Publications re-rendered because the cached previous seq was stale.",
		}),
		deadLetters: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "delivery_dead_letters_total", Help: "Records sent to the dead-letter topic.",
		}),
		redisErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "delivery_redis_errors_total", Help: "Failed Redis calls (each is retried).",
		}),
		publish: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "delivery_publish_duration_seconds", Help: "Latency of one publish script call.",
			Buckets: []float64{.0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .25},
		}),
		age: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "delivery_event_age_seconds", Help: "Time from the producer accepting an event to its publication.",
			Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 10},
		}),
	}
	for _, c := range []prometheus.Collector{m.published, m.duplicates, m.staleRetry, m.deadLetters, m.redisErrors, m.publish, m.age, lag} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("delivery: metrics: %w", err)
		}
	}
	return m, nil
}

// lagTracker knows, per claimed partition, the next offset not yet
// published, and computes lag against the claim's high water mark when
// scraped, so the figure keeps growing while publishing is stuck.
type lagTracker struct {
	desc  *prometheus.Desc
	mu    sync.Mutex
	parts map[int32]*partitionLag
}

type partitionLag struct {
	claim sarama.ConsumerGroupClaim
	// next is the first offset not published; -1 until known.
	next int64
}

func newLagTracker() *lagTracker {
	return &lagTracker{
		desc:  prometheus.NewDesc("delivery_consumer_lag", "Records in the partition not yet published (high water mark - next offset to publish).", []string{"partition"}, nil),
		parts: map[int32]*partitionLag{},
	}
}

func (l *lagTracker) claimed(c sarama.ConsumerGroupClaim) {
	next := c.InitialOffset()
	if next < 0 { // OffsetOldest/OffsetNewest: resolved by the first record
		next = -1
	}
	l.mu.Lock()
	l.parts[c.Partition()] = &partitionLag{claim: c, next: next}
	l.mu.Unlock()
}

func (l *lagTracker) released(partition int32) {
	l.mu.Lock()
	delete(l.parts, partition)
	l.mu.Unlock()
}

// seen notes a received record: nothing before it can be pending.
func (l *lagTracker) seen(partition int32, offset int64) {
	l.mu.Lock()
	if p := l.parts[partition]; p != nil && p.next < 0 {
		p.next = offset
	}
	l.mu.Unlock()
}

// done moves the partition's next offset after a record was handled.
func (l *lagTracker) done(partition int32, next int64) {
	l.mu.Lock()
	if p := l.parts[partition]; p != nil && next > p.next {
		p.next = next
	}
	l.mu.Unlock()
}

// Describe implements prometheus.Collector.
func (l *lagTracker) Describe(ch chan<- *prometheus.Desc) { ch <- l.desc }

// Collect implements prometheus.Collector.
func (l *lagTracker) Collect(ch chan<- prometheus.Metric) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for id, p := range l.parts {
		lag := max(p.claim.HighWaterMarkOffset()-max(p.next, 0), 0)
		ch <- prometheus.MustNewConstMetric(l.desc, prometheus.GaugeValue, float64(lag), strconv.FormatInt(int64(id), 10))
	}
}
