package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/IBM/sarama"
)

const testTopic = "chat.messages"

// saramaConfig is the producer/consumer configuration the services are
// expected to use against the dev broker; the test proves it works.
func saramaConfig() *sarama.Config {
	c := sarama.NewConfig()
	c.ClientID = "kafkabroker-test"
	c.Version = sarama.V2_8_0_0
	c.Net.MaxOpenRequests = 1 // required by sarama for idempotence
	c.Producer.Idempotent = true
	c.Producer.RequiredAcks = sarama.WaitForAll
	c.Producer.Retry.Max = 5
	c.Producer.Retry.Backoff = 50 * time.Millisecond
	c.Producer.Return.Successes = true
	c.Producer.Return.Errors = true
	c.Producer.Partitioner = sarama.NewHashPartitioner
	c.Consumer.Offsets.Initial = sarama.OffsetOldest
	c.Consumer.Offsets.AutoCommit.Enable = false // commit explicitly: the test checks they persist
	c.Consumer.Group.Rebalance.GroupStrategies = []sarama.BalanceStrategy{sarama.NewBalanceStrategyRoundRobin()}
	c.Metadata.Retry.Backoff = 50 * time.Millisecond
	return c
}

func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("listen: %v", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

func testLogger(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelInfo}))
}

func startBroker(t *testing.T, cfg Config) *Broker {
	t.Helper()
	b, err := Start(cfg, testLogger(t))
	if err != nil {
		t.Fatalf("start broker: %v", err)
	}
	return b
}

func closeBroker(t *testing.T, b *Broker) {
	t.Helper()
	if err := b.Close(context.Background()); err != nil {
		t.Fatalf("close broker: %v", err)
	}
}

// produce sends n keyed messages with an idempotent producer and returns the
// acked offset per message.
func produce(t *testing.T, addr string, from, n int) map[string]int64 {
	t.Helper()
	p, err := sarama.NewSyncProducer([]string{addr}, saramaConfig())
	if err != nil {
		t.Fatalf("new idempotent producer: %v", err)
	}
	defer p.Close()
	acked := make(map[string]int64, n)
	for i := from; i < from+n; i++ {
		key := fmt.Sprintf("conv-%d", i%7)
		val := fmt.Sprintf("msg-%d", i)
		part, off, err := p.SendMessage(&sarama.ProducerMessage{Topic: testTopic, Key: sarama.StringEncoder(key), Value: sarama.StringEncoder(val)})
		if err != nil {
			t.Fatalf("send %s: %v", val, err)
		}
		if off < 0 || part < 0 || part >= 12 {
			t.Fatalf("send %s: bad ack partition=%d offset=%d", val, part, off)
		}
		acked[val] = off
	}
	return acked
}

type collectHandler struct {
	mu    sync.Mutex
	seen  map[string]bool
	want  int
	done  chan struct{}
	close sync.Once
}

func (h *collectHandler) Setup(sarama.ConsumerGroupSession) error   { return nil }
func (h *collectHandler) Cleanup(sarama.ConsumerGroupSession) error { return nil }
func (h *collectHandler) ConsumeClaim(s sarama.ConsumerGroupSession, c sarama.ConsumerGroupClaim) error {
	for m := range c.Messages() {
		s.MarkMessage(m, "")
		h.mu.Lock()
		h.seen[string(m.Value)] = true
		n := len(h.seen)
		h.mu.Unlock()
		if n >= h.want {
			s.Commit() // synchronous flush so the offsets are on the broker before we restart it
			h.close.Do(func() { close(h.done) })
		}
	}
	return nil
}

// consumeGroup reads until want distinct values were seen and commits.
func consumeGroup(t *testing.T, addr, group string, want int) map[string]bool {
	t.Helper()
	cg, err := sarama.NewConsumerGroup([]string{addr}, group, saramaConfig())
	if err != nil {
		t.Fatalf("new consumer group: %v", err)
	}
	h := &collectHandler{seen: map[string]bool{}, want: want, done: make(chan struct{})}
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	errc := make(chan error, 1)
	go func() {
		for ctx.Err() == nil {
			if err := cg.Consume(ctx, []string{testTopic}, h); err != nil && !errors.Is(err, sarama.ErrClosedConsumerGroup) {
				errc <- err
				return
			}
		}
		errc <- nil
	}()
	select {
	case <-h.done:
	case <-ctx.Done():
		t.Fatalf("consumer group saw %d/%d messages before timeout", len(h.seen), want)
	}
	cancel()
	if err := cg.Close(); err != nil {
		t.Fatalf("close consumer group: %v", err)
	}
	if err := <-errc; err != nil {
		t.Fatalf("consume: %v", err)
	}
	return h.seen
}

// TestSaramaIdempotentProduceConsumeAndRestart proves the sarama settings in
// saramaConfig work against kfake and that -data-dir keeps topics, records
// and committed group offsets across a restart.
func TestSaramaIdempotentProduceConsumeAndRestart(t *testing.T) {
	dir := t.TempDir()
	addr := "127.0.0.1:" + strconv.Itoa(freePort(t))
	cfg := Config{Addr: addr, DataDir: dir, Topics: []topicSpec{{Name: testTopic, Partitions: 12}}, SyncWrites: true, LogLevel: slog.LevelWarn}

	b := startBroker(t, cfg)
	if got := b.Partitions(testTopic); got != 12 {
		t.Fatalf("partitions = %d, want 12", got)
	}
	const n = 40
	acked := produce(t, b.Addr(), 0, n)
	if len(acked) != n {
		t.Fatalf("acked %d, want %d", len(acked), n)
	}
	seen := consumeGroup(t, b.Addr(), "persister", n)
	for v := range acked {
		if !seen[v] {
			t.Fatalf("consumer group missed %s", v)
		}
	}
	closeBroker(t, b)

	// Restart with a different partition count for the existing topic (must
	// be ignored) and a new topic (must be created).
	cfg.Topics = []topicSpec{{Name: testTopic, Partitions: 3}, {Name: "chat.extra", Partitions: 2}}
	b = startBroker(t, cfg)
	defer closeBroker(t, b)
	if got := b.Partitions(testTopic); got != 12 {
		t.Fatalf("after restart partitions = %d, want 12 (unchanged)", got)
	}
	if got := b.Partitions("chat.extra"); got != 2 {
		t.Fatalf("new topic partitions = %d, want 2", got)
	}

	client, err := sarama.NewClient([]string{b.Addr()}, saramaConfig())
	if err != nil {
		t.Fatalf("client after restart: %v", err)
	}
	defer client.Close()
	parts, err := client.Partitions(testTopic)
	if err != nil {
		t.Fatalf("partitions: %v", err)
	}
	var total int64
	for _, p := range parts {
		hw, err := client.GetOffset(testTopic, p, sarama.OffsetNewest)
		if err != nil {
			t.Fatalf("offset p%d: %v", p, err)
		}
		total += hw
	}
	if total != n {
		t.Fatalf("records after restart = %d, want %d", total, n)
	}

	admin, err := sarama.NewClusterAdminFromClient(client)
	if err != nil {
		t.Fatalf("admin: %v", err)
	}
	offs, err := admin.ListConsumerGroupOffsets("persister", map[string][]int32{testTopic: parts})
	if err != nil {
		t.Fatalf("group offsets: %v", err)
	}
	var committed int64
	for _, blk := range offs.Blocks[testTopic] {
		if blk.Offset > 0 {
			committed += blk.Offset
		}
	}
	if committed != n {
		t.Fatalf("committed offsets after restart sum to %d, want %d", committed, n)
	}

	// A new idempotent producer (new producer ID) continues after the
	// persisted offsets, and the group resumes from its commit.
	produce(t, b.Addr(), n, 5)
	seen = consumeGroup(t, b.Addr(), "persister", 5)
	for v := range seen {
		var i int
		if _, err := fmt.Sscanf(v, "msg-%d", &i); err != nil || i < n {
			t.Fatalf("group re-read %q after restart; committed offsets were not honoured", v)
		}
	}
}

func TestParseConfig(t *testing.T) {
	env := map[string]string{"KAFKABROKER_TOPICS": "a:2,b", "KAFKABROKER_SYNC": "false"}
	cfg, err := parseConfig(nil, func(k string) string { return env[k] }, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Addr != "127.0.0.1:9092" || cfg.SyncWrites || len(cfg.Topics) != 2 || cfg.Topics[0].Partitions != 2 || cfg.Topics[1].Partitions != -1 {
		t.Fatalf("env config: %+v", cfg)
	}
	cfg, err = parseConfig([]string{"-topic", "chat.messages:12", "-topic", "x:1", "-sync", "-addr", "127.0.0.1:0"}, func(k string) string { return env[k] }, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if !cfg.SyncWrites || len(cfg.Topics) != 2 || cfg.Topics[0].Name != "chat.messages" || cfg.Topics[0].Partitions != 12 {
		t.Fatalf("flag config: %+v", cfg)
	}
	if def, _ := parseConfig(nil, func(string) string { return "" }, io.Discard); !def.SyncWrites {
		t.Fatal("sync writes must default to on")
	}
	for _, bad := range [][]string{{"-topic", "x:0"}, {"-topic", ":3"}, {"-log-level", "loud"}, {"extra"}} {
		if _, err := parseConfig(bad, func(string) string { return "" }, io.Discard); err == nil {
			t.Fatalf("parseConfig(%v) succeeded, want error", bad)
		}
	}
	if _, err := Start(Config{Addr: "0.0.0.0:0"}, slog.Default()); err == nil {
		t.Fatal("non-loopback addr accepted")
	}
}

// TestSmokeExternalBroker checks an already running broker (e.g. the one
// scripts/deps.sh started) with the same sarama settings. It is skipped
// unless KAFKABROKER_SMOKE_ADDR is set, e.g.
//
//	KAFKABROKER_SMOKE_ADDR=127.0.0.1:9092 go test -run Smoke -v ./cmd/kafkabroker
func TestSmokeExternalBroker(t *testing.T) {
	addr := os.Getenv("KAFKABROKER_SMOKE_ADDR")
	if addr == "" {
		t.Skip("KAFKABROKER_SMOKE_ADDR not set")
	}
	client, err := sarama.NewClient([]string{addr}, saramaConfig())
	if err != nil {
		t.Fatalf("client: %v", err)
	}
	defer client.Close()
	parts, err := client.Partitions(testTopic)
	if err != nil {
		t.Fatalf("partitions: %v", err)
	}
	total := func() int64 {
		var n int64
		for _, p := range parts {
			hw, err := client.GetOffset(testTopic, p, sarama.OffsetNewest)
			if err != nil {
				t.Fatalf("offset p%d: %v", p, err)
			}
			n += hw
		}
		return n
	}
	before := total()
	t.Logf("%s has %d partitions and %d records before", testTopic, len(parts), before)
	const n = 10
	produce(t, addr, int(before), n)
	if after := total(); after != before+n {
		t.Fatalf("records after produce = %d, want %d", after, before+n)
	}
	group := fmt.Sprintf("smoke-%d", time.Now().UnixNano())
	seen := consumeGroup(t, addr, group, int(before)+n)
	t.Logf("group %s consumed %d distinct values; %d records total now", group, len(seen), before+n)
}
