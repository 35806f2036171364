package writer_test

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/IBM/sarama"
	"github.com/google/uuid"
	"go.opentelemetry.io/otel/trace"
	"gorm.io/gorm"

	"relay/pkg/config"
	"relay/pkg/events"
	"relay/pkg/kafka"
	"relay/pkg/store"
	"relay/pkg/telemetry"
	"relay/pkg/testenv"
	persister "relay/services/persister/internal/writer"
)

// env is one test's isolated slice of the servers: a database with two
// rooms whose members are alice and bob, and a topic.
type env struct {
	dbURL      string
	db         *gorm.DB
	brokers    []string
	topic      string
	parts      int32
	producer   *kafka.Producer
	rooms      [2]int64
	alice, bob int64
	spanMu     sync.Mutex
	spans      map[trace.SpanID]bool // of the events published
}

func newEnv(t testing.TB, partitions int32) *env {
	t.Helper()
	if testenv.Short() {
		t.Skip("integration test")
	}
	e := &env{dbURL: testenv.Database(t), parts: partitions, spans: map[trace.SpanID]bool{}}
	db, err := store.Open(context.Background(), e.dbURL, store.Options{MaxConns: 4})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = store.Close(db) })
	e.db = db
	users := []store.User{{Username: "alice", Email: "a@example.com", PasswordHash: "x"}, {Username: "bob", Email: "b@example.com", PasswordHash: "x"}}
	if err := db.Create(&users).Error; err != nil {
		t.Fatal(err)
	}
	e.alice, e.bob = users[0].ID, users[1].ID
	rooms := []store.Room{{Name: "one", Type: "group", CreatedBy: e.alice}, {Name: "two", Type: "group", CreatedBy: e.alice}}
	if err := db.Create(&rooms).Error; err != nil {
		t.Fatal(err)
	}
	e.rooms = [2]int64{rooms[0].ID, rooms[1].ID}
	var members []store.RoomMember
	for _, r := range e.rooms {
		for _, u := range []int64{e.alice, e.bob} {
			members = append(members, store.RoomMember{RoomID: r, UserID: u, Role: "member", LastReadSeq: -1, JoinedAt: time.Now()})
		}
	}
	if err := db.Create(&members).Error; err != nil {
		t.Fatal(err)
	}

	e.brokers, e.topic = testenv.Kafka(t, partitions)
	t.Cleanup(func() { deleteTopic(e.brokers, e.topic+".dlq") })
	tel := newTelemetry(t)
	if e.producer, err = kafka.NewProducer(e.brokers, e.topic, "persister-test", tel.Propagator); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = e.producer.Close() })
	return e
}

func newTelemetry(t testing.TB) *telemetry.Telemetry {
	t.Helper()
	tel, err := telemetry.Setup(context.Background(), "persister", config.Telemetry{LogLevel: "error", LogFormat: "text"})
	if err != nil {
		t.Fatal(err)
	}
	return tel
}

func deleteTopic(brokers []string, topic string) {
	admin, err := sarama.NewClusterAdmin(brokers, kafka.ConsumerConfig("persister-test-admin"))
	if err != nil {
		return
	}
	defer admin.Close()
	_ = admin.DeleteTopic(topic)
}

func (e *env) config(dbURL string) persister.Config {
	return persister.Config{
		HTTP:               config.HTTP{ShutdownTimeout: 10 * time.Second},
		Postgres:           config.Postgres{URL: dbURL, MaxConns: 4},
		Kafka:              config.Kafka{Brokers: e.brokers, Topic: e.topic, Partitions: e.parts},
		Consumer:           config.Consumer{Group: testenv.RandomName("persister-"), RetryMin: 20 * time.Millisecond, RetryMax: 200 * time.Millisecond},
		FlushInterval:      20 * time.Millisecond,
		WriteTimeout:       3 * time.Second,
		BreakerFailures:    2,
		BreakerOpenTimeout: 300 * time.Millisecond,
	}
}

// testTraceID is the trace every produced event belongs to; each event
// gets its own span id, remembered in env.spans.
var testTraceID = trace.TraceID{0xa, 0xb, 0xc, 0xd, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12}

func (e *env) publish(t testing.TB, ev *events.Event) int64 {
	t.Helper()
	ev.At = time.Now().UTC().Truncate(time.Microsecond)
	e.spanMu.Lock()
	var sid trace.SpanID
	binary.BigEndian.PutUint64(sid[:], uint64(len(e.spans)+1))
	e.spans[sid] = true
	e.spanMu.Unlock()
	ctx := trace.ContextWithSpanContext(context.Background(), trace.NewSpanContext(trace.SpanContextConfig{
		TraceID: testTraceID, SpanID: sid, TraceFlags: trace.FlagsSampled, Remote: true,
	}))
	_, seq, err := e.producer.Publish(ctx, ev)
	if err != nil {
		t.Fatalf("publish: %v", err)
	}
	return seq
}

func (e *env) create(t testing.TB, room, user int64, content string) (id string, seq int64) {
	t.Helper()
	id = uuid.Must(uuid.NewV7()).String()
	seq = e.publish(t, &events.Event{Type: events.MessageCreated, RoomID: room, UserID: user, Username: "u",
		MessageID: id, Content: content, MessageType: "text", ClientMsgID: "c-" + id[len(id)-12:]})
	return id, seq
}

// running is a started service.
type running struct {
	svc  *persister.Service
	tel  *telemetry.Telemetry
	addr string
	stop func()
}

func start(t testing.TB, cfg persister.Config) *running {
	t.Helper()
	return startWith(t, cfg, newTelemetry(t))
}

// startWith is start with the given telemetry (e.g. a recording tracer).
func startWith(t testing.TB, cfg persister.Config, tel *telemetry.Telemetry) *running {
	t.Helper()
	svc, err := persister.New(context.Background(), cfg, tel)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	addr, stop := testenv.Serve(t, svc)
	return &running{svc: svc, tel: tel, addr: addr, stop: stop}
}

// metric sums the samples of a counter or gauge, optionally only those
// with label name=value.
func (r *running) metric(t testing.TB, name, label, value string) float64 {
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
	samples:
		for _, m := range mf.GetMetric() {
			if label != "" {
				for _, l := range m.GetLabel() {
					if l.GetName() == label && l.GetValue() != value {
						continue samples
					}
				}
			}
			total += m.GetCounter().GetValue() + m.GetGauge().GetValue()
		}
	}
	return total
}

func (r *running) get(t testing.TB, path string) (int, []byte) {
	t.Helper()
	resp, err := http.Get("http://" + r.addr + path)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, b
}

func (r *running) lag(t testing.TB) persister.LagReport {
	t.Helper()
	code, body := r.get(t, "/lag")
	var l persister.LagReport
	if code != 200 || json.Unmarshal(body, &l) != nil {
		t.Fatalf("GET /lag = %d %s", code, body)
	}
	return l
}

// offsets returns the group's committed offsets and the topic's high
// water marks per partition.
func (e *env) offsets(t testing.TB, group string) (committed, hwm map[int32]int64) {
	t.Helper()
	client, err := sarama.NewClient(e.brokers, kafka.ConsumerConfig("persister-test-offsets"))
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	admin, err := sarama.NewClusterAdminFromClient(client)
	if err != nil {
		t.Fatal(err)
	}
	parts := make([]int32, e.parts)
	for i := range parts {
		parts[i] = int32(i)
	}
	resp, err := admin.ListConsumerGroupOffsets(group, map[string][]int32{e.topic: parts})
	if err != nil && !errors.Is(err, sarama.ErrGroupIDNotFound) { // not joined yet: nothing committed
		t.Fatal(err)
	}
	committed, hwm = map[int32]int64{}, map[int32]int64{}
	for _, p := range parts {
		committed[p] = -1
		if resp != nil {
			if b := resp.GetBlock(e.topic, p); b != nil {
				committed[p] = b.Offset
			}
		}
		if hwm[p], err = client.GetOffset(e.topic, p, sarama.OffsetNewest); err != nil {
			t.Fatal(err)
		}
	}
	return committed, hwm
}

// caughtUp reports whether the group committed every record of the topic.
func (e *env) caughtUp(t testing.TB, group string) (bool, string) {
	committed, hwm := e.offsets(t, group)
	for p, h := range hwm {
		if h > 0 && committed[p] != h {
			return false, fmt.Sprintf("committed %v, high water marks %v", committed, hwm)
		}
	}
	return true, ""
}

// eventually polls cond until it holds or a generous deadline passes (a
// deadline against hangs, not a speed assertion).
func eventually(t testing.TB, what string, cond func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		ok, detail := cond()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s: %s", what, detail)
		}
		time.Sleep(25 * time.Millisecond)
	}
}

func (e *env) count(t testing.TB) int64 {
	t.Helper()
	var n int64
	if err := e.db.Model(&store.Message{}).Count(&n).Error; err != nil {
		t.Fatal(err)
	}
	return n
}

func (e *env) message(t testing.TB, id string) store.Message {
	t.Helper()
	var m store.Message
	if err := e.db.First(&m, "id = ?", id).Error; err != nil {
		t.Fatalf("message %s: %v", id, err)
	}
	return m
}

func (e *env) lastRead(t testing.TB, room, user int64) int64 {
	t.Helper()
	var m store.RoomMember
	if err := e.db.First(&m, "room_id = ? AND user_id = ?", room, user).Error; err != nil {
		t.Fatal(err)
	}
	return m.LastReadSeq
}
