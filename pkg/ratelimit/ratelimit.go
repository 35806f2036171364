// Package ratelimit holds the limits that must hold per user (or per client
// address) whatever the number of service instances: a Redis-backed GCRA
// limiter (github.com/go-redis/redis_rate) shared by every gateway and api
// instance, and a per-instance cap on concurrent connections.
//
// A refusal is a chat RATE_LIMITED error carrying how long to wait
// (chat.Error.RetryAfter), which the web package turns into a 429 with a
// Retry-After header and the gateway into an error event with retryAfterMs.
package ratelimit

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/go-redis/redis_rate/v10"
	goredis "github.com/redis/go-redis/v9"

	"relay/pkg/chat"
)

// Limit is Rate events per Period, with bursts of up to Burst.
type Limit struct {
	// Rate events are allowed per Period; zero disables the limit.
	Rate int
	// Period is the window Rate is counted over; zero means a minute.
	Period time.Duration
	// Burst is how many events may come at once; zero means Rate.
	Burst int
}

// PerMinute is n events a minute, in bursts of up to n.
func PerMinute(n int) Limit { return Limit{Rate: n, Period: time.Minute} }

// PerHour is n events an hour, in bursts of up to n.
func PerHour(n int) Limit { return Limit{Rate: n, Period: time.Hour} }

// PerSecond is n events a second, in bursts of up to n.
func PerSecond(n int) Limit { return Limit{Rate: n, Period: time.Second} }

func (l Limit) lib() redis_rate.Limit {
	if l.Period == 0 {
		l.Period = time.Minute
	}
	if l.Burst == 0 {
		l.Burst = l.Rate
	}
	return redis_rate.Limit{Rate: l.Rate, Period: l.Period, Burst: l.Burst}
}

// Validate refuses negative values.
func (l Limit) Validate() error {
	if l.Rate < 0 || l.Burst < 0 || l.Period < 0 {
		return errors.New("rate limit values must not be negative")
	}
	return nil
}

// Scripter is what the limiter needs of a Redis client (*goredis.Client,
// *goredis.ClusterClient and *goredis.Ring have it).
type Scripter interface {
	goredis.Scripter
	Del(ctx context.Context, keys ...string) *goredis.IntCmd
}

// Limiter counts events per key in Redis. The zero value is not usable;
// build one with New.
type Limiter struct {
	rl     *redis_rate.Limiter
	prefix string
	// onError is told when Redis could not be asked (the event is allowed).
	onError func(error)
}

// Options configure New.
type Options struct {
	// Prefix goes before every key (the deployment's REDIS_PREFIX); the
	// library adds "rate:" before it.
	Prefix string
	// OnError is called when Redis fails; nil ignores it. The limiter
	// fails open: an outage of Redis must not refuse every user, and the
	// per-connection limits of the gateway still hold.
	OnError func(error)
}

// New returns a limiter over rdb.
func New(rdb Scripter, o Options) *Limiter {
	return &Limiter{rl: redis_rate.NewLimiter(rdb), prefix: o.Prefix, onError: o.OnError}
}

// Allow counts one event of kind (e.g. "send", "rest_write") for key (a
// user id or client address) under limit. It returns nil when allowed and
// a RATE_LIMITED *chat.Error with RetryAfter set when not. A disabled
// limit (Rate 0) always allows.
func (l *Limiter) Allow(ctx context.Context, kind, key string, limit Limit) error {
	return l.AllowN(ctx, kind, key, limit, 1)
}

// AllowN is Allow for n events at once.
func (l *Limiter) AllowN(ctx context.Context, kind, key string, limit Limit, n int) error {
	if limit.Rate <= 0 {
		return nil
	}
	res, err := l.rl.AllowN(ctx, l.prefix+kind+":"+key, limit.lib(), n)
	if err != nil {
		if l.onError != nil {
			l.onError(fmt.Errorf("ratelimit %s: %w", kind, err))
		}
		return nil
	}
	if res.Allowed >= n {
		return nil
	}
	retry := max(res.RetryAfter, time.Millisecond)
	return chat.RateLimited(retry, "too many %s requests; retry after %s", kindName(kind), retry.Round(time.Millisecond))
}

// AllowUser is Allow keyed by a user id.
func (l *Limiter) AllowUser(ctx context.Context, kind string, userID int64, limit Limit) error {
	return l.Allow(ctx, kind, "u"+strconv.FormatInt(userID, 10), limit)
}

// Reset forgets what was counted for kind and key (tests, an admin unblocking).
func (l *Limiter) Reset(ctx context.Context, kind, key string) error {
	if err := l.rl.Reset(ctx, l.prefix+kind+":"+key); err != nil {
		return fmt.Errorf("ratelimit: reset: %w", err)
	}
	return nil
}

func kindName(kind string) string {
	b := []byte(kind)
	for i, c := range b {
		if c == '_' {
			b[i] = ' '
		}
	}
	return string(b)
}
