package worker_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"testing"
	"time"

	"github.com/IBM/sarama"

	"relay/pkg/kafka"
	"relay/pkg/testenv"
)

// committed returns the group's committed offset of partition 0 (-1: none).
func (e *env) committed(t *testing.T, group string) int64 {
	t.Helper()
	admin, err := sarama.NewClusterAdmin(e.brokers, kafka.ConsumerConfig("delivery-test-admin"))
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close()
	resp, err := admin.ListConsumerGroupOffsets(group, map[string][]int32{e.topic: {0}})
	if err != nil {
		return -1 // the group has not joined yet
	}
	if b := resp.GetBlock(e.topic, 0); b != nil {
		return b.Offset
	}
	return -1
}

func eventually(t *testing.T, what string, cond func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		ok, detail := cond()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s: %s", what, detail)
		}
		time.Sleep(25 * time.Millisecond)
	}
}

// While Redis is unreachable the worker retries the record at the head of
// the partition, publishes nothing, commits nothing; once Redis is back it
// publishes everything in order.
func TestDeliveryRedisOutage(t *testing.T) {
	t.Parallel()
	e := newEnv(t, 1)
	ctx := context.Background()
	const room = 55
	pubs := e.subscribe(t, room) // directly, not through the proxy
	proxy, proxied := testenv.NewProxy(t, e.redisURL)
	cfg := e.config()
	cfg.Redis.URL = proxied
	r := start(t, cfg)

	first := e.publish(t, ctx, message(room, 1, "before"))
	checkChain(t, receive(t, pubs, 1), nil, []int64{first})
	eventually(t, "first offset committed", func() (bool, string) {
		c := e.committed(t, cfg.Group)
		return c == first+1, fmt.Sprintf("committed %d", c)
	})

	proxy.SetDown(true)
	var seqs []int64
	for i := range 3 {
		seqs = append(seqs, e.publish(t, ctx, message(room, 1, fmt.Sprint("during ", i))))
	}
	eventually(t, "publish failing", func() (bool, string) {
		n := r.counter(t, "delivery_redis_errors_total")
		return n >= 2, fmt.Sprintf("%v redis errors", n)
	})
	if code, _ := httpGet(t, r.addr, "/ready"); code != 503 {
		t.Fatalf("/ready with Redis down = %d", code)
	}
	if c := e.committed(t, cfg.Group); c != first+1 {
		t.Fatalf("committed %d while Redis was down, want %d", c, first+1)
	}
	select {
	case p := <-pubs:
		t.Fatalf("published seq %d while Redis was down", p.Seq)
	default:
	}

	proxy.SetDown(false)
	checkChain(t, receive(t, pubs, 3), &first, seqs)
	eventually(t, "all committed", func() (bool, string) {
		c := e.committed(t, cfg.Group)
		return c == seqs[2]+1, fmt.Sprintf("committed %d", c)
	})
}

func httpGet(t *testing.T, addr, path string) (int, []byte) {
	t.Helper()
	resp, err := (&http.Client{Timeout: 10 * time.Second}).Get("http://" + addr + path)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, b
}

// When Redis loses a room's seq while the worker has it cached, the
// script reports Stale; the worker re-renders without prevSeq (docs/architecture.md:
// receivers then recover) and the chain continues from there.
func TestDeliveryRedisLostSeq(t *testing.T) {
	t.Parallel()
	e := newEnv(t, 1)
	ctx := context.Background()
	const room = 66
	pubs := e.subscribe(t, room)
	r := start(t, e.config())

	first := e.publish(t, ctx, message(room, 1, "one"))
	checkChain(t, receive(t, pubs, 1), nil, []int64{first})
	if err := e.rdb.Del(ctx, e.keys.RoomSeq(room)).Err(); err != nil {
		t.Fatal(err)
	}
	second := e.publish(t, ctx, message(room, 1, "two"))
	third := e.publish(t, ctx, message(room, 1, "three"))
	checkChain(t, receive(t, pubs, 2), nil, []int64{second, third})
	if n := r.counter(t, "delivery_stale_retries_total"); n != 1 {
		t.Fatalf("stale retries = %v, want 1", n)
	}
}
