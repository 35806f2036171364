package persister

import (
	"fmt"
	"strconv"
	"sync"

	"github.com/IBM/sarama"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/sony/gobreaker/v2"
)

// metrics are the persister's Prometheus series (docs/architecture.md).
type metrics struct {
	records      *prometheus.CounterVec
	rows         *prometheus.CounterVec
	batches      prometheus.Counter
	batchSize    prometheus.Histogram
	batchLatency prometheus.Histogram
	failures     prometheus.Counter
	deadLetters  prometheus.Counter
	breaker      *prometheus.GaugeVec
	pending      prometheus.Gauge
}

func newMetrics(reg prometheus.Registerer, lag *lagTracker) (*metrics, error) {
	m := &metrics{
		records: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "persister_records_total", Help: "Records persisted (transaction committed, offset marked), by event type.",
		}, []string{"type"}),
		rows: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "persister_rows_changed_total", Help: "Rows changed by committed batches (created, edited, deleted, read); redeliveries change none.",
		}, []string{"change"}),
		batches: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "persister_batches_total", Help: "Batch transactions committed.",
		}),
		batchSize: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "persister_batch_records", Help: "Records per committed batch.",
			Buckets: []float64{1, 5, 10, 25, 50, 100, 250, 500, 1000},
		}),
		batchLatency: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "persister_batch_duration_seconds", Help: "Latency of one batch transaction.",
			Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 10},
		}),
		failures: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "persister_batch_failures_total", Help: "Batch attempts that failed or were refused by the open breaker (each is retried).",
		}),
		deadLetters: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "persister_dead_letters_total", Help: "Records sent to the dead-letter topic.",
		}),
		pending: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "persister_pending_records", Help: "Records in the batch being collected or retried (not yet persisted).",
		}),
		breaker: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "persister_breaker_state", Help: "1 for the database breaker's current state (closed, half-open, open), 0 for the others.",
		}, []string{"state"}),
	}
	for _, c := range []prometheus.Collector{m.records, m.rows, m.batches, m.batchSize, m.batchLatency, m.failures, m.deadLetters, m.breaker, m.pending, lag} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("persister: metrics: %w", err)
		}
	}
	m.setBreaker(gobreaker.StateClosed)
	return m, nil
}

func (m *metrics) setBreaker(s gobreaker.State) {
	for _, st := range []gobreaker.State{gobreaker.StateClosed, gobreaker.StateHalfOpen, gobreaker.StateOpen} {
		v := 0.0
		if st == s {
			v = 1
		}
		m.breaker.WithLabelValues(st.String()).Set(v)
	}
}

// lagTracker knows, per claimed partition, the next offset not yet
// persisted, and computes lag against the claim's high water mark when
// asked, so the figure keeps growing while writes are stuck.
type lagTracker struct {
	desc  *prometheus.Desc
	mu    sync.Mutex
	parts map[int32]*partitionLag
}

type partitionLag struct {
	claim sarama.ConsumerGroupClaim
	// next is the first offset not persisted; -1 until known.
	next int64
}

func newLagTracker() *lagTracker {
	return &lagTracker{
		desc:  prometheus.NewDesc("persister_consumer_lag", "Records in the partition not yet persisted (high water mark - next offset to persist).", []string{"partition"}, nil),
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

// persisted moves the partition's next offset after a commit.
func (l *lagTracker) persisted(partition int32, next int64) {
	l.mu.Lock()
	if p := l.parts[partition]; p != nil && next > p.next {
		p.next = next
	}
	l.mu.Unlock()
}

// snapshot returns the lag of every claimed partition.
func (l *lagTracker) snapshot() map[int32]int64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := make(map[int32]int64, len(l.parts))
	for id, p := range l.parts {
		out[id] = max(p.claim.HighWaterMarkOffset()-max(p.next, 0), 0)
	}
	return out
}

// Describe implements prometheus.Collector.
func (l *lagTracker) Describe(ch chan<- *prometheus.Desc) { ch <- l.desc }

// Collect implements prometheus.Collector.
func (l *lagTracker) Collect(ch chan<- prometheus.Metric) {
	for p, lag := range l.snapshot() {
		ch <- prometheus.MustNewConstMetric(l.desc, prometheus.GaugeValue, float64(lag), strconv.FormatInt(int64(p), 10))
	}
}
