package telemetry

import (
	"github.com/prometheus/client_golang/prometheus"
	"github.com/sony/gobreaker/v2"
)

// SetBreakerState shows a circuit breaker's state on a gauge vector whose
// last label is the state: 1 for s, 0 for the other states, so a dashboard
// can graph the state as a step. labels are the values of the labels
// before the state (e.g. the breaker's name), if any.
func SetBreakerState(g *prometheus.GaugeVec, s gobreaker.State, labels ...string) {
	for _, st := range []gobreaker.State{gobreaker.StateClosed, gobreaker.StateHalfOpen, gobreaker.StateOpen} {
		v := 0.0
		if st == s {
			v = 1
		}
		g.WithLabelValues(append(labels[:len(labels):len(labels)], st.String())...).Set(v)
	}
}
