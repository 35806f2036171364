package bench

import (
	"context"
	"io"
	"os"
	"sync/atomic"
	"testing"
	"time"
)

// TestRunAgainstStack runs a short chat and a short artillery scenario
// against a stack started with `scripts/run.sh --detach` (AUTH_RATE_LIMIT
// raised, as `make bench` does). It runs only with RELAY_BENCH_IT=1, so
// `make test` never depends on a running stack:
//
//	RELAY_BENCH_IT=1 go test ./tools/cmd/chatbench/bench -run TestRunAgainstStack -v
func TestRunAgainstStack(t *testing.T) {
	if os.Getenv("RELAY_BENCH_IT") != "1" {
		t.Skip("set RELAY_BENCH_IT=1 with a running stack (scripts/run.sh --detach) to run")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()

	t.Run("chat", func(t *testing.T) {
		p, err := ParseArgs([]string{
			"--users", "40", "--rooms", "8", "--room-size", "5", "--senders", "20", "--rate", "40",
			"--duration", "3s", "--drain", "10s", "--heartbeat", "1s", "--user-prefix", "bench_it",
			"--json", t.TempDir() + "/r.json",
		}, io.Discard)
		if err != nil {
			t.Fatal(err)
		}
		res, err := Run(ctx, p, io.Discard)
		if err != nil {
			t.Fatalf("run: %v", err)
		}
		if err := WriteJSON(p.JSON, res); err != nil {
			t.Fatal(err)
		}
		if res.Connect.OK != 40 || res.Join.OK != 40 || len(res.Steps) != 1 {
			t.Fatalf("connect %+v join %+v steps %d", res.Connect, res.Join, len(res.Steps))
		}
		s := res.Steps[0]
		// 40 msgs/s for 3 s, each owed to the 5 connections of its room.
		if s.Sent != 120 || s.Acked != s.Sent || s.Expected != 5*s.Acked {
			t.Errorf("sent %d acked %d expected %d", s.Sent, s.Acked, s.Expected)
		}
		if s.Lost != 0 || s.Delivered != s.Expected || s.Duplicates != 0 || s.OutOfOrder != 0 || s.Failed != 0 {
			t.Errorf("accounting %+v errors %v", s.Accounting, s.Errors)
		}
		if s.Deliver.Count != s.Expected || s.Ack.Count != s.Acked || s.Ping.Count == 0 {
			t.Errorf("latency counts: deliver %d ack %d ping %d", s.Deliver.Count, s.Ack.Count, s.Ping.Count)
		}
		if s.Deliver.P50 <= 0 || s.Deliver.P50 > s.Deliver.Max {
			t.Errorf("delivery latency %+v", s.Deliver)
		}
		if res.PG != nil && s.NotPersisted == 0 && s.Persist.Count != s.Acked {
			t.Errorf("persisted %d of %d acked", s.Persist.Count, s.Acked)
		}
		var gw, self bool
		for _, ps := range res.Procs {
			gw = gw || (ps.Label == "gateway" && ps.Conns == 20 && ps.RSSMax > 0)
			self = self || (ps.Label == "chatbench" && ps.Conns == 40)
		}
		if !gw || !self {
			t.Errorf("process table misses the gateway's or chatbench's connections: %+v", res.Procs)
		}

		if res.Rooms.Reused+res.Rooms.Created != 8 {
			t.Errorf("rooms: %+v", res.Rooms)
		}
		// An old bench room of two of the users, as an earlier run with
		// another shape would have left.
		a := newAPIClient(p.API)
		var n atomic.Int64
		accs, _, err := ensureUsers(ctx, a, loadTokenCache(p.DataDir), p.UserPrefix, 2, &n)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := createRoom(ctx, a, accs, benchRoomPrefix+"stray", []int{0, 1}); err != nil {
			t.Fatal(err)
		}

		// A second run reuses the cached accounts and rooms, and its users
		// leave the stray room.
		res2, err := Run(ctx, p, io.Discard)
		if err != nil {
			t.Fatalf("second run: %v", err)
		}
		if res2.Users.Cached != 40 {
			t.Errorf("second run: %d of 40 accounts from the cache", res2.Users.Cached)
		}
		if res2.Rooms.Reused != 8 || res2.Rooms.Created != 0 || res2.Rooms.Left != 2 {
			t.Errorf("second run rooms: %+v, want 8 reused, 0 made, 2 memberships left", res2.Rooms)
		}
	})

	t.Run("artillery", func(t *testing.T) {
		p, err := ParseArgs([]string{
			"--scenario", "artillery", "--users", "20", "--rooms", "2", "--room-size", "10",
			"--arrivals", "5,10", "--duration", "1s", "--think-before", "200ms", "--think-after", "500ms",
			"--user-prefix", "bench_it",
		}, io.Discard)
		if err != nil {
			t.Fatal(err)
		}
		res, err := Run(ctx, p, io.Discard)
		if err != nil {
			t.Fatalf("run: %v", err)
		}
		s := res.Steps[0]
		if res.Connect.OK != 15 || s.Sent != 15 || s.Acked != 15 || s.Failed != 0 {
			t.Errorf("connect %d sent %d acked %d failed %d (%v)", res.Connect.OK, s.Sent, s.Acked, s.Failed, s.Errors)
		}
		// Each message reaches at least its sender.
		if s.Delivered < s.Acked || s.Duplicates != 0 || s.OutOfOrder != 0 {
			t.Errorf("accounting %+v", s.Accounting)
		}
	})
}
