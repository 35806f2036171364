package tracker_test

import (
	"context"
	"encoding/json"
	"net"
	"sync"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"relay/pkg/config"
	"relay/pkg/presence"
	"relay/pkg/protocol"
	"relay/pkg/telemetry"
	"relay/pkg/testenv"
	svc "relay/services/presence/tracker"
)

// env is one test's slice of the real servers: a Redis prefix and a
// PostgreSQL database, shared by the service instances it starts.
type env struct {
	t      *testing.T
	rdb    *goredis.Client
	keys   presence.Keys
	cfg    svc.Config
	reader *presence.Reader
}

func newEnv(t *testing.T) *env {
	t.Helper()
	if testenv.Short() {
		t.Skip("integration test (needs Redis and PostgreSQL)")
	}
	t.Parallel()
	rdb, prefix := testenv.Redis(t)
	_, rc, _ := testenv.Env(t)
	cfg := svc.Config{
		Redis:     config.Redis{URL: rc.URL, Prefix: prefix},
		Postgres:  config.Postgres{URL: testenv.Database(t), MaxConns: 4},
		Telemetry: config.Telemetry{LogLevel: "warn", LogFormat: "text"},
		HTTP:      config.HTTP{ShutdownTimeout: 5 * time.Second},
		Presence: config.Presence{
			HeartbeatInterval: 300 * time.Millisecond, PresenceTimeout: 1500 * time.Millisecond, TypingTTL: time.Second,
		},
		SweepInterval: 100 * time.Millisecond,
		FlushInterval: 200 * time.Millisecond,
		ClaimIdle:     time.Second,
	}
	keys := presence.NewKeys(prefix)
	return &env{t: t, rdb: rdb, keys: keys, cfg: cfg, reader: presence.NewReader(rdb, keys)}
}

// instance is a presence service running in-process.
type instance struct {
	svc  *svc.Service
	addr string
	stop func()
}

func (e *env) start(consumer string) *instance {
	e.t.Helper()
	cfg := e.cfg
	cfg.Consumer = consumer
	ctx := context.Background()
	tel, err := telemetry.Setup(ctx, "presence", cfg.Telemetry)
	if err != nil {
		e.t.Fatal(err)
	}
	s, err := svc.New(ctx, cfg, tel)
	if err != nil {
		e.t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		e.t.Fatal(err)
	}
	rctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- s.Run(rctx, ln) }()
	var once sync.Once
	inst := &instance{svc: s, addr: ln.Addr().String()}
	inst.stop = func() {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil {
				e.t.Errorf("Run: %v", err)
			}
			if err := s.Close(); err != nil {
				e.t.Errorf("Close: %v", err)
			}
		})
	}
	e.t.Cleanup(inst.stop)
	return inst
}

func telemetryFor(e *env) (*telemetry.Telemetry, error) {
	return telemetry.Setup(context.Background(), "presence", e.cfg.Telemetry)
}

func newService(cfg svc.Config, tel *telemetry.Telemetry) (*svc.Service, error) {
	s, err := svc.New(context.Background(), cfg, tel)
	if err == nil {
		_ = s.Close()
	}
	return s, err
}

func (e *env) publisher(gatewayID string) *presence.Publisher {
	e.t.Helper()
	p, err := presence.NewPublisher(e.rdb, e.keys, gatewayID, presence.PublisherOptions{})
	if err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := p.Close(ctx); err != nil {
			e.t.Errorf("publisher close: %v", err)
		}
	})
	return p
}

// received is one message seen by a listener, with its arrival time.
type received struct {
	at       time.Time
	presence *presence.Event
	update   presence.PresenceUpdate
	pub      *protocol.Publication
	typing   protocol.Typing
}

// listener collects presence events and the typing publications of rooms.
type listener struct {
	t  *testing.T
	ch chan received
}

func (e *env) listen(rooms ...int64) *listener {
	e.t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	l := &listener{t: e.t, ch: make(chan received, 10000)}
	// Presence events: the stream, from its end now.
	tail, err := presence.EventsTail(ctx, e.rdb, e.keys)
	if err != nil {
		e.t.Fatal(err)
	}
	followed := make(chan struct{})
	go func() {
		defer close(followed)
		presence.FollowEvents(ctx, e.rdb, e.keys, tail, func(payload []byte) {
			r := received{at: time.Now()}
			ev, err := presence.DecodeEvent(payload)
			if err != nil {
				e.t.Errorf("bad presence event %s: %v", payload, err)
				return
			}
			var f protocol.Frame
			if err := json.Unmarshal(ev.Frame, &f); err != nil || f.Event != protocol.EventPresenceUpdate {
				e.t.Errorf("bad presence frame %s: %v", ev.Frame, err)
				return
			}
			if err := json.Unmarshal(f.Data, &r.update); err != nil {
				e.t.Errorf("bad presence_update %s: %v", f.Data, err)
			}
			r.presence = ev
			l.ch <- r
		}, presence.FollowOptions{Block: 100 * time.Millisecond})
	}()
	e.t.Cleanup(func() { cancel(); <-followed })
	if len(rooms) == 0 {
		return l
	}
	// Typing: the rooms' channels.
	chans := make([]string, 0, len(rooms))
	for _, r := range rooms {
		chans = append(chans, e.keys.RoomChannel(r))
	}
	ps := e.rdb.SSubscribe(ctx, chans...)
	for range chans {
		if _, err := ps.Receive(ctx); err != nil {
			e.t.Fatal(err)
		}
	}
	go func() {
		for m := range ps.Channel() {
			r := received{at: time.Now()}
			p, err := protocol.DecodePublication([]byte(m.Payload))
			if err != nil {
				e.t.Errorf("bad publication %s: %v", m.Payload, err)
				continue
			}
			var f protocol.Frame
			if err := json.Unmarshal(p.Frame, &f); err != nil || f.Event != protocol.EventTyping {
				e.t.Errorf("bad typing frame %s: %v", p.Frame, err)
				continue
			}
			if err := json.Unmarshal(f.Data, &r.typing); err != nil {
				e.t.Errorf("bad typing %s: %v", f.Data, err)
			}
			r.pub = p
			l.ch <- r
		}
	}()
	e.t.Cleanup(func() { _ = ps.Close() })
	return l
}

// next returns the next message, failing the test after wait.
func (l *listener) next(wait time.Duration) received {
	l.t.Helper()
	select {
	case r := <-l.ch:
		return r
	case <-time.After(wait):
		l.t.Fatalf("no event within %v", wait)
		return received{}
	}
}

// none fails the test if a message arrives within d.
func (l *listener) none(d time.Duration) {
	l.t.Helper()
	select {
	case r := <-l.ch:
		l.t.Fatalf("unexpected event: presence=%+v update=%+v typing=%+v", r.presence, r.update, r.typing)
	case <-time.After(d):
	}
}

// expectPresence waits for a presence_update of user with status.
func (l *listener) expectPresence(user int64, status string, wait time.Duration) received {
	l.t.Helper()
	r := l.next(wait)
	if r.presence == nil || r.presence.UserID != user || r.presence.Status != status || r.update.Status != status {
		l.t.Fatalf("want presence %d %s, got presence=%+v update=%+v typing=%+v", user, status, r.presence, r.update, r.typing)
	}
	return r
}

// expectTyping waits for a typing publication.
func (l *listener) expectTyping(room, user int64, typing bool, wait time.Duration) received {
	l.t.Helper()
	r := l.next(wait)
	if r.pub == nil || r.pub.RoomID != room || !r.pub.Ephemeral || r.pub.SkipUserID != user ||
		r.typing.UserID != itoa(user) || r.typing.RoomID != itoa(room) || r.typing.Typing != typing {
		l.t.Fatalf("want typing room %d user %d %v, got pub=%+v typing=%+v presence=%+v", room, user, typing, r.pub, r.typing, r.presence)
	}
	return r
}

// eventually polls cond until it holds or wait passes.
func eventually(t *testing.T, wait time.Duration, what string, cond func() (bool, error)) {
	t.Helper()
	deadline := time.Now().Add(wait)
	var lastErr error
	for time.Now().Before(deadline) {
		ok, err := cond()
		if ok && err == nil {
			return
		}
		lastErr = err
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("%s: not within %v (last error: %v)", what, wait, lastErr)
}

func itoa(v int64) string {
	b, _ := json.Marshal(v)
	return string(b)
}
