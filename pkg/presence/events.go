package presence

import (
	"context"
	"errors"
	"fmt"
	"time"

	goredis "github.com/redis/go-redis/v9"
)

// EventsMaxLen caps the events stream (approximately): how many events a
// gateway cut off from Redis can miss and still catch up on.
const EventsMaxLen = 100_000

// eventField is the stream entry field that holds an encoded Event.
const eventField = "e"

// AddEvent appends an encoded Event to the events stream (in a pipeline or
// not). A stream rather than a pub/sub channel: a gateway whose Redis
// connection dropped reads on from its last event instead of losing those
// of the moment.
func AddEvent(ctx context.Context, c goredis.Cmdable, k Keys, payload []byte) *goredis.StringCmd {
	return c.XAdd(ctx, &goredis.XAddArgs{
		Stream: k.Events(), MaxLen: EventsMaxLen, Approx: true, Values: []any{eventField, payload},
	})
}

// EventsTail returns the id of the last event in the stream, "0-0" when it
// is empty: following from it gets every event added afterwards.
func EventsTail(ctx context.Context, c goredis.Cmdable, k Keys) (string, error) {
	last, err := c.XRevRangeN(ctx, k.Events(), "+", "-", 1).Result()
	if err != nil {
		return "", fmt.Errorf("presence: events tail: %w", err)
	}
	if len(last) == 0 {
		return "0-0", nil
	}
	return last[0].ID, nil
}

// FollowOptions tune FollowEvents; zero values mean the defaults.
type FollowOptions struct {
	// Block is how long one read waits for new events, which is also how
	// late FollowEvents notices that ctx ended; zero means 500 ms.
	Block time.Duration
	// OnError is told about each failed read before the pause and retry.
	OnError func(error)
}

// FollowEvents reads the events stream after the event id after (from
// EventsTail) until ctx ends, calling fn with each event's payload, in
// order. A failed read is retried after a pause growing to 2 s, from the
// last event read: a Redis outage loses only events the stream trimmed
// meanwhile (EventsMaxLen).
func FollowEvents(ctx context.Context, c goredis.Cmdable, k Keys, after string, fn func(payload []byte), o FollowOptions) {
	if o.Block <= 0 {
		o.Block = 500 * time.Millisecond
	}
	pause := 50 * time.Millisecond
	for ctx.Err() == nil {
		res, err := c.XRead(ctx, &goredis.XReadArgs{Streams: []string{k.Events(), after}, Count: 512, Block: o.Block}).Result()
		switch {
		case errors.Is(err, goredis.Nil):
			continue // nothing new within Block
		case err != nil:
			if ctx.Err() != nil {
				return
			}
			if o.OnError != nil {
				o.OnError(err)
			}
			select {
			case <-ctx.Done():
				return
			case <-time.After(pause):
			}
			pause = min(2*pause, 2*time.Second)
			continue
		}
		pause = 50 * time.Millisecond
		for _, s := range res {
			for _, m := range s.Messages {
				after = m.ID
				if v, ok := m.Values[eventField].(string); ok {
					fn([]byte(v))
				}
			}
		}
	}
}
