package server

import (
	"context"
	"encoding/json"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"relay/pkg/chat"
	"relay/pkg/config"
	"relay/pkg/events"
	"relay/pkg/presence"
	"relay/pkg/protocol"
	"relay/pkg/redis"
	"relay/pkg/store"
	presencesvc "relay/services/presence/tracker"
)

// Short presence timings for tests: heartbeat 200 ms, timeout 1.5 s,
// typing TTL 1 s (the presence service in-process uses the same).
const (
	testHeartbeat = 200 * time.Millisecond
	testTimeout   = 1500 * time.Millisecond
	testTypingTTL = time.Second
)

// presenceTimings gives a gateway the test presence timings.
func presenceTimings(c *Config) {
	c.HeartbeatInterval = testHeartbeat
	c.PresenceTimeout = testTimeout
	c.TypingTTL = testTypingTTL
}

// presenceService is the real presence service running in-process on the
// test's Redis prefix and database.
type presenceService struct {
	svc  *presencesvc.Service
	stop func()
}

// startPresence starts a presence service; mod adjusts its config.
func (e *env) startPresence(mod func(*presencesvc.Config)) *presenceService {
	e.t.Helper()
	cfg := presencesvc.Config{
		Redis:         config.Redis{URL: "redis://127.0.0.1:6379/0", Prefix: e.keys.Prefix},
		Postgres:      config.Postgres{URL: e.dbURL, MaxConns: 2},
		HTTP:          config.HTTP{ShutdownTimeout: 5 * time.Second},
		Presence:      config.Presence{HeartbeatInterval: testHeartbeat, PresenceTimeout: testTimeout, TypingTTL: testTypingTTL},
		SweepInterval: 100 * time.Millisecond,
		FlushInterval: 200 * time.Millisecond,
		ClaimIdle:     time.Second,
	}
	if mod != nil {
		mod(&cfg)
	}
	tel, _ := testTelemetry(e.t)
	s, err := presencesvc.New(context.Background(), cfg, tel)
	if err != nil {
		e.t.Fatalf("presence New: %v", err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		e.t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx, ln) }()
	var once sync.Once
	p := &presenceService{svc: s}
	p.stop = func() {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil {
				e.t.Errorf("presence Run: %v", err)
			}
			_ = s.Close()
		})
	}
	e.t.Cleanup(p.stop)
	return p
}

// until reads pushes until one matches and returns it with the frames
// read before it.
func (c *wsClient) until(what string, match func(protocol.Frame) bool) (protocol.Frame, []protocol.Frame) {
	c.t.Helper()
	var skipped []protocol.Frame
	for {
		f := c.next()
		if match(f) {
			return f, skipped
		}
		skipped = append(skipped, f)
		if len(skipped) > 1000 {
			c.t.Fatalf("no %s in 1000 frames", what)
		}
	}
}

// presenceOf decodes a presence_update push.
func presenceOf(f protocol.Frame) (presence.PresenceUpdate, bool) {
	var u presence.PresenceUpdate
	if f.Event != protocol.EventPresenceUpdate || json.Unmarshal(f.Data, &u) != nil {
		return u, false
	}
	return u, true
}

// typingOf decodes a typing push.
func typingOf(f protocol.Frame) (protocol.Typing, bool) {
	var ty protocol.Typing
	if f.Event != protocol.EventTyping || json.Unmarshal(f.Data, &ty) != nil {
		return ty, false
	}
	return ty, true
}

// expectPresence waits for the next presence_update about user (skipping
// other frames) and requires status.
func (c *wsClient) expectPresence(user int64, status string) presence.PresenceUpdate {
	c.t.Helper()
	f, _ := c.until("presence_update of "+rid(user), func(f protocol.Frame) bool {
		u, ok := presenceOf(f)
		return ok && u.UserID == rid(user)
	})
	u, _ := presenceOf(f)
	if u.Status != status || u.LastSeen.IsZero() {
		c.t.Fatalf("presence of %d: got %s, want status %s and a lastSeen", user, f.Data, status)
	}
	return u
}

// expectTyping waits for the next typing push about user in room
// (skipping other frames) and requires typing.
func (c *wsClient) expectTyping(room, user int64, typing bool) protocol.Typing {
	c.t.Helper()
	f, _ := c.until("typing of "+rid(user), func(f protocol.Frame) bool {
		ty, ok := typingOf(f)
		return ok && ty.UserID == rid(user) && ty.RoomID == rid(room)
	})
	ty, _ := typingOf(f)
	if ty.Typing != typing {
		c.t.Fatalf("typing of %d in %d: got %s, want typing %v", user, room, f.Data, typing)
	}
	return ty
}

// quiet waits d, then returns every push that arrived meanwhile (a ping
// round trip makes sure they were all read).
func (c *wsClient) quiet(d time.Duration) []protocol.Frame {
	c.t.Helper()
	time.Sleep(d)
	c.ack(protocol.EventPing, struct{}{}, nil)
	got := c.pending
	c.pending = nil
	return got
}

// about counts the presence_update pushes about user in frames.
func about(frames []protocol.Frame, user int64) []presence.PresenceUpdate {
	var out []presence.PresenceUpdate
	for _, f := range frames {
		if u, ok := presenceOf(f); ok && u.UserID == rid(user) {
			out = append(out, u)
		}
	}
	return out
}

func TestPresenceFollowsTheLastConnectionAcrossGateways(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.startPresence(nil)
	g1, g2 := e.start(presenceTimings), e.start(presenceTimings)
	alice, at := e.user("alice")
	bob, bt := e.user("bob")
	carol, ct := e.user("carol")
	e.room(chat.RoomGroup, alice, bob)
	e.room(chat.RoomGroup, carol) // carol shares no room with alice or bob

	b := e.dial(g2, bt)
	b.expectPresence(bob, presence.StatusOnline) // bob's own connection hears of him too
	c := e.dial(g1, ct)
	c.expectPresence(carol, presence.StatusOnline)

	a1 := e.dial(g1, at)
	on := b.expectPresence(alice, presence.StatusOnline)
	if d := time.Since(on.LastSeen); d < -time.Second || d > 10*time.Second {
		t.Fatalf("online lastSeen %v is not about now", on.LastSeen)
	}
	a1.expectPresence(alice, presence.StatusOnline)
	a2 := e.dial(g2, at) // a second device: still one online user
	a2.ack(protocol.EventPing, struct{}{}, nil)
	// a2's connect reaches presence through g2's publisher and a1's
	// disconnect through g1's: two independent queues. Close a1 only once
	// presence holds both connections, or a fast g1 could report alice's
	// only known connection gone.
	conns := presence.NewKeys(e.keys.Prefix).User(alice)
	eventually(t, "presence to hold both of alice's connections", func() bool {
		return e.rdb.ZCard(context.Background(), conns).Val() == 2
	})

	// Closing one of two connections changes nothing, through several
	// heartbeats and past the timeout.
	_ = a1.conn.Close()
	if got := about(b.quiet(testTimeout+500*time.Millisecond), alice); len(got) != 0 {
		t.Fatalf("bob got %+v while alice kept a connection", got)
	}
	// The last one closing makes alice offline, once.
	_ = a2.conn.Close()
	off := b.expectPresence(alice, presence.StatusOffline)
	if off.LastSeen.Before(on.LastSeen) {
		t.Fatalf("offline lastSeen %v before online %v", off.LastSeen, on.LastSeen)
	}
	if got := about(b.quiet(testTimeout), alice); len(got) != 0 {
		t.Fatalf("bob got more after the offline event: %+v", got)
	}
	for _, f := range c.quiet(0) {
		if u, ok := presenceOf(f); ok {
			t.Fatalf("carol, who shares no room, got %+v", u)
		}
	}
	st, err := presence.NewReader(e.rdb, presence.NewKeys(e.keys.Prefix)).User(context.Background(), alice)
	if err != nil || st.Online() {
		t.Fatalf("alice after the last close: %+v %v", st, err)
	}
}

func TestPresenceOfflineWhenAGatewayDies(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.startPresence(nil)
	g1, g2 := e.start(presenceTimings), e.start(presenceTimings)
	alice, at := e.user("alice")
	bob, bt := e.user("bob")
	e.room(chat.RoomDirect, alice, bob)
	b := e.dial(g2, bt)
	b.expectPresence(bob, presence.StatusOnline)
	a := e.dial(g1, at)
	b.expectPresence(alice, presence.StatusOnline)
	// Heartbeats keep alice online past the timeout.
	if got := about(b.quiet(testTimeout+500*time.Millisecond), alice); len(got) != 0 {
		t.Fatalf("bob got %+v while alice's gateway heartbeated", got)
	}

	// g1 "dies": its publisher stops (like SIGKILL, no disconnect is ever
	// sent) while alice's socket stays open.
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := g1.svc.pub.Close(ctx); err != nil {
		t.Fatal(err)
	}
	died := time.Now()
	b.expectPresence(alice, presence.StatusOffline)
	// The timeout, not a disconnect, ended it: no sooner than the timeout
	// after the last heartbeat (at most one interval before the death).
	if d := time.Since(died); d < testTimeout-testHeartbeat-100*time.Millisecond {
		t.Fatalf("offline %v after the gateway died, before the %v timeout", d, testTimeout)
	}
	t.Logf("offline %v after the gateway died", time.Since(died))
	a.ack(protocol.EventPing, struct{}{}, nil) // the socket itself was never closed
	// bob, on a live gateway, is still online.
	st, err := presence.NewReader(e.rdb, presence.NewKeys(e.keys.Prefix)).User(context.Background(), bob)
	if err != nil || !st.Online() {
		t.Fatalf("bob after alice's gateway died: %+v %v", st, err)
	}
}

func TestPresenceOfflineWhenTheCableIsPulled(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.startPresence(nil)
	// alice's gateway pings often and drops silence after 500 ms; bob's
	// keeps the defaults so the test's reading pace cannot drop him.
	g1 := e.start(func(c *Config) {
		presenceTimings(c)
		c.PingInterval, c.PongTimeout = 100*time.Millisecond, 500*time.Millisecond
	})
	g2 := e.start(presenceTimings)
	alice, at := e.user("alice")
	bob, bt := e.user("bob")
	e.room(chat.RoomGroup, alice, bob)
	b := e.dial(g2, bt)
	b.expectPresence(bob, presence.StatusOnline)
	e.dial(g1, at) // never reads, so never answers a ping: a dead peer
	b.expectPresence(alice, presence.StatusOnline)
	b.expectPresence(alice, presence.StatusOffline)
}

func TestPresenceGracefulShutdownDisconnectsAtOnce(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	// A timeout far beyond the read deadline of the test client: an
	// offline event can only come from the gateway's disconnect.
	long := func(c *Config) { presenceTimings(c); c.PresenceTimeout = time.Minute }
	e.startPresence(func(c *presencesvc.Config) { c.PresenceTimeout = time.Minute })
	g1, g2 := e.start(long), e.start(long)
	alice, at := e.user("alice")
	bob, bt := e.user("bob")
	e.room(chat.RoomGroup, alice, bob)
	b := e.dial(g2, bt)
	b.expectPresence(bob, presence.StatusOnline)
	a := e.dial(g1, at)
	b.expectPresence(alice, presence.StatusOnline)
	g1.stop()
	if code := a.closeCode(); code != protocol.CloseServiceRestart {
		t.Fatalf("close code %d, want 1012", code)
	}
	b.expectPresence(alice, presence.StatusOffline)
}

func TestPresenceSurvivesAPresenceRestart(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	first := e.startPresence(func(c *presencesvc.Config) { c.Consumer = "first" })
	g1, g2 := e.start(presenceTimings), e.start(presenceTimings)
	alice, at := e.user("alice")
	bob, bt := e.user("bob")
	carol, ct := e.user("carol")
	e.room(chat.RoomGroup, alice, bob, carol)
	b := e.dial(g2, bt)
	b.expectPresence(bob, presence.StatusOnline)
	e.dial(g1, at)
	b.expectPresence(alice, presence.StatusOnline)

	// Presence is down for twice its timeout; the gateways keep sending
	// heartbeats (and carol's connect) into the stream.
	first.stop()
	e.dial(g1, ct)
	if got := b.quiet(2 * testTimeout); len(about(got, alice))+len(about(got, carol)) != 0 {
		t.Fatalf("events while presence was down: %+v %+v", about(got, alice), about(got, carol))
	}
	e.startPresence(func(c *presencesvc.Config) { c.Consumer = "second" })
	b.expectPresence(carol, presence.StatusOnline)
	// Nobody who kept heartbeating flaps offline.
	if got := b.quiet(testTimeout + 500*time.Millisecond); len(about(got, alice))+len(about(got, bob)) != 0 {
		t.Fatalf("events after the restart: %+v %+v", about(got, alice), about(got, bob))
	}
	sts, err := presence.NewReader(e.rdb, presence.NewKeys(e.keys.Prefix)).Users(context.Background(), []int64{alice, bob, carol})
	if err != nil {
		t.Fatal(err)
	}
	for _, st := range sts {
		if !st.Online() {
			t.Fatalf("after the restart: %+v", sts)
		}
	}
}

func TestTypingRenewsWithoutRebroadcastAndExpires(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.startPresence(nil)
	g1, g2 := e.start(presenceTimings), e.start(presenceTimings)
	alice, at := e.user("alice")
	bob, bt := e.user("bob")
	room := e.room(chat.RoomGroup, alice, bob)
	a, b := e.dial(g1, at), e.dial(g2, bt)
	a.join(room, nil)
	b.join(room, nil)

	a.ack(protocol.EventTypingStart, protocol.TypingRequest{RoomID: rid(room)}, nil)
	if ty := b.expectTyping(room, alice, true); ty.Username != "alice" {
		t.Fatalf("typing %+v, want username alice", ty)
	}
	// Renewed well within the TTL, twice: no new broadcast, and it lasts
	// past the first start's TTL. A quarter TTL apart, so a slow round trip
	// to presence cannot let the typing lapse between two renewals.
	started := time.Now()
	for range 2 {
		time.Sleep(testTypingTTL / 4)
		a.ack(protocol.EventTypingStart, protocol.TypingRequest{RoomID: rid(room)}, nil)
	}
	b.expectTyping(room, alice, false) // only by expiry: alice never stopped
	if d := time.Since(started); d < testTypingTTL {
		t.Fatalf("typing ended %v after the first start, before its renewed TTL", d)
	}
	// The next typing is broadcast again.
	a.ack(protocol.EventTypingStart, protocol.TypingRequest{RoomID: rid(room)}, nil)
	b.expectTyping(room, alice, true)
	for _, f := range a.quiet(0) {
		if _, ok := typingOf(f); ok {
			t.Fatalf("alice got her own typing: %s", f.Data)
		}
	}
}

func TestTypingEndsAtOnce(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	// A TTL far beyond the read deadline of the test client: each
	// typing false below comes from what alice did, not from expiry.
	e.startPresence(func(c *presencesvc.Config) { c.TypingTTL = time.Minute })
	long := func(c *Config) { presenceTimings(c); c.TypingTTL = time.Minute }
	g1, g2 := e.start(long), e.start(long)
	alice, at := e.user("alice")
	bob, bt := e.user("bob")
	room := e.room(chat.RoomGroup, alice, bob)
	a, aOther, b := e.dial(g1, at), e.dial(g2, at), e.dial(g2, bt)
	for _, c := range []*wsClient{a, aOther, b} {
		c.join(room, nil)
	}
	start := func(c *wsClient) {
		t.Helper()
		c.ack(protocol.EventTypingStart, protocol.TypingRequest{RoomID: rid(room)}, nil)
		b.expectTyping(room, alice, true)
	}

	start(a)
	a.ack(protocol.EventTypingStop, protocol.TypingRequest{RoomID: rid(room)}, nil)
	b.expectTyping(room, alice, false)

	start(a)
	a.ack(protocol.EventSendMessage, protocol.SendMessage{RoomID: rid(room), Content: "done typing"}, nil)
	b.expectTyping(room, alice, false)

	start(a)
	a.ack(protocol.EventLeaveRoom, protocol.LeaveRoom{RoomID: rid(room)}, nil)
	b.expectTyping(room, alice, false)

	// Typing from alice's other device, then that device disconnects.
	start(aOther)
	aOther.ack(protocol.EventPing, struct{}{}, nil)
	_ = aOther.conn.Close()
	b.expectTyping(room, alice, false)

	// A message after typing_stop sends no second stop.
	start(a)
	a.ack(protocol.EventTypingStop, protocol.TypingRequest{RoomID: rid(room)}, nil)
	b.expectTyping(room, alice, false)
	a.join(room, nil)
	a.ack(protocol.EventSendMessage, protocol.SendMessage{RoomID: rid(room), Content: "after stop"}, nil)

	// Typing is not in the log, and alice never saw her own: the next
	// room frame of hers is the next event of the log.
	e.publishNext(room, 1)
	f, skipped := a.until("message", func(f protocol.Frame) bool { return f.Event == protocol.EventMessage })
	if seqOf(t, f) != 1 {
		t.Fatalf("alice got %s, want seq 1", f.Data)
	}
	for _, f := range skipped {
		if f.Event == protocol.EventTyping {
			t.Fatalf("alice got typing %s", f.Data)
		}
	}
	f, skipped = b.until("message", func(f protocol.Frame) bool { return f.Event == protocol.EventMessage })
	if seqOf(t, f) != 1 {
		t.Fatalf("bob got %s, want seq 1", f.Data)
	}
	for _, f := range skipped {
		if f.Event == protocol.EventTyping {
			t.Fatalf("bob got a typing event nobody caused: %s", f.Data)
		}
	}
}

func TestTypingOfANonMemberIsForbidden(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	g := e.start(presenceTimings)
	alice, _ := e.user("alice")
	_, mt := e.user("mallory")
	room := e.room(chat.RoomGroup, alice)
	m := e.dial(g, mt)
	m.fail(protocol.EventTypingStart, protocol.TypingRequest{RoomID: rid(room)}, chat.CodeForbidden)
	m.fail(protocol.EventTypingStop, protocol.TypingRequest{RoomID: rid(room)}, chat.CodeForbidden)
	m.fail(protocol.EventTypingStart, protocol.TypingRequest{RoomID: "x"}, chat.CodeBadRequest)
	m.fail(protocol.EventTypingStart, protocol.TypingRequest{RoomID: strconv.Itoa(1 << 30)}, chat.CodeNotFound)
}

func TestPresenceFollowsMembershipChanges(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.startPresence(nil)
	// A cache TTL far beyond the test: only the user_joined publication
	// can make the gateway see carol's new membership.
	g := e.start(func(c *Config) { presenceTimings(c); c.PresenceCacheTTL = time.Hour })
	alice, at := e.user("alice")
	bob, bt := e.user("bob")
	carol, ct := e.user("carol")
	room := e.room(chat.RoomGroup, alice, bob)
	b := e.dial(g, bt)
	b.join(room, nil)
	c := e.dial(g, ct)
	a := e.dial(g, at)
	b.expectPresence(alice, presence.StatusOnline) // the room's members are cached now
	_ = a.conn.Close()
	b.expectPresence(alice, presence.StatusOffline)

	// carol joins the room (the api's row and event, as the delivery
	// worker publishes it on the room channel bob's gateway receives).
	if err := e.db.Create(&store.RoomMember{RoomID: room, UserID: carol, Role: "member", LastReadSeq: -1, JoinedAt: time.Now()}).Error; err != nil {
		t.Fatal(err)
	}
	frame, err := protocol.RenderEvent(&events.Event{Type: events.MemberJoined, RoomID: room, UserID: carol, Username: "carol", At: time.Now()}, 1, nil)
	if err != nil {
		t.Fatal(err)
	}
	payload, _ := json.Marshal(protocol.Publication{RoomID: room, Seq: 1, Frame: frame})
	if res, _, err := redis.Publish(context.Background(), e.rdb, e.keys, room, 1, nil, payload, 1000); err != nil || res != redis.Published {
		t.Fatalf("publish user_joined: %v %v", res, err)
	}
	b.until("user_joined", func(f protocol.Frame) bool { return f.Event == protocol.EventUserJoined })

	e.dial(g, at)
	c.expectPresence(alice, presence.StatusOnline)
}

// A room over PRESENCE_MAX_ROOM_MEMBERS routes no presence_update; a small
// room the same user is in still does.
func TestPresenceSkipsRoomsOverTheLimit(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.startPresence(nil)
	g := e.start(func(c *Config) { presenceTimings(c); c.PresenceMaxRoomMembers = 2 })
	alice, at := e.user("alice")
	bob, bt := e.user("bob")
	carol, _ := e.user("carol")
	dave, dt := e.user("dave")
	e.room(chat.RoomGroup, alice, bob, carol) // 3 members: over the limit
	e.room(chat.RoomGroup, alice, dave)
	b := e.dial(g, bt)
	d := e.dial(g, dt)
	e.dial(g, at)
	d.expectPresence(alice, presence.StatusOnline)
	if got := about(b.quiet(200*time.Millisecond), alice); len(got) != 0 {
		t.Fatalf("bob shares only a room over the limit with alice, got %+v", got)
	}
}

func TestConfigPresenceValidation(t *testing.T) {
	t.Parallel()
	base := Config{}.withDefaults()
	if err := base.Validate(); err != nil {
		t.Fatalf("defaults: %v", err)
	}
	if base.PongTimeout > base.PresenceTimeout {
		t.Fatalf("default pong timeout %v exceeds the presence timeout %v: a pulled cable would stay online", base.PongTimeout, base.PresenceTimeout)
	}
	for name, mod := range map[string]func(*Config){
		"timeout not above heartbeat": func(c *Config) { c.PresenceTimeout = c.HeartbeatInterval },
		"instance id with slash":      func(c *Config) { c.InstanceID = "a/b" },
		"instance id with space":      func(c *Config) { c.InstanceID = "a b" },
		"instance id too long":        func(c *Config) { c.InstanceID = strings.Repeat("x", 101) },
		"negative heartbeat":          func(c *Config) { c.HeartbeatInterval = -time.Second },
		"negative cache size":         func(c *Config) { c.PresenceCacheSize = -1 },
	} {
		c := base
		mod(&c)
		if err := c.Validate(); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	if id := defaultInstanceID(); id == "" || len(id) > maxInstanceIDLen || id == defaultInstanceID() {
		t.Fatalf("default instance ids %q not unique per process or too long", id)
	}
}

// TestConfigLoadsFromAnEmptyEnvironment: config.Load validates before New
// applies defaults, so every validated setting needs an envDefault.
func TestConfigLoadsFromAnEmptyEnvironment(t *testing.T) {
	for _, v := range []string{"PRESENCE_HEARTBEAT_INTERVAL", "PRESENCE_TIMEOUT", "TYPING_TTL", "INSTANCE_ID",
		"PRESENCE_CACHE_TTL", "PRESENCE_CACHE_SIZE", "PRESENCE_QUEUE_SIZE", "WS_PING_INTERVAL", "WS_PONG_TIMEOUT"} {
		t.Setenv(v, "")
		os.Unsetenv(v)
	}
	cfg, err := config.Load[Config]()
	if err != nil {
		t.Fatalf("config.Load with no presence variables: %v", err)
	}
	want := Config{}.withDefaults()
	if cfg.Presence != want.Presence || cfg.PongTimeout != want.PongTimeout || cfg.PingInterval != want.PingInterval ||
		cfg.HeartbeatInterval != 15*time.Second || cfg.PresenceTimeout != 30*time.Second || cfg.TypingTTL != 5*time.Second {
		t.Fatalf("loaded defaults differ from New's: %+v", cfg)
	}
}
