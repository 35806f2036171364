package tracker

import (
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
)

// metrics are the service's own Prometheus series.
type metrics struct {
	commands      *prometheus.CounterVec
	transitions   *prometheus.CounterVec
	typing        *prometheus.CounterVec
	claimed       prometheus.Counter
	publishErrors prometheus.Counter
	sweepErrors   prometheus.Counter
	flushErrors   prometheus.Counter
	dbUsers       prometheus.Counter
	sweepSeconds  prometheus.Histogram
	horizonLag    prometheus.Gauge
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		commands: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "presence_commands_applied_total", Help: "Presence commands read from the stream, by op and result (applied, invalid, rejected, error).",
		}, []string{"op", "result"}),
		transitions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "presence_transitions_total", Help: "presence_update events published, by status.",
		}, []string{"status"}),
		typing: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "presence_typing_events_total", Help: "typing events published, by typing flag.",
		}, []string{"typing"}),
		claimed: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "presence_commands_claimed_total", Help: "Pending commands taken over from other (dead) instances.",
		}),
		publishErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "presence_publish_errors_total", Help: "Events that could not be published.",
		}),
		sweepErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "presence_sweep_errors_total", Help: "Failed expiry sweeps.",
		}),
		flushErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "presence_db_sync_errors_total", Help: "Failed PostgreSQL syncs (retried).",
		}),
		dbUsers: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "presence_db_users_written_total", Help: "users rows written with is_online / last_seen.",
		}),
		sweepSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "presence_sweep_duration_seconds", Help: "Duration of one expiry sweep.",
			Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1},
		}),
		horizonLag: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "presence_horizon_lag_seconds", Help: "How far the applied-commands horizon trails the clock (a backlog when high).",
		}),
	}
	for _, c := range []prometheus.Collector{m.commands, m.transitions, m.typing, m.claimed, m.publishErrors,
		m.sweepErrors, m.flushErrors, m.dbUsers, m.sweepSeconds, m.horizonLag} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("presence: metrics: %w", err)
		}
	}
	return m, nil
}
