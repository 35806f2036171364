// Package redis owns the Redis side of the room log: connection setup, the
// key and channel names (docs/architecture.md), and the Lua script that
// moves a room's last seq, appends a publication (protocol.Publication) to
// its recent history and publishes it atomically.
package redis

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/redis/go-redis/extra/redisotel/v9"
	goredis "github.com/redis/go-redis/v9"

	"relay/pkg/protocol"
)

// Open connects to url and checks the connection. With tracing, every
// command is a span.
func Open(ctx context.Context, url string, tracing bool) (*goredis.Client, error) {
	opt, err := goredis.ParseURL(url)
	if err != nil {
		return nil, fmt.Errorf("redis: %w", err)
	}
	c := goredis.NewClient(opt)
	if tracing {
		if err := redisotel.InstrumentTracing(c); err != nil {
			return nil, fmt.Errorf("redis: tracing: %w", err)
		}
	}
	if err := c.Ping(ctx).Err(); err != nil {
		_ = c.Close()
		return nil, fmt.Errorf("redis: ping: %w", err)
	}
	return c, nil
}

// Keys builds every key and channel name under one prefix. Per-room keys
// share a hash tag so a script touching them works on Redis Cluster too.
type Keys struct {
	// Prefix starts every name, e.g. "relay:".
	Prefix string
}

func (k Keys) room(roomID int64) string {
	return k.Prefix + "{r:" + strconv.FormatInt(roomID, 10) + "}"
}

// RoomChannel is the pub/sub channel a room's publications go to.
func (k Keys) RoomChannel(roomID int64) string { return k.room(roomID) + ":ch" }

// RoomSeq holds the seq of the room's last published event.
func (k Keys) RoomSeq(roomID int64) string { return k.room(roomID) + ":seq" }

// RoomHistory is the capped stream of the room's recent publications; entry
// ids are "<seq>-1" so a range read by seq needs no index.
func (k Keys) RoomHistory(roomID int64) string { return k.room(roomID) + ":hist" }

// Dedupe holds the first ack of a user's clientMsgId.
func (k Keys) Dedupe(userID int64, clientMsgID string) string {
	return k.Prefix + "dedupe:" + strconv.FormatInt(userID, 10) + ":" + clientMsgID
}

// MessageAuthor holds "<roomId>:<userId>" of a message the gateway acked, so
// edits and deletes can check authorship before the row is persisted; the
// gateway appends ":deleted" once the message is deleted.
func (k Keys) MessageAuthor(messageID string) string {
	return k.Prefix + "author:" + messageID
}

// publishScript: KEYS = seq key, history stream; ARGV = expected previous
// seq ("" when the key is expected to be missing), seq, payload, channel,
// history cap. Returns {1} when published, {0} when seq was already
// published (a redelivery), {2, current} when the caller's expected previous
// seq was stale and it must re-render with current ("" for missing).
var publishScript = goredis.NewScript(`
local cur = redis.call('GET', KEYS[1])
local seq = tonumber(ARGV[2])
if cur and tonumber(cur) >= seq then
  return {0}
end
if (cur or '') ~= ARGV[1] then
  return {2, cur or ''}
end
redis.call('SET', KEYS[1], ARGV[2])
redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[5], ARGV[2] .. '-1', 'd', ARGV[3])
redis.call('PUBLISH', ARGV[4], ARGV[3])
return {1}
`)

// PublishResult says what Publish did.
type PublishResult int

// Publish outcomes.
const (
	// Published: the seq moved, the history grew and subscribers were told.
	Published PublishResult = iota
	// Duplicate: seq was not above the room's last seq; nothing was done.
	Duplicate
	// Stale: the expected previous seq was wrong; re-render with Current.
	Stale
)

// Publish runs the publish script for one publication. expectedPrev is
// the previous seq the payload was rendered with (nil: the room's seq was
// believed missing). On Stale, current holds the room's actual last seq
// (nil when missing).
func Publish(ctx context.Context, c goredis.Scripter, k Keys, roomID, seq int64, expectedPrev *int64, payload []byte, historyCap int) (res PublishResult, current *int64, err error) {
	keys, args := publishArgs(k, roomID, seq, expectedPrev, payload, historyCap)
	return PublishReply(publishScript.Run(ctx, c, keys, args...))
}

// QueuePublish adds the publish script to a pipeline, by its SHA only (a
// pipeline cannot fall back to EVAL): read the reply with PublishReply after
// Exec; a NOSCRIPT error means the script must be loaded first, which
// Publish or LoadScripts does.
func QueuePublish(ctx context.Context, pipe goredis.Pipeliner, k Keys, roomID, seq int64, expectedPrev *int64, payload []byte, historyCap int) *goredis.Cmd {
	keys, args := publishArgs(k, roomID, seq, expectedPrev, payload, historyCap)
	return publishScript.EvalSha(ctx, pipe, keys, args...)
}

func publishArgs(k Keys, roomID, seq int64, expectedPrev *int64, payload []byte, historyCap int) ([]string, []any) {
	exp := ""
	if expectedPrev != nil {
		exp = strconv.FormatInt(*expectedPrev, 10)
	}
	return []string{k.RoomSeq(roomID), k.RoomHistory(roomID)},
		[]any{exp, seq, payload, k.RoomChannel(roomID), historyCap}
}

// PublishReply decodes the publish script's reply (see Publish).
func PublishReply(cmd *goredis.Cmd) (res PublishResult, current *int64, err error) {
	out, err := cmd.Slice()
	if err != nil {
		return 0, nil, fmt.Errorf("redis: publish: %w", err)
	}
	code, _ := out[0].(int64)
	switch code {
	case 1:
		return Published, nil, nil
	case 0:
		return Duplicate, nil, nil
	case 2:
		s, _ := out[1].(string)
		if s == "" {
			return Stale, nil, nil
		}
		v, err := strconv.ParseInt(s, 10, 64)
		if err != nil {
			return 0, nil, fmt.Errorf("redis: publish: bad seq %q: %w", s, err)
		}
		return Stale, &v, nil
	}
	return 0, nil, fmt.Errorf("redis: publish: unexpected reply %v", out)
}

// LoadScripts loads the scripts QueuePublish and QueueFillDedupe run by
// SHA, e.g. after a NOSCRIPT reply (Redis restarted or flushed its cache).
func LoadScripts(ctx context.Context, c goredis.Scripter) error {
	for _, sc := range []*goredis.Script{publishScript, fillDedupeScript} {
		if err := sc.Load(ctx, c).Err(); err != nil {
			return fmt.Errorf("redis: load script: %w", err)
		}
	}
	return nil
}

// LastSeq returns the room's last published seq, or nil when unknown.
func LastSeq(ctx context.Context, c goredis.Cmdable, k Keys, roomID int64) (*int64, error) {
	v, err := c.Get(ctx, k.RoomSeq(roomID)).Int64()
	if errors.Is(err, goredis.Nil) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("redis: last seq: %w", err)
	}
	return &v, nil
}

// History returns up to count publications of the room with seq > afterSeq,
// in seq order, and whether the history reaches back far enough to be sure
// nothing between afterSeq and the first returned entry was trimmed.
func History(ctx context.Context, c goredis.Cmdable, k Keys, roomID, afterSeq int64, count int64) (pubs []*protocol.Publication, complete bool, err error) {
	key := k.RoomHistory(roomID)
	// The oldest kept entry tells whether trimming removed anything we need.
	first, err := c.XRangeN(ctx, key, "-", "+", 1).Result()
	if err != nil {
		return nil, false, fmt.Errorf("redis: history: %w", err)
	}
	// Seq 0 is a valid offset, so afterSeq -1 (nothing seen) reads from the start.
	start := "-"
	if afterSeq >= 0 {
		start = "(" + strconv.FormatInt(afterSeq, 10) + "-1"
	}
	msgs, err := c.XRangeN(ctx, key, start, "+", count).Result()
	if err != nil {
		return nil, false, fmt.Errorf("redis: history: %w", err)
	}
	pubs = make([]*protocol.Publication, 0, len(msgs))
	for _, m := range msgs {
		d, _ := m.Values["d"].(string)
		p, err := protocol.DecodePublication([]byte(d))
		if err != nil {
			return nil, false, err
		}
		pubs = append(pubs, p)
	}
	complete = true
	if len(first) == 1 {
		d, _ := first[0].Values["d"].(string)
		oldest, err := protocol.DecodePublication([]byte(d))
		if err != nil {
			return nil, false, err
		}
		// Entries older than the oldest kept one may be gone; the oldest
		// says via prevSeq what came before it.
		if oldest.Seq > afterSeq+1 && (oldest.PrevSeq == nil || *oldest.PrevSeq > afterSeq) {
			complete = false
		}
	} else {
		complete = false
	}
	return pubs, complete, nil
}

// DedupePending is the value of a dedupe key while its send is being
// produced; the first ack replaces it.
const DedupePending = "pending"

// fillDedupeScript: KEYS = dedupe key; ARGV = ack, ttl ms. Records the ack
// only where no ack is recorded yet (key missing or still pending).
var fillDedupeScript = goredis.NewScript(`
local v = redis.call('GET', KEYS[1])
if v == false or v == '` + DedupePending + `' then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 1
end
return 0
`)

// FillDedupe records ack as the answer to a user's clientMsgId unless an ack
// is recorded already. The delivery worker calls it for every message it
// publishes, so a sender whose gateway died between Kafka's ack and
// recording it gets the first ack back on retry instead of a second message.
func FillDedupe(ctx context.Context, c goredis.Scripter, k Keys, userID int64, clientMsgID string, ack []byte, ttl time.Duration) error {
	if err := fillDedupeScript.Run(ctx, c, []string{k.Dedupe(userID, clientMsgID)}, ack, ttl.Milliseconds()).Err(); err != nil {
		return fmt.Errorf("redis: fill dedupe: %w", err)
	}
	return nil
}

// QueueFillDedupe adds FillDedupe to a pipeline, by SHA (see QueuePublish);
// its error after Exec is the command's Err.
func QueueFillDedupe(ctx context.Context, pipe goredis.Pipeliner, k Keys, userID int64, clientMsgID string, ack []byte, ttl time.Duration) *goredis.Cmd {
	return fillDedupeScript.EvalSha(ctx, pipe, []string{k.Dedupe(userID, clientMsgID)}, ack, ttl.Milliseconds())
}
