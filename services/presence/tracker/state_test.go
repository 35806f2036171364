package tracker_test

import (
	"context"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"relay/pkg/presence"
	"relay/pkg/testenv"
	svc "relay/services/presence/tracker"
)

// The scripts on their own, with explicit times: no service, no sleeps.
func newState(t *testing.T) (*svc.State, *presence.Reader, presence.Keys, *goredis.Client) {
	t.Helper()
	if testenv.Short() {
		t.Skip("integration test (needs Redis)")
	}
	t.Parallel()
	rdb, prefix := testenv.Redis(t)
	keys := presence.NewKeys(prefix)
	return svc.NewState(rdb, keys, 30*time.Second, 5*time.Second), presence.NewReader(rdb, keys), keys, rdb
}

const t0 = int64(1_800_000_000_000)

func TestStateCommandsAppliedOutOfOrder(t *testing.T) {
	st, rd, _, _ := newState(t)
	ctx := context.Background()
	// Two instances applied a connection's disconnect before its connect
	// and before an older heartbeat: the connection stays closed.
	tr, err := st.Disconnect(ctx, "gw", 1, "c", t0+10)
	must(t, err)
	if tr != nil {
		t.Fatalf("disconnect of an unknown connection: %+v", tr)
	}
	tr, err = st.Connect(ctx, "gw", 1, "c", t0)
	must(t, err)
	if tr != nil {
		t.Fatalf("connect after its disconnect: %+v", tr)
	}
	ts, err := st.Heartbeat(ctx, "gw", []presence.Conn{{UserID: 1, ConnID: "c"}}, t0+5)
	must(t, err)
	if len(ts) != 0 {
		t.Fatalf("heartbeat after disconnect: %+v", ts)
	}
	s, err := rd.User(ctx, 1)
	must(t, err)
	if s.Online() {
		t.Fatalf("closed connection counted: %+v", s)
	}
	// Once the tomb is gone (by the horizon), the same member may connect again.
	must(t, st.TrimTombs(ctx, t0+10+30_000))
	tr, err = st.Connect(ctx, "gw", 1, "c", t0+40_000)
	must(t, err)
	if tr == nil || !tr.Online {
		t.Fatalf("connect after the tomb expired: %+v", tr)
	}
}

func TestStateExpiryAtHorizon(t *testing.T) {
	st, rd, _, _ := newState(t)
	ctx := context.Background()
	tr, err := st.Connect(ctx, "gw", 2, "a", t0)
	must(t, err)
	if tr == nil || !tr.Online || tr.LastSeen != t0 {
		t.Fatalf("connect: %+v", tr)
	}
	ts, err := st.Heartbeat(ctx, "gw", []presence.Conn{{UserID: 2, ConnID: "a"}}, t0+15_000)
	must(t, err)
	if len(ts) != 0 {
		t.Fatalf("heartbeat of an online user: %+v", ts)
	}
	// Alive until its expiry (last heartbeat + 30 s); then offline, last
	// seen at the last heartbeat, exactly once.
	ts, err = st.SweepUsers(ctx, t0+15_000+29_999)
	must(t, err)
	if len(ts) != 0 {
		t.Fatalf("swept before expiry: %+v", ts)
	}
	ts, err = st.SweepUsers(ctx, t0+45_000)
	must(t, err)
	if len(ts) != 1 || ts[0].UserID != 2 || ts[0].Online || ts[0].LastSeen != t0+15_000 {
		t.Fatalf("sweep at expiry: %+v", ts)
	}
	ts, err = st.SweepUsers(ctx, t0+46_000)
	must(t, err)
	if len(ts) != 0 {
		t.Fatalf("second sweep: %+v", ts)
	}
	s, err := rd.User(ctx, 2)
	must(t, err)
	if s.Online() || s.LastSeen.UnixMilli() != t0+15_000 {
		t.Fatalf("after sweep: %+v", s)
	}
	// A stalled gateway's heartbeat brings the connection back.
	ts, err = st.Heartbeat(ctx, "gw", []presence.Conn{{UserID: 2, ConnID: "a"}}, t0+50_000)
	must(t, err)
	if len(ts) != 1 || !ts[0].Online || ts[0].LastSeen != t0+50_000 {
		t.Fatalf("heartbeat after expiry: %+v", ts)
	}
}

func TestStateDisconnectDropsExpiredSiblings(t *testing.T) {
	st, _, _, _ := newState(t)
	ctx := context.Background()
	_, err := st.Connect(ctx, "dead", 3, "a", t0)
	must(t, err)
	_, err = st.Connect(ctx, "live", 3, "b", t0+20_000)
	must(t, err)
	// At t0+40 s the dead gateway's connection has expired (unswept); the
	// last live one closing takes the user offline.
	tr, err := st.Disconnect(ctx, "live", 3, "b", t0+40_000)
	must(t, err)
	if tr == nil || tr.Online || tr.LastSeen != t0+40_000 {
		t.Fatalf("disconnect: %+v", tr)
	}
}

func TestStateTyping(t *testing.T) {
	st, rd, keys, rdb := newState(t)
	ctx := context.Background()
	c, err := st.TypingStart(ctx, 7, 1, "ada", t0)
	must(t, err)
	if c == nil || !c.Typing || c.Username != "ada" {
		t.Fatalf("start: %+v", c)
	}
	c, err = st.TypingStart(ctx, 7, 1, "ada", t0+3_000) // renewal
	must(t, err)
	if c != nil {
		t.Fatalf("renewal: %+v", c)
	}
	_, err = st.TypingStart(ctx, 8, 2, "bob", t0+1_000)
	must(t, err)
	cs, err := st.SweepTyping(ctx, t0+5_000) // 7 renewed to t0+8 s
	must(t, err)
	if len(cs) != 0 {
		t.Fatalf("swept a renewed typist: %+v", cs)
	}
	cs, err = st.SweepTyping(ctx, t0+8_000)
	must(t, err)
	if len(cs) != 2 {
		t.Fatalf("sweep: %+v", cs)
	}
	for _, c := range cs {
		if c.Typing || !(c.RoomID == 7 && c.UserID == 1 && c.Username == "ada" || c.RoomID == 8 && c.UserID == 2 && c.Username == "bob") {
			t.Fatalf("sweep change %+v", c)
		}
	}
	ty, err := rd.Typing(ctx, 7)
	must(t, err)
	if len(ty) != 0 {
		t.Fatalf("typists left %+v", ty)
	}
	c, err = st.TypingStop(ctx, 7, 1, "ada")
	must(t, err)
	if c != nil {
		t.Fatalf("stop of a non-typist: %+v", c)
	}
	n, err := rdb.ZCard(ctx, keys.TypingRooms()).Result()
	must(t, err)
	if n != 0 {
		t.Fatalf("%d rooms left in %s", n, keys.TypingRooms())
	}
}
