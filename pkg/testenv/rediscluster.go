package testenv

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"relay/pkg/config"
)

// RedisCluster is a Redis Cluster private to one test: Debian's
// redis-server (installed by `make deps`) on free loopback ports, three
// masters and, when asked, a replica of each, with a short node timeout so
// a failover takes a few seconds. Its nodes are killed and their
// directories deleted when the test ends.
type RedisCluster struct {
	// Addrs are the nodes' host:port, masters first as created.
	Addrs []string
	// Config reaches the cluster as the services do (REDIS_URL with every
	// node as a seed, REDIS_CLUSTER=true) under a prefix of the test's own.
	Config config.Redis

	dir   string
	procs []*exec.Cmd
}

// StartRedisCluster starts three masters, each with replicas replicas (0
// or 1), waits for cluster_state:ok and returns the cluster.
func StartRedisCluster(t testing.TB, replicas int) *RedisCluster {
	t.Helper()
	server, err := exec.LookPath("redis-server")
	if err != nil {
		t.Fatalf("testenv: RedisCluster needs redis-server (Debian's redis-server package; `make deps`): %v", err)
	}
	cli, err := exec.LookPath("redis-cli")
	if err != nil {
		t.Fatalf("testenv: RedisCluster needs redis-cli: %v", err)
	}
	dir, err := os.MkdirTemp("", "relay-rediscluster-")
	if err != nil {
		t.Fatal(err)
	}
	c := &RedisCluster{dir: dir}
	t.Cleanup(c.stop)
	for range 3 * (1 + replicas) {
		port := clusterPort(t)
		addr := "127.0.0.1:" + strconv.Itoa(port)
		nd := filepath.Join(dir, strconv.Itoa(port))
		if err := os.MkdirAll(nd, 0o755); err != nil {
			t.Fatal(err)
		}
		log, err := os.Create(filepath.Join(nd, "redis.log"))
		if err != nil {
			t.Fatal(err)
		}
		cmd := exec.Command(server, "--port", strconv.Itoa(port), "--bind", "127.0.0.1", "--dir", nd,
			"--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf", "--cluster-node-timeout", "2000",
			"--appendonly", "yes", "--save", "", "--daemonize", "no", "--repl-diskless-sync-delay", "0")
		cmd.Stdout, cmd.Stderr = log, log
		if err := cmd.Start(); err != nil {
			t.Fatalf("testenv: redis-server: %v", err)
		}
		_ = log.Close()
		c.procs = append(c.procs, cmd)
		c.Addrs = append(c.Addrs, addr)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	for i, a := range c.Addrs {
		if err := waitPing(ctx, a); err != nil {
			t.Fatalf("testenv: redis node %s: %v\n%s", a, err, c.Log(i))
		}
	}
	args := append([]string{"--cluster", "create"}, c.Addrs...)
	args = append(args, "--cluster-replicas", strconv.Itoa(replicas), "--cluster-yes")
	if out, err := exec.CommandContext(ctx, cli, args...).CombinedOutput(); err != nil {
		t.Fatalf("testenv: redis-cli --cluster create: %v\n%s", err, out)
	}
	for _, a := range c.Addrs {
		if err := WaitClusterOK(ctx, a); err != nil {
			t.Fatalf("testenv: %v", err)
		}
		// A replica that never finished its first sync cannot take over.
		if err := WaitReplicaSynced(ctx, a); err != nil {
			t.Fatalf("testenv: %v", err)
		}
	}
	url := "redis://" + c.Addrs[0]
	for i, a := range c.Addrs[1:] {
		sep := "&"
		if i == 0 {
			sep = "?"
		}
		url += sep + "addr=" + a
	}
	c.Config = config.Redis{URL: url, Cluster: true, Prefix: RandomName("test:") + ":"}
	return c
}

// Client returns a cluster client of the test, closed when it ends.
func (c *RedisCluster) Client(t testing.TB) *goredis.ClusterClient {
	t.Helper()
	opt, err := goredis.ParseClusterURL(c.Config.URL)
	if err != nil {
		t.Fatal(err)
	}
	rc := goredis.NewClusterClient(opt)
	t.Cleanup(func() { _ = rc.Close() })
	return rc
}

// Kill ends node i with SIGKILL (a crash: no shutdown, no last write).
func (c *RedisCluster) Kill(i int) error {
	p := c.procs[i]
	if err := p.Process.Signal(syscall.SIGKILL); err != nil {
		return err
	}
	_ = p.Wait()
	return nil
}

// Log is node i's server log.
func (c *RedisCluster) Log(i int) string {
	port := c.Addrs[i][strings.LastIndexByte(c.Addrs[i], ':')+1:]
	b, _ := os.ReadFile(filepath.Join(c.dir, port, "redis.log"))
	return string(b)
}

func (c *RedisCluster) stop() {
	for _, p := range c.procs {
		if p.ProcessState == nil {
			_ = p.Process.Signal(syscall.SIGKILL)
			_ = p.Wait()
		}
	}
	_ = os.RemoveAll(c.dir)
}

// WaitClusterOK waits until the node at addr reports cluster_state:ok
// (every slot served by a reachable master).
func WaitClusterOK(ctx context.Context, addr string) error {
	rc := goredis.NewClient(&goredis.Options{Addr: addr, MaxRetries: -1})
	defer rc.Close()
	for {
		info, err := rc.ClusterInfo(ctx).Result()
		if err == nil && strings.Contains(info, "cluster_state:ok") {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("redis node %s: no cluster_state:ok (last: %v %q)", addr, err, firstLine(info))
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// WaitReplicaSynced waits, when the node at addr is a replica, until its
// link to its master is up (the first full sync done): only then can it be
// promoted.
func WaitReplicaSynced(ctx context.Context, addr string) error {
	rc := goredis.NewClient(&goredis.Options{Addr: addr, MaxRetries: -1})
	defer rc.Close()
	for {
		info, err := rc.Info(ctx, "replication").Result()
		if err == nil && (strings.Contains(info, "role:master") || strings.Contains(info, "master_link_status:up")) {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("redis replica %s: not in sync with its master (%v)", addr, err)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

func firstLine(s string) string {
	line, _, _ := strings.Cut(s, "\n")
	return strings.TrimSpace(line)
}

func waitPing(ctx context.Context, addr string) error {
	rc := goredis.NewClient(&goredis.Options{Addr: addr, MaxRetries: -1})
	defer rc.Close()
	for {
		err := rc.Ping(ctx).Err()
		if err == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return err
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// clusterPort picks a free port whose cluster bus port (+10000) is free
// and below 65536, as redis-server needs both.
func clusterPort(t testing.TB) int {
	t.Helper()
	portsMu.Lock()
	defer portsMu.Unlock()
	for range 1000 {
		port := 20000 + rand.IntN(25000)
		if ports[port] || ports[port+10000] {
			continue
		}
		a, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(port))
		if err != nil {
			continue
		}
		b, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(port+10000))
		_ = a.Close()
		if err != nil {
			continue
		}
		_ = b.Close()
		ports[port], ports[port+10000] = true, true
		return port
	}
	t.Fatal("testenv: no free port pair for a Redis Cluster node")
	return 0
}
