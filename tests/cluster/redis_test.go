package cluster_test

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"relay/pkg/protocol"
	"relay/pkg/redis"
	"relay/tests/accounting"
	"relay/tests/e2e/stack"
)

// redisBase is the first Redis Cluster node's port (scripts/cluster.sh).
func redisBase() int {
	if p, err := strconv.Atoi(os.Getenv("REDIS_CLUSTER_PORT")); err == nil {
		return p
	}
	return 7001
}

// redisClient is a cluster client on the local cluster's nodes.
func redisClient(t *testing.T) *goredis.ClusterClient {
	t.Helper()
	var addrs []string
	for i := range 6 {
		addrs = append(addrs, fmt.Sprintf("127.0.0.1:%d", redisBase()+i))
	}
	rc := goredis.NewClusterClient(&goredis.ClusterOptions{Addrs: addrs, ClusterStateReloadInterval: time.Second})
	t.Cleanup(func() { _ = rc.Close() })
	return rc
}

// masterOf returns the port of the master serving slot, as the live nodes
// see it (0 when none does).
func masterOf(ctx context.Context, t *testing.T, rc *goredis.ClusterClient, slot int) int {
	t.Helper()
	shards, err := rc.ClusterShards(ctx).Result()
	if err != nil {
		return 0
	}
	for _, s := range shards {
		for _, r := range s.Slots {
			if int64(slot) < r.Start || int64(slot) > r.End {
				continue
			}
			for _, n := range s.Nodes {
				if n.Role == "master" && n.Health == "online" {
					return int(n.Port)
				}
			}
		}
	}
	return 0
}

// follow dials u through nginx, joins room (from last when given) and
// records every message pushed on that connection in the ledger.
func (c *cluster) follow(ctx context.Context, t *testing.T, u *stack.User, room string, last *int64, l *accounting.Ledger) *stack.Conn {
	t.Helper()
	var err error
	for attempt := 0; attempt < 50; attempt++ {
		rec := l.Connection(u.Username)
		var conn *stack.Conn
		conn, err = stack.DialFunc(ctx, c.ws(), u.Token, func(f protocol.Frame) {
			if f.Event != protocol.EventMessage {
				return
			}
			var m protocol.Message
			if json.Unmarshal(f.Data, &m) == nil && m.RoomID == room {
				rec.Got(m.Seq)
			}
		})
		if err == nil {
			if _, err = conn.Join(ctx, room, last); err == nil {
				return conn
			}
			_ = conn.Close()
		}
		time.Sleep(200 * time.Millisecond)
	}
	t.Fatalf("no gateway took %s: %v", u.Username, err)
	return nil
}

// sendAll sends n messages from u, each retried under its clientMsgId
// (reconnecting when the connection failed) until acked; before sends
// hooks in before a given send.
func (c *cluster) sendAll(ctx context.Context, t *testing.T, u *stack.User, room, prefix string, n int, l *accounting.Ledger, before func(i int)) {
	t.Helper()
	conn := c.follow(ctx, t, u, room, nil, accounting.New())
	defer func() { _ = conn.Close() }()
	for i := range n {
		if before != nil {
			before(i)
		}
		id := fmt.Sprintf("%s%d", prefix, i)
		l.Sent(id)
		for attempt := 0; ; attempt++ {
			sctx, cancel := context.WithTimeout(ctx, 10*time.Second)
			ack, err := conn.Send(sctx, room, "under fire "+id, id)
			cancel()
			if err == nil {
				l.Acked(id, ack.Seq)
				break
			}
			if attempt == 60 {
				t.Fatalf("send %s: %v", id, err)
			}
			time.Sleep(250 * time.Millisecond)
			select {
			case <-conn.Done():
				conn = c.follow(ctx, t, u, room, nil, accounting.New())
			default:
			}
		}
	}
}

// converge waits until the receiver has every acked message; when pushes
// alone do not get there (its connection died with a gateway, or a
// resync_required), it rejoins from the seq before the first it misses, as
// the protocol says. It returns the receiver's connection.
func (c *cluster) converge(ctx context.Context, t *testing.T, u *stack.User, room string, conn *stack.Conn, l *accounting.Ledger) *stack.Conn {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		missing := l.Missing(u.Username)
		if len(missing) == 0 {
			return conn
		}
		dead := false
		select {
		case <-conn.Done():
			dead = true
		default:
		}
		if dead || time.Now().After(deadline) {
			t.Logf("%s: %d acked messages not pushed (first seq %d, connection closed: %v); rejoining from seq %d",
				u.Username, len(missing), missing[0], dead, missing[0]-1)
			_ = conn.Close()
			last := missing[0] - 1
			conn = c.follow(ctx, t, u, room, &last, l)
			eventually(t, "the receiver has every acked message after its rejoin", 30*time.Second, func() bool { return len(l.Missing(u.Username)) == 0 })
			return conn
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// rows is the room's persisted history for the ledger.
func (c *cluster) rows(t *testing.T, ctx context.Context, u *stack.User, room string) []accounting.Persisted {
	t.Helper()
	msgs, err := c.api.AllHistory(ctx, u, room)
	if err != nil {
		t.Fatal(err)
	}
	out := make([]accounting.Persisted, 0, len(msgs))
	for _, m := range msgs {
		out = append(out, accounting.Persisted{ClientMsgID: m.ClientMsgID, Seq: m.Seq})
	}
	return out
}

// settle waits until every acked message is persisted, then checks the
// ledger: nothing lost, nothing duplicated, every receiver has everything.
func (c *cluster) settle(ctx context.Context, t *testing.T, u *stack.User, room string, l *accounting.Ledger, receivers ...string) accounting.Report {
	t.Helper()
	acked := len(l.AckedSeqs())
	eventually(t, "every acked message persisted", 60*time.Second, func() bool { return len(c.rows(t, ctx, u, room)) >= acked })
	r := l.Check(c.rows(t, ctx, u, room), receivers...)
	if !r.OK() {
		t.Fatalf("accounting: %s", r)
	}
	return r
}

// A Redis master is killed (SIGKILL) while a client sends to a room whose
// channel and keys it serves: its replica is promoted, sends resume, every
// acked message is persisted once at its acked seq, and the receiver ends
// up with all of them (by push, or by the rejoin the protocol prescribes).
func TestRedisMasterKilledUnderTraffic(t *testing.T) {
	c := newCluster(t)
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	a, b, room := c.pair(t, ctx)
	roomID, _ := strconv.ParseInt(room, 10, 64)
	prefix := os.Getenv("REDIS_PREFIX")
	if prefix == "" {
		prefix = "relay:"
	}
	slot := redis.Slot(redis.Keys{Prefix: prefix}.RoomChannel(roomID))
	rc := redisClient(t)
	port := masterOf(ctx, t, rc, slot)
	if port == 0 {
		t.Fatal("no master serves the room's slot")
	}
	raw, err := os.ReadFile(filepath.Join(c.root, ".data", "pids", fmt.Sprintf("cluster-redis-%d.pid", port)))
	if err != nil {
		t.Fatal(err)
	}
	pid, _ := strconv.Atoi(strings.TrimSpace(strings.SplitN(string(raw), "\n", 2)[0]))
	t.Cleanup(func() { c.script(t, "redis-start", strconv.Itoa(port)) })

	l := accounting.New()
	receiver := c.follow(ctx, t, b, room, nil, l)
	defer func() { _ = receiver.Close() }()

	const n, killAt = 60, 20
	var killed time.Time
	c.sendAll(ctx, t, a, room, "r", n, l, func(i int) {
		if i != killAt {
			return
		}
		if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		killed = time.Now()
	})
	sent := time.Since(killed)

	// The replica took the slot over.
	eventually(t, "the replica promoted", 60*time.Second, func() bool {
		m := masterOf(ctx, t, rc, slot)
		return m != 0 && m != port
	})
	promoted := masterOf(ctx, t, rc, slot)

	receiver = c.converge(ctx, t, b, room, receiver, l)
	r := c.settle(ctx, t, a, room, l, b.Username)
	t.Logf("killed the Redis master :%d of slot %d after %d sends; its replica :%d serves it; the last %d sends took %v; %s",
		port, slot, killAt, promoted, n-killAt, sent.Round(time.Millisecond), r)
}
