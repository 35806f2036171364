package ratelimit

import (
	"context"
	"fmt"
	"strconv"
	"sync"
	"time"

	"relay/pkg/chat"
)

// Leased is one kind of per-user limit (sends, joins) fronted by a local
// lease, for hot paths: a user who is busy on this instance takes up to
// Lease events at once from Redis and spends them here, so a chatty user
// costs one Redis round trip per Lease events instead of one per event,
// and a user sending now and then one round trip per event as before.
//
// The shared budget still holds across instances: every event spent here
// was counted in Redis first. Events leased but not spent within LeaseTTL
// are dropped, never handed out later. So a lease can make the limit
// stricter (by at most Lease-1 events per instance, once, when a busy user
// stops) and let a burst exceed Burst by at most Lease-1 events per
// instance (events leased a moment before the burst).
type Leased struct {
	l     *Limiter
	kind  string
	limit Limit
	o     LeaseOptions

	mu    sync.Mutex
	users map[int64]*lease
	// sweepAt is when leases that expired are next dropped from users.
	sweepAt time.Time
}

// LeaseOptions configure NewLeased.
type LeaseOptions struct {
	// Lease is the most events taken from Redis at once; zero means 5.
	Lease int
	// LeaseTTL is how long leased events stay spendable; zero means 2 s.
	LeaseTTL time.Duration
	// Busy: a user who asked Redis within Busy of its last ask gets a
	// lease of several events; others get one event per ask. Zero means
	// 1 s.
	Busy time.Duration
}

type lease struct {
	left    int
	expires time.Time
	lastAsk time.Time
}

// NewLeased returns the kind limit of l (e.g. "send"), with leases.
func NewLeased(l *Limiter, kind string, limit Limit, o LeaseOptions) *Leased {
	if o.Lease <= 0 {
		o.Lease = 5
	}
	if o.LeaseTTL <= 0 {
		o.LeaseTTL = 2 * time.Second
	}
	if o.Busy <= 0 {
		o.Busy = time.Second
	}
	// A lease larger than the burst could never be granted whole.
	o.Lease = max(1, min(o.Lease, limit.lib().Burst))
	return &Leased{l: l, kind: kind, limit: limit, o: o, users: map[int64]*lease{}}
}

// Allow counts one event of user: nil when allowed, a RATE_LIMITED
// *chat.Error with RetryAfter when not. Like Limiter, it fails open when
// Redis cannot be asked.
func (x *Leased) Allow(ctx context.Context, user int64) error {
	if x.limit.Rate <= 0 {
		return nil
	}
	now := time.Now()
	x.mu.Lock()
	st := x.users[user]
	if st != nil && st.left > 0 && now.Before(st.expires) {
		st.left--
		x.mu.Unlock()
		return nil
	}
	n := 1
	if st != nil && now.Sub(st.lastAsk) < x.o.Busy {
		n = x.o.Lease
	}
	if st == nil {
		x.sweep(now)
		st = &lease{}
		x.users[user] = st
	}
	st.left, st.lastAsk = 0, now
	x.mu.Unlock()

	granted, retry, err := x.ask(ctx, user, n)
	if err != nil {
		if x.l.onError != nil {
			x.l.onError(fmt.Errorf("ratelimit %s: %w", x.kind, err))
		}
		return nil
	}
	if granted == 0 {
		retry = max(retry, time.Millisecond)
		return chat.RateLimited(retry, "too many %s requests; retry after %s", kindName(x.kind), retry.Round(time.Millisecond))
	}
	if granted > 1 {
		x.mu.Lock()
		// Another ask of the same user may have run meanwhile: both leases
		// were counted in Redis, so keeping the larger loses nothing.
		if st.left < granted-1 {
			st.left, st.expires = granted-1, now.Add(x.o.LeaseTTL)
		}
		x.mu.Unlock()
	}
	return nil
}

// ask takes up to n events of user from Redis.
func (x *Leased) ask(ctx context.Context, user int64, n int) (int, time.Duration, error) {
	key := x.l.prefix + x.kind + ":u" + strconv.FormatInt(user, 10)
	res, err := x.l.rl.AllowAtMost(ctx, key, x.limit.lib(), n)
	if err != nil {
		return 0, 0, err
	}
	return res.Allowed, res.RetryAfter, nil
}

// sweep drops the state of users whose lease expired and who have not
// asked for a while, at most once per LeaseTTL (x.mu held).
func (x *Leased) sweep(now time.Time) {
	if now.Before(x.sweepAt) {
		return
	}
	x.sweepAt = now.Add(x.o.LeaseTTL)
	for u, st := range x.users {
		if now.After(st.expires) && now.Sub(st.lastAsk) > x.o.Busy {
			delete(x.users, u)
		}
	}
}

// Users is how many users have lease state on this instance (tests).
func (x *Leased) Users() int {
	x.mu.Lock()
	defer x.mu.Unlock()
	return len(x.users)
}
