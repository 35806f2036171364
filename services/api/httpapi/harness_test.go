package httpapi_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/IBM/sarama"
	"github.com/google/uuid"
	"github.com/pb33f/libopenapi"
	validator "github.com/pb33f/libopenapi-validator"
	goredis "github.com/redis/go-redis/v9"
	"gorm.io/gorm"

	"relay/pkg/auth"
	"relay/pkg/chat"
	"relay/pkg/config"
	"relay/pkg/events"
	"relay/pkg/kafka"
	"relay/pkg/store"
	"relay/pkg/telemetry"
	"relay/pkg/testenv"
	"relay/services/api/httpapi"
)

const testSecret = "test-secret-for-the-api-0123456789"

// apiEnv is one running api on its own database, key prefix and topic.
type apiEnv struct {
	t       testing.TB
	url     string
	db      *gorm.DB
	svc     *httpapi.Service
	brokers []string
	topic   string
	tokens  *auth.Tokens
	client  *http.Client
	// dbURL, redisURL and prefix are the test's database and Redis key
	// prefix, for neighbours started in-process (the presence service).
	dbURL    string
	redisURL string
	prefix   string
	rdb      *goredis.Client
	// proxy is the cuttable path to PostgreSQL (envOptions.proxyDB).
	proxy *testenv.Proxy
	// cfg is the service's configuration, for a second instance.
	cfg httpapi.Config
	// stop stops the service (Run returns); it is idempotent and also
	// runs when the test ends.
	stop func()
}

type envOptions struct {
	// rateLimit is AUTH_RATE_LIMIT; zero means high enough not to matter.
	rateLimit int
	// publisher replaces the Kafka producer when set.
	publisher httpapi.EventPublisher
	// presence replaces the presence reader when set.
	presence httpapi.PresenceReader
	// tel replaces the default telemetry when set.
	tel *telemetry.Telemetry
	// serial keeps the test from running in parallel with others (for
	// tests that set OpenTelemetry's globals).
	serial bool
	// proxyDB puts a TCP proxy the test can cut (apiEnv.proxy) between
	// the api and PostgreSQL.
	proxyDB bool
	// config adjusts the api's configuration.
	config func(*httpapi.Config)
	// pair, when set, is the PostgreSQL primary (migrated by New) and
	// replica the api runs on instead of a database of the shared server.
	pair *testenv.PGPair
}

// newAPI starts the real service against the real servers, isolated for
// this test, and stops it when the test ends.
func newAPI(t testing.TB, o envOptions) *apiEnv {
	t.Helper()
	if testenv.Short() {
		t.Skip("integration test")
	}
	if pt, ok := t.(*testing.T); ok && !o.serial {
		pt.Parallel()
	}
	var dbURL string
	if o.pair != nil {
		dbURL = o.pair.PrimaryURL
	} else {
		dbURL = testenv.Database(t)
	}
	_, rc, _ := testenv.Env(t)
	rdb, prefix := testenv.Redis(t)
	brokers, topic := testenv.Kafka(t, 3)
	if o.rateLimit == 0 {
		o.rateLimit = 10000
	}
	apiDBURL := dbURL
	var proxy *testenv.Proxy
	if o.proxyDB {
		proxy, apiDBURL = testenv.NewProxy(t, dbURL)
	}
	cfg := httpapi.Config{
		Postgres:      config.Postgres{URL: apiDBURL, MaxConns: 10},
		Redis:         config.Redis{URL: rc.URL, Prefix: prefix},
		Kafka:         config.Kafka{Brokers: brokers, Topic: topic, Partitions: 3},
		HTTP:          config.HTTP{Addr: "127.0.0.1:0", ShutdownTimeout: 5 * time.Second},
		JWT:           config.JWT{Secret: testSecret, TTL: time.Hour},
		AuthRateLimit: o.rateLimit,
		// The test client connects from loopback; trusting it lets tests
		// pose as different clients through X-Forwarded-For.
		TrustedProxies: []string{"127.0.0.1", "::1"},
		UploadDir:      t.TempDir(),
		// High enough not to matter; limits_test.go sets its own.
		Limits: httpapi.Limits{WritesPerMin: 1 << 20, RoomsPerHour: 1 << 20, SearchesPerMin: 1 << 20, RoomCreateMaxMembers: chat.MaxRoomMembers},
	}
	if o.pair != nil {
		cfg.Migrate = true
		cfg.Replica = config.Replica{URL: o.pair.ReplicaURL, MaxConns: 4}
	}
	if o.config != nil {
		o.config(&cfg)
	}
	tel := o.tel
	if tel == nil {
		var err error
		if tel, err = telemetry.Setup(context.Background(), "api-test", config.Telemetry{LogLevel: "warn", LogFormat: "text"}); err != nil {
			t.Fatal(err)
		}
	}
	var opts []httpapi.Option
	if o.publisher != nil {
		opts = append(opts, httpapi.WithPublisher(o.publisher))
	}
	if o.presence != nil {
		opts = append(opts, httpapi.WithPresenceReader(o.presence))
	}
	ctx, cancel := context.WithCancel(context.Background())
	svc, err := httpapi.New(ctx, cfg, tel, opts...)
	if err != nil {
		cancel()
		t.Fatalf("New: %v", err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	stop := runService(t, ctx, cancel, svc, ln)
	db, err := store.Open(context.Background(), dbURL, store.Options{MaxConns: 4})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = store.Close(db) })
	tokens, err := auth.NewTokens(testSecret, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	return &apiEnv{
		t: t, url: "http://" + ln.Addr().String(), db: db, svc: svc, brokers: brokers, topic: topic,
		tokens: tokens, client: &http.Client{Timeout: 30 * time.Second},
		dbURL: dbURL, redisURL: rc.URL, prefix: prefix, rdb: rdb, proxy: proxy, cfg: cfg, stop: stop,
	}
}

// runService runs svc on ln until stop is called or the test ends, then
// closes it; cancel ends ctx, the context of Run.
func runService(t testing.TB, ctx context.Context, cancel context.CancelFunc, svc *httpapi.Service, ln net.Listener) (stop func()) {
	done := make(chan error, 1)
	go func() { done <- svc.Run(ctx, ln) }()
	stop = sync.OnceFunc(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
		if err := svc.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	t.Cleanup(stop)
	return stop
}

// another starts a second api instance on the same database, Redis prefix
// and topic, producing through pub; it returns its URL and its stop.
func (e *apiEnv) another(pub httpapi.EventPublisher) (url string, stop func()) {
	e.t.Helper()
	tel, err := telemetry.Setup(context.Background(), "api-test-2", config.Telemetry{LogLevel: "warn", LogFormat: "text"})
	if err != nil {
		e.t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	svc, err := httpapi.New(ctx, e.cfg, tel, httpapi.WithPublisher(pub))
	if err != nil {
		cancel()
		e.t.Fatalf("New: %v", err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		cancel()
		e.t.Fatal(err)
	}
	return "http://" + ln.Addr().String(), runService(e.t, ctx, cancel, svc, ln)
}

// outboxDepth counts the member events waiting in the outbox.
func (e *apiEnv) outboxDepth() int64 {
	e.t.Helper()
	var n int64
	if err := e.db.Raw("SELECT count(*) FROM outbox").Scan(&n).Error; err != nil {
		e.t.Fatalf("outbox depth: %v", err)
	}
	return n
}

// drained waits until the relay has produced the whole outbox: a row is
// deleted only after Kafka acked it, so everything the requests so far
// caused is then on the topic.
func (e *apiEnv) drained() {
	e.t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for e.outboxDepth() > 0 {
		if time.Now().After(deadline) {
			e.t.Fatalf("the outbox still holds %d events after 30 s", e.outboxDepth())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// response is a finished HTTP exchange.
type response struct {
	status int
	header http.Header
	body   []byte
}

// raw is a request body sent exactly as given.
type raw string

// openAPI checks responses against openapi.json, so the document cannot
// drift from what the api does. The validator is shared by parallel tests,
// hence the lock.
var openAPI = sync.OnceValues(func() (*lockedValidator, error) {
	doc, err := libopenapi.NewDocument(httpapi.OpenAPIDocument())
	if err != nil {
		return nil, err
	}
	v, errs := validator.NewValidator(doc)
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	return &lockedValidator{v: v}, nil
})

type lockedValidator struct {
	mu sync.Mutex
	v  validator.Validator
}

// checkResponse fails the test when the response to req does not match
// the document (undocumented status, content type or body shape).
func (lv *lockedValidator) checkResponse(t testing.TB, req *http.Request, res *http.Response, body []byte) {
	t.Helper()
	res.Body = io.NopCloser(bytes.NewReader(body))
	lv.mu.Lock()
	ok, errs := lv.v.ValidateHttpResponse(req, res)
	lv.mu.Unlock()
	if !ok {
		for _, err := range errs {
			t.Errorf("%s %s -> %d does not match openapi.json: %s: %s", req.Method, req.URL.Path, res.StatusCode, err.Message, err.Reason)
			for _, se := range err.SchemaValidationErrors {
				t.Errorf("  %s: %s", se.FieldPath, se.Reason)
			}
		}
		t.Errorf("  body: %s", truncateBody(body))
	}
}

func truncateBody(b []byte) string {
	if len(b) > 600 {
		return string(b[:600]) + "..."
	}
	return string(b)
}

// do sends a request and checks the response against openapi.json; body
// is JSON-encoded unless it is raw. Extra headers come in name, value pairs.
func (e *apiEnv) do(method, path, token string, body any, headers ...string) response {
	e.t.Helper()
	return e.send(true, method, path, token, body, headers...)
}

// doUndocumented is do for requests outside the document (unknown routes).
func (e *apiEnv) doUndocumented(method, path, token string, body any, headers ...string) response {
	e.t.Helper()
	return e.send(false, method, path, token, body, headers...)
}

func (e *apiEnv) send(check bool, method, path, token string, body any, headers ...string) response {
	e.t.Helper()
	var rd io.Reader
	switch b := body.(type) {
	case nil:
	case raw:
		rd = strings.NewReader(string(b))
	default:
		enc, err := json.Marshal(b)
		if err != nil {
			e.t.Fatal(err)
		}
		rd = bytes.NewReader(enc)
	}
	req, err := http.NewRequest(method, e.url+path, rd)
	if err != nil {
		e.t.Fatal(err)
	}
	if rd != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	for i := 0; i+1 < len(headers); i += 2 {
		req.Header.Set(headers[i], headers[i+1])
	}
	res, err := e.client.Do(req)
	if err != nil {
		e.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	if err != nil {
		e.t.Fatalf("%s %s: read: %v", method, path, err)
	}
	if check {
		lv, err := openAPI()
		if err != nil {
			e.t.Fatalf("openapi.json: %v", err)
		}
		lv.checkResponse(e.t, req, res, b)
	}
	return response{status: res.StatusCode, header: res.Header, body: b}
}

// expect fails the test unless r has the status, and decodes the body into
// out when out is not nil.
func (r response) expect(t testing.TB, status int, out any) {
	t.Helper()
	if r.status != status {
		t.Fatalf("status %d, want %d; body %s", r.status, status, r.body)
	}
	if out != nil {
		if err := json.Unmarshal(r.body, out); err != nil {
			t.Fatalf("decode %s: %v", r.body, err)
		}
	}
}

// expectError fails the test unless r is an error body with status and code.
func (r response) expectError(t testing.TB, status int, code chat.Code) string {
	t.Helper()
	var body struct {
		Error struct {
			Code    chat.Code `json:"code"`
			Message string    `json:"message"`
		} `json:"error"`
	}
	if r.status != status {
		t.Fatalf("status %d, want %d; body %s", r.status, status, r.body)
	}
	if err := json.Unmarshal(r.body, &body); err != nil || body.Error.Code != code || body.Error.Message == "" {
		t.Fatalf("error body %s, want code %s with a message", r.body, code)
	}
	return body.Error.Message
}

// testUser is a user created directly in the database, with a token.
type testUser struct {
	id    int64
	sid   string
	name  string
	token string
}

// user creates an account without the cost of bcrypt and issues its token.
func (e *apiEnv) user(name string) testUser {
	e.t.Helper()
	u := &store.User{Username: name, Email: name + "@example.com", PasswordHash: "not-a-bcrypt-hash", DisplayName: strings.ToUpper(name)}
	if err := store.CreateUser(context.Background(), e.db, u); err != nil {
		e.t.Fatalf("create user: %v", err)
	}
	tok, _, err := e.tokens.Issue(u.ID, u.Username)
	if err != nil {
		e.t.Fatal(err)
	}
	return testUser{id: u.ID, sid: fmt.Sprint(u.ID), name: name, token: tok}
}

// roomResp is the api's room object.
type roomResp struct {
	ID          string       `json:"id"`
	Name        string       `json:"name"`
	Type        string       `json:"type"`
	CreatedBy   string       `json:"createdBy"`
	CreatedAt   time.Time    `json:"createdAt"`
	MemberCount int64        `json:"memberCount"`
	MyRole      *string      `json:"myRole"`
	Members     []memberResp `json:"members"`
}

type memberResp struct {
	UserID      string `json:"userId"`
	Username    string `json:"username"`
	DisplayName string `json:"displayName"`
	Role        string `json:"role"`
	LastReadSeq int64  `json:"lastReadSeq"`
}

// room creates a room through the api and returns it.
func (e *apiEnv) room(owner testUser, typ, name string, members ...testUser) roomResp {
	e.t.Helper()
	ids := []string{}
	for _, m := range members {
		ids = append(ids, m.sid)
	}
	var r roomResp
	e.do("POST", "/api/rooms", owner.token, map[string]any{"name": name, "type": typ, "memberIds": ids}).expect(e.t, 201, &r)
	return r
}

// message inserts a message row directly, as the persister would.
func (e *apiEnv) message(roomID string, u testUser, seq int64, content string) store.Message {
	e.t.Helper()
	var rid int64
	fmt.Sscan(roomID, &rid)
	m := store.Message{
		ID: uuid.Must(uuid.NewV7()).String(), RoomID: rid, UserID: u.id, Content: content, Type: "text",
		Seq: seq, UpdatedSeq: seq, CreatedAt: time.Now().UTC(),
	}
	if err := e.db.Create(&m).Error; err != nil {
		e.t.Fatalf("insert message: %v", err)
	}
	return m
}

// events returns every event on the test's topic, per partition in offset
// order.
func (e *apiEnv) events() []*events.Event {
	e.t.Helper()
	var out []*events.Event
	for _, m := range e.records() {
		ev, err := events.Unmarshal(m.Value)
		if err != nil {
			e.t.Fatalf("undecodable record at %d/%d: %v", m.Partition, m.Offset, err)
		}
		if string(m.Key) != fmt.Sprint(ev.RoomID) {
			e.t.Errorf("record key %q, room %d", m.Key, ev.RoomID)
		}
		out = append(out, ev)
	}
	return out
}

// records returns every record on the test's topic, per partition in
// offset order, once the outbox is drained: everything the requests so far
// caused is then below the high-water marks read here.
func (e *apiEnv) records() []*sarama.ConsumerMessage {
	e.t.Helper()
	e.drained()
	return e.topicRecords()
}

// topicRecords returns every record on the test's topic now, per partition
// in offset order.
func (e *apiEnv) topicRecords() []*sarama.ConsumerMessage {
	e.t.Helper()
	cfg := sarama.NewConfig()
	cfg.Version = sarama.V3_6_0_0
	client, err := sarama.NewClient(e.brokers, cfg)
	if err != nil {
		e.t.Fatal(err)
	}
	defer client.Close()
	consumer, err := sarama.NewConsumerFromClient(client)
	if err != nil {
		e.t.Fatal(err)
	}
	defer consumer.Close()
	parts, err := client.Partitions(e.topic)
	if err != nil {
		e.t.Fatal(err)
	}
	var out []*sarama.ConsumerMessage
	for _, p := range parts {
		hwm, err := client.GetOffset(e.topic, p, sarama.OffsetNewest)
		if err != nil {
			e.t.Fatal(err)
		}
		oldest, err := client.GetOffset(e.topic, p, sarama.OffsetOldest)
		if err != nil {
			e.t.Fatal(err)
		}
		if hwm <= oldest {
			continue
		}
		pc, err := consumer.ConsumePartition(e.topic, p, oldest)
		if err != nil {
			e.t.Fatal(err)
		}
		deadline := time.After(30 * time.Second)
	read:
		for {
			select {
			case m := <-pc.Messages():
				out = append(out, m)
				if m.Offset >= hwm-1 {
					break read
				}
			case err := <-pc.Errors():
				e.t.Fatalf("consume: %v", err)
			case <-deadline:
				e.t.Fatalf("partition %d: records below offset %d never arrived", p, hwm)
			}
		}
		_ = pc.Close()
	}
	return out
}

// eventsString renders events compactly for comparison:
// "joined:room:user:username:role".
func eventsString(evs []*events.Event, roomID string) []string {
	var out []string
	for _, ev := range evs {
		if fmt.Sprint(ev.RoomID) != roomID {
			continue
		}
		s := fmt.Sprintf("%s:%d:%s", ev.Type, ev.UserID, ev.Username)
		if ev.Role != "" {
			s += ":" + ev.Role
		}
		out = append(out, s)
	}
	return out
}

// switchPublisher produces through next while up and fails every publish
// while down, as an unreachable Kafka would.
type switchPublisher struct {
	down     atomic.Bool
	failures atomic.Int64
	mu       sync.Mutex
	next     httpapi.EventPublisher
}

func (p *switchPublisher) PublishBatch(ctx context.Context, records []kafka.Record) (int, error) {
	if p.down.Load() {
		p.failures.Add(1)
		return 0, errors.New("broker unreachable (test)")
	}
	p.mu.Lock()
	next := p.next
	p.mu.Unlock()
	return next.PublishBatch(ctx, records)
}

// recordingPublisher accepts every event and notes it, with the instance
// that produced it, in a log shared by several instances.
type recordingPublisher struct {
	instance string
	log      *eventLog
}

type eventLog struct {
	mu      sync.Mutex
	entries []loggedEvent
}

type loggedEvent struct {
	instance string
	event    events.Event
}

func (p *recordingPublisher) PublishBatch(_ context.Context, records []kafka.Record) (int, error) {
	p.log.mu.Lock()
	defer p.log.mu.Unlock()
	for _, r := range records {
		p.log.entries = append(p.log.entries, loggedEvent{instance: p.instance, event: *r.Event})
	}
	return len(records), nil
}

// snapshot returns the events logged so far.
func (l *eventLog) snapshot() []loggedEvent {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.entries)
}
