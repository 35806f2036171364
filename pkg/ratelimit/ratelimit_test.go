package ratelimit_test

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"relay/pkg/chat"
	"relay/pkg/ratelimit"
	"relay/pkg/testenv"
)

// Two limiters over the same Redis (two instances of a service) share one
// budget per user: together they allow exactly the limit.
func TestLimitIsSharedAcrossInstances(t *testing.T) {
	if testenv.Short() {
		t.Skip("integration test")
	}
	rdb, prefix := testenv.Redis(t)
	var redisErrs []error
	a := ratelimit.New(rdb, ratelimit.Options{Prefix: prefix, OnError: func(err error) { redisErrs = append(redisErrs, err) }})
	b := ratelimit.New(rdb, ratelimit.Options{Prefix: prefix})
	ctx := context.Background()
	limit := ratelimit.PerMinute(10)
	allowed := 0
	var limited error
	for i := range 30 {
		l := a
		if i%2 == 1 {
			l = b
		}
		err := l.AllowUser(ctx, "send", 42, limit)
		if err == nil {
			allowed++
			continue
		}
		limited = err
	}
	if allowed != 10 {
		t.Fatalf("allowed %d of 30 across two instances, want 10", allowed)
	}
	if chat.ErrorCode(limited) != chat.CodeRateLimited || chat.RetryAfter(limited) <= 0 || chat.RetryAfter(limited) > 6*time.Second+time.Millisecond {
		t.Fatalf("refusal %v retry %v", limited, chat.RetryAfter(limited))
	}
	// Another user and another kind have budgets of their own.
	if err := a.AllowUser(ctx, "send", 43, limit); err != nil {
		t.Fatal(err)
	}
	if err := a.AllowUser(ctx, "join", 42, limit); err != nil {
		t.Fatal(err)
	}
	if err := a.AllowUser(ctx, "send", 42, ratelimit.Limit{}); err != nil {
		t.Fatalf("a disabled limit refused: %v", err)
	}
	if err := a.Reset(ctx, "send", "u42"); err != nil {
		t.Fatal(err)
	}
	if err := a.AllowUser(ctx, "send", 42, limit); err != nil {
		t.Fatalf("after reset: %v", err)
	}
	if len(redisErrs) != 0 {
		t.Fatal(redisErrs)
	}
}

// Redis down: the limiter fails open and reports the error.
func TestLimiterFailsOpen(t *testing.T) {
	if testenv.Short() {
		t.Skip("integration test")
	}
	rdb, prefix := testenv.Redis(t)
	_ = prefix
	var got []error
	l := ratelimit.New(rdb, ratelimit.Options{OnError: func(err error) { got = append(got, err) }})
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := l.AllowUser(ctx, "send", 1, ratelimit.PerSecond(1)); err != nil {
		t.Fatalf("failed closed: %v", err)
	}
	if len(got) != 1 || !errors.Is(got[0], context.Canceled) {
		t.Fatalf("errors reported: %v", got)
	}
}

func TestConnCaps(t *testing.T) {
	c := &ratelimit.ConnCaps{PerUser: 2, PerAddr: 3}
	var releases []func()
	for range 2 {
		r, err := c.Acquire(7, "1.2.3.4")
		if err != nil {
			t.Fatal(err)
		}
		releases = append(releases, r)
	}
	if _, err := c.Acquire(7, "5.6.7.8"); chat.ErrorCode(err) != chat.CodeRateLimited {
		t.Fatalf("third connection of a user: %v", err)
	}
	r, err := c.Acquire(0, "1.2.3.4") // unauthenticated, same address
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Acquire(8, "1.2.3.4"); chat.ErrorCode(err) != chat.CodeRateLimited {
		t.Fatalf("fourth connection of an address: %v", err)
	}
	r()
	r() // idempotent
	releases[0]()
	if u, a := c.Counts(7, "1.2.3.4"); u != 1 || a != 1 {
		t.Fatalf("counts after release: user %d addr %d", u, a)
	}
	var wg sync.WaitGroup
	for range 50 {
		wg.Go(func() {
			if rel, err := c.Acquire(9, "9.9.9.9"); err == nil {
				rel()
			}
		})
	}
	wg.Wait()
	if u, a := c.Counts(9, "9.9.9.9"); u != 0 || a != 0 {
		t.Fatalf("counts leaked: %d %d", u, a)
	}
}

// A Socket.IO session counts its address when it opens and its user when
// it connects: each is capped, and each release gives back only its own.
func TestConnCapsInTwoSteps(t *testing.T) {
	c := &ratelimit.ConnCaps{PerUser: 1, PerAddr: 2}
	relAddr, err := c.AcquireAddr("1.2.3.4")
	if err != nil {
		t.Fatal(err)
	}
	relUser, err := c.AcquireUser(7)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.AcquireUser(7); chat.ErrorCode(err) != chat.CodeRateLimited {
		t.Fatalf("second connection of a user capped at 1: %v", err)
	}
	if _, err := c.Acquire(7, "5.6.7.8"); chat.ErrorCode(err) != chat.CodeRateLimited {
		t.Fatalf("native connection of the same user: %v", err)
	}
	if u, a := c.Counts(7, "1.2.3.4"); u != 1 || a != 1 {
		t.Fatalf("counts %d %d", u, a)
	}
	relUser()
	if u, a := c.Counts(7, "1.2.3.4"); u != 0 || a != 1 {
		t.Fatalf("after the user's release: %d %d", u, a)
	}
	relAddr()
	if u, a := c.Counts(7, "1.2.3.4"); u != 0 || a != 0 {
		t.Fatalf("after both releases: %d %d", u, a)
	}
}
