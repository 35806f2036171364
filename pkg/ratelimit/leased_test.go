package ratelimit_test

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"relay/pkg/chat"
	"relay/pkg/ratelimit"
	"relay/pkg/testenv"
)

// countScripts counts the scripts rdb runs (each limiter ask is one).
type countScripts struct{ n atomic.Int64 }

func (h *countScripts) DialHook(next goredis.DialHook) goredis.DialHook { return next }
func (h *countScripts) ProcessHook(next goredis.ProcessHook) goredis.ProcessHook {
	return func(ctx context.Context, cmd goredis.Cmder) error {
		switch cmd.Name() {
		case "evalsha", "eval":
			h.n.Add(1)
		}
		return next(ctx, cmd)
	}
}
func (h *countScripts) ProcessPipelineHook(next goredis.ProcessPipelineHook) goredis.ProcessPipelineHook {
	return next
}

// Two instances with leases still share one budget per user: together
// they allow exactly the limit, and a refusal says when to retry.
func TestLeasedIsSharedAcrossInstances(t *testing.T) {
	if testenv.Short() {
		t.Skip("integration test")
	}
	rdb, prefix := testenv.Redis(t)
	var redisErrs []error
	l := ratelimit.New(rdb, ratelimit.Options{Prefix: prefix, OnError: func(err error) { redisErrs = append(redisErrs, err) }})
	limit := ratelimit.Limit{Rate: 10, Period: time.Minute}
	a := ratelimit.NewLeased(l, "send", limit, ratelimit.LeaseOptions{})
	b := ratelimit.NewLeased(l, "send", limit, ratelimit.LeaseOptions{})
	ctx := context.Background()
	allowed := 0
	var limited error
	for i := range 40 {
		x := a
		if i%2 == 1 {
			x = b
		}
		if err := x.Allow(ctx, 42); err != nil {
			limited = err
			continue
		}
		allowed++
	}
	if allowed != 10 {
		t.Fatalf("allowed %d of 40 across two leasing instances, want 10", allowed)
	}
	if chat.ErrorCode(limited) != chat.CodeRateLimited || chat.RetryAfter(limited) <= 0 || chat.RetryAfter(limited) > 6*time.Second+time.Millisecond {
		t.Fatalf("refusal %v retry %v", limited, chat.RetryAfter(limited))
	}
	if err := a.Allow(ctx, 43); err != nil {
		t.Fatalf("another user: %v", err)
	}
	if len(redisErrs) != 0 {
		t.Fatal(redisErrs)
	}
}

// A busy user costs one Redis ask per lease, an occasional one one ask per
// event; leases unspent past their TTL are dropped, not handed out later.
func TestLeasedAsksRedisOncePerLease(t *testing.T) {
	if testenv.Short() {
		t.Skip("integration test")
	}
	rdb, prefix := testenv.Redis(t)
	var hook countScripts
	rdb.AddHook(&hook)
	l := ratelimit.New(rdb, ratelimit.Options{Prefix: prefix})
	x := ratelimit.NewLeased(l, "send", ratelimit.Limit{Rate: 1000, Period: time.Second}, ratelimit.LeaseOptions{Lease: 5, LeaseTTL: 200 * time.Millisecond, Busy: 100 * time.Millisecond})
	ctx := context.Background()
	for range 101 {
		if err := x.Allow(ctx, 7); err != nil {
			t.Fatal(err)
		}
	}
	// The first ask takes one event, each later one a lease of five.
	if n := hook.n.Load(); n != 21 {
		t.Fatalf("101 events cost %d Redis asks, want 21", n)
	}
	// Occasional events: one ask each (nothing leased to waste).
	hook.n.Store(0)
	for range 3 {
		time.Sleep(250 * time.Millisecond)
		if err := x.Allow(ctx, 8); err != nil {
			t.Fatal(err)
		}
	}
	if n := hook.n.Load(); n != 3 {
		t.Fatalf("3 occasional events cost %d asks, want 3", n)
	}
	// Expired leases are dropped and their users forgotten.
	time.Sleep(300 * time.Millisecond)
	if err := x.Allow(ctx, 9); err != nil {
		t.Fatal(err)
	}
	if u := x.Users(); u != 1 {
		t.Fatalf("%d users kept, want 1 (the others' leases expired)", u)
	}
}

// The cost a per-user limit adds to a send, against the real Redis:
//
//	cd pkg && go test ./ratelimit -run '^$' -bench . -benchtime 5000x
//
// BenchmarkAskPerEvent is one Redis script per event (an occasional sender,
// or Limiter.Allow); BenchmarkLeasedBusyUser a user sending back to back
// (one ask per lease of 5).
func BenchmarkAskPerEvent(b *testing.B) {
	rdb, prefix := testenv.Redis(b)
	l := ratelimit.New(rdb, ratelimit.Options{Prefix: prefix})
	limit := ratelimit.Limit{Rate: 1 << 30, Period: time.Second}
	ctx := context.Background()
	for b.Loop() {
		if err := l.AllowUser(ctx, "send", 1, limit); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkLeasedBusyUser(b *testing.B) {
	rdb, prefix := testenv.Redis(b)
	l := ratelimit.New(rdb, ratelimit.Options{Prefix: prefix})
	x := ratelimit.NewLeased(l, "send", ratelimit.Limit{Rate: 1 << 30, Period: time.Second, Burst: 50}, ratelimit.LeaseOptions{})
	ctx := context.Background()
	for b.Loop() {
		if err := x.Allow(ctx, 1); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkRedisPing is the bare round trip, for scale.
func BenchmarkRedisPing(b *testing.B) {
	rdb, _ := testenv.Redis(b)
	ctx := context.Background()
	for b.Loop() {
		if err := rdb.Ping(ctx).Err(); err != nil {
			b.Fatal(err)
		}
	}
}
