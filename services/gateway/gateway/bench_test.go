package gateway

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	goredis "github.com/redis/go-redis/v9"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace/noop"

	"relay/pkg/auth"
	"relay/pkg/presence"
	"relay/pkg/protocol"
	"relay/pkg/redis"
	"relay/pkg/telemetry"
	"relay/services/gateway/gateway/hub"
)

// Run with:
//   cd services/gateway && go test ./gateway -run '^$' -bench . -benchmem

var sendFrame = []byte(`{"event":"send_message","ref":"c42","data":{"roomId":"12345","content":"hello there, how is it going?","type":"text","metadata":{"replyTo":"0190a7d2-1111-7000-8000-000000000001"},"clientMsgId":"m-000123"}}`)

func BenchmarkDecodeSendMessage(b *testing.B) {
	b.ReportAllocs()
	b.SetBytes(int64(len(sendFrame)))
	for b.Loop() {
		event, data, ref, err := decodeEnvelope(sendFrame)
		if err != nil || event != protocol.EventSendMessage || ref != "c42" {
			b.Fatal(event, err)
		}
		cmd, err := parseSend(data)
		if err != nil || cmd.room != 12345 {
			b.Fatal(err)
		}
	}
}

// discardSocket is a socket that accepts every write at once.
type discardSocket struct{}

func (discardSocket) WriteMessage(int, []byte) error                        { return nil }
func (discardSocket) WriteControl(int, []byte, time.Time) error             { return nil }
func (discardSocket) SetWriteDeadline(time.Time) error                      { return nil }
func (discardSocket) Close() error                                          { return nil }
func (nopBroker) Subscribe(context.Context, int64) (<-chan struct{}, error) { return closedChan, nil }
func (nopBroker) Unsubscribe(context.Context, int64) error                  { return nil }

type nopBroker struct{}

var closedChan = func() chan struct{} { c := make(chan struct{}); close(c); return c }()

// benchService is a Service with what fan-out touches and no servers.
func benchService(b *testing.B) *Service {
	log, _ := telemetry.NewLogger(discardWriter{}, "error", "text")
	tp := noop.NewTracerProvider()
	s := &Service{
		cfg: Config{QueueSize: 1 << 14}.withDefaults(),
		tel: &telemetry.Telemetry{Log: log, Tracer: tp.Tracer("bench"), TracerProvider: tp,
			Propagator: propagation.TraceContext{}, Registry: prometheus.NewRegistry()},
		log: log,
	}
	s.hub = hub.New(nopBroker{}, hub.Options{})
	s.metrics = newMetrics(s.tel.Registry, func() float64 { return 0 }, func() float64 { return 0 })
	s.users = newUserIndex()
	s.clients = make(map[*client]struct{})
	s.router = newPresenceRouter(s, presence.NewKeys(""))
	return s
}

type discardWriter struct{}

func (discardWriter) Write(p []byte) (int, error) { return len(p), nil }

// BenchmarkFanout100 fans one publication (decoded from its Redis payload,
// as the broker receives it) out to 100 local connections whose writer
// goroutines write to a discarding socket.
func BenchmarkFanout100(b *testing.B) {
	s := benchService(b)
	const room = 42
	clients := make([]*client, 100)
	for i := range clients {
		c := newClient(s, discardSocket{}, auth.Claims{UserID: int64(i + 1), Username: "u"}, "")
		m, err := s.hub.Join(context.Background(), room, c)
		if err != nil {
			b.Fatal(err)
		}
		m.Start(-1, nil)
		clients[i] = c
	}
	defer func() {
		for _, c := range clients {
			c.close(0, "")
			<-c.done
		}
	}()
	data, _ := json.Marshal(protocol.Message{ID: "0190a7d2-1111-7000-8000-000000000001", RoomID: "42", UserID: "7",
		Username: "alice", Content: strings.Repeat("x", 120), Type: "text", Seq: 1, CreatedAt: time.Now().UTC()})
	frame, _ := json.Marshal(protocol.Frame{Event: protocol.EventMessage, Data: data})
	br := &roomBroker{s: s}
	br.seq = newSequencer(br)
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
		if c.stop.Load() {
			b.Fatal("a client was closed as slow during the benchmark")
		}
	}
	if g := testutil.ToFloat64(s.metrics.gaps); g != 0 {
		b.Fatalf("%v gaps detected in a gapless run", g)
	}
}

// benchClients registers n connections of users 1..n (writers discard).
func benchClients(b *testing.B, s *Service, n int) []*client {
	clients := make([]*client, n)
	for i := range clients {
		c := newClient(s, discardSocket{}, auth.Claims{UserID: int64(i + 1), Username: "u"}, "")
		c.pinger.Stop()
		s.clients[c] = struct{}{}
		s.users.add(c)
		clients[i] = c
	}
	b.Cleanup(func() {
		for _, c := range clients {
			c.close(0, "")
			<-c.done
		}
	})
	return clients
}

// BenchmarkPresenceRoute routes one presence_update of a user in 20 rooms
// of 50 members (1000 distinct users, all connected here) among 10,000
// local connections, with the room caches warm (no PostgreSQL).
func BenchmarkPresenceRoute(b *testing.B) {
	s := benchService(b)
	benchClients(b, s, 10000)
	const subject = 1
	rooms := make([]int64, 20)
	for r := range rooms {
		rooms[r] = int64(r + 1)
		members := []int64{subject}
		for m := range 49 {
			members = append(members, int64(2+r*49+m))
		}
		s.router.roomMembers.Add(rooms[r], members)
	}
	s.router.userRooms.Add(subject, rooms)
	ev := &presence.Event{UserID: subject, Status: presence.StatusOnline,
		Frame: []byte(`{"event":"presence_update","data":{"userId":"1","status":"online","lastSeen":"2026-11-26T21:04:05.123Z"}}`)}
	b.ReportAllocs()
	for b.Loop() {
		s.router.route(context.Background(), ev)
	}
	b.ReportMetric(float64(testutil.ToFloat64(s.metrics.framesOut.WithLabelValues(protocol.EventPresenceUpdate)))/float64(b.N), "frames/op")
}

// BenchmarkHeartbeatBatch builds and queues the heartbeat batch of 20,000
// live connections (20 commands of 1000), as each interval does.
func BenchmarkHeartbeatBatch(b *testing.B) {
	s := benchService(b)
	benchClients(b, s, 20000)
	pub, err := presence.NewPublisher(nopRedis{}, presence.NewKeys("bench:"), "gw-bench", presence.PublisherOptions{QueueSize: 1 << 30})
	if err != nil {
		b.Fatal(err)
	}
	s.pub = pub
	defer func() {
		_ = pub.Close(context.Background())
	}()
	b.ReportAllocs()
	for b.Loop() {
		s.heartbeat(context.Background())
	}
}

// nopRedis accepts every pipeline without sending it (only what the
// presence publisher calls is implemented).
type nopRedis struct{ goredis.Cmdable }

func (nopRedis) Pipelined(context.Context, func(goredis.Pipeliner) error) ([]goredis.Cmder, error) {
	return nil, nil
}
