package presence_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"relay/pkg/presence"
	"relay/pkg/testenv"
)

// A follower cut off from Redis gets, once back, every event added
// meanwhile, in order, after the ones it had; events from before its tail
// are not replayed.
func TestFollowEventsCatchesUpAfterAnOutage(t *testing.T) {
	if testenv.Short() {
		t.Skip("integration test (needs Redis)")
	}
	t.Parallel()
	rdb, prefix := testenv.Redis(t)
	keys := presence.NewKeys(prefix)
	ctx := context.Background()
	add := func(from, to int) {
		t.Helper()
		for i := from; i < to; i++ {
			if err := presence.AddEvent(ctx, rdb, keys, fmt.Appendf(nil, "%d", i)).Err(); err != nil {
				t.Fatal(err)
			}
		}
	}
	add(0, 3) // before the tail: not for the follower

	// The follower reads through a proxy the test can take down.
	proxy, url := testenv.NewProxy(t, "redis://127.0.0.1:6379/0")
	opt, err := goredis.ParseURL(url)
	if err != nil {
		t.Fatal(err)
	}
	opt.MaxRetries = -1
	follower := goredis.NewClient(opt)
	defer follower.Close()
	tail, err := presence.EventsTail(ctx, follower, keys)
	if err != nil {
		t.Fatal(err)
	}
	var (
		mu     sync.Mutex
		got    []string
		errors int
	)
	fctx, stop := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		presence.FollowEvents(fctx, follower, keys, tail, func(p []byte) {
			mu.Lock()
			got = append(got, string(p))
			mu.Unlock()
		}, presence.FollowOptions{Block: 100 * time.Millisecond, OnError: func(error) {
			mu.Lock()
			errors++
			mu.Unlock()
		}})
	}()
	defer func() { stop(); <-done }()
	waitFor := func(n int) []string {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for {
			mu.Lock()
			g := append([]string(nil), got...)
			mu.Unlock()
			if len(g) >= n || time.Now().After(deadline) {
				return g
			}
			time.Sleep(20 * time.Millisecond)
		}
	}

	add(3, 5)
	waitFor(2)
	proxy.SetDown(true)
	add(5, 10) // while the follower cannot read
	for deadline := time.Now().Add(10 * time.Second); ; {
		mu.Lock()
		e := errors
		mu.Unlock()
		if e > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the follower never noticed the outage")
		}
		time.Sleep(20 * time.Millisecond)
	}
	proxy.SetDown(false)
	add(10, 12)
	g := waitFor(9)
	want := []string{"3", "4", "5", "6", "7", "8", "9", "10", "11"}
	if fmt.Sprint(g) != fmt.Sprint(want) {
		t.Fatalf("followed %v, want %v", g, want)
	}
}
