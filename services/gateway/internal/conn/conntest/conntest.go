// Package conntest gives unit tests and benchmarks connections without a
// server: a Lifecycle with its own metrics registry and transports that
// discard what is written.
package conntest

import (
	"context"
	"io"
	"log/slog"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"relay/pkg/auth"
	"relay/services/gateway/internal/conn"
	"relay/services/gateway/internal/metrics"
)

// Discard is a transport that accepts every write at once.
type Discard struct{}

// WriteMessage implements conn.Transport.
func (Discard) WriteMessage(int, []byte) error { return nil }

// WriteControl implements conn.Transport.
func (Discard) WriteControl(int, []byte, time.Time) error { return nil }

// SetWriteDeadline implements conn.Transport.
func (Discard) SetWriteDeadline(time.Time) error { return nil }

// Close implements conn.Transport.
func (Discard) Close() error { return nil }

// Lifecycle returns a lifecycle with queueSize per connection, pings an
// hour apart, its own metrics (returned too) and no hooks.
func Lifecycle(queueSize int) (*conn.Lifecycle, *metrics.Metrics) {
	zero := func() float64 { return 0 }
	m := metrics.New(prometheus.NewRegistry(), zero, zero)
	l := conn.NewLifecycle(context.Background(), conn.Options{
		MaxConnections: 1 << 30, QueueSize: queueSize, Rate: 1000, Burst: 1000, ReplayRate: 1000, ReplayBurst: 1000,
		PingInterval: time.Hour, PongTimeout: 2 * time.Hour, WriteTimeout: 10 * time.Second,
		Metrics: m, Log: slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	return l, m
}

// Clients makes n connections of users 1..n over Discard; Close ends
// them.
func Clients(l *conn.Lifecycle, n int) []*conn.Client {
	out := make([]*conn.Client, n)
	for i := range out {
		out[i] = conn.NewClient(l, Discard{}, auth.Claims{UserID: int64(i + 1), Username: "u"}, "", false)
	}
	return out
}

// Close closes clients and waits for their writers.
func Close(clients []*conn.Client) {
	for _, c := range clients {
		c.Close(conn.DisconnectLost)
		<-c.Done()
	}
}
