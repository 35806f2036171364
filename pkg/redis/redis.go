// Package redis owns the Redis side of the room log: connection setup, the
// key and channel names (docs/architecture.md), and the Lua script that
// moves a room's last seq, appends a publication (protocol.Publication) to
// its recent history and publishes it atomically.
package redis

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/extra/redisotel/v9"
	goredis "github.com/redis/go-redis/v9"

	"relay/pkg/config"
	"relay/pkg/protocol"
)

// Open connects to the server or the Redis Cluster cfg names and checks
// the connection: a *goredis.Client, or with cfg.Cluster a
// *goredis.ClusterClient that routes each command to the shard of its keys.
// With tracing, every command is a span named for the command, without its
// arguments (they hold message text and session data).
func Open(ctx context.Context, cfg config.Redis, tracing bool) (goredis.UniversalClient, error) {
	var c goredis.UniversalClient
	if cfg.Cluster {
		opt, err := goredis.ParseClusterURL(cfg.URL)
		if err != nil {
			return nil, fmt.Errorf("redis: REDIS_URL of a cluster: %w", err)
		}
		// go-redis reloads the slot map on MOVED, but a dead master only
		// refuses connections: without a short reload interval (60 s by
		// default) commands and subscriptions of its slots would keep
		// dialling it long after its replica was promoted. A reload is one
		// CLUSTER SLOTS, at most once a second, and only while in use.
		if opt.ClusterStateReloadInterval == 0 {
			opt.ClusterStateReloadInterval = ClusterReloadInterval
		}
		c = goredis.NewClusterClient(opt)
	} else {
		opt, err := goredis.ParseURL(cfg.URL)
		if err != nil {
			return nil, fmt.Errorf("redis: %w", err)
		}
		c = goredis.NewClient(opt)
	}
	if tracing {
		if err := redisotel.InstrumentTracing(c, redisotel.WithDBStatement(false)); err != nil {
			_ = c.Close()
			return nil, fmt.Errorf("redis: tracing: %w", err)
		}
	}
	if err := Ping(ctx, c); err != nil {
		_ = c.Close()
		return nil, err
	}
	return c, nil
}

// ClusterReloadInterval bounds how stale a cluster client's map of slots
// to masters gets (see Open).
const ClusterReloadInterval = time.Second

// Ping checks that c can serve commands: one server answers PING; a
// cluster client must also see every hash slot served (cluster_state:ok),
// since a command for a slot without a master fails. Readiness probes call
// it.
func Ping(ctx context.Context, c goredis.UniversalClient) error {
	cc, ok := c.(*goredis.ClusterClient)
	if !ok {
		if err := c.Ping(ctx).Err(); err != nil {
			return fmt.Errorf("redis: ping: %w", err)
		}
		return nil
	}
	info, err := cc.ClusterInfo(ctx).Result()
	if err != nil {
		return fmt.Errorf("redis: cluster info: %w", err)
	}
	if !strings.Contains(info, "cluster_state:ok") {
		return errors.New("redis: cluster_state is not ok (a hash slot has no reachable master)")
	}
	return nil
}

// IsCluster reports whether c talks to a Redis Cluster.
func IsCluster(c goredis.UniversalClient) bool {
	_, ok := c.(*goredis.ClusterClient)
	return ok
}

// Slot is the Redis Cluster hash slot of key (CRC16 of its hash tag, or
// of the whole key without one, modulo 16384). Keys (and shard channels)
// of one slot live on one shard, which multi-key scripts and SSUBSCRIBE
// require.
func Slot(key string) int {
	if s := strings.IndexByte(key, '{'); s >= 0 {
		if e := strings.IndexByte(key[s+1:], '}'); e > 0 {
			key = key[s+1 : s+1+e]
		}
	}
	return int(crc16(key) % 16384)
}

// crc16 is CRC-16/XMODEM (polynomial 0x1021, initial 0), the checksum
// Redis Cluster hashes keys with.
func crc16(s string) uint16 {
	var crc uint16
	for i := 0; i < len(s); i++ {
		crc ^= uint16(s[i]) << 8
		for range 8 {
			if crc&0x8000 != 0 {
				crc = crc<<1 ^ 0x1021
			} else {
				crc <<= 1
			}
		}
	}
	return crc
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

// RoomRedactions is the hash messageId -> Redaction of the room's messages
// edited or deleted while their events may still be in the history.
func (k Keys) RoomRedactions(roomID int64) string { return k.room(roomID) + ":redact" }

// RoomRedactionIndex orders RoomRedactions by the seq of their latest
// edit or delete, so those older than the history can be pruned.
func (k Keys) RoomRedactionIndex(roomID int64) string { return k.room(roomID) + ":redactidx" }

// RoomHistory is the capped stream of the room's recent publications; entry
// ids are "<seq>-1" so a range read by seq needs no index.
func (k Keys) RoomHistory(roomID int64) string { return k.room(roomID) + ":hist" }

// MessageAuthor holds "<roomId>:<userId>" of a message the gateway acked, so
// edits and deletes can check authorship before the row is persisted; the
// gateway appends ":deleted" once the message is deleted.
func (k Keys) MessageAuthor(messageID string) string {
	return k.Prefix + "author:" + messageID
}

// publishScript: KEYS = seq key, history stream, redactions hash,
// redaction index; ARGV = expected previous seq ("" when the key is
// expected to be missing), seq, payload, channel, history cap, and for an
// edit or delete the message id and its encoded Redaction ("" otherwise).
// Returns {1} when published, {0} when seq was already published (a
// redelivery), {2, current} when the caller's expected previous seq was
// stale and it must re-render with current ("" for missing).
//
// The redaction is recorded in the same step as the event, so a history
// read that sees the edit or delete also sees its redaction (History).
// A delete is final: a later edit does not undo it. Redactions whose latest
// event is older than the oldest history entry are pruned: the events they
// rewrite are gone from the history.
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
if ARGV[6] ~= '' then
  local old = redis.call('HGET', KEYS[3], ARGV[6])
  if not (old and cjson.decode(old).deleted) then
    redis.call('HSET', KEYS[3], ARGV[6], ARGV[7])
    redis.call('ZADD', KEYS[4], seq, ARGV[6])
  end
  local first = redis.call('XRANGE', KEYS[2], '-', '+', 'COUNT', 1)
  if first[1] then
    local oldest = tonumber(string.match(first[1][1], '^(%d+)'))
    local gone = redis.call('ZRANGEBYSCORE', KEYS[4], '-inf', '(' .. oldest, 'LIMIT', 0, 100)
    if #gone > 0 then
      redis.call('HDEL', KEYS[3], unpack(gone))
      redis.call('ZREM', KEYS[4], unpack(gone))
    end
  end
end
redis.call('SPUBLISH', ARGV[4], ARGV[3])
return {1}
`)

// Redaction is what a message_edited or message_deleted event changes in
// the events before it: History rewrites the message's earlier frames with
// it, so a replay never shows a deleted message's content or an edited
// message's old text.
type Redaction struct {
	// MessageID is the message edited or deleted.
	MessageID string `json:"-"`
	// Seq is the edit's or delete's seq.
	Seq int64 `json:"seq"`
	// Deleted says the message was deleted: its content and metadata are gone.
	Deleted bool `json:"deleted,omitempty"`
	// Content is the edited text (when not Deleted).
	Content string `json:"content,omitempty"`
}

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
//
// redact, given for an edit or a delete (at most one), is recorded with the
// publication (see Redaction).
func Publish(ctx context.Context, c goredis.Scripter, k Keys, roomID, seq int64, expectedPrev *int64, payload []byte, historyCap int, redact ...Redaction) (res PublishResult, current *int64, err error) {
	keys, args := publishArgs(k, roomID, seq, expectedPrev, payload, historyCap, redact)
	return PublishReply(publishScript.Run(ctx, c, keys, args...))
}

// QueuePublish adds the publish script to a pipeline, by its SHA only (a
// pipeline cannot fall back to EVAL): read the reply with PublishReply after
// Exec; a NOSCRIPT error means the script must be loaded first, which
// Publish or LoadScripts does.
func QueuePublish(ctx context.Context, pipe goredis.Pipeliner, k Keys, roomID, seq int64, expectedPrev *int64, payload []byte, historyCap int, redact ...Redaction) *goredis.Cmd {
	keys, args := publishArgs(k, roomID, seq, expectedPrev, payload, historyCap, redact)
	return publishScript.EvalSha(ctx, pipe, keys, args...)
}

func publishArgs(k Keys, roomID, seq int64, expectedPrev *int64, payload []byte, historyCap int, redact []Redaction) ([]string, []any) {
	exp := ""
	if expectedPrev != nil {
		exp = strconv.FormatInt(*expectedPrev, 10)
	}
	msgID, value := "", ""
	if len(redact) > 0 && redact[0].MessageID != "" {
		r := redact[0]
		r.Seq = seq
		b, _ := json.Marshal(r) // plain struct; cannot fail
		msgID, value = r.MessageID, string(b)
	}
	return []string{k.RoomSeq(roomID), k.RoomHistory(roomID), k.RoomRedactions(roomID), k.RoomRedactionIndex(roomID)},
		[]any{exp, seq, payload, k.RoomChannel(roomID), historyCap, msgID, value}
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

// LoadScripts loads the script QueuePublish runs by SHA, e.g. after a
// NOSCRIPT reply (Redis restarted or flushed its cache). The dedupe fill's
// script is relay/pkg/dedupe's.
func LoadScripts(ctx context.Context, c goredis.Scripter) error {
	if err := publishScript.Load(ctx, c).Err(); err != nil {
		return fmt.Errorf("redis: load script: %w", err)
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
	// After the XRANGE: a delete or edit it returned has its redaction
	// recorded already (the publish script wrote both in one step).
	if err := redactHistory(ctx, c, k, roomID, pubs); err != nil {
		return nil, false, err
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

// redactHistory rewrites, in place, the frames of pubs whose message was
// edited or deleted by a later event: a deleted message's content and
// metadata are removed (and "deleted": true set), an edited message gets
// its current text. Rooms without edits or deletes cost one HLEN.
func redactHistory(ctx context.Context, c goredis.Cmdable, k Keys, roomID int64, pubs []*protocol.Publication) error {
	if len(pubs) == 0 {
		return nil
	}
	key := k.RoomRedactions(roomID)
	n, err := c.HLen(ctx, key).Result()
	if err != nil {
		return fmt.Errorf("redis: history redactions: %w", err)
	}
	if n == 0 {
		return nil
	}
	type ref struct {
		pub   *protocol.Publication
		frame protocol.Frame
		id    string
	}
	var refs []ref
	var ids []string
	for _, p := range pubs {
		var f protocol.Frame
		if json.Unmarshal(p.Frame, &f) != nil {
			continue
		}
		var d struct {
			ID        string `json:"id"`
			MessageID string `json:"messageId"`
		}
		switch f.Event {
		case protocol.EventMessage, protocol.EventMessageEdited:
			if json.Unmarshal(f.Data, &d) != nil {
				continue
			}
		default:
			continue
		}
		id := d.ID
		if f.Event == protocol.EventMessageEdited {
			id = d.MessageID
		}
		refs = append(refs, ref{pub: p, frame: f, id: id})
		ids = append(ids, id)
	}
	if len(ids) == 0 {
		return nil
	}
	vals, err := c.HMGet(ctx, key, ids...).Result()
	if err != nil {
		return fmt.Errorf("redis: history redactions: %w", err)
	}
	for i, v := range vals {
		s, ok := v.(string)
		if !ok {
			continue
		}
		var r Redaction
		if err := json.Unmarshal([]byte(s), &r); err != nil {
			return fmt.Errorf("redis: redaction of %s: %w", ids[i], err)
		}
		ref := refs[i]
		// An edit rewrites the frames before it; a delete every frame of
		// the message (an edit that raced past it included).
		if !r.Deleted && r.Seq <= ref.pub.Seq {
			continue
		}
		frame, err := redactFrame(ref.frame, r)
		if err != nil {
			return fmt.Errorf("redis: redact %s: %w", ids[i], err)
		}
		ref.pub.Frame = frame
	}
	return nil
}

// redactFrame applies r to a message or message_edited frame.
func redactFrame(f protocol.Frame, r Redaction) ([]byte, error) {
	var data any
	switch f.Event {
	case protocol.EventMessage:
		var m protocol.Message
		if err := json.Unmarshal(f.Data, &m); err != nil {
			return nil, err
		}
		if r.Deleted {
			m.Content, m.Metadata, m.Deleted = "", nil, true
		} else {
			m.Content, m.Edited = r.Content, true
		}
		data = m
	default:
		var m protocol.MessageEdited
		if err := json.Unmarshal(f.Data, &m); err != nil {
			return nil, err
		}
		m.Content = r.Content // "" when deleted
		data = m
	}
	d, err := json.Marshal(data)
	if err != nil {
		return nil, err
	}
	return json.Marshal(protocol.Frame{Event: f.Event, Data: d})
}
