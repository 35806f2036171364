package writer_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/IBM/sarama"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"relay/pkg/config"
	"relay/pkg/events"
	"relay/pkg/kafka"
	"relay/pkg/testenv"
	persister "relay/services/persister/internal/writer"
)

// wantState is what the database must hold after the events of
// TestPersisterExactlyOnce, however often they are delivered.
type wantState struct {
	ids                []string
	edited, deleted    string
	nonAuthorEdited    string
	readRoom, readUser int64
	readSeq            int64
}

func TestPersisterExactlyOnce(t *testing.T) {
	t.Parallel()
	e := newEnv(t, 3)
	var w wantState
	for i := range 10 {
		for _, room := range e.rooms {
			user := e.alice
			if i%2 == 1 {
				user = e.bob
			}
			id, _ := e.create(t, room, user, fmt.Sprintf("room %d message %d", room, i))
			w.ids = append(w.ids, id)
		}
	}
	w.edited, w.deleted, w.nonAuthorEdited = w.ids[0], w.ids[2], w.ids[4] // all alice's, in rooms[0]
	e.publish(t, &events.Event{Type: events.MessageEdited, RoomID: e.rooms[0], UserID: e.alice, MessageID: w.edited, Content: "first edit"})
	e.publish(t, &events.Event{Type: events.MessageEdited, RoomID: e.rooms[0], UserID: e.alice, MessageID: w.edited, Content: "second edit"})
	e.publish(t, &events.Event{Type: events.MessageEdited, RoomID: e.rooms[0], UserID: e.bob, MessageID: w.nonAuthorEdited, Content: "not the author"})
	e.publish(t, &events.Event{Type: events.MessageDeleted, RoomID: e.rooms[0], UserID: e.alice, MessageID: w.deleted})
	e.publish(t, &events.Event{Type: events.MessageEdited, RoomID: e.rooms[0], UserID: e.alice, MessageID: w.deleted, Content: "edit after delete"})
	w.readRoom, w.readUser = e.rooms[1], e.bob
	w.readSeq = e.publish(t, &events.Event{Type: events.ReadMarked, RoomID: e.rooms[1], UserID: e.bob, ReadSeq: 5})
	w.readSeq = min(w.readSeq, 5)
	e.publish(t, &events.Event{Type: events.ReadMarked, RoomID: e.rooms[1], UserID: e.bob, ReadSeq: 2}) // backwards: ignored
	e.publish(t, &events.Event{Type: events.MemberJoined, RoomID: e.rooms[1], UserID: e.bob, Role: "member"})

	// Records that can never be written: garbage, a message whose room does
	// not exist (the database refuses it), a malformed message id. Each is
	// dead-lettered, and the records after them are still written.
	raw, err := sarama.NewSyncProducer(e.brokers, kafka.ProducerConfig("persister-test-raw"))
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	for _, v := range []string{`garbage`, fmt.Sprintf(`{"type":"message_created","roomId":"%d","userId":"%d","messageId":"not-a-uuid","messageType":"text","at":"2025-01-01T00:00:00Z"}`, e.rooms[0], e.alice)} {
		if _, _, err := raw.SendMessage(&sarama.ProducerMessage{Topic: e.topic, Key: sarama.StringEncoder(fmt.Sprint(e.rooms[0])), Value: sarama.StringEncoder(v)}); err != nil {
			t.Fatal(err)
		}
	}
	e.create(t, 1<<40, e.alice, "room does not exist")
	id, _ := e.create(t, e.rooms[0], e.bob, "after the bad ones")
	w.ids = append(w.ids, id)

	cfg := e.config(e.dbURL)
	spans := tracetest.NewSpanRecorder()
	tel := newTelemetry(t)
	tel.Tracer = sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(spans)).Tracer("test")
	r := startWith(t, cfg, tel)
	eventually(t, "all records persisted and committed", func() (bool, string) { return e.caughtUp(t, cfg.Group) })
	e.checkState(t, w)

	// The batch spans link to every produced event's span (a batch span
	// ends just after its offsets are marked, so wait for the last one).
	eventually(t, "batch spans linking every event", func() (bool, string) {
		linked := map[trace.SpanID]bool{}
		for _, sp := range spans.Ended() {
			if sp.Name() != "process "+cfg.Kafka.Topic || sp.SpanKind() != trace.SpanKindConsumer {
				continue
			}
			for _, l := range sp.Links() {
				if l.SpanContext.TraceID() == testTraceID {
					linked[l.SpanContext.SpanID()] = true
				}
			}
		}
		for sid := range e.spans {
			if !linked[sid] {
				return false, fmt.Sprintf("no link to %s; %d of %d linked", sid, len(linked), len(e.spans))
			}
		}
		return len(linked) == len(e.spans), fmt.Sprintf("%d links, %d spans", len(linked), len(e.spans))
	})
	// Each persisted record's own trace gets a "persist" span, a child of
	// its producer span linked to the batch span that wrote it (the
	// dead-lettered records were produced without trace context).
	eventually(t, "persist spans in every persisted record's trace", func() (bool, string) {
		batches := map[trace.SpanID]bool{}
		for _, sp := range spans.Ended() {
			if sp.Name() == "process "+cfg.Kafka.Topic {
				batches[sp.SpanContext().SpanID()] = true
			}
		}
		parents := map[trace.SpanID]bool{}
		for _, sp := range spans.Ended() {
			if sp.Name() != "persist "+cfg.Kafka.Topic {
				continue
			}
			if sp.Parent().TraceID() != testTraceID || !e.spans[sp.Parent().SpanID()] {
				t.Fatalf("persist span parent %v is no produced record's span", sp.Parent())
			}
			if len(sp.Links()) != 1 || !batches[sp.Links()[0].SpanContext.SpanID()] {
				return false, fmt.Sprintf("persist span links %v: want its batch span", sp.Links())
			}
			parents[sp.Parent().SpanID()] = true
		}
		return len(parents) == len(e.spans), fmt.Sprintf("%d of %d records have a persist span", len(parents), len(e.spans))
	})
	if n := r.metric(t, "persister_dead_letters_total", "", ""); n != 3 {
		t.Fatalf("dead letters = %v, want 3", n)
	}
	// 20 creates, 5 edits and deletes, 2 read marks, 1 join, 3 bad, 1 after.
	if n := r.metric(t, "persister_records_total", "", ""); n != 32 {
		t.Fatalf("records counter = %v", n)
	}
	if code, body := r.get(t, "/ready"); code != 200 {
		t.Fatalf("/ready = %d %s", code, body)
	}
	if l := r.lag(t); l.Total != 0 || len(l.Partitions) != int(e.parts) {
		t.Fatalf("/lag = %+v", l)
	}
	r.stop()

	// A fresh group gets every record again: nothing changes.
	cfg2 := e.config(e.dbURL)
	r2 := start(t, cfg2)
	eventually(t, "redelivery persisted and committed", func() (bool, string) { return e.caughtUp(t, cfg2.Group) })
	e.checkState(t, w)
	if n := r2.metric(t, "persister_rows_changed_total", "", ""); n != 0 {
		t.Fatalf("redelivery changed %v rows", n)
	}
}

func (e *env) checkState(t *testing.T, w wantState) {
	t.Helper()
	if n := e.count(t); n != int64(len(w.ids)) {
		t.Fatalf("messages = %d, want %d", n, len(w.ids))
	}
	if m := e.message(t, w.edited); m.Content != "second edit" || !m.IsEdited {
		t.Fatalf("edited message = %+v", m)
	}
	if m := e.message(t, w.nonAuthorEdited); m.IsEdited || strings.Contains(m.Content, "author") {
		t.Fatalf("non-author edit applied: %+v", m)
	}
	if m := e.message(t, w.deleted); !m.IsDeleted || m.Content != "" || m.IsEdited {
		t.Fatalf("deleted message = %+v", m)
	}
	if got := e.lastRead(t, w.readRoom, w.readUser); got != w.readSeq {
		t.Fatalf("last read = %d, want %d", got, w.readSeq)
	}
	if got := e.lastRead(t, w.readRoom, e.alice); got != -1 {
		t.Fatalf("alice's last read = %d, want -1", got)
	}
}

func TestPersisterDatabaseOutage(t *testing.T) {
	t.Parallel()
	e := newEnv(t, 2)
	proxy, proxied := testenv.NewProxy(t, e.dbURL)
	cfg := e.config(proxied)
	r := start(t, cfg)

	var ids []string
	produce := func(n int) {
		for i := range n {
			id, _ := e.create(t, e.rooms[i%2], e.alice, fmt.Sprint("message ", len(ids)))
			ids = append(ids, id)
		}
	}
	rows := func(want int) func() (bool, string) {
		return func() (bool, string) {
			n := e.count(t)
			return n == int64(want), fmt.Sprintf("%d rows, want %d", n, want)
		}
	}
	produce(5)
	eventually(t, "first records persisted", rows(5))
	eventually(t, "first records committed", func() (bool, string) { return e.caughtUp(t, cfg.Group) })

	// Database down: writes fail, the breaker opens, nothing is committed.
	proxy.SetDown(true)
	before, _ := e.offsets(t, cfg.Group)
	produce(10)
	eventually(t, "breaker open", func() (bool, string) {
		v := r.metric(t, "persister_breaker_state", "state", "open")
		return v == 1, fmt.Sprintf("open = %v", v)
	})
	// The breaker turns half-open after BreakerOpenTimeout until its next
	// probe fails, and /ready fails only while it is open: a loaded machine
	// can reach /ready in such a window.
	eventually(t, "/ready failing on the open breaker", func() (bool, string) {
		code, body := r.get(t, "/ready")
		return code == 503 && strings.Contains(string(body), "breaker"), fmt.Sprintf("/ready = %d %s", code, body)
	})
	eventually(t, "lag visible", func() (bool, string) {
		l := r.lag(t)
		return l.Total == 10, fmt.Sprintf("lag %+v", l)
	})
	if after, _ := e.offsets(t, cfg.Group); !equal(before, after) {
		t.Fatalf("offsets committed while the database was down: %v -> %v", before, after)
	}
	if n := e.count(t); n != 5 {
		t.Fatalf("%d rows while the database was down", n)
	}

	// Back up: the same process writes the held batch.
	proxy.SetDown(false)
	eventually(t, "held records persisted", rows(15))
	eventually(t, "held records committed", func() (bool, string) { return e.caughtUp(t, cfg.Group) })
	eventually(t, "breaker closed", func() (bool, string) {
		v := r.metric(t, "persister_breaker_state", "state", "closed")
		return v == 1, fmt.Sprintf("closed = %v", v)
	})
	if code, body := r.get(t, "/ready"); code != 200 {
		t.Fatalf("/ready after recovery = %d %s", code, body)
	}
	if l := r.lag(t); l.Total != 0 {
		t.Fatalf("lag after recovery = %+v", l)
	}

	// Down again, and the service is stopped while its batch is pending:
	// shutdown ends, and those offsets are not committed.
	proxy.SetDown(true)
	failures := r.metric(t, "persister_batch_failures_total", "", "")
	before, _ = e.offsets(t, cfg.Group)
	produce(6)
	eventually(t, "writes failing", func() (bool, string) {
		v := r.metric(t, "persister_batch_failures_total", "", "")
		return v > failures, fmt.Sprintf("failures %v", v)
	})
	r.stop()
	if after, _ := e.offsets(t, cfg.Group); !equal(before, after) {
		t.Fatalf("offsets committed on shutdown without a write: %v -> %v", before, after)
	}

	// A new instance of the same group, database back: everything is
	// written, each message once.
	proxy.SetDown(false)
	start(t, cfg)
	eventually(t, "records of the stopped instance persisted", rows(21))
	eventually(t, "all committed", func() (bool, string) { return e.caughtUp(t, cfg.Group) })
	for _, id := range ids {
		e.message(t, id)
	}
}

func TestPersisterFlushesOnShutdown(t *testing.T) {
	t.Parallel()
	e := newEnv(t, 2)
	cfg := e.config(e.dbURL)
	// Neither limit is reached: only the shutdown can flush the batch.
	cfg.FlushInterval = time.Hour
	cfg.BatchSize = 1000
	r := start(t, cfg)
	for i := range 5 {
		e.create(t, e.rooms[i%2], e.bob, fmt.Sprint("pending ", i))
	}
	eventually(t, "records pending", func() (bool, string) {
		v := r.metric(t, "persister_pending_records", "", "")
		return v == 5, fmt.Sprintf("pending = %v", v)
	})
	if n := e.count(t); n != 0 {
		t.Fatalf("%d rows written before a flush", n)
	}
	r.stop()
	if n := e.count(t); n != 5 {
		t.Fatalf("%d rows after shutdown, want 5", n)
	}
	if ok, detail := e.caughtUp(t, cfg.Group); !ok {
		t.Fatalf("offsets not committed on shutdown: %s", detail)
	}
}

func equal(a, b map[int32]int64) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if b[k] != v {
			return false
		}
	}
	return true
}

func TestNewRejectsBadConfig(t *testing.T) {
	t.Parallel()
	tel := newTelemetry(t)
	cfg := persister.Config{
		Postgres: config.Postgres{URL: "postgres://x@127.0.0.1:1/x"},
		Kafka:    config.Kafka{Brokers: []string{"127.0.0.1:9092"}, Topic: "t", Partitions: 1},
	}
	for name, mutate := range map[string]func(c *persister.Config){
		"batch size": func(c *persister.Config) { c.BatchSize = -1 },
		"dlq topic":  func(c *persister.Config) { c.DLQTopic = "t" },
		"retry":      func(c *persister.Config) { c.RetryMin, c.RetryMax = 2, 1 },
		"fetch wait": func(c *persister.Config) { c.FetchWait = -time.Millisecond },
		"no db":      func(c *persister.Config) { c.Postgres.URL = "" },
	} {
		c := cfg
		mutate(&c)
		if _, err := persister.New(context.Background(), c, tel); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	// A valid config whose database is unreachable fails New with an error.
	if _, err := persister.New(context.Background(), cfg, tel); err == nil {
		t.Error("unreachable database accepted")
	}
}
