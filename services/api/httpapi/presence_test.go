package httpapi_test

import (
	"context"
	"fmt"
	"net"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"relay/pkg/chat"
	"relay/pkg/config"
	"relay/pkg/presence"
	"relay/pkg/telemetry"
	presencesvc "relay/services/presence/tracker"
)

type presenceResp struct {
	UserID   string     `json:"userId"`
	Username string     `json:"username"`
	Status   string     `json:"status"`
	LastSeen *time.Time `json:"lastSeen"`
}

type roomPresenceResp struct {
	RoomID string         `json:"roomId"`
	Online []presenceResp `json:"online"`
	Typing []struct {
		UserID   string `json:"userId"`
		Username string `json:"username"`
	} `json:"typing"`
}

// String renders the room presence compactly for comparison:
// "online: ada:online bob:offline typing: bob".
func (r roomPresenceResp) String() string {
	s := "online:"
	for _, m := range r.Online {
		s += " " + m.Username + ":" + m.Status
	}
	s += " typing:"
	for _, t := range r.Typing {
		s += " " + t.Username
	}
	return s
}

// startPresence runs the real presence service in-process on the test's
// Redis prefix and database, and returns a gateway's client of it. The
// timeouts are long so nothing expires during a test: every transition
// the tests see comes from a command they sent.
func (e *apiEnv) startPresence(t testing.TB) *presence.Publisher {
	t.Helper()
	cfg := presencesvc.Config{
		Redis:         config.Redis{URL: e.redisURL, Prefix: e.prefix},
		Postgres:      config.Postgres{URL: e.dbURL, MaxConns: 2},
		HTTP:          config.HTTP{ShutdownTimeout: 5 * time.Second},
		Presence:      config.Presence{PresenceTimeout: time.Minute, TypingTTL: time.Minute},
		FlushInterval: 200 * time.Millisecond,
	}
	tel, err := telemetry.Setup(context.Background(), "presence-test", config.Telemetry{LogLevel: "warn", LogFormat: "text"})
	if err != nil {
		t.Fatal(err)
	}
	svc, err := presencesvc.New(context.Background(), cfg, tel)
	if err != nil {
		t.Fatalf("presence: %v", err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		_ = svc.Close()
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- svc.Run(ctx, ln) }()
	pub, err := presence.NewPublisher(e.rdb, presence.NewKeys(e.prefix), "gw-test", presence.PublisherOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cctx, ccancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer ccancel()
		if err := pub.Close(cctx); err != nil {
			t.Errorf("publisher close: %v", err)
		}
		cancel()
		if err := <-done; err != nil {
			t.Errorf("presence Run: %v", err)
		}
		if err := svc.Close(); err != nil {
			t.Errorf("presence Close: %v", err)
		}
	})
	return pub
}

// eventually polls cond until it holds, failing the test with cond's last
// description after a generous deadline (the presence service applies
// commands asynchronously; this bounds a hang, it does not measure speed).
func eventually(t testing.TB, what string, cond func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		ok, got := cond()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: never happened; last: %s", what, got)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func must(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func TestUserPresence(t *testing.T) {
	e := newAPI(t, envOptions{})
	pub := e.startPresence(t)
	ada, bob := e.user("ada"), e.user("bob")
	ctx := context.Background()
	get := func(u testUser) presenceResp {
		t.Helper()
		var p presenceResp
		e.do("GET", "/api/users/"+u.sid+"/presence", ada.token, nil).expect(t, 200, &p)
		if p.UserID != u.sid {
			t.Fatalf("presence of %s names user %q", u.sid, p.UserID)
		}
		return p
	}

	// Never seen: offline, no last seen.
	if p := get(bob); p.Status != "offline" || p.LastSeen != nil {
		t.Fatalf("unseen bob: %+v", p)
	}

	// Online after connect, on either of two devices.
	before := time.Now().Add(-time.Second)
	must(t, pub.Connect(ctx, bob.id, bob.name, "phone"))
	must(t, pub.Connect(ctx, bob.id, bob.name, "laptop"))
	var online presenceResp
	eventually(t, "bob online", func() (bool, string) {
		online = get(bob)
		return online.Status == "online", fmt.Sprintf("%+v", online)
	})
	if online.LastSeen == nil || online.LastSeen.Before(before) || online.LastSeen.After(time.Now().Add(time.Second)) {
		t.Fatalf("online bob's last seen %v, want about now", online.LastSeen)
	}

	// Closing one device leaves him online; closing the last one takes him
	// offline with the time of that transition as last seen.
	must(t, pub.Disconnect(ctx, bob.id, "phone"))
	must(t, pub.Connect(ctx, ada.id, ada.name, "c")) // a later command: once ada is online, the disconnect was applied
	eventually(t, "ada online", func() (bool, string) {
		p := get(ada)
		return p.Status == "online", fmt.Sprintf("%+v", p)
	})
	if p := get(bob); p.Status != "online" {
		t.Fatalf("bob with one device left: %+v", p)
	}
	must(t, pub.Disconnect(ctx, bob.id, "laptop"))
	var offline presenceResp
	eventually(t, "bob offline", func() (bool, string) {
		offline = get(bob)
		return offline.Status == "offline", fmt.Sprintf("%+v", offline)
	})
	if offline.LastSeen == nil || offline.LastSeen.Before(*online.LastSeen) || offline.LastSeen.After(time.Now().Add(time.Second)) {
		t.Fatalf("offline bob's last seen %v, want between %v and now", offline.LastSeen, online.LastSeen)
	}

	// The presence service keeps users.is_online in step: the profile
	// agrees once its batch is written.
	eventually(t, "ada's profile online", func() (bool, string) {
		var u struct {
			IsOnline bool `json:"isOnline"`
		}
		e.do("GET", "/api/users/"+ada.sid, bob.token, nil).expect(t, 200, &u)
		return u.IsOnline, fmt.Sprintf("%+v", u)
	})

	// Errors.
	e.do("GET", "/api/users/999999/presence", ada.token, nil).expectError(t, 404, chat.CodeNotFound)
	for _, bad := range []string{"abc", "-1", "0", "1.5", "9223372036854775808", "%20"} {
		e.do("GET", "/api/users/"+bad+"/presence", ada.token, nil).expectError(t, 400, chat.CodeBadRequest)
	}
	e.do("GET", "/api/users/"+bob.sid+"/presence", "", nil).expectError(t, 401, chat.CodeUnauthorized)
}

// TestPresenceLastSeenFallback: a user whose presence state Redis no longer
// has (lost, or from before presence ran) shows the last seen stored with
// the account.
func TestPresenceLastSeenFallback(t *testing.T) {
	e := newAPI(t, envOptions{})
	ada, bob := e.user("ada"), e.user("bob")
	seen := time.Date(2025, 6, 7, 8, 9, 10, 0, time.UTC)
	must(t, e.db.Exec("UPDATE users SET last_seen = ? WHERE id = ?", seen, bob.id).Error)

	var p presenceResp
	e.do("GET", "/api/users/"+bob.sid+"/presence", ada.token, nil).expect(t, 200, &p)
	if p.Status != "offline" || p.LastSeen == nil || !p.LastSeen.Equal(seen) {
		t.Fatalf("bob: %+v, want offline, last seen %v", p, seen)
	}
	g := e.room(ada, "group", "g", bob)
	var rp roomPresenceResp
	e.do("GET", "/api/rooms/"+g.ID+"/presence", ada.token, nil).expect(t, 200, &rp)
	if len(rp.Online) != 2 || rp.Online[0].LastSeen != nil || rp.Online[1].LastSeen == nil || !rp.Online[1].LastSeen.Equal(seen) {
		t.Fatalf("room presence %+v", rp.Online)
	}
}

func TestRoomPresence(t *testing.T) {
	e := newAPI(t, envOptions{})
	pub := e.startPresence(t)
	ada, bob, cy, dee := e.user("ada"), e.user("bob"), e.user("cy"), e.user("dee")
	g := e.room(ada, "group", "g", bob, cy)
	ch := e.room(ada, "channel", "news")
	var gid int64
	fmt.Sscan(g.ID, &gid)
	ctx := context.Background()
	get := func(u testUser) roomPresenceResp {
		t.Helper()
		var p roomPresenceResp
		e.do("GET", "/api/rooms/"+g.ID+"/presence", u.token, nil).expect(t, 200, &p)
		if p.RoomID != g.ID {
			t.Fatalf("room presence names room %q", p.RoomID)
		}
		return p
	}
	waitFor := func(what, want string) roomPresenceResp {
		t.Helper()
		var p roomPresenceResp
		eventually(t, what, func() (bool, string) {
			p = get(ada)
			return p.String() == want, p.String()
		})
		return p
	}

	// Every member, in join order, whatever their state.
	p := get(bob)
	if p.String() != "online: ada:offline bob:offline cy:offline typing:" {
		t.Fatalf("before anyone connected: %s", p)
	}
	for i, u := range []testUser{ada, bob, cy} {
		if p.Online[i].UserID != u.sid || p.Online[i].LastSeen != nil {
			t.Fatalf("member %d: %+v, want %s never seen", i, p.Online[i], u.sid)
		}
	}

	// Who is online and who is typing.
	must(t, pub.Connect(ctx, ada.id, ada.name, "a1"))
	must(t, pub.Connect(ctx, bob.id, bob.name, "b1"))
	must(t, pub.TypingStart(ctx, gid, bob.id, bob.name))
	p = waitFor("ada and bob online, bob typing", "online: ada:online bob:online cy:offline typing: bob")
	if p.Typing[0].UserID != bob.sid || p.Online[1].LastSeen == nil {
		t.Fatalf("room presence %+v", p)
	}

	// Stopping, and going offline with a last seen.
	must(t, pub.TypingStop(ctx, gid, bob.id, bob.name))
	must(t, pub.Disconnect(ctx, bob.id, "b1"))
	p = waitFor("bob offline, nobody typing", "online: ada:online bob:offline cy:offline typing:")
	if p.Online[1].LastSeen == nil || p.Online[2].LastSeen != nil {
		t.Fatalf("last seen: bob %v, cy %v", p.Online[1].LastSeen, p.Online[2].LastSeen)
	}

	// Someone who leaves the room while typing is neither listed nor shown
	// typing, though the typing state lives on until it expires.
	must(t, pub.TypingStart(ctx, gid, cy.id, cy.name))
	waitFor("cy typing", "online: ada:online bob:offline cy:offline typing: cy")
	e.do("POST", "/api/rooms/"+g.ID+"/leave", cy.token, nil).expect(t, 204, nil)
	if p := get(ada); p.String() != "online: ada:online bob:offline typing:" {
		t.Fatalf("after cy left: %s", p)
	}

	// Members only: outsiders get 403, channels included; unknown rooms 404.
	e.do("GET", "/api/rooms/"+g.ID+"/presence", dee.token, nil).expectError(t, 403, chat.CodeForbidden)
	e.do("GET", "/api/rooms/"+g.ID+"/presence", cy.token, nil).expectError(t, 403, chat.CodeForbidden)
	e.do("GET", "/api/rooms/"+ch.ID+"/presence", dee.token, nil).expectError(t, 403, chat.CodeForbidden)
	var cp roomPresenceResp
	e.do("GET", "/api/rooms/"+ch.ID+"/presence", ada.token, nil).expect(t, 200, &cp)
	if cp.String() != "online: ada:online typing:" {
		t.Fatalf("channel presence: %s", cp)
	}
	e.do("GET", "/api/rooms/424242/presence", ada.token, nil).expectError(t, 404, chat.CodeNotFound)
	for _, bad := range []string{"x1", "-1", "0", "1e3", "9223372036854775808"} {
		e.do("GET", "/api/rooms/"+bad+"/presence", ada.token, nil).expectError(t, 400, chat.CodeBadRequest)
	}
	e.do("GET", "/api/rooms/"+g.ID+"/presence", "", nil).expectError(t, 401, chat.CodeUnauthorized)
}

// TestPresenceRedisDown: when Redis cannot be reached the presence
// endpoints answer 503 UNAVAILABLE (and the rest of the api still works).
func TestPresenceRedisDown(t *testing.T) {
	// A real client and reader, on a port nothing listens on.
	dead := goredis.NewClient(&goredis.Options{Addr: "127.0.0.1:1", MaxRetries: -1, DialTimeout: time.Second})
	t.Cleanup(func() { _ = dead.Close() })
	e := newAPI(t, envOptions{presence: presence.NewReader(dead, presence.NewKeys("x:"))})
	ada, bob := e.user("ada"), e.user("bob")
	g := e.room(ada, "group", "g", bob)
	e.do("GET", "/api/users/"+bob.sid+"/presence", ada.token, nil).expectError(t, 503, chat.CodeUnavailable)
	e.do("GET", "/api/rooms/"+g.ID+"/presence", ada.token, nil).expectError(t, 503, chat.CodeUnavailable)
	// Authorization and validation still come first.
	e.do("GET", "/api/rooms/"+g.ID+"/presence", e.user("cy").token, nil).expectError(t, 403, chat.CodeForbidden)
	e.do("GET", "/api/users/999999/presence", ada.token, nil).expectError(t, 404, chat.CodeNotFound)
	e.do("GET", "/api/users/"+bob.sid, ada.token, nil).expect(t, 200, nil)
}
