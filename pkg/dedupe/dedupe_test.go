package dedupe_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"relay/pkg/chat"
	"relay/pkg/dedupe"
	"relay/pkg/testenv"
)

func newStore(t *testing.T, o dedupe.Options) (*dedupe.Store, *goredis.Client) {
	t.Helper()
	rdb, prefix := testenv.Redis(t)
	o.Keys = dedupe.Keys{Prefix: prefix}
	s, err := dedupe.New(rdb, o)
	if err != nil {
		t.Fatal(err)
	}
	return s, rdb
}

// The key format is shared by gateways and delivery workers of different
// versions during a rolling deploy, so it must not drift.
func TestKeyFormat(t *testing.T) {
	if k := (dedupe.Keys{Prefix: "relay:"}).Key(42, "c-1"); k != "relay:dedupe:42:c-1" {
		t.Fatalf("key %q", k)
	}
}

func TestNewRefusesBadOptions(t *testing.T) {
	for _, o := range []dedupe.Options{{}, {TTL: -time.Second}, {TTL: time.Hour, PendingTTL: -1}} {
		if _, err := dedupe.New(nil, o); err == nil {
			t.Errorf("New(%+v) accepted", o)
		}
	}
}

// A free clientMsgId is claimed (pending, with PendingTTL); once its ack is
// recorded, a claim returns that ack; after a release it is free again.
func TestClaimRecordRelease(t *testing.T) {
	t.Parallel()
	s, rdb := newStore(t, dedupe.Options{TTL: time.Hour, PendingTTL: 10 * time.Second})
	ctx := t.Context()
	key := s.Key(7, "first")
	if ack, err := s.Claim(ctx, key); err != nil || ack != nil {
		t.Fatalf("claim of a free id: %s, %v", ack, err)
	}
	if v := rdb.Get(ctx, key).Val(); v != dedupe.Pending {
		t.Fatalf("claimed key holds %q", v)
	}
	if ttl := rdb.PTTL(ctx, key).Val(); ttl <= 0 || ttl > 10*time.Second {
		t.Fatalf("pending marker TTL %v", ttl)
	}
	if err := s.Record(ctx, key, []byte(`{"id":"m1"}`)); err != nil {
		t.Fatal(err)
	}
	if ttl := rdb.PTTL(ctx, key).Val(); ttl < 59*time.Minute {
		t.Fatalf("ack kept only %v", ttl)
	}
	if ack, err := s.Claim(ctx, key); err != nil || string(ack) != `{"id":"m1"}` {
		t.Fatalf("claim of a used id: %s, %v", ack, err)
	}
	other := s.Key(7, "second")
	if ack, err := s.Claim(ctx, other); err != nil || ack != nil {
		t.Fatalf("claim: %s, %v", ack, err)
	}
	if err := s.Release(ctx, other); err != nil {
		t.Fatal(err)
	}
	if ack, err := s.Claim(ctx, other); err != nil || ack != nil {
		t.Fatalf("claim after release: %s, %v", ack, err)
	}
}

// A claim of an id in flight waits for the first send's ack; if none comes
// within Wait it is CONFLICT, so the client retries.
func TestClaimWaitsForTheAckInFlight(t *testing.T) {
	t.Parallel()
	// Wait is long enough for the late ack to land within it on a loaded
	// machine.
	s, _ := newStore(t, dedupe.Options{TTL: time.Hour, PendingTTL: time.Minute, Wait: 2 * time.Second})
	ctx := t.Context()
	key := s.Key(1, "inflight")
	if _, err := s.Claim(ctx, key); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	if _, err := s.Claim(ctx, key); chat.ErrorCode(err) != chat.CodeConflict {
		t.Fatalf("claim of a pending id: %v, want CONFLICT", err)
	}
	if d := time.Since(start); d < 2*time.Second {
		t.Fatalf("gave up after %v, before Wait", d)
	}
	go func() {
		time.Sleep(100 * time.Millisecond)
		_ = s.Record(context.Background(), key, []byte(`{"id":"late"}`))
	}()
	if ack, err := s.Claim(ctx, key); err != nil || string(ack) != `{"id":"late"}` {
		t.Fatalf("claim while the ack arrives: %s, %v", ack, err)
	}
}

// QueueClaim in a pipeline with other commands, finished by ClaimReply,
// answers as Claim does.
func TestQueuedClaim(t *testing.T) {
	t.Parallel()
	s, rdb := newStore(t, dedupe.Options{TTL: time.Hour, PendingTTL: time.Minute})
	ctx := t.Context()
	key := s.Key(3, "queued")
	claim := func() ([]byte, error) {
		pipe := rdb.Pipeline()
		cmd := s.QueueClaim(ctx, pipe, key)
		_, _ = pipe.Exec(ctx)
		return s.ClaimReply(ctx, key, cmd)
	}
	if ack, err := claim(); err != nil || ack != nil {
		t.Fatalf("first: %s, %v", ack, err)
	}
	if err := s.Record(ctx, key, []byte(`{"id":"q"}`)); err != nil {
		t.Fatal(err)
	}
	if ack, err := claim(); err != nil || string(ack) != `{"id":"q"}` {
		t.Fatalf("second: %s, %v", ack, err)
	}
}

// Without Redis a claim is UNAVAILABLE: the send cannot be deduplicated.
func TestClaimWithoutRedisIsUnavailable(t *testing.T) {
	rdb := goredis.NewClient(&goredis.Options{Addr: "127.0.0.1:1", MaxRetries: -1, DialTimeout: 200 * time.Millisecond})
	defer rdb.Close()
	s, err := dedupe.New(rdb, dedupe.Options{TTL: time.Hour, PendingTTL: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Claim(t.Context(), s.Key(1, "x")); chat.ErrorCode(err) != chat.CodeUnavailable {
		t.Fatalf("claim without Redis: %v, want UNAVAILABLE", err)
	}
	pipe := rdb.Pipeline()
	cmd := s.QueueClaim(t.Context(), pipe, s.Key(1, "x"))
	_, _ = pipe.Exec(t.Context())
	if _, err := s.ClaimReply(t.Context(), s.Key(1, "x"), cmd); chat.ErrorCode(err) != chat.CodeUnavailable {
		t.Fatalf("queued claim without Redis: %v, want UNAVAILABLE", err)
	}
}

// Fill records an ack where there is none or only the pending marker, with
// the TTL, and never replaces a recorded ack; QueueFill does the same in a
// pipeline once the script is loaded.
func TestFill(t *testing.T) {
	t.Parallel()
	s, rdb := newStore(t, dedupe.Options{TTL: time.Hour})
	ctx := t.Context()
	missing, pending, recorded := s.Key(5, "missing"), s.Key(5, "pending"), s.Key(5, "recorded")
	rdb.Set(ctx, pending, dedupe.Pending, time.Minute)
	rdb.Set(ctx, recorded, `{"id":"first"}`, time.Minute)
	for _, k := range []string{missing, pending, recorded} {
		if err := s.Fill(ctx, k, []byte(`{"id":"fill"}`)); err != nil {
			t.Fatal(err)
		}
	}
	for k, want := range map[string]string{missing: `{"id":"fill"}`, pending: `{"id":"fill"}`, recorded: `{"id":"first"}`} {
		if v := rdb.Get(ctx, k).Val(); v != want {
			t.Errorf("%s = %s, want %s", k, v, want)
		}
	}
	if ttl := rdb.PTTL(ctx, pending).Val(); ttl < 59*time.Minute {
		t.Fatalf("filled ack kept only %v", ttl)
	}

	if err := dedupe.LoadScripts(ctx, rdb); err != nil {
		t.Fatal(err)
	}
	queued := s.Key(6, "queued")
	rdb.Set(ctx, queued, dedupe.Pending, time.Minute)
	pipe := rdb.Pipeline()
	cmd := s.QueueFill(ctx, pipe, queued, []byte(`{"id":"piped"}`))
	if _, err := pipe.Exec(ctx); err != nil || cmd.Err() != nil {
		t.Fatalf("queued fill: %v, %v", err, cmd.Err())
	}
	if v := rdb.Get(ctx, queued).Val(); v != `{"id":"piped"}` {
		t.Fatalf("queued fill left %q", v)
	}
}

// Every ack queued before Close is in Redis once Close returns, with its
// TTL, however the sends interleave; one recorded after Close is written
// on the caller's path instead of being lost.
func TestRecorderWritesEveryAck(t *testing.T) {
	t.Parallel()
	s, rdb := newStore(t, dedupe.Options{TTL: time.Hour})
	r := dedupe.NewRecorder(s, slog.New(slog.NewTextHandler(io.Discard, nil)))
	go r.Run()
	ctx := context.Background()
	const senders, each = 8, 200
	var wg sync.WaitGroup
	for g := range senders {
		wg.Go(func() {
			for i := range each {
				r.Record(ctx, s.Key(int64(g), fmt.Sprint(i)), fmt.Appendf(nil, `{"n":%d}`, i))
			}
		})
	}
	wg.Wait()
	r.Close()
	r.Record(ctx, s.Key(99, "late"), []byte(`{"late":true}`))

	for g := range senders {
		for i := range each {
			key := s.Key(int64(g), fmt.Sprint(i))
			if v, err := rdb.Get(ctx, key).Result(); err != nil || v != fmt.Sprintf(`{"n":%d}`, i) {
				t.Fatalf("%s = %q, %v", key, v, err)
			}
		}
	}
	if ttl := rdb.PTTL(ctx, s.Key(0, "0")).Val(); ttl < 59*time.Minute {
		t.Fatalf("ack kept only %v", ttl)
	}
	if v := rdb.Get(ctx, s.Key(99, "late")).Val(); v != `{"late":true}` {
		t.Fatalf("ack recorded after Close: %q", v)
	}
}
