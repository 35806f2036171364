package worker_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/IBM/sarama"
	goredis "github.com/redis/go-redis/v9"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"relay/pkg/config"
	"relay/pkg/events"
	"relay/pkg/kafka"
	"relay/pkg/protocol"
	"relay/pkg/redis"
	"relay/pkg/telemetry"
	"relay/pkg/testenv"
	delivery "relay/services/delivery/internal/worker"
)

// env is one test's isolated slice of the servers.
type env struct {
	rdb      *goredis.Client
	keys     redis.Keys
	redisURL string
	brokers  []string
	topic    string
	parts    int32
	producer *kafka.Producer
	tel      *telemetry.Telemetry
}

func newEnv(t testing.TB, partitions int32) *env {
	t.Helper()
	if testenv.Short() {
		t.Skip("integration test")
	}
	rdb, prefix := testenv.Redis(t)
	_, rc, _ := testenv.Env(t)
	brokers, topic := testenv.Kafka(t, partitions)
	t.Cleanup(func() { deleteTopic(brokers, topic+".dlq") })
	tel := newTelemetry(t)
	p, err := kafka.NewProducer(brokers, topic, "delivery-test", tel.Propagator)
	if err != nil {
		t.Fatalf("producer: %v", err)
	}
	t.Cleanup(func() { _ = p.Close() })
	return &env{rdb: rdb, keys: redis.Keys{Prefix: prefix}, redisURL: rc.URL, brokers: brokers, topic: topic,
		parts: partitions, producer: p, tel: tel}
}

func newTelemetry(t testing.TB) *telemetry.Telemetry {
	t.Helper()
	tel, err := telemetry.Setup(context.Background(), "delivery", config.Telemetry{LogLevel: "error", LogFormat: "text"})
	if err != nil {
		t.Fatal(err)
	}
	return tel
}

func deleteTopic(brokers []string, topic string) {
	cfg := sarama.NewConfig()
	cfg.Version = sarama.V3_6_0_0
	admin, err := sarama.NewClusterAdmin(brokers, cfg)
	if err != nil {
		return
	}
	defer admin.Close()
	_ = admin.DeleteTopic(topic)
}

func (e *env) config() delivery.Config {
	return delivery.Config{
		HTTP:     config.HTTP{Addr: "127.0.0.1:0", ShutdownTimeout: 5 * time.Second},
		Redis:    config.Redis{URL: e.redisURL, Prefix: e.keys.Prefix},
		Kafka:    config.Kafka{Brokers: e.brokers, Topic: e.topic, Partitions: e.parts},
		Consumer: config.Consumer{Group: testenv.RandomName("delivery-"), RetryMin: 10 * time.Millisecond, RetryMax: 200 * time.Millisecond},
	}
}

// running is a started service.
type running struct {
	svc  *delivery.Service
	tel  *telemetry.Telemetry
	addr string
	stop func()
}

// start runs a service with cfg until the returned stop is called (or the
// test ends).
func start(t testing.TB, cfg delivery.Config) *running {
	t.Helper()
	return startWith(t, cfg, newTelemetry(t))
}

// startWith is start with the given telemetry (e.g. a recording tracer).
func startWith(t testing.TB, cfg delivery.Config, tel *telemetry.Telemetry) *running {
	t.Helper()
	svc, err := delivery.New(context.Background(), cfg, tel)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	addr, stop := testenv.Serve(t, svc)
	return &running{svc: svc, tel: tel, addr: addr, stop: stop}
}

// counter reads a counter of the service's registry.
func (r *running) counter(t testing.TB, name string) float64 {
	t.Helper()
	mfs, err := r.tel.Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	total := 0.0
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			total += m.GetCounter().GetValue()
		}
	}
	return total
}

// subscribe listens on the rooms' channels and returns the publications.
func (e *env) subscribe(t testing.TB, rooms ...int64) <-chan *protocol.Publication {
	t.Helper()
	chans := make([]string, len(rooms))
	for i, r := range rooms {
		chans[i] = e.keys.RoomChannel(r)
	}
	sub := e.rdb.SSubscribe(context.Background(), chans...)
	t.Cleanup(func() { _ = sub.Close() })
	for range chans {
		if _, err := sub.Receive(context.Background()); err != nil {
			t.Fatalf("subscribe: %v", err)
		}
	}
	out := make(chan *protocol.Publication, 1024)
	go func() {
		defer close(out)
		for m := range sub.Channel(goredis.WithChannelSize(1024)) {
			p, err := protocol.DecodePublication([]byte(m.Payload))
			if err != nil {
				t.Errorf("bad publication %q: %v", m.Payload, err)
				return
			}
			out <- p
		}
	}()
	return out
}

func receive(t testing.TB, ch <-chan *protocol.Publication, n int) []*protocol.Publication {
	t.Helper()
	var got []*protocol.Publication
	deadline := time.After(60 * time.Second)
	for len(got) < n {
		select {
		case p := <-ch:
			got = append(got, p)
		case <-deadline:
			t.Fatalf("received %d of %d publications", len(got), n)
		}
	}
	return got
}

func (e *env) publish(t testing.TB, ctx context.Context, ev *events.Event) int64 {
	t.Helper()
	if ev.At.IsZero() {
		ev.At = time.Now().UTC()
	}
	_, seq, err := e.producer.Publish(ctx, ev)
	if err != nil {
		t.Fatalf("publish: %v", err)
	}
	return seq
}

func message(room, user int64, text string) *events.Event {
	return &events.Event{Type: events.MessageCreated, RoomID: room, UserID: user, Username: "u",
		MessageID: fmt.Sprintf("m-%d-%s", room, text), Content: text, MessageType: "text"}
}

func frameOf(t testing.TB, p *protocol.Publication) (protocol.Frame, map[string]any) {
	t.Helper()
	var f protocol.Frame
	if err := json.Unmarshal(p.Frame, &f); err != nil {
		t.Fatalf("frame %s: %v", p.Frame, err)
	}
	var data map[string]any
	if err := json.Unmarshal(f.Data, &data); err != nil {
		t.Fatalf("data %s: %v", f.Data, err)
	}
	return f, data
}

// checkChain asserts pubs of one room are in seq order with each prevSeq
// pointing at the previous publication, the first one's at first.
func checkChain(t testing.TB, pubs []*protocol.Publication, first *int64, seqs []int64) {
	t.Helper()
	if len(pubs) != len(seqs) {
		t.Fatalf("got %d publications, want %d", len(pubs), len(seqs))
	}
	prev := first
	for i, p := range pubs {
		if p.Seq != seqs[i] {
			t.Fatalf("publication %d has seq %d, want %d", i, p.Seq, seqs[i])
		}
		switch {
		case prev == nil && p.PrevSeq != nil:
			t.Fatalf("seq %d: prevSeq %d, want none", p.Seq, *p.PrevSeq)
		case prev != nil && (p.PrevSeq == nil || *p.PrevSeq != *prev):
			t.Fatalf("seq %d: prevSeq %v, want %d", p.Seq, p.PrevSeq, *prev)
		}
		_, data := frameOf(t, p)
		if data["seq"] != float64(p.Seq) {
			t.Fatalf("frame seq %v, publication seq %d", data["seq"], p.Seq)
		}
		if prev == nil && data["prevSeq"] != nil || prev != nil && data["prevSeq"] != float64(*prev) {
			t.Fatalf("frame prevSeq %v, want %v", data["prevSeq"], prev)
		}
		seq := p.Seq
		prev = &seq
	}
}

func TestDeliveryOrderHistoryAndRedelivery(t *testing.T) {
	t.Parallel()
	e := newEnv(t, 3)
	ctx := context.Background()
	rooms := []int64{101, 202, 303, 404}
	pubs := e.subscribe(t, rooms...)

	// Trace context of the sender, to be found in the publications.
	traceID := trace.TraceID{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16}
	sctx := trace.ContextWithSpanContext(ctx, trace.NewSpanContext(trace.SpanContextConfig{
		TraceID: traceID, SpanID: trace.SpanID{1, 2, 3, 4, 5, 6, 7, 8}, TraceFlags: trace.FlagsSampled, Remote: true,
	}))

	const perRoom = 15
	seqs := map[int64][]int64{}
	for i := range perRoom {
		for _, room := range rooms {
			var ev *events.Event
			switch i % 5 {
			case 3:
				ev = &events.Event{Type: events.ReadMarked, RoomID: room, UserID: 2, ReadSeq: int64(i)}
			case 4:
				ev = &events.Event{Type: events.MessageEdited, RoomID: room, UserID: 1, MessageID: fmt.Sprintf("m-%d-%d", room, i-1), Content: "edited"}
			default:
				ev = message(room, 1, fmt.Sprint(i))
			}
			seqs[room] = append(seqs[room], e.publish(t, sctx, ev))
		}
	}
	spans := tracetest.NewSpanRecorder()
	tel := newTelemetry(t)
	tel.Tracer = sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(spans)).Tracer("test")
	r1 := startWith(t, e.config(), tel)
	got := receive(t, pubs, perRoom*len(rooms))
	byRoom := map[int64][]*protocol.Publication{}
	for _, p := range got {
		byRoom[p.RoomID] = append(byRoom[p.RoomID], p)
		if !strings.Contains(p.Trace["traceparent"], traceID.String()) {
			t.Fatalf("publication trace %v does not continue trace %s", p.Trace, traceID)
		}
	}
	// Each record has a "process <topic>" consumer span, a child of the
	// producer's span, and under it the Redis publish span whose context
	// the publication carries. Spans end just after their publish.
	for deadline := time.Now().Add(10 * time.Second); len(spans.Ended()) < 2*len(got) && time.Now().Before(deadline); {
		time.Sleep(10 * time.Millisecond)
	}
	processIDs, publishIDs := map[trace.SpanID]bool{}, map[string]bool{}
	for _, sp := range spans.Ended() {
		if sp.Name() != "process "+e.topic {
			continue
		}
		if sp.SpanKind() != trace.SpanKindConsumer || sp.Parent().TraceID() != traceID || sp.Parent().SpanID() != (trace.SpanID{1, 2, 3, 4, 5, 6, 7, 8}) {
			t.Fatalf("%s: kind %v, parent %v", sp.Name(), sp.SpanKind(), sp.Parent())
		}
		processIDs[sp.SpanContext().SpanID()] = true
	}
	for _, sp := range spans.Ended() {
		if strings.HasPrefix(sp.Name(), "publish ") && processIDs[sp.Parent().SpanID()] {
			publishIDs[sp.SpanContext().SpanID().String()] = true
		}
	}
	for _, p := range got {
		parts := strings.Split(p.Trace["traceparent"], "-")
		if len(parts) != 4 || !publishIDs[parts[2]] {
			t.Fatalf("traceparent %q is not a Redis publish span under a process span (%d recorded)", p.Trace["traceparent"], len(publishIDs))
		}
	}
	for _, room := range rooms {
		checkChain(t, byRoom[room], nil, seqs[room])
		hist, _, err := redis.History(ctx, e.rdb, e.keys, room, -1, 100)
		if err != nil {
			t.Fatal(err)
		}
		checkChain(t, hist, nil, seqs[room])
		// From the first seq on the history is known to be complete.
		first := seqs[room][0]
		hist, complete, err := redis.History(ctx, e.rdb, e.keys, room, first, 100)
		if err != nil {
			t.Fatal(err)
		}
		if !complete {
			t.Fatalf("room %d: history after %d incomplete", room, first)
		}
		checkChain(t, hist, &first, seqs[room][1:])
	}
	f, data := frameOf(t, byRoom[rooms[0]][0])
	if f.Event != protocol.EventMessage || data["roomId"] != "101" || data["userId"] != "1" || data["content"] != "0" {
		t.Fatalf("first frame = %s %v", f.Event, data)
	}
	if f, _ := frameOf(t, byRoom[rooms[0]][3]); f.Event != protocol.EventMessageRead {
		t.Fatalf("fourth frame = %s, want %s", f.Event, protocol.EventMessageRead)
	}
	if f, _ := frameOf(t, byRoom[rooms[0]][4]); f.Event != protocol.EventMessageEdited {
		t.Fatalf("fifth frame = %s, want %s", f.Event, protocol.EventMessageEdited)
	}
	if n := r1.counter(t, "delivery_events_published_total"); n != perRoom*float64(len(rooms)) {
		t.Fatalf("published counter = %v", n)
	}
	r1.stop()

	// A fresh group re-consumes the whole topic: nothing may be published
	// twice. A new event per room, published after the redeliveries in
	// its partition, must be the only publication and continue the chain.
	r2 := start(t, e.config())
	last := map[int64]int64{}
	for _, room := range rooms {
		last[room] = seqs[room][len(seqs[room])-1]
		seqs[room] = []int64{e.publish(t, ctx, message(room, 1, "after restart"))}
	}
	got = receive(t, pubs, len(rooms))
	byRoom = map[int64][]*protocol.Publication{}
	for _, p := range got {
		byRoom[p.RoomID] = append(byRoom[p.RoomID], p)
	}
	for _, room := range rooms {
		l := last[room]
		checkChain(t, byRoom[room], &l, seqs[room])
	}
	// The worker publishes a batch's records with one pipeline and counts
	// them after it returns: the new events can arrive first.
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		n := r2.counter(t, "delivery_duplicates_total")
		if n == perRoom*float64(len(rooms)) {
			break
		}
		if n > perRoom*float64(len(rooms)) || time.Now().After(deadline) {
			t.Fatalf("duplicates counter = %v, want %d", n, perRoom*len(rooms))
		}
	}
	select {
	case p := <-pubs:
		t.Fatalf("unexpected publication seq %d in room %d", p.Seq, p.RoomID)
	default:
	}
}

func TestDeliveryDeadLetterDoesNotStall(t *testing.T) {
	t.Parallel()
	e := newEnv(t, 1)
	ctx := context.Background()
	const room = 77
	pubs := e.subscribe(t, room)

	raw, err := sarama.NewSyncProducer(e.brokers, kafka.ProducerConfig("delivery-test-raw"))
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	garbage := []string{`{not json`, `{"type":"message_created","roomId":"77","userId":"1","at":"2025-01-01T00:00:00Z"}`, `{"type":"nope","roomId":"77","userId":"1","at":"2025-01-01T00:00:00Z"}`}
	var badOffsets []int64
	for _, g := range garbage {
		_, off, err := raw.SendMessage(&sarama.ProducerMessage{Topic: e.topic, Key: sarama.StringEncoder("77"), Value: sarama.StringEncoder(g),
			Headers: []sarama.RecordHeader{{Key: []byte("x-origin"), Value: []byte("test")}}})
		if err != nil {
			t.Fatal(err)
		}
		badOffsets = append(badOffsets, off)
	}
	good := e.publish(t, ctx, message(room, 1, "after garbage"))

	r := start(t, e.config())
	got := receive(t, pubs, 1)
	checkChain(t, got, nil, []int64{good})

	// The dead-letter topic holds the three records, with why and where.
	cons, err := sarama.NewConsumer(e.brokers, kafka.ConsumerConfig("delivery-test-dlq"))
	if err != nil {
		t.Fatal(err)
	}
	defer cons.Close()
	pc, err := cons.ConsumePartition(e.topic+".dlq", 0, sarama.OffsetOldest)
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	for i, g := range garbage {
		select {
		case m := <-pc.Messages():
			hs := map[string]string{}
			for _, h := range m.Headers {
				hs[string(h.Key)] = string(h.Value)
			}
			if string(m.Value) != g || string(m.Key) != "77" || hs["x-origin"] != "test" || hs[kafka.HeaderDLQError] == "" ||
				hs[kafka.HeaderDLQTopic] != e.topic || hs[kafka.HeaderDLQOffset] != fmt.Sprint(badOffsets[i]) {
				t.Fatalf("dead letter %d = %q key %q headers %v", i, m.Value, m.Key, hs)
			}
		case <-time.After(30 * time.Second):
			t.Fatalf("dead letter %d not found", i)
		}
	}
	if n := r.counter(t, "delivery_dead_letters_total"); n != 3 {
		t.Fatalf("dead letters counter = %v", n)
	}

	// Probes.
	for path, want := range map[string]int{"/health": 200, "/ready": 200, "/metrics": 200} {
		resp, err := http.Get("http://" + r.addr + path)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != want {
			t.Fatalf("GET %s = %d %s", path, resp.StatusCode, body)
		}
	}
	// The lag moves once the batch's publish returned, which can be just
	// after the subscriber got the publication.
	eventually(t, "lag 0", func() (bool, string) {
		_, body := httpGet(t, r.addr, "/metrics")
		var lag []string
		for _, l := range strings.Split(string(body), "\n") {
			if strings.HasPrefix(l, "delivery_consumer_lag{") {
				lag = append(lag, l)
			}
		}
		return slices.Contains(lag, "delivery_consumer_lag{partition=\"0\"} 0"), fmt.Sprintf("lag lines %q", lag)
	})
}

func TestNewRejectsBadConfig(t *testing.T) {
	t.Parallel()
	tel := newTelemetry(t)
	cfg := delivery.Config{Redis: config.Redis{URL: "redis://127.0.0.1:6379/0"}, Kafka: config.Kafka{Brokers: []string{"127.0.0.1:9092"}, Topic: "t", Partitions: 1}}
	bad := cfg
	bad.HistoryCap = -1
	if _, err := delivery.New(context.Background(), bad, tel); err == nil {
		t.Fatal("negative history cap accepted")
	}
	bad = cfg
	bad.DLQTopic = "t"
	if _, err := delivery.New(context.Background(), bad, tel); err == nil {
		t.Fatal("dead-letter topic equal to the topic accepted")
	}
	bad = cfg
	bad.Kafka.Brokers = nil
	if _, err := delivery.New(context.Background(), bad, tel); err == nil {
		t.Fatal("no brokers accepted")
	}
}
