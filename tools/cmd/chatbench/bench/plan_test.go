package bench

import (
	"errors"
	"testing"
	"time"
)

func testParams(users, rooms int, size SizeDist, senders int) Params {
	p, _ := Scenario(ScenarioChat)
	p.Users, p.Conns, p.Rooms, p.RoomSize, p.Senders = users, users, rooms, size, senders
	return p
}

func TestPlanRoomsAreDistinctAndEven(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		users, rooms int
		size         SizeDist
		senders      int
	}{
		{1000, 100, SizeDist{10, 10}, 1000}, // chat: a partition
		{1000, 1, SizeDist{1000, 1000}, 50}, // fanout
		{10, 7, SizeDist{4, 4}, 10},         // overlapping, wraps around
		{100, 30, SizeDist{2, 20}, 60},      // drawn sizes
	} {
		p := testParams(c.users, c.rooms, c.size, c.senders)
		pl, err := NewPlan(p)
		if err != nil {
			t.Fatalf("%+v: %v", c, err)
		}
		total := 0
		for r, members := range pl.RoomMembers {
			if len(members) < c.size.Min || len(members) > c.size.Max {
				t.Errorf("room %d has %d members, want %v", r, len(members), c.size)
			}
			seen := map[int]bool{}
			for _, u := range members {
				if seen[u] {
					t.Errorf("room %d repeats user %d", r, u)
				}
				seen[u] = true
			}
			total += len(members)
		}
		// Every user is in floor or ceil of total/users rooms.
		lo, hi := total/c.users, (total+c.users-1)/c.users
		for u, rooms := range pl.UserRooms {
			if len(rooms) < lo || len(rooms) > hi {
				t.Errorf("%+v: user %d in %d rooms, want %d..%d", c, u, len(rooms), lo, hi)
			}
		}
		if len(pl.Senders) != c.senders {
			t.Fatalf("%d senders, want %d", len(pl.Senders), c.senders)
		}
		seen := map[int]bool{}
		for _, u := range pl.Senders {
			if seen[u] || len(pl.UserRooms[u]) == 0 {
				t.Errorf("sender user %d repeated or without a room", u)
			}
			seen[u] = true
		}
	}
}

func TestPlanIsReproducible(t *testing.T) {
	t.Parallel()
	p := testParams(100, 30, SizeDist{2, 20}, 10)
	a, _ := NewPlan(p)
	b, _ := NewPlan(p)
	for r := range a.RoomMembers {
		if len(a.RoomMembers[r]) != len(b.RoomMembers[r]) {
			t.Fatalf("room %d differs between two plans of one seed", r)
		}
	}
}

func TestPlanRefusesSendersWithoutRooms(t *testing.T) {
	t.Parallel()
	p := testParams(100, 2, SizeDist{10, 10}, 50) // only 20 users are in a room
	_, err := NewPlan(p)
	var ue *UsageError
	if !errors.As(err, &ue) {
		t.Fatalf("got %v, want a UsageError", err)
	}
}

func TestSenderSchedule(t *testing.T) {
	t.Parallel()
	iv := SenderInterval(1000, 1000)
	if iv != time.Second {
		t.Fatalf("interval %s, want 1s", iv)
	}
	// 1000 senders at 1/s for 60 s with offsets spread over the first
	// second send 60 each: 60,000 in all, 1000/s.
	total := 0
	for k := range 1000 {
		total += SendsPerSender(60*time.Second, iv, iv*time.Duration(k)/1000)
	}
	if total != 60000 {
		t.Errorf("total %d, want 60000", total)
	}
	if n := SendsPerSender(time.Second, 300*time.Millisecond, 0); n != 4 { // 0, .3, .6, .9
		t.Errorf("got %d, want 4", n)
	}
	if n := SendsPerSender(time.Second, 300*time.Millisecond, time.Second); n != 0 {
		t.Errorf("offset at the end: got %d, want 0", n)
	}
	if SenderInterval(0, 5) != 0 || SenderInterval(5, 0) != 0 {
		t.Error("no rate or no senders must give no interval")
	}
}
