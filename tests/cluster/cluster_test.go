// Package cluster_test runs against the local cluster mode (`make
// test-cluster` starts it with scripts/cluster.sh): the message path
// through nginx, a stopped PostgreSQL replica and a killed gateway, each
// with an account of every acked message.
package cluster_test

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"relay/tests/accounting"
	"relay/tests/e2e/stack"
)

// cluster is what scripts/cluster.sh started.
type cluster struct {
	root string
	edge string // http://127.0.0.1:3000
	// addrs are the instances' own listeners (metrics), by instance name.
	addrs map[string]string
	api   *stack.API
}

func newCluster(t *testing.T) *cluster {
	t.Helper()
	if os.Getenv("RELAY_CLUSTER_IT") == "" {
		t.Skip("cluster mode test: run `make test-cluster`")
	}
	root, err := stack.WorkspaceRoot(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	off, _ := strconv.Atoi(os.Getenv("CLUSTER_PORT_OFFSET"))
	c := &cluster{root: root, edge: fmt.Sprintf("http://127.0.0.1:%d", 3000+off), addrs: map[string]string{}}
	b, err := os.ReadFile(filepath.Join(root, ".data", "cluster", "instances"))
	if err != nil {
		t.Fatalf("no running cluster (scripts/cluster.sh up): %v", err)
	}
	for _, line := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		if f := strings.Fields(line); len(f) == 2 {
			c.addrs[f[0]] = f[1]
		}
	}
	c.api = stack.NewAPI(c.edge)
	return c
}

func (c *cluster) script(t *testing.T, args ...string) {
	t.Helper()
	out, err := exec.Command(filepath.Join(c.root, "scripts", "cluster.sh"), args...).CombinedOutput()
	if err != nil {
		t.Fatalf("cluster.sh %v: %v\n%s", args, err, out)
	}
}

// metric reads a series of an instance's /metrics, summed over its label
// sets unless series names them (0 when absent).
func (c *cluster) metric(t *testing.T, inst, series string) float64 {
	t.Helper()
	resp, err := http.Get("http://" + c.addrs[inst] + "/metrics")
	if err != nil {
		return -1
	}
	defer resp.Body.Close()
	var buf bytes.Buffer
	_, _ = buf.ReadFrom(resp.Body)
	sc := bufio.NewScanner(&buf)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	// The sum over the series' label sets (gateway_connections is per
	// protocol), or its one unlabelled sample.
	sum := 0.0
	for sc.Scan() {
		line, ok := strings.CutPrefix(sc.Text(), series)
		if !ok {
			continue
		}
		if strings.HasPrefix(line, "{") {
			_, line, ok = strings.Cut(line, "} ")
		} else {
			line, ok = strings.CutPrefix(line, " ")
		}
		if ok {
			f, _ := strconv.ParseFloat(line, 64)
			sum += f
		}
	}
	return sum
}

func (c *cluster) ws() string { return "ws" + strings.TrimPrefix(c.edge, "http") + "/ws" }

// pair registers two users through nginx and gives them a room.
func (c *cluster) pair(t *testing.T, ctx context.Context) (a, b *stack.User, room string) {
	t.Helper()
	suffix := strconv.FormatInt(time.Now().UnixNano()%1e9, 36)
	var err error
	if a, err = c.api.Register(ctx, "ca"+suffix, "correct horse battery"); err != nil {
		t.Fatal(err)
	}
	if b, err = c.api.Register(ctx, "cb"+suffix, "correct horse battery"); err != nil {
		t.Fatal(err)
	}
	r, err := c.api.CreateRoom(ctx, a, "cluster-"+suffix, "group", b)
	if err != nil {
		t.Fatal(err)
	}
	return a, b, r.ID
}

func eventually(t *testing.T, what string, d time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %s", what, d)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// history is the room's persisted messages by clientMsgId, each once.
func (c *cluster) history(t *testing.T, ctx context.Context, u *stack.User, room string) map[string]int64 {
	t.Helper()
	msgs, err := c.api.AllHistory(ctx, u, room)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]int64{}
	for _, m := range msgs {
		if _, dup := out[m.ClientMsgID]; dup {
			t.Fatalf("clientMsgId %s twice in history", m.ClientMsgID)
		}
		out[m.ClientMsgID] = m.Seq
	}
	return out
}

// The message path through nginx: sign-up and rooms over /api, both users
// on /ws, every message delivered in order and persisted, and history read
// from the replica.
func TestMessagePathThroughNginx(t *testing.T) {
	c := newCluster(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	a, b, room := c.pair(t, ctx)
	ca, err := stack.Dial(ctx, c.ws(), a.Token)
	if err != nil {
		t.Fatal(err)
	}
	defer ca.Close()
	cb, err := stack.Dial(ctx, c.ws(), b.Token)
	if err != nil {
		t.Fatal(err)
	}
	defer cb.Close()
	for _, conn := range []*stack.Conn{ca, cb} {
		if _, err := conn.Join(ctx, room, nil); err != nil {
			t.Fatal(err)
		}
	}
	const n = 20
	acked := map[string]int64{}
	for i := 0; i < n; i++ {
		id := fmt.Sprintf("m%d", i)
		ack, err := ca.Send(ctx, room, "hello "+id, id)
		if err != nil {
			t.Fatal(err)
		}
		acked[id] = ack.Seq
	}
	msgs, err := cb.WaitMessages(ctx, room, n)
	if err != nil {
		t.Fatal(err)
	}
	for i, m := range msgs {
		if want := acked[fmt.Sprintf("m%d", i)]; m.Seq != want {
			t.Fatalf("delivery %d has seq %d, want %d (in order)", i, m.Seq, want)
		}
	}
	before := c.metric(t, "api", `relay_api_db_reads_total{server="replica"}`)
	eventually(t, "all acked messages in history", 30*time.Second, func() bool {
		return len(c.history(t, ctx, a, room)) == n
	})
	for id, seq := range c.history(t, ctx, a, room) {
		if acked[id] != seq {
			t.Fatalf("history has %s at seq %d, acked %d", id, seq, acked[id])
		}
	}
	if after := c.metric(t, "api", `relay_api_db_reads_total{server="replica"}`); after <= before {
		t.Fatalf("history reads on the replica %v -> %v: reads do not reach the replica", before, after)
	}
}

// The replica stops: history keeps answering, from the primary, with
// everything acked (the ledger of tests/accounting); once it is back,
// reads return to it.
func TestReplicaStoppedReadsFallBack(t *testing.T) {
	c := newCluster(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	a, b, room := c.pair(t, ctx)
	l := accounting.New()
	receiver := c.follow(ctx, t, b, room, nil, l)
	defer func() { _ = receiver.Close() }()
	c.sendAll(ctx, t, a, room, "r", 10, l, nil)
	c.settle(ctx, t, a, room, l, b.Username)

	c.script(t, "replica-down")
	t.Cleanup(func() { c.script(t, "replica-up") })
	primary := c.metric(t, "api", `relay_api_db_reads_total{server="primary"}`)
	c.sendAll(ctx, t, a, room, "s", 10, l, nil)
	receiver = c.converge(ctx, t, b, room, receiver, l)
	r := c.settle(ctx, t, a, room, l, b.Username)
	if p := c.metric(t, "api", `relay_api_db_reads_total{server="primary"}`); p <= primary {
		t.Fatalf("primary reads %v -> %v with the replica down", primary, p)
	}

	c.script(t, "replica-up")
	replica := c.metric(t, "api", `relay_api_db_reads_total{server="replica"}`)
	eventually(t, "reads back on the replica", 30*time.Second, func() bool {
		return len(c.history(t, ctx, a, room)) == 20 && c.metric(t, "api", `relay_api_db_reads_total{server="replica"}`) > replica
	})
	t.Logf("replica stopped and started: %s", r)
}
