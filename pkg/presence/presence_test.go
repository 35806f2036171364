package presence_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"relay/pkg/presence"
	"relay/pkg/testenv"
)

func TestDecodeCommand(t *testing.T) {
	t.Parallel()
	good := []string{
		`{"op":"connect","gw":"g","user":"1","name":"ada","conn":"c"}`,
		`{"op":"disconnect","gw":"g","user":"1","conn":"c"}`,
		`{"op":"heartbeat","gw":"g","conns":[{"u":"1","c":"a"},{"u":"2","c":"b"}]}`,
		`{"op":"typing_start","gw":"g","user":"1","room":"7","name":"ada"}`,
		`{"op":"typing_stop","gw":"g","user":"1","room":"7"}`,
	}
	for _, s := range good {
		if _, err := presence.DecodeCommand([]byte(s)); err != nil {
			t.Errorf("%s: %v", s, err)
		}
	}
	bad := []string{
		``, `[]`, `{"op":"connect","user":"1","conn":"c"}`, `{"op":"connect","gw":"g","conn":"c"}`,
		`{"op":"connect","gw":"g","user":"1"}`, `{"op":"connect","gw":"g","user":"x","conn":"c"}`,
		`{"op":"heartbeat","gw":"g","conns":[{"u":"0","c":"a"}]}`, `{"op":"typing_start","gw":"g","user":"1"}`,
		`{"op":"nope","gw":"g"}`, `{"op":"connect","gw":"g","user":"1","conn":"` + strings.Repeat("x", 200) + `"}`,
	}
	for _, s := range bad {
		if _, err := presence.DecodeCommand([]byte(s)); err == nil {
			t.Errorf("%s: accepted", s)
		}
	}
}

func TestDecodeEvent(t *testing.T) {
	t.Parallel()
	e, err := presence.DecodeEvent([]byte(`{"userId":"42","status":"online","frame":{"event":"presence_update","data":{}}}`))
	if err != nil || e.UserID != 42 || e.Status != "online" {
		t.Fatalf("%+v %v", e, err)
	}
	for _, s := range []string{`{}`, `{"userId":"42"}`, `{"userId":"x","frame":{}}`, `nope`} {
		if _, err := presence.DecodeEvent([]byte(s)); err == nil {
			t.Errorf("%s: accepted", s)
		}
	}
}

func TestEntryTime(t *testing.T) {
	t.Parallel()
	if ms, err := presence.EntryTime("1700000000123-4"); err != nil || ms != 1700000000123 {
		t.Fatalf("%d %v", ms, err)
	}
	if _, err := presence.EntryTime("x-1"); err == nil {
		t.Fatal("bad id accepted")
	}
}

func readCommands(t *testing.T, rdb *goredis.Client, keys presence.Keys) []*presence.Command {
	t.Helper()
	msgs, err := rdb.XRange(context.Background(), keys.Commands(), "-", "+").Result()
	if err != nil {
		t.Fatal(err)
	}
	out := make([]*presence.Command, 0, len(msgs))
	for _, m := range msgs {
		s, _ := m.Values["c"].(string)
		c, err := presence.DecodeCommand([]byte(s))
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, c)
	}
	return out
}

func TestPublisherSendsInOrder(t *testing.T) {
	if testenv.Short() {
		t.Skip("integration test (needs Redis)")
	}
	t.Parallel()
	rdb, prefix := testenv.Redis(t)
	keys := presence.NewKeys(prefix)
	p, err := presence.NewPublisher(rdb, keys, "gw-1", presence.PublisherOptions{})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	conns := make([]presence.Conn, 3000)
	for i := range conns {
		conns[i] = presence.Conn{UserID: int64(i + 1), ConnID: "c"}
	}
	steps := []func() error{
		func() error { return p.Connect(ctx, 1, "ada", "c1") },
		func() error { return p.Heartbeat(ctx, conns) },
		func() error { return p.Heartbeat(ctx, nil) }, // nothing to renew: no command
		func() error { return p.TypingStart(ctx, 7, 1, "ada") },
		func() error { return p.TypingStop(ctx, 7, 1, "ada") },
		func() error { return p.Disconnect(ctx, 1, "c1") },
	}
	for _, s := range steps {
		if err := s(); err != nil {
			t.Fatal(err)
		}
	}
	if err := p.Connect(ctx, 0, "x", "c"); err == nil {
		t.Fatal("user id 0 accepted")
	}
	cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if err := p.Close(cctx); err != nil {
		t.Fatal(err)
	}
	if err := p.Close(cctx); err != nil {
		t.Fatal("second Close:", err)
	}
	if err := p.Connect(ctx, 1, "ada", "c2"); !errors.Is(err, presence.ErrClosed) {
		t.Fatalf("after Close: %v", err)
	}
	cmds := readCommands(t, rdb, keys)
	want := []presence.Op{presence.OpConnect, presence.OpHeartbeat, presence.OpTypingStart, presence.OpTypingStop, presence.OpDisconnect}
	if len(cmds) != len(want) {
		t.Fatalf("%d commands, want %d", len(cmds), len(want))
	}
	for i, c := range cmds {
		if c.Op != want[i] || c.Gateway != "gw-1" {
			t.Fatalf("command %d: %+v", i, c)
		}
	}
	if len(cmds[1].Conns) != len(conns) || cmds[1].Conns[2999].UserID != 3000 {
		t.Fatalf("heartbeat carries %d conns", len(cmds[1].Conns))
	}
	if c := cmds[0]; c.UserID != 1 || c.Username != "ada" || c.ConnID != "c1" {
		t.Fatalf("connect %+v", c)
	}
	if c := cmds[2]; c.RoomID != 7 || c.UserID != 1 {
		t.Fatalf("typing %+v", c)
	}
	sent, dropped, _ := p.Stats()
	if sent != 5 || dropped != 0 {
		t.Fatalf("sent %d dropped %d", sent, dropped)
	}
}

// With Redis unreachable the caller never waits: heartbeats and typing
// beyond the queue size are dropped and counted, connects and disconnects
// are kept.
func TestPublisherNeverBlocksAndKeepsConnects(t *testing.T) {
	t.Parallel()
	rdb := goredis.NewClient(&goredis.Options{Addr: "127.0.0.1:1", MaxRetries: -1, DialTimeout: 100 * time.Millisecond})
	defer rdb.Close()
	p, err := presence.NewPublisher(rdb, presence.NewKeys("x:"), "gw-1", presence.PublisherOptions{QueueSize: 10})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	hb := []presence.Conn{{UserID: 1, ConnID: "c"}}
	dropped := 0
	for i := range 1000 {
		if err := p.Heartbeat(ctx, hb); errors.Is(err, presence.ErrDropped) {
			dropped++
		} else if err != nil {
			t.Fatal(err)
		}
		if err := p.Connect(ctx, int64(i+1), "u", "c"); err != nil {
			t.Fatalf("connect %d: %v", i, err)
		}
	}
	// The drain goroutine holds at most one batch; the rest waits in the
	// queue, where at most QueueSize are heartbeats.
	if dropped < 1000-10-20 {
		t.Fatalf("only %d of 1000 heartbeats dropped with a queue of 10", dropped)
	}
	if _, d, _ := p.Stats(); int(d) != dropped {
		t.Fatalf("stats dropped %d, counted %d", d, dropped)
	}
	cctx, cancel := context.WithTimeout(ctx, 200*time.Millisecond)
	defer cancel()
	if err := p.Close(cctx); err == nil {
		t.Fatal("Close with Redis down reported everything sent")
	}
}

func TestReader(t *testing.T) {
	if testenv.Short() {
		t.Skip("integration test (needs Redis)")
	}
	t.Parallel()
	rdb, prefix := testenv.Redis(t)
	keys := presence.NewKeys(prefix)
	ctx := context.Background()
	seen := time.Date(2026, 1, 2, 3, 4, 5, 6e6, time.UTC)
	pipe := rdb.Pipeline()
	pipe.ZAdd(ctx, keys.Online(), goredis.Z{Member: "1", Score: float64(seen.UnixMilli() + 30000)})
	pipe.HSet(ctx, keys.LastSeen(), "1", seen.UnixMilli(), "2", seen.UnixMilli()-1000)
	pipe.ZAdd(ctx, keys.Typing(7), goredis.Z{Member: "9", Score: 1}, goredis.Z{Member: "3", Score: 2})
	pipe.HSet(ctx, keys.TypingNames(7), "9", "nine", "3", "three")
	if _, err := pipe.Exec(ctx); err != nil {
		t.Fatal(err)
	}
	r := presence.NewReader(rdb, keys)
	sts, err := r.Users(ctx, []int64{2, 1, 3})
	if err != nil {
		t.Fatal(err)
	}
	if sts[0].UserID != 2 || sts[0].Online() || sts[0].LastSeen == nil || !sts[0].LastSeen.Equal(seen.Add(-time.Second)) {
		t.Fatalf("user 2: %+v", sts[0])
	}
	if sts[1].UserID != 1 || !sts[1].Online() || !sts[1].LastSeen.Equal(seen) {
		t.Fatalf("user 1: %+v", sts[1])
	}
	if sts[2].UserID != 3 || sts[2].Online() || sts[2].LastSeen != nil {
		t.Fatalf("user 3: %+v", sts[2])
	}
	one, err := r.User(ctx, 1)
	if err != nil || !one.Online() {
		t.Fatalf("User(1): %+v %v", one, err)
	}
	ty, err := r.Typing(ctx, 7)
	if err != nil {
		t.Fatal(err)
	}
	if len(ty) != 2 || ty[0] != (presence.Typist{UserID: 3, Username: "three"}) || ty[1] != (presence.Typist{UserID: 9, Username: "nine"}) {
		t.Fatalf("typists %+v", ty)
	}
	if ty, err := r.Typing(ctx, 8); err != nil || len(ty) != 0 {
		t.Fatalf("empty room: %+v %v", ty, err)
	}
}
