package cluster_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"relay/tests/e2e/stack"
)

// A gateway is killed (SIGKILL) while a client sends: nginx moves both
// clients to another gateway, the sender resends what was not acked under
// the same clientMsgId, the receiver rejoins from the last seq it saw; every
// acked message is persisted exactly once at its acked seq and reaches the
// receiver.
func TestGatewayKilledUnderTraffic(t *testing.T) {
	c := newCluster(t)
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	a, b, room := c.pair(t, ctx)
	join := func(u *stack.User, last *int64) *stack.Conn {
		t.Helper()
		var err error
		for attempt := 0; attempt < 50; attempt++ {
			var conn *stack.Conn
			if conn, err = stack.Dial(ctx, c.ws(), u.Token); err == nil {
				if _, err = conn.Join(ctx, room, last); err == nil {
					return conn
				}
				_ = conn.Close()
			}
			time.Sleep(200 * time.Millisecond)
		}
		t.Fatalf("no gateway took %s back: %v", u.Username, err)
		return nil
	}
	sender, receiver := join(a, nil), join(b, nil)
	defer func() { _ = sender.Close() }()

	// ip_hash puts every loopback client on one gateway: that one dies.
	victim := ""
	for inst := range c.addrs {
		if strings.HasPrefix(inst, "gateway-") && c.metric(t, inst, "gateway_connections") >= 2 {
			victim = inst
		}
	}
	if victim == "" {
		t.Fatal("no gateway holds both clients")
	}
	raw, err := os.ReadFile(filepath.Join(c.root, ".data", "pids", "cluster-"+victim+".pid"))
	if err != nil {
		t.Fatal(err)
	}
	pid, _ := strconv.Atoi(strings.TrimSpace(strings.SplitN(string(raw), "\n", 2)[0]))
	t.Cleanup(func() { c.script(t, "start", victim) })

	const n, killAt = 60, 20
	acked := map[string]int64{}
	for i := 0; i < n; i++ {
		if i == killAt {
			if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
				t.Fatal(err)
			}
		}
		id := fmt.Sprintf("g%d", i)
		for attempt := 0; ; attempt++ {
			ack, err := sender.Send(ctx, room, "under fire "+id, id)
			if err == nil {
				acked[id] = ack.Seq
				break
			}
			if attempt == 20 {
				t.Fatalf("send %s: %v", id, err)
			}
			_ = sender.Close()
			sender = join(a, nil)
		}
	}

	// The receiver's first connection died with the gateway: what it got,
	// then a rejoin from its last seq on the gateway nginx chose now.
	got := map[int64]bool{}
	var last int64
	before, _ := receiver.WaitMessages(ctx, room, 0)
	for _, m := range before {
		got[m.Seq] = true
		last = max(last, m.Seq)
	}
	_ = receiver.Close()
	again := join(b, &last)
	defer again.Close()
	missing := func() int {
		msgs, _ := again.WaitMessages(ctx, room, 0)
		for _, m := range msgs {
			got[m.Seq] = true
		}
		k := 0
		for _, seq := range acked {
			if !got[seq] {
				k++
			}
		}
		return k
	}
	eventually(t, "every acked message at the receiver", 60*time.Second, func() bool { return missing() == 0 })

	// Persisted exactly once (history fails on a duplicate clientMsgId),
	// each at the seq its ack gave.
	eventually(t, "every acked message persisted", 60*time.Second, func() bool { return len(c.history(t, ctx, a, room)) >= n })
	hist := c.history(t, ctx, a, room)
	for id, seq := range acked {
		if hist[id] != seq {
			t.Fatalf("%s acked at seq %d, persisted at %d", id, seq, hist[id])
		}
	}
	if len(hist) != n {
		t.Fatalf("%d messages persisted, %d acked", len(hist), n)
	}
	t.Logf("killed %s after %d sends; %d acked, all delivered and persisted once", victim, killAt, len(acked))
}
