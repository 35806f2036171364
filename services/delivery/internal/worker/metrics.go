package worker

import (
	"fmt"

	"github.com/prometheus/client_golang/prometheus"

	"relay/pkg/kafka"
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

func newMetrics(reg prometheus.Registerer, lag *kafka.LagTracker) (*metrics, error) {
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
