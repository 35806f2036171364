package tracker_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"relay/pkg/presence"
	"relay/pkg/store"
	"relay/pkg/testenv"
)

const wait = 10 * time.Second

func TestOnlineUntilLastConnectionCloses(t *testing.T) {
	e := newEnv(t)
	l := e.listen()
	e.start("")
	gw := e.publisher("gw-a")
	ctx := context.Background()

	before := time.Now().Add(-time.Second)
	must(t, gw.Connect(ctx, 42, "ada", "c1"))
	r := l.expectPresence(42, presence.StatusOnline, wait)
	if r.update.UserID != "42" || r.update.LastSeen.Before(before) {
		t.Fatalf("online payload %+v", r.update)
	}
	// A second device: no event, still online.
	must(t, gw.Connect(ctx, 42, "ada", "c2"))
	l.none(500 * time.Millisecond)
	// Closing one of two: still online, no event.
	must(t, gw.Disconnect(ctx, 42, "c1"))
	l.none(500 * time.Millisecond)
	st, err := e.reader.User(ctx, 42)
	must(t, err)
	if !st.Online() {
		t.Fatalf("status after closing one of two connections: %+v", st)
	}
	// The last one closes: exactly one offline event.
	must(t, gw.Disconnect(ctx, 42, "c2"))
	r = l.expectPresence(42, presence.StatusOffline, wait)
	if r.update.LastSeen.Before(before) {
		t.Fatalf("offline payload %+v", r.update)
	}
	must(t, gw.Disconnect(ctx, 42, "c2")) // a repeated disconnect changes nothing
	l.none(2 * time.Second)               // longer than the timeout: the sweeper has nothing to add
	st, err = e.reader.User(ctx, 42)
	must(t, err)
	if st.Online() || st.LastSeen == nil || !st.LastSeen.Equal(r.update.LastSeen) {
		t.Fatalf("status after last close: %+v (event lastSeen %v)", st, r.update.LastSeen)
	}
}

func TestOfflineWhenGatewayStopsHeartbeating(t *testing.T) {
	e := newEnv(t)
	l := e.listen()
	e.start("")
	ctx := context.Background()
	dead := e.publisher("gw-dead")
	alive := e.publisher("gw-alive")

	must(t, dead.Connect(ctx, 1, "u1", "a"))
	must(t, dead.Connect(ctx, 2, "u2", "b"))
	must(t, alive.Connect(ctx, 2, "u2", "c")) // u2 also has a device on a live gateway
	got := map[int64]bool{}
	for range 2 {
		got[l.next(wait).presence.UserID] = true
	}
	if !got[1] || !got[2] {
		t.Fatalf("online events for %v", got)
	}

	// Both gateways heartbeat for twice the timeout: nobody goes offline.
	hb := func(p *presence.Publisher, conns ...presence.Conn) {
		if err := p.Heartbeat(ctx, conns); err != nil {
			t.Error(err) // also called from a goroutine: no Fatal
		}
	}
	var lastBeat time.Time
	for range 10 {
		lastBeat = time.Now()
		hb(dead, presence.Conn{UserID: 1, ConnID: "a"}, presence.Conn{UserID: 2, ConnID: "b"})
		hb(alive, presence.Conn{UserID: 2, ConnID: "c"})
		l.none(e.cfg.HeartbeatInterval)
	}

	// gw-dead is killed: it just stops heartbeating. u1 goes offline,
	// last seen at its last heartbeat; u2 stays online through gw-alive.
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			select {
			case <-stop:
				return
			case <-time.After(e.cfg.HeartbeatInterval):
				hb(alive, presence.Conn{UserID: 2, ConnID: "c"})
			}
		}
	})
	defer func() { close(stop); wg.Wait() }()
	r := l.expectPresence(1, presence.StatusOffline, wait)
	if d := r.update.LastSeen.Sub(lastBeat); d < -time.Second || d > time.Second {
		t.Fatalf("lastSeen %v, last heartbeat sent %v", r.update.LastSeen, lastBeat)
	}
	l.none(2 * e.cfg.PresenceTimeout)
	sts, err := e.reader.Users(ctx, []int64{1, 2, 3})
	must(t, err)
	if sts[0].Online() || !sts[1].Online() || sts[2].Online() || sts[2].LastSeen != nil {
		t.Fatalf("statuses %+v", sts)
	}
}

func TestTyping(t *testing.T) {
	e := newEnv(t)
	const room = 7
	l := e.listen(room)
	e.start("")
	gw := e.publisher("gw-a")
	ctx := context.Background()

	// Start shows; renewals within the TTL send nothing new.
	must(t, gw.TypingStart(ctx, room, 5, "eve"))
	r := l.expectTyping(room, 5, true, wait)
	if r.typing.Username != "eve" {
		t.Fatalf("typing payload %+v", r.typing)
	}
	var lastRenew time.Time
	for range 3 {
		l.none(e.cfg.TypingTTL * 6 / 10)
		lastRenew = time.Now()
		must(t, gw.TypingStart(ctx, room, 5, "eve"))
	}
	ty, err := e.reader.Typing(ctx, room)
	must(t, err)
	if len(ty) != 1 || ty[0].UserID != 5 || ty[0].Username != "eve" {
		t.Fatalf("typists %+v", ty)
	}
	// Then it expires, and members are told.
	r = l.expectTyping(room, 5, false, wait)
	if r.at.Before(lastRenew) || r.typing.Username != "eve" {
		t.Fatalf("typing ended at %v before the last renewal %v (%+v)", r.at, lastRenew, r.typing)
	}

	// An explicit stop ends it at once, and the sweeper adds nothing.
	must(t, gw.TypingStart(ctx, room, 5, "eve"))
	l.expectTyping(room, 5, true, wait)
	must(t, gw.TypingStop(ctx, room, 5, "eve"))
	l.expectTyping(room, 5, false, wait)
	must(t, gw.TypingStop(ctx, room, 5, "eve"))
	l.none(2 * e.cfg.TypingTTL)
	ty, err = e.reader.Typing(ctx, room)
	must(t, err)
	if len(ty) != 0 {
		t.Fatalf("typists after stop %+v", ty)
	}
	// Nothing is left behind for the room.
	n, err := e.rdb.Exists(ctx, e.keys.Typing(room), e.keys.TypingNames(room)).Result()
	must(t, err)
	if n != 0 {
		t.Fatalf("%d typing keys left", n)
	}
}

// Two instances share the stream: each command is applied by one of them,
// and both sweep, so every transition must still be published once. (The
// commands about one user are sent so that their order does not matter:
// two instances may apply neighbouring commands out of order.)
func TestTwoInstancesPublishOnce(t *testing.T) {
	e := newEnv(t)
	const room = 9
	l := e.listen(room)
	e.start("one")
	e.start("two")
	ctx := context.Background()
	gws := []*presence.Publisher{e.publisher("gw-a"), e.publisher("gw-b")}

	const users = 40
	seen := map[string]int{}
	collect := func(n int) {
		t.Helper()
		deadline := time.After(20 * time.Second)
		for got := 0; got < n; got++ {
			select {
			case r := <-l.ch:
				var k string
				if r.presence != nil {
					k = fmt.Sprintf("%d %s", r.presence.UserID, r.presence.Status)
				} else {
					k = fmt.Sprintf("%s typing %v", r.typing.UserID, r.typing.Typing)
				}
				seen[k]++
				if seen[k] > 1 {
					t.Fatalf("event %q twice", k)
				}
			case <-deadline:
				t.Fatalf("%d of %d events: %v", got, n, seen)
			}
		}
	}
	// Every user connects on both gateways (one device each) and types.
	for u := int64(1); u <= users; u++ {
		for i, gw := range gws {
			must(t, gw.Connect(ctx, u, "u", fmt.Sprintf("c%d-%d", u, i)))
		}
		must(t, gws[u%2].TypingStart(ctx, room, u, "u"))
	}
	collect(2 * users) // online and typing:true per user; typing:false come later
	// Half disconnect both devices; the other half time out (both
	// instances sweep them); every typist expires.
	for u := int64(1); u <= users/2; u++ {
		for i, gw := range gws {
			must(t, gw.Disconnect(ctx, u, fmt.Sprintf("c%d-%d", u, i)))
		}
	}
	collect(2 * users)
	for u := 1; u <= users; u++ {
		for _, k := range []string{"%d online", "%d offline", "%d typing true", "%d typing false"} {
			if seen[fmt.Sprintf(k, u)] != 1 {
				t.Fatalf("event %q seen %d times", fmt.Sprintf(k, u), seen[fmt.Sprintf(k, u)])
			}
		}
	}
	l.none(2 * time.Second)
}

func TestRestartKeepsState(t *testing.T) {
	e := newEnv(t)
	l := e.listen()
	first := e.start("first")
	gw := e.publisher("gw-a")
	ctx := context.Background()

	must(t, gw.Connect(ctx, 1, "u1", "a"))
	must(t, gw.Connect(ctx, 2, "u2", "b"))
	l.next(wait)
	l.next(wait)
	first.stop()

	// While presence is down: u1 leaves, u3 arrives, u2 keeps heartbeating.
	must(t, gw.Disconnect(ctx, 1, "a"))
	must(t, gw.Connect(ctx, 3, "u3", "c"))
	for range 4 {
		must(t, gw.Heartbeat(ctx, []presence.Conn{{UserID: 2, ConnID: "b"}, {UserID: 3, ConnID: "c"}}))
		time.Sleep(e.cfg.HeartbeatInterval)
	}
	l.none(0)

	// A new instance applies what was sent meanwhile and keeps u2 online.
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			select {
			case <-stop:
				return
			case <-time.After(e.cfg.HeartbeatInterval):
				if err := gw.Heartbeat(ctx, []presence.Conn{{UserID: 2, ConnID: "b"}, {UserID: 3, ConnID: "c"}}); err != nil {
					t.Error(err)
				}
			}
		}
	})
	defer func() { close(stop); wg.Wait() }()
	e.start("second")
	got := map[string]bool{}
	for range 2 {
		r := l.next(wait)
		got[fmt.Sprintf("%d %s", r.presence.UserID, r.presence.Status)] = true
	}
	if !got["1 offline"] || !got["3 online"] {
		t.Fatalf("events after restart %v", got)
	}
	l.none(2 * e.cfg.PresenceTimeout)
	sts, err := e.reader.Users(ctx, []int64{1, 2, 3})
	must(t, err)
	if sts[0].Online() || !sts[1].Online() || !sts[2].Online() {
		t.Fatalf("statuses after restart %+v", sts)
	}
}

func TestCrashedInstanceCommandsAreTakenOver(t *testing.T) {
	e := newEnv(t)
	l := e.listen()
	ctx := context.Background()
	// A consumer that read a command and died before applying it.
	must(t, e.rdb.XGroupCreateMkStream(ctx, e.keys.Commands(), presence.Group, "0").Err())
	gw := e.publisher("gw-a")
	must(t, gw.Connect(ctx, 8, "u8", "x"))
	eventually(t, wait, "command sent", func() (bool, error) {
		n, err := e.rdb.XLen(ctx, e.keys.Commands()).Result()
		return n == 1, err
	})
	_, err := e.rdb.XReadGroup(ctx, &goredis.XReadGroupArgs{
		Group: presence.Group, Consumer: "crashed", Streams: []string{e.keys.Commands(), ">"}, Count: 10, Block: -1,
	}).Result()
	must(t, err)

	e.start("survivor")
	l.expectPresence(8, presence.StatusOnline, wait)
	eventually(t, wait, "pending acknowledged", func() (bool, error) {
		p, err := e.rdb.XPending(ctx, e.keys.Commands(), presence.Group).Result()
		return err == nil && p.Count == 0, err
	})
}

func TestUsersTableFollowsPresence(t *testing.T) {
	e := newEnv(t)
	db, err := store.Open(context.Background(), e.cfg.Postgres.URL, store.Options{MaxConns: 2})
	must(t, err)
	t.Cleanup(func() { _ = store.Close(db) })
	ctx := context.Background()
	u := &store.User{Username: "ada", Email: "ada@example.com", PasswordHash: "x"}
	must(t, store.CreateUser(ctx, db, u))

	e.start("")
	gw := e.publisher("gw-a")
	must(t, gw.Connect(ctx, u.ID, "ada", "c1"))
	var online store.User
	eventually(t, wait, "users.is_online = true", func() (bool, error) {
		online = store.User{}
		err := db.Where("id = ?", u.ID).Take(&online).Error
		return online.IsOnline && online.LastSeen != nil, err
	})
	must(t, gw.Disconnect(ctx, u.ID, "c1"))
	eventually(t, wait, "users.is_online = false", func() (bool, error) {
		var got store.User
		err := db.Where("id = ?", u.ID).Take(&got).Error
		return !got.IsOnline && got.LastSeen != nil && !got.LastSeen.Before(*online.LastSeen), err
	})
	eventually(t, wait, "dirty set drained", func() (bool, error) {
		n, err := e.rdb.ZCard(ctx, e.keys.Dirty()).Result()
		return n == 0, err
	})
}

func TestBadCommandsDoNotStall(t *testing.T) {
	e := newEnv(t)
	l := e.listen()
	inst := e.start("")
	ctx := context.Background()
	bad := []string{`not json`, `{"op":"connect","gw":"g"}`, `{"op":"explode","gw":"g"}`,
		`{"op":"heartbeat","gw":"g","conns":[{"u":"-1","c":"x"}]}`, `{"op":"typing_start","gw":"g","user":"1"}`}
	for _, b := range bad {
		must(t, e.rdb.XAdd(ctx, &goredis.XAddArgs{Stream: e.keys.Commands(), Values: []string{"c", b}}).Err())
	}
	must(t, e.rdb.XAdd(ctx, &goredis.XAddArgs{Stream: e.keys.Commands(), Values: []string{"other", "field"}}).Err())
	gw := e.publisher("gw-a")
	must(t, gw.Connect(ctx, 3, "u3", "c"))
	l.expectPresence(3, presence.StatusOnline, wait)

	// The probes answer on the service's listener.
	for path, want := range map[string]string{"/health": `"ok"`, "/ready": `"ready"`, "/metrics": "presence_commands_applied_total"} {
		res, err := http.Get("http://" + inst.addr + path)
		must(t, err)
		body, _ := io.ReadAll(res.Body)
		res.Body.Close()
		if res.StatusCode != 200 || !strings.Contains(string(body), want) {
			t.Fatalf("GET %s: %d %s", path, res.StatusCode, body)
		}
	}
}

func TestConfigValidation(t *testing.T) {
	if testenv.Short() {
		t.Skip("needs telemetry only, but New connects after validation")
	}
	e := newEnv(t)
	tel, err := telemetryFor(e)
	must(t, err)
	cfg := e.cfg
	cfg.PresenceTimeout = cfg.HeartbeatInterval
	if _, err := newService(cfg, tel); err == nil || !strings.Contains(err.Error(), "PRESENCE_TIMEOUT") {
		t.Fatalf("timeout <= heartbeat interval accepted: %v", err)
	}
	cfg = e.cfg
	cfg.TypingTTL = -time.Second
	if _, err := newService(cfg, tel); err == nil {
		t.Fatal("negative TYPING_TTL accepted")
	}
	cfg = e.cfg
	cfg.Redis.URL = "not-a-url"
	if _, err := newService(cfg, tel); err == nil {
		t.Fatal("bad REDIS_URL accepted")
	}
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}
