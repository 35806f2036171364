// Package dedupe is the one home of clientMsgId deduplication: the Redis
// key of a user's clientMsgId, the pending marker a send in flight holds,
// the claim a gateway makes before producing, the first ack it records
// after Kafka's (Recorder), and the fill the delivery worker makes for a
// gateway that died before recording it.
//
// A key lives in one of three states: missing (the clientMsgId is free),
// Pending (a send is in flight; PendingTTL bounds it should its gateway
// die before Kafka stored the send) and the first ack (kept TTL, so any
// retry within it gets that ack back instead of a second message). A key
// is one Redis key and every script touches that key only, so the layout
// works on Redis Cluster as it is.
package dedupe

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"relay/pkg/chat"
)

// Pending is the value of a key while its send is being produced; the
// first ack replaces it.
const Pending = "pending"

// DefaultWait bounds how long Claim waits for the ack of a send in flight
// (from its gateway, or from the delivery worker when that gateway died)
// before it answers CONFLICT.
const DefaultWait = 2 * time.Second

// Keys names the dedupe keys under a prefix.
type Keys struct {
	// Prefix starts every key, e.g. "relay:" (config.Redis.Prefix).
	Prefix string
}

// Key is the key of a user's clientMsgId: <prefix>dedupe:<userId>:<clientMsgId>.
func (k Keys) Key(userID int64, clientMsgID string) string {
	return k.Prefix + "dedupe:" + strconv.FormatInt(userID, 10) + ":" + clientMsgID
}

// Options configure a Store.
type Options struct {
	// Keys names the keys.
	Keys Keys
	// TTL keeps a clientMsgId's first ack (config.Dedupe, DEDUPE_TTL);
	// required.
	TTL time.Duration
	// PendingTTL bounds the pending marker a claim sets; zero for a store
	// that never claims (the delivery worker only fills).
	PendingTTL time.Duration
	// Wait bounds Claim's wait for a send in flight; zero means DefaultWait.
	Wait time.Duration
}

// Store reads and writes dedupe keys.
type Store struct {
	rdb goredis.Cmdable
	o   Options
}

// New returns a Store over rdb.
func New(rdb goredis.Cmdable, o Options) (*Store, error) {
	if o.TTL <= 0 {
		return nil, errors.New("dedupe: TTL must be positive")
	}
	if o.PendingTTL < 0 {
		return nil, errors.New("dedupe: PendingTTL must not be negative")
	}
	if o.Wait == 0 {
		o.Wait = DefaultWait
	}
	return &Store{rdb: rdb, o: o}, nil
}

// Key is the key of a user's clientMsgId (Keys.Key).
func (s *Store) Key(userID int64, clientMsgID string) string {
	return s.o.Keys.Key(userID, clientMsgID)
}

// QueueClaim adds the first attempt of a claim to a pipeline: a true reply
// means the clientMsgId was free and this send holds it; false means it
// was used before or is in flight, and Claim finds out which.
func (s *Store) QueueClaim(ctx context.Context, pipe goredis.Pipeliner, key string) *goredis.BoolCmd {
	return pipe.SetNX(ctx, key, Pending, s.o.PendingTTL)
}

// errUnavailable is how a failed check reaches the client: without it the
// send cannot be deduplicated, so it is refused rather than risk a copy.
func errUnavailable(err error) error {
	return chat.Wrap(chat.CodeUnavailable, err, "could not check clientMsgId; retry")
}

// ClaimReply finishes a claim QueueClaim started, once its pipeline ran:
// what Claim returns.
func (s *Store) ClaimReply(ctx context.Context, key string, cmd *goredis.BoolCmd) (json.RawMessage, error) {
	if err := cmd.Err(); err != nil {
		return nil, errUnavailable(err)
	}
	if cmd.Val() {
		return nil, nil
	}
	// Used before, or in flight: the first send's ack, once there is one.
	return s.Claim(ctx, key)
}

// Claim sets the pending marker of key. It returns (nil, nil) when this
// send may go ahead, and the first ack when the clientMsgId was used
// before. While the first send is in flight it waits up to Options.Wait
// for its ack, then answers CONFLICT (retry); a failed Redis call is
// UNAVAILABLE.
func (s *Store) Claim(ctx context.Context, key string) (json.RawMessage, error) {
	deadline := time.Now().Add(s.o.Wait)
	for {
		ack, err := s.tryClaim(ctx, key)
		if err == nil || chat.ErrorCode(err) != chat.CodeConflict || time.Now().After(deadline) {
			return ack, err
		}
		select {
		case <-ctx.Done():
			return nil, err
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// tryClaim is one attempt of Claim.
func (s *Store) tryClaim(ctx context.Context, key string) (json.RawMessage, error) {
	for range 3 {
		ok, err := s.rdb.SetNX(ctx, key, Pending, s.o.PendingTTL).Result()
		if err != nil {
			return nil, errUnavailable(err)
		}
		if ok {
			return nil, nil
		}
		v, err := s.rdb.Get(ctx, key).Result()
		if errors.Is(err, goredis.Nil) {
			continue // expired or released in between: try to claim again
		}
		if err != nil {
			return nil, errUnavailable(err)
		}
		if v == Pending {
			return nil, chat.Errorf(chat.CodeConflict, "send in progress; retry")
		}
		return json.RawMessage(v), nil
	}
	return nil, chat.Errorf(chat.CodeConflict, "send in progress; retry")
}

// Release drops a claim after a failed send, so the client can retry with
// the same clientMsgId. It runs even when ctx is cancelled (the send's
// context may be why it failed).
func (s *Store) Release(ctx context.Context, key string) error {
	if err := s.rdb.Del(context.WithoutCancel(ctx), key).Err(); err != nil {
		return fmt.Errorf("dedupe: release: %w", err)
	}
	return nil
}

// Record sets ack as the answer to key, replacing the pending marker.
func (s *Store) Record(ctx context.Context, key string, ack []byte) error {
	if err := s.rdb.Set(ctx, key, ack, s.o.TTL).Err(); err != nil {
		return fmt.Errorf("dedupe: record ack: %w", err)
	}
	return nil
}

// QueueRecord adds Record to a pipeline.
func (s *Store) QueueRecord(ctx context.Context, pipe goredis.Pipeliner, key string, ack []byte) {
	pipe.Set(ctx, key, ack, s.o.TTL)
}

// fillScript: KEYS = dedupe key; ARGV = ack, ttl ms. Records the ack only
// where no ack is recorded yet (key missing or still pending).
var fillScript = goredis.NewScript(`
local v = redis.call('GET', KEYS[1])
if v == false or v == '` + Pending + `' then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 1
end
return 0
`)

// Fill records ack as the answer to key unless an ack is recorded already.
// The delivery worker calls it for every message it publishes, so a sender
// whose gateway died between Kafka's ack and recording it gets the first
// ack back on retry instead of a second message.
func (s *Store) Fill(ctx context.Context, key string, ack []byte) error {
	if err := fillScript.Run(ctx, s.rdb, []string{key}, ack, s.o.TTL.Milliseconds()).Err(); err != nil {
		return fmt.Errorf("dedupe: fill: %w", err)
	}
	return nil
}

// QueueFill adds Fill to a pipeline by the script's SHA only (a pipeline
// cannot fall back to EVAL); its error after Exec is the command's Err, and
// a NOSCRIPT error there means LoadScripts must run first.
func (s *Store) QueueFill(ctx context.Context, pipe goredis.Pipeliner, key string, ack []byte) *goredis.Cmd {
	return fillScript.EvalSha(ctx, pipe, []string{key}, ack, s.o.TTL.Milliseconds())
}

// LoadScripts loads the script QueueFill runs by SHA, e.g. at start or
// after a NOSCRIPT reply (Redis restarted or flushed its script cache).
func LoadScripts(ctx context.Context, c goredis.Scripter) error {
	if err := fillScript.Load(ctx, c).Err(); err != nil {
		return fmt.Errorf("dedupe: load script: %w", err)
	}
	return nil
}
