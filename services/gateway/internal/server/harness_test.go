package server

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/IBM/sarama"
	"github.com/fasthttp/websocket"
	"github.com/prometheus/client_golang/prometheus"
	goredis "github.com/redis/go-redis/v9"
	"go.opentelemetry.io/otel/propagation"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"gorm.io/gorm"

	"relay/pkg/auth"
	"relay/pkg/chat"
	"relay/pkg/config"
	"relay/pkg/dedupe"
	"relay/pkg/events"
	"relay/pkg/protocol"
	"relay/pkg/redis"
	"relay/pkg/store"
	"relay/pkg/telemetry"
	"relay/pkg/testenv"
)

const testSecret = "gateway-test-secret-0123456789"

// env is one test's slice of the real servers plus the gateways under test.
type env struct {
	t       *testing.T
	dbURL   string
	db      *gorm.DB
	rdb     *goredis.Client
	keys    redis.Keys
	brokers []string
	topic   string
	tokens  *auth.Tokens
	// apiURL is a stand-in for the api's channel join (it writes the
	// member row as the api would).
	apiURL string
	// apiStatus, when set, is what the fake api answers instead.
	apiMu     sync.Mutex
	apiStatus int
	apiCalls  []string
}

func newEnv(t *testing.T) *env {
	t.Helper()
	if testenv.Short() {
		t.Skip("integration test")
	}
	e := &env{t: t}
	e.dbURL = testenv.Database(t)
	db, err := store.Open(context.Background(), e.dbURL, store.Options{MaxConns: 4})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = store.Close(db) })
	e.db = db
	var prefix string
	e.rdb, prefix = testenv.Redis(t)
	e.keys = redis.Keys{Prefix: prefix}
	e.brokers, e.topic = testenv.Kafka(t, 1)
	e.tokens, err = auth.NewTokens(testSecret, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	api := httptest.NewServer(http.HandlerFunc(e.fakeAPI))
	t.Cleanup(api.Close)
	e.apiURL = api.URL
	return e
}

// fakeAPI answers POST /api/rooms/:id/join like the api: it checks the
// bearer token and inserts the member row.
func (e *env) fakeAPI(w http.ResponseWriter, r *http.Request) {
	e.apiMu.Lock()
	e.apiCalls = append(e.apiCalls, r.Method+" "+r.URL.Path)
	status := e.apiStatus
	e.apiMu.Unlock()
	writeErr := func(status int, code chat.Code, msg string) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(status)
		fmt.Fprintf(w, `{"error":{"code":%q,"message":%q}}`, code, msg)
	}
	if status != 0 {
		writeErr(status, chat.CodeForbidden, "join refused by test")
		return
	}
	claims, err := e.tokens.Verify(strings.TrimPrefix(r.Header.Get("Authorization"), "Bearer "))
	if err != nil {
		writeErr(http.StatusUnauthorized, chat.CodeUnauthorized, "bad token")
		return
	}
	rest, ok := strings.CutPrefix(r.URL.Path, "/api/rooms/")
	idStr, ok2 := strings.CutSuffix(rest, "/join")
	room, err := strconv.ParseInt(idStr, 10, 64)
	if r.Method != http.MethodPost || !ok || !ok2 || err != nil {
		writeErr(http.StatusNotFound, chat.CodeNotFound, "no route")
		return
	}
	if err := e.db.Create(&store.RoomMember{RoomID: room, UserID: claims.UserID, Role: "member", LastReadSeq: -1, JoinedAt: time.Now()}).Error; err != nil {
		writeErr(http.StatusInternalServerError, chat.CodeInternal, err.Error())
		return
	}
	w.Header().Set("Content-Type", "application/json")
	_, _ = w.Write([]byte(`{"roomId":"` + idStr + `"}`))
}

// gateway is one running instance.
type gateway struct {
	svc   *Service
	url   string
	http  string
	spans *tracetest.SpanRecorder
	stop  context.CancelFunc
	done  chan error
}

func (e *env) config() Config {
	return Config{
		Postgres: config.Postgres{URL: e.dbURL, MaxConns: 4},
		Redis:    config.Redis{URL: "redis://127.0.0.1:6379/0", Prefix: e.keys.Prefix},
		Kafka:    config.Kafka{Brokers: e.brokers, Topic: e.topic, Partitions: 1},
		JWT:      config.JWT{Secret: testSecret, TTL: time.Hour},
		HTTP:     config.HTTP{ShutdownTimeout: 5 * time.Second},
		APIURL:   e.apiURL,
	}
}

func testTelemetry(t testing.TB) (*telemetry.Telemetry, *tracetest.SpanRecorder) {
	rec := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec))
	t.Cleanup(func() { _ = tp.Shutdown(context.Background()) })
	log, err := telemetry.NewLogger(os.Stderr, "error", "text")
	if err != nil {
		t.Fatal(err)
	}
	return &telemetry.Telemetry{
		Log: log, Tracer: tp.Tracer("gateway-test"), TracerProvider: tp,
		Propagator: propagation.TraceContext{}, Registry: prometheus.NewRegistry(),
	}, rec
}

// start runs a gateway on a free port; mod adjusts its config.
func (e *env) start(mod func(*Config)) *gateway {
	e.t.Helper()
	cfg := e.config()
	if mod != nil {
		mod(&cfg)
	}
	tel, rec := testTelemetry(e.t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	svc, err := New(ctx, cfg, tel)
	if err != nil {
		e.t.Fatalf("New: %v", err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		e.t.Fatal(err)
	}
	runCtx, stop := context.WithCancel(context.Background())
	g := &gateway{svc: svc, url: "ws://" + ln.Addr().String() + "/ws", http: "http://" + ln.Addr().String(), spans: rec, stop: stop, done: make(chan error, 1)}
	go func() { g.done <- svc.Run(runCtx, ln) }()
	e.t.Cleanup(func() {
		g.shutdown(e.t)
		_ = svc.Close()
	})
	return g
}

// shutdown stops Run and waits for it.
func (g *gateway) shutdown(t testing.TB) {
	g.stop()
	select {
	case err, ok := <-g.done:
		if ok && err != nil {
			t.Errorf("Run: %v", err)
		}
		close(g.done)
	case <-time.After(20 * time.Second):
		t.Errorf("Run did not return after cancel")
	}
}

// user creates a user and returns its id and a token.
func (e *env) user(name string) (int64, string) {
	e.t.Helper()
	u := store.User{Username: name, Email: name + "@example.test", PasswordHash: "x", CreatedAt: time.Now(), UpdatedAt: time.Now()}
	if err := e.db.Create(&u).Error; err != nil {
		e.t.Fatal(err)
	}
	tok, _, err := e.tokens.Issue(u.ID, name)
	if err != nil {
		e.t.Fatal(err)
	}
	return u.ID, tok
}

// room creates a room of typ with admin as its admin and the other members.
func (e *env) room(typ chat.RoomType, admin int64, members ...int64) int64 {
	e.t.Helper()
	r := store.Room{Name: "room", Type: string(typ), CreatedBy: admin, CreatedAt: time.Now(), UpdatedAt: time.Now()}
	if typ == chat.RoomDirect {
		k := store.DirectKey(admin, members[0])
		r.DirectKey = &k
		r.Name = ""
	}
	if err := e.db.Create(&r).Error; err != nil {
		e.t.Fatal(err)
	}
	rows := []store.RoomMember{{RoomID: r.ID, UserID: admin, Role: "admin", LastReadSeq: -1, JoinedAt: time.Now()}}
	for _, m := range members {
		rows = append(rows, store.RoomMember{RoomID: r.ID, UserID: m, Role: "member", LastReadSeq: -1, JoinedAt: time.Now()})
	}
	if err := e.db.Create(&rows).Error; err != nil {
		e.t.Fatal(err)
	}
	return r.ID
}

// publish acts as the delivery worker: it publishes a rendered message
// frame for seq (prevSeq seq-1, or none for the first) through the real
// Lua script, so it lands in the history and on the channel.
func (e *env) publish(room, seq int64, prev *int64, trace map[string]string) {
	e.t.Helper()
	payload := e.publication(room, seq, prev, trace, "")
	res, _, err := redis.Publish(context.Background(), e.rdb, e.keys, room, seq, prev, payload, 1000)
	if err != nil || res != redis.Published {
		e.t.Fatalf("publish seq %d: %v %v", seq, res, err)
	}
}

// publishRun publishes seqs from..to in order, each with the room's
// previously published seq as prevSeq.
func (e *env) publishRun(room, from, to int64) {
	e.t.Helper()
	for seq := from; seq <= to; seq++ {
		e.publishNext(room, seq)
	}
}

// publishNext publishes seq with the room's last published seq as prevSeq.
func (e *env) publishNext(room, seq int64) {
	e.t.Helper()
	prev, err := redis.LastSeq(context.Background(), e.rdb, e.keys, room)
	if err != nil {
		e.t.Fatal(err)
	}
	e.publish(room, seq, prev, nil)
}

func (e *env) publication(room, seq int64, prev *int64, trace map[string]string, pad string) []byte {
	data, _ := json.Marshal(protocol.Message{
		ID: fmt.Sprintf("00000000-0000-7000-8000-%012d", seq), RoomID: strconv.FormatInt(room, 10), UserID: "1",
		Username: "x", Content: "m" + strconv.FormatInt(seq, 10) + pad, Type: "text", Seq: seq, PrevSeq: prev, CreatedAt: time.Now().UTC(),
	})
	frame, _ := json.Marshal(protocol.Frame{Event: protocol.EventMessage, Data: data})
	b, _ := json.Marshal(protocol.Publication{RoomID: room, Seq: seq, PrevSeq: prev, Trace: trace, Frame: frame})
	return b
}

// records reads every record of the test topic so far (one partition).
func (e *env) records(want int) []*sarama.ConsumerMessage {
	e.t.Helper()
	cfg := sarama.NewConfig()
	cfg.Version = sarama.V3_6_0_0
	c, err := sarama.NewConsumer(e.brokers, cfg)
	if err != nil {
		e.t.Fatal(err)
	}
	defer c.Close()
	pc, err := c.ConsumePartition(e.topic, 0, sarama.OffsetOldest)
	if err != nil {
		e.t.Fatal(err)
	}
	defer pc.Close()
	var out []*sarama.ConsumerMessage
	timeout := time.After(10 * time.Second)
	for len(out) < want {
		select {
		case m := <-pc.Messages():
			out = append(out, m)
		case <-timeout:
			e.t.Fatalf("got %d records, want %d", len(out), want)
		}
	}
	// Anything beyond want would be a bug (a duplicate); give it a moment.
	select {
	case m := <-pc.Messages():
		out = append(out, m)
	case <-time.After(300 * time.Millisecond):
	}
	return out
}

func decodeRecord(t *testing.T, m *sarama.ConsumerMessage) *events.Event {
	t.Helper()
	ev, err := events.Unmarshal(m.Value)
	if err != nil {
		t.Fatal(err)
	}
	return ev
}

// wsClient is a test WebSocket client. call sends a frame with a fresh ref
// and returns its reply; pushes received meanwhile are kept for next.
type wsClient struct {
	t       testing.TB
	conn    *websocket.Conn
	refs    int
	pending []protocol.Frame
}

func (e *env) dial(g *gateway, token string) *wsClient {
	e.t.Helper()
	c, err := dialWS(g.url, token)
	if err != nil {
		e.t.Fatalf("dial: %v", err)
	}
	e.t.Cleanup(func() { _ = c.Close() })
	return &wsClient{t: e.t, conn: c}
}

func dialWS(url, token string) (*websocket.Conn, error) {
	c, resp, err := websocket.DefaultDialer.Dial(url+"?token="+token, nil)
	if resp != nil && resp.Body != nil {
		resp.Body.Close()
	}
	return c, err
}

func (c *wsClient) sendRaw(s string) {
	c.t.Helper()
	if err := c.conn.WriteMessage(websocket.TextMessage, []byte(s)); err != nil {
		c.t.Fatalf("write: %v", err)
	}
}

func (c *wsClient) send(event string, data any, ref string) {
	c.t.Helper()
	b, err := json.Marshal(data)
	if err != nil {
		c.t.Fatal(err)
	}
	f, _ := json.Marshal(protocol.Frame{Event: event, Data: b, Ref: ref})
	c.sendRaw(string(f))
}

// read returns the next frame from the socket.
func (c *wsClient) read() (protocol.Frame, error) {
	_ = c.conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	mt, b, err := c.conn.ReadMessage()
	if err != nil {
		return protocol.Frame{}, err
	}
	if mt != websocket.TextMessage {
		return protocol.Frame{}, fmt.Errorf("message type %d", mt)
	}
	var f protocol.Frame
	if err := json.Unmarshal(b, &f); err != nil {
		return protocol.Frame{}, fmt.Errorf("bad frame %s: %w", b, err)
	}
	return f, nil
}

// reply reads until the frame with ref, keeping pushes for next.
func (c *wsClient) reply(ref string) protocol.Frame {
	c.t.Helper()
	for {
		f, err := c.read()
		if err != nil {
			c.t.Fatalf("waiting for reply %s: %v", ref, err)
		}
		if f.Ref == ref && (f.Event == protocol.EventAck || f.Event == protocol.EventError) {
			return f
		}
		if f.Ref != "" {
			c.t.Fatalf("reply for another ref %q while waiting for %q: %+v", f.Ref, ref, f)
		}
		c.pending = append(c.pending, f)
	}
}

// call sends event and returns the ack or error frame answering it.
func (c *wsClient) call(event string, data any) protocol.Frame {
	c.t.Helper()
	c.refs++
	ref := "r" + strconv.Itoa(c.refs)
	c.send(event, data, ref)
	return c.reply(ref)
}

// ack calls and requires an ack, decoding its data into out (if not nil).
func (c *wsClient) ack(event string, data any, out any) {
	c.t.Helper()
	f := c.call(event, data)
	if f.Event != protocol.EventAck {
		c.t.Fatalf("%s: got %s %s, want ack", event, f.Event, f.Data)
	}
	if out != nil {
		if err := json.Unmarshal(f.Data, out); err != nil {
			c.t.Fatal(err)
		}
	}
}

// fail calls and requires an error with code.
func (c *wsClient) fail(event string, data any, code chat.Code) protocol.ErrorData {
	c.t.Helper()
	f := c.call(event, data)
	var ed protocol.ErrorData
	if f.Event != protocol.EventError {
		c.t.Fatalf("%s: got %s %s, want error %s", event, f.Event, f.Data, code)
	}
	_ = json.Unmarshal(f.Data, &ed)
	if ed.Code != code {
		c.t.Fatalf("%s: error %s (%s), want %s", event, ed.Code, ed.Message, code)
	}
	return ed
}

// next returns the next push (a frame without ref).
func (c *wsClient) next() protocol.Frame {
	c.t.Helper()
	if len(c.pending) > 0 {
		f := c.pending[0]
		c.pending = c.pending[1:]
		return f
	}
	f, err := c.read()
	if err != nil {
		c.t.Fatalf("waiting for a push: %v", err)
	}
	return f
}

// seqOf returns the seq of a message push.
func seqOf(t testing.TB, f protocol.Frame) int64 {
	t.Helper()
	if f.Event != protocol.EventMessage {
		t.Fatalf("got %s %s, want message", f.Event, f.Data)
	}
	var m protocol.Message
	if err := json.Unmarshal(f.Data, &m); err != nil {
		t.Fatal(err)
	}
	return m.Seq
}

// join joins room and returns the ack's lastSeq.
func (c *wsClient) join(room int64, lastSeq *int64) *int64 {
	c.t.Helper()
	var ack protocol.JoinAck
	c.ack(protocol.EventJoinRoom, protocol.JoinRoom{RoomID: strconv.FormatInt(room, 10), LastSeq: lastSeq}, &ack)
	return ack.LastSeq
}

// closeCode waits for the server to close the connection and returns the code.
func (c *wsClient) closeCode() int {
	c.t.Helper()
	for {
		_, err := c.read()
		if err == nil {
			continue
		}
		var ce *websocket.CloseError
		if errors.As(err, &ce) {
			return ce.Code
		}
		return -1
	}
}

// eventually polls cond until it holds or 10 s passed.
func eventually(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func ptr[T any](v T) *T { return &v }

func rid(id int64) string { return strconv.FormatInt(id, 10) }

func newTokens(ttl time.Duration) (*auth.Tokens, error) { return auth.NewTokens(testSecret, ttl) }

// dedupeKeys names the test's dedupe keys.
func dedupeKeys(e *env) dedupe.Keys { return dedupe.Keys{Prefix: e.keys.Prefix} }
