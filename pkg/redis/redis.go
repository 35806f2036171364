// Package redis owns the Redis side of the room log: connection setup, the
// key and channel names (docs/architecture.md), the publication payload the
// delivery worker writes and gateways read, and the Lua script that moves a
// room's last seq, appends to its recent history and publishes atomically.
package redis

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/redis/go-redis/extra/redisotel/v9"
	goredis "github.com/redis/go-redis/v9"
)

// Open connects to url and checks the connection. With tracing, every
// command is a span named for the command, without its arguments (they
// hold message text and session data).
func Open(ctx context.Context, url string, tracing bool) (*goredis.Client, error) {
	opt, err := goredis.ParseURL(url)
	if err != nil {
		return nil, fmt.Errorf("redis: %w", err)
	}
	c := goredis.NewClient(opt)
	if tracing {
		if err := redisotel.InstrumentTracing(c, redisotel.WithDBStatement(false)); err != nil {
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

// Publication is what the delivery worker publishes on a room channel and
// keeps in the room history: the rendered client frame with its position.
type Publication struct {
	// RoomID is the room the event belongs to.
	RoomID int64 `json:"roomId,string"`
	// Seq is the event's Kafka offset.
	Seq int64 `json:"seq"`
	// PrevSeq is the seq of the room's previous event; nil when unknown.
	PrevSeq *int64 `json:"prevSeq,omitempty"`
	// Trace carries W3C trace context (traceparent, tracestate).
	Trace map[string]string `json:"trace,omitempty"`
	// PublishedAt is when the publisher sent it, in Unix nanoseconds (0:
	// unknown); a receiver of the live channel measures pub/sub latency
	// from it (a history entry keeps its original time).
	PublishedAt int64 `json:"pubAt,omitempty"`
	// EventAt is the event's time in Unix nanoseconds (0: none), which the
	// gateway sets just before producing it: receivers measure produce ->
	// delivered-to-socket from it.
	EventAt int64 `json:"eventAt,omitempty"`
	// Frame is the server frame to write to sockets as it is.
	Frame json.RawMessage `json:"frame"`
	// Ephemeral marks a frame without a log position (typing): Seq is 0,
	// it is never in the history, and receivers skip their seq checks.
	Ephemeral bool `json:"ephemeral,omitempty"`
	// SkipUserID, when non-zero, is a user whose connections must not get
	// the frame (the typist of a typing frame).
	SkipUserID int64 `json:"skipUserId,string,omitempty"`
}

// Encode returns p as json.Marshal does, but appends Frame as it is
// instead of compacting and validating it again: Frame must be compact
// JSON, as a rendered frame is. The delivery worker encodes one
// publication per record, and this is most of what that costs.
func (p *Publication) Encode() ([]byte, error) {
	b := make([]byte, 0, len(p.Frame)+192)
	b = append(b, `{"roomId":"`...)
	b = strconv.AppendInt(b, p.RoomID, 10)
	b = append(b, `","seq":`...)
	b = strconv.AppendInt(b, p.Seq, 10)
	if p.PrevSeq != nil {
		b = append(b, `,"prevSeq":`...)
		b = strconv.AppendInt(b, *p.PrevSeq, 10)
	}
	if len(p.Trace) > 0 {
		t, err := json.Marshal(p.Trace)
		if err != nil {
			return nil, fmt.Errorf("redis: publication trace: %w", err)
		}
		b = append(b, `,"trace":`...)
		b = append(b, t...)
	}
	if p.PublishedAt != 0 {
		b = append(b, `,"pubAt":`...)
		b = strconv.AppendInt(b, p.PublishedAt, 10)
	}
	if p.EventAt != 0 {
		b = append(b, `,"eventAt":`...)
		b = strconv.AppendInt(b, p.EventAt, 10)
	}
	if len(p.Frame) == 0 {
		return nil, errors.New("redis: publication without a frame")
	}
	b = append(b, `,"frame":`...)
	b = append(b, p.Frame...)
	if p.Ephemeral {
		b = append(b, `,"ephemeral":true`...)
	}
	if p.SkipUserID != 0 {
		b = append(b, `,"skipUserId":"`...)
		b = strconv.AppendInt(b, p.SkipUserID, 10)
		b = append(b, '"')
	}
	return append(b, '}'), nil
}

// DecodePublication parses a channel message or history entry.
func DecodePublication(b []byte) (*Publication, error) {
	var p Publication
	if err := json.Unmarshal(b, &p); err != nil {
		return nil, fmt.Errorf("redis: publication: %w", err)
	}
	if p.RoomID <= 0 || len(p.Frame) == 0 {
		return nil, errors.New("redis: publication: roomId and frame required")
	}
	return &p, nil
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
func History(ctx context.Context, c goredis.Cmdable, k Keys, roomID, afterSeq int64, count int64) (pubs []*Publication, complete bool, err error) {
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
	pubs = make([]*Publication, 0, len(msgs))
	for _, m := range msgs {
		d, _ := m.Values["d"].(string)
		p, err := DecodePublication([]byte(d))
		if err != nil {
			return nil, false, err
		}
		pubs = append(pubs, p)
	}
	complete = true
	if len(first) == 1 {
		d, _ := first[0].Values["d"].(string)
		oldest, err := DecodePublication([]byte(d))
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
