package cluster_test

import (
	"context"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"relay/tests/accounting"
)

// A gateway is killed (SIGKILL) while a client sends: nginx moves both
// clients to another gateway, the sender resends what was not acked under
// the same clientMsgId, the receiver rejoins from the last seq it saw; every
// acked message is persisted exactly once at its acked seq and reaches the
// receiver (the ledger of tests/accounting).
func TestGatewayKilledUnderTraffic(t *testing.T) {
	c := newCluster(t)
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	a, b, room := c.pair(t, ctx)
	l := accounting.New()
	receiver := c.follow(ctx, t, b, room, nil, l)
	defer func() { _ = receiver.Close() }()

	const n, killAt = 60, 20
	victim := ""
	c.sendAll(ctx, t, a, room, "g", n, l, func(i int) {
		if i != killAt {
			return
		}
		// ip_hash puts every loopback client on one gateway: that one dies.
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
		if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
	})
	receiver = c.converge(ctx, t, b, room, receiver, l)
	r := c.settle(ctx, t, a, room, l, b.Username)
	t.Logf("killed %s after %d sends; %s", victim, killAt, r)
}
