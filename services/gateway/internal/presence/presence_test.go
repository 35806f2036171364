package presence

import (
	"context"
	"io"
	"log/slog"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	goredis "github.com/redis/go-redis/v9"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace/noop"

	"relay/pkg/auth"
	"relay/pkg/presence"
	"relay/pkg/protocol"
	"relay/pkg/telemetry"
	"relay/services/gateway/internal/conn"
	"relay/services/gateway/internal/conn/conntest"
	"relay/services/gateway/internal/metrics"
)

func TestUserIndex(t *testing.T) {
	t.Parallel()
	l, _ := conntest.Lifecycle(1)
	client := func(user int64) *conn.Client {
		return conn.NewClient(l, conntest.Discard{}, auth.Claims{UserID: user}, "", false)
	}
	x := newUserIndex()
	a1, a2, b := client(1), client(1), client(65) // 65 shares 1's shard
	defer conntest.Close([]*conn.Client{a1, a2, b})
	x.add(a1)
	x.add(b)
	x.add(a2)
	if got := x.conns(1); len(got) != 2 || x.len() != 2 {
		t.Fatalf("conns %v, users %d", got, x.len())
	}
	held := x.conns(1)
	x.remove(a1)
	if len(held) != 2 || held[0] != a1 {
		t.Fatal("a slice handed out was changed in place")
	}
	x.remove(a1) // twice: no effect
	if got := x.conns(1); len(got) != 1 || got[0] != a2 || x.len() != 2 {
		t.Fatalf("after remove: %v, users %d", got, x.len())
	}
	x.remove(a2)
	x.remove(b)
	if x.len() != 0 || x.conns(1) != nil || x.conns(65) != nil {
		t.Fatalf("not empty: users %d", x.len())
	}
	if got := conn.TruncateUTF8("héllo", 2); got != "h" {
		t.Fatalf("TruncateUTF8 cut a rune: %q", got)
	}
}

// benchPresence is a Presence with what routing and heartbeats touch and
// no servers, over n registered connections of users 1..n.
func benchPresence(b *testing.B, n int) (*Presence, *metrics.Metrics) {
	l, m := conntest.Lifecycle(1 << 14)
	tp := noop.NewTracerProvider()
	p := New(context.Background(), Options{
		Lifecycle: l, Metrics: m, QueueSize: 1, CacheSize: 1 << 16, CacheTTL: 1 << 40,
		PongTimeout: 1 << 40, MaxRooms: 500,
		Tel: &telemetry.Telemetry{Log: slog.New(slog.NewTextHandler(io.Discard, nil)), Tracer: tp.Tracer("bench"),
			TracerProvider: tp, Propagator: propagation.TraceContext{}, Registry: prometheus.NewRegistry()},
	})
	clients := conntest.Clients(l, n)
	for _, c := range clients {
		l.Register(c)
		p.users.add(c)
	}
	b.Cleanup(func() { conntest.Close(clients) })
	return p, m
}

// BenchmarkPresenceRoute routes one presence_update of a user in 20 rooms
// of 50 members (1000 distinct users, all connected here) among 10,000
// local connections, with the room caches warm (no PostgreSQL).
func BenchmarkPresenceRoute(b *testing.B) {
	p, m := benchPresence(b, 10000)
	const subject = 1
	rooms := make([]int64, 20)
	for r := range rooms {
		rooms[r] = int64(r + 1)
		members := []int64{subject}
		for k := range 49 {
			members = append(members, int64(2+r*49+k))
		}
		p.router.roomMembers.Add(rooms[r], members)
	}
	p.router.userRooms.Add(subject, rooms)
	ev := &presence.Event{UserID: subject, Status: presence.StatusOnline,
		Frame: []byte(`{"event":"presence_update","data":{"userId":"1","status":"online","lastSeen":"2026-11-26T21:04:05.123Z"}}`)}
	b.ReportAllocs()
	for b.Loop() {
		p.router.route(context.Background(), ev)
	}
	b.ReportMetric(float64(testutil.ToFloat64(m.FramesOut.WithLabelValues(protocol.EventPresenceUpdate)))/float64(b.N), "frames/op")
}

// BenchmarkHeartbeatBatch builds and queues the heartbeat batch of 20,000
// live connections (20 commands of 1000), as each interval does.
func BenchmarkHeartbeatBatch(b *testing.B) {
	p, _ := benchPresence(b, 20000)
	pub, err := presence.NewPublisher(nopRedis{}, presence.NewKeys("bench:"), "gw-bench", presence.PublisherOptions{QueueSize: 1 << 30})
	if err != nil {
		b.Fatal(err)
	}
	p.o.Publisher = pub
	defer func() {
		_ = pub.Close(context.Background())
	}()
	b.ReportAllocs()
	for b.Loop() {
		p.heartbeat(context.Background())
	}
}

// nopRedis accepts every pipeline without sending it (only what the
// presence publisher calls is implemented).
type nopRedis struct{ goredis.Cmdable }

func (nopRedis) Pipelined(context.Context, func(goredis.Pipeliner) error) ([]goredis.Cmder, error) {
	return nil, nil
}
