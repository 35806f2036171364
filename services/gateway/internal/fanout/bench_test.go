package fanout

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace/noop"

	"relay/pkg/protocol"
	"relay/pkg/redis"
	"relay/pkg/telemetry"
	"relay/services/gateway/internal/conn/conntest"
	"relay/services/gateway/internal/fanout/hub"
	"relay/services/gateway/internal/metrics"
)

// Run with:
//   cd services/gateway && go test ./internal/... -run '^$' -bench . -benchmem

func (nopBroker) Subscribe(context.Context, int64) (<-chan struct{}, error) { return closedChan, nil }
func (nopBroker) Unsubscribe(context.Context, int64) error                  { return nil }

type nopBroker struct{}

var closedChan = func() chan struct{} { c := make(chan struct{}); close(c); return c }()

type discardWriter struct{}

func (discardWriter) Write(p []byte) (int, error) { return len(p), nil }

// benchFanout is a Fanout with what fan-out touches and no servers: its hub
// subscribes nothing, its broker only runs the sequencer.
func benchFanout(m *metrics.Metrics) *Fanout {
	log, _ := telemetry.NewLogger(discardWriter{}, "error", "text")
	tp := noop.NewTracerProvider()
	f := &Fanout{
		o: Options{Tel: &telemetry.Telemetry{Log: log, Tracer: tp.Tracer("bench"), TracerProvider: tp,
			Propagator: propagation.TraceContext{}, Registry: prometheus.NewRegistry()}, Metrics: m},
		log: log,
	}
	f.ctx, f.cancel = context.WithCancel(context.Background())
	f.broker = &roomBroker{f: f}
	f.broker.seq = newSequencer(f.broker)
	f.hub = hub.New(nopBroker{}, hub.Options{})
	return f
}

// BenchmarkFanout100 fans one publication (decoded from its Redis payload,
// as the broker receives it) out to 100 local connections whose writer
// goroutines write to a discarding socket.
func BenchmarkFanout100(b *testing.B) {
	l, m := conntest.Lifecycle(1 << 14)
	f := benchFanout(m)
	const room = 42
	clients := conntest.Clients(l, 100)
	for _, c := range clients {
		mb, err := f.hub.Join(context.Background(), room, c)
		if err != nil {
			b.Fatal(err)
		}
		mb.Start(-1, nil)
	}
	defer conntest.Close(clients)
	data, _ := json.Marshal(protocol.Message{ID: "0190a7d2-1111-7000-8000-000000000001", RoomID: "42", UserID: "7",
		Username: "alice", Content: strings.Repeat("x", 120), Type: "text", Seq: 1, CreatedAt: time.Now().UTC()})
	frame, _ := json.Marshal(protocol.Frame{Event: protocol.EventMessage, Data: data})
	br := f.broker
	// Subscribed, as in production: every publication passes the gap check.
	br.seq.open(room)
	payloads := make([][]byte, 0, 1024)
	b.ReportAllocs()
	seq := int64(0)
	for b.Loop() {
		seq++
		if len(payloads) == 0 {
			// Payloads are made outside the timing loop's steady state:
			// the Redis client hands the broker a fresh one each time.
			b.StopTimer()
			for i := range 1024 {
				prev := seq + int64(i) - 1
				p, _ := json.Marshal(redis.Publication{RoomID: room, Seq: seq + int64(i), PrevSeq: &prev, Frame: frame,
					Trace: map[string]string{"traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"}})
				payloads = append(payloads, p)
			}
			b.StartTimer()
		}
		br.fanout(payloads[0])
		payloads = payloads[1:]
	}
	b.StopTimer()
	for _, c := range clients {
		if c.Stopped() {
			b.Fatal("a client was closed as slow during the benchmark")
		}
	}
	if g := testutil.ToFloat64(m.Gaps); g != 0 {
		b.Fatalf("%v gaps detected in a gapless run", g)
	}
}
