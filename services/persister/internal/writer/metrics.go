package writer

import (
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/sony/gobreaker/v2"

	"relay/pkg/kafka"
	"relay/pkg/telemetry"
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
	// sendToPersisted is the message's age (from the gateway accepting
	// it) when its row was committed.
	sendToPersisted prometheus.Histogram
}

func newMetrics(reg prometheus.Registerer, lag *kafka.LagTracker) (*metrics, error) {
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
		sendToPersisted: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "persister_send_to_persisted_seconds", Help: "Time from the gateway accepting a message to its row being committed.",
			Buckets: []float64{.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30},
		}),
		breaker: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "persister_breaker_state", Help: "1 for the database breaker's current state (closed, half-open, open), 0 for the others.",
		}, []string{"state"}),
	}
	for _, c := range []prometheus.Collector{m.sendToPersisted, m.records, m.rows, m.batches, m.batchSize, m.batchLatency, m.failures, m.deadLetters, m.breaker, m.pending, lag} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("persister: metrics: %w", err)
		}
	}
	m.setBreaker(gobreaker.StateClosed)
	return m, nil
}

func (m *metrics) setBreaker(s gobreaker.State) {
	telemetry.SetBreakerState(m.breaker, s)
}
