// Command presencebench measures the presence service under the load of
// the issue: N connections on G fake gateways heartbeating every interval
// (at the real per-second rate), plus typing. It starts the presence
// binary as a child process on its own Redis prefix, and reports the CPU
// seconds the presence process and redis-server used during the window
// (from /proc/<pid>/stat), and the latency from a typing command's
// Publisher call to the typing event on the room channel.
//
//	go build -o /tmp/presence ./services/presence
//	go run ./tools/cmd/presencebench -presence-bin /tmp/presence
//
// The service gets a scratch PostgreSQL database (migrated, with the N
// users), dropped at the end. Redis is shared: its idle CPU is measured
// first and subtracted.
package main

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"os/signal"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	_ "github.com/jackc/pgx/v5/stdlib" // database/sql driver "pgx"
	goredis "github.com/redis/go-redis/v9"

	"relay/pkg/config"
	"relay/pkg/presence"
	"relay/pkg/protocol"
	"relay/pkg/store"
)

const userBase = 1

type options struct {
	bin        string
	conns      int
	gateways   int
	interval   time.Duration
	window     time.Duration
	idle       time.Duration
	typingRate int
	rooms      int
}

func main() {
	var o options
	flag.StringVar(&o.bin, "presence-bin", "", "path of the built presence service binary (required)")
	flag.IntVar(&o.conns, "conns", 10000, "connections (one user each)")
	flag.IntVar(&o.gateways, "gateways", 2, "fake gateways")
	flag.DurationVar(&o.interval, "interval", 15*time.Second, "heartbeat interval of each connection")
	flag.DurationVar(&o.window, "window", 30*time.Second, "measured window")
	flag.DurationVar(&o.idle, "idle", 10*time.Second, "window measuring redis-server's idle CPU first")
	flag.IntVar(&o.typingRate, "typing-rate", 20, "typing starts per second (each stopped 1 s later)")
	flag.IntVar(&o.rooms, "rooms", 200, "rooms typed in")
	flag.Parse()
	if err := run(o); err != nil {
		fmt.Fprintln(os.Stderr, "presencebench:", err)
		os.Exit(1)
	}
}

func run(o options) error {
	if o.bin == "" {
		return errors.New("-presence-bin required (go build -o /tmp/presence ./services/presence)")
	}
	if o.conns < 1 || o.gateways < 1 || o.interval <= 0 || o.window <= 0 || o.typingRate < 0 || o.rooms < 1 {
		return errors.New("bad flags")
	}
	rc, err := config.Load[config.Redis]()
	if err != nil {
		return err
	}
	pg, err := config.Load[config.Postgres]()
	if err != nil {
		return err
	}
	ctx, stop := signalContext()
	defer stop()
	dbURL, dropDB, err := scratchDatabase(ctx, pg.URL, o.conns)
	if err != nil {
		return err
	}
	defer dropDB()
	opt, err := goredis.ParseURL(rc.URL)
	if err != nil {
		return err
	}
	opt.PoolSize = 32
	rdb := goredis.NewClient(opt)
	defer rdb.Close()
	prefix := fmt.Sprintf("bench:%x:", rand.Uint32())
	keys := presence.NewKeys(prefix)
	defer cleanup(rdb, prefix)

	redisPID, err := redisPid(ctx, rdb)
	if err != nil {
		return err
	}
	port, err := freePort()
	if err != nil {
		return err
	}
	cmd := exec.Command(o.bin)
	cmd.Env = append(os.Environ(), "REDIS_PREFIX="+prefix, "DATABASE_URL="+dbURL, "HTTP_ADDR="+port, "LOG_LEVEL=warn",
		"PRESENCE_TIMEOUT="+(2*o.interval).String(), "PRESENCE_HEARTBEAT_INTERVAL="+o.interval.String())
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start presence: %w", err)
	}
	defer func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		_ = cmd.Wait()
	}()
	if err := waitReady(ctx, "http://"+port+"/ready"); err != nil {
		return err
	}
	fmt.Printf("presence pid %d on %s, redis-server pid %d, prefix %s\n", cmd.Process.Pid, port, redisPID, prefix)

	idle, err := cpuOver(ctx, redisPID, o.idle)
	if err != nil {
		return err
	}
	fmt.Printf("redis-server idle: %.3f CPU s over %v\n", idle, o.idle)

	pubs := make([]*presence.Publisher, o.gateways)
	for g := range pubs {
		if pubs[g], err = presence.NewPublisher(rdb, keys, fmt.Sprintf("bench-gw-%d", g), presence.PublisherOptions{}); err != nil {
			return err
		}
		defer pubs[g].Close(context.Background())
	}
	conns := make([][]presence.Conn, o.gateways)
	start := time.Now()
	cp0, err := cpuSeconds(cmd.Process.Pid)
	if err != nil {
		return err
	}
	for i := range o.conns {
		g := i % o.gateways
		c := presence.Conn{UserID: userBase + int64(i), ConnID: "c" + strconv.Itoa(i)}
		conns[g] = append(conns[g], c)
		if err := pubs[g].Connect(ctx, c.UserID, "u"+strconv.Itoa(i), c.ConnID); err != nil {
			return err
		}
	}
	for {
		n, err := rdb.ZCard(ctx, keys.Online()).Result()
		if err != nil {
			return err
		}
		if n == int64(o.conns) {
			break
		}
		if time.Since(start) > 2*time.Minute {
			return fmt.Errorf("only %d of %d online after 2 minutes", n, o.conns)
		}
		time.Sleep(50 * time.Millisecond)
	}
	fmt.Printf("%d connections online after %v\n", o.conns, time.Since(start).Round(time.Millisecond))
	// The window measures the steady state: first let the PostgreSQL sync
	// of the 10,000 online transitions finish.
	if err := waitSynced(ctx, rdb, keys, dbURL, o.conns); err != nil {
		return err
	}
	cp1, err := cpuSeconds(cmd.Process.Pid)
	if err != nil {
		return err
	}
	fmt.Printf("users.is_online true for all %d after %v; presence used %.2f CPU s for the connects and the sync\n",
		o.conns, time.Since(start).Round(time.Millisecond), cp1-cp0)

	lat := &latencies{sent: map[string]time.Time{}}
	sub, err := subscribeRooms(ctx, rdb, keys, o.rooms, lat)
	if err != nil {
		return err
	}
	defer sub.Close()

	p0, err := cpuSeconds(cmd.Process.Pid)
	if err != nil {
		return err
	}
	r0, err := cpuSeconds(redisPID)
	if err != nil {
		return err
	}
	wctx, cancel := context.WithTimeout(ctx, o.window)
	defer cancel()
	var wg sync.WaitGroup
	var renewed, typed int
	var mu sync.Mutex
	for g := range pubs {
		wg.Go(func() {
			n := heartbeat(wctx, pubs[g], conns[g], o.interval)
			mu.Lock()
			renewed += n
			mu.Unlock()
		})
	}
	if o.typingRate > 0 {
		wg.Go(func() { typed = typing(wctx, pubs[0], o, lat) })
	}
	wg.Wait()
	p1, err := cpuSeconds(cmd.Process.Pid)
	if err != nil {
		return err
	}
	r1, err := cpuSeconds(redisPID)
	if err != nil {
		return err
	}
	time.Sleep(500 * time.Millisecond) // let the last typing events arrive

	secs := o.window.Seconds()
	redisLoad := (r1 - r0) - idle*secs/o.idle.Seconds()
	fmt.Printf("\nwindow %v: %d heartbeat renewals (%.0f/s) from %d gateways, %d typing commands\n",
		o.window, renewed, float64(renewed)/secs, o.gateways, typed)
	fmt.Printf("presence:     %.2f CPU s = %.1f%% of one core\n", p1-p0, 100*(p1-p0)/secs)
	fmt.Printf("redis-server: %.2f CPU s = %.1f%% of one core (%.1f%% after subtracting idle)\n",
		r1-r0, 100*(r1-r0)/secs, 100*redisLoad/secs)
	fmt.Printf("together:     %.1f%% of one core (idle-adjusted)\n", 100*((p1-p0)+redisLoad)/secs)
	lat.report()
	return nil
}

// heartbeat renews 1/ticks of conns every second, so every connection is
// renewed once per interval at the real per-second rate.
func heartbeat(ctx context.Context, p *presence.Publisher, conns []presence.Conn, interval time.Duration) int {
	ticks := max(1, int(interval/time.Second))
	per := (len(conns) + ticks - 1) / ticks
	t := time.NewTicker(time.Second)
	defer t.Stop()
	n, i := 0, 0
	for {
		select {
		case <-ctx.Done():
			return n
		case <-t.C:
		}
		lo := (i % ticks) * per
		part := conns[min(lo, len(conns)):min(lo+per, len(conns))]
		if err := p.Heartbeat(ctx, part); err == nil {
			n += len(part)
		}
		i++
	}
}

// typing starts typing at rate per second in random rooms by random
// users and stops each one a second later.
func typing(ctx context.Context, p *presence.Publisher, o options, lat *latencies) int {
	t := time.NewTicker(time.Second / time.Duration(o.typingRate))
	defer t.Stop()
	type typist struct {
		room, user int64
		at         time.Time
	}
	var active []typist
	n := 0
	for {
		select {
		case <-ctx.Done():
			return n
		case now := <-t.C:
			for len(active) > 0 && now.Sub(active[0].at) >= time.Second {
				a := active[0]
				active = active[1:]
				lat.send(a.room, a.user, false)
				_ = p.TypingStop(ctx, a.room, a.user, "u")
				n++
			}
			a := typist{room: 1 + rand.Int64N(int64(o.rooms)), user: userBase + rand.Int64N(int64(o.conns)), at: now}
			if lat.busy(a.room, a.user) {
				continue
			}
			lat.send(a.room, a.user, true)
			_ = p.TypingStart(ctx, a.room, a.user, "u")
			active = append(active, a)
			n++
		}
	}
}

// latencies pairs each typing command with its event.
type latencies struct {
	mu   sync.Mutex
	sent map[string]time.Time
	got  []time.Duration
	lost int
}

func latKey(room, user int64, typing bool) string {
	return fmt.Sprintf("%d/%d/%v", room, user, typing)
}

func (l *latencies) busy(room, user int64) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	_, a := l.sent[latKey(room, user, true)]
	_, b := l.sent[latKey(room, user, false)]
	return a || b
}

func (l *latencies) send(room, user int64, typing bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.sent[latKey(room, user, typing)] = time.Now()
}

func (l *latencies) receive(room, user int64, typing bool) {
	now := time.Now()
	l.mu.Lock()
	defer l.mu.Unlock()
	k := latKey(room, user, typing)
	if t, ok := l.sent[k]; ok {
		l.got = append(l.got, now.Sub(t))
		delete(l.sent, k)
	}
}

func (l *latencies) report() {
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.got) == 0 {
		fmt.Println("typing: no events")
		return
	}
	slices.Sort(l.got)
	q := func(p float64) time.Duration { return l.got[min(len(l.got)-1, int(p*float64(len(l.got))))] }
	fmt.Printf("typing latency (Publisher call → event on the room channel), %d events, %d unanswered: p50 %v  p95 %v  p99 %v  max %v\n",
		len(l.got), len(l.sent), q(.50).Round(10*time.Microsecond), q(.95).Round(10*time.Microsecond),
		q(.99).Round(10*time.Microsecond), l.got[len(l.got)-1].Round(10*time.Microsecond))
}

func subscribeRooms(ctx context.Context, rdb *goredis.Client, keys presence.Keys, rooms int, lat *latencies) (*goredis.PubSub, error) {
	chans := make([]string, rooms)
	for i := range chans {
		chans[i] = keys.RoomChannel(int64(i + 1))
	}
	ps := rdb.SSubscribe(ctx, chans...)
	for range chans {
		if _, err := ps.Receive(ctx); err != nil {
			return nil, err
		}
	}
	go func() {
		for m := range ps.Channel(goredis.WithChannelSize(10000)) {
			p, err := protocol.DecodePublication([]byte(m.Payload))
			if err != nil {
				continue
			}
			var f protocol.Frame
			var ty protocol.Typing
			if json.Unmarshal(p.Frame, &f) != nil || json.Unmarshal(f.Data, &ty) != nil {
				continue
			}
			user, _ := strconv.ParseInt(ty.UserID, 10, 64)
			lat.receive(p.RoomID, user, ty.Typing)
		}
	}()
	return ps, nil
}

// cpuSeconds returns utime+stime of pid from /proc/<pid>/stat.
func cpuSeconds(pid int) (float64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	// Fields after the parenthesised command name; utime and stime are
	// fields 14 and 15 of the whole line.
	s := string(b)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+2:])
	if len(f) < 13 {
		return 0, fmt.Errorf("short /proc/%d/stat", pid)
	}
	ut, err1 := strconv.ParseFloat(f[11], 64)
	st, err2 := strconv.ParseFloat(f[12], 64)
	if err := errors.Join(err1, err2); err != nil {
		return 0, err
	}
	return (ut + st) / clockTicks, nil
}

// clockTicks is USER_HZ, 100 on Linux for every common architecture.
const clockTicks = 100

func cpuOver(ctx context.Context, pid int, d time.Duration) (float64, error) {
	a, err := cpuSeconds(pid)
	if err != nil {
		return 0, err
	}
	select {
	case <-ctx.Done():
		return 0, ctx.Err()
	case <-time.After(d):
	}
	b, err := cpuSeconds(pid)
	return b - a, err
}

func redisPid(ctx context.Context, rdb *goredis.Client) (int, error) {
	info, err := rdb.Info(ctx, "server").Result()
	if err != nil {
		return 0, err
	}
	for line := range strings.SplitSeq(info, "\n") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), "process_id:"); ok {
			return strconv.Atoi(v)
		}
	}
	return 0, errors.New("no process_id in INFO server")
}

func freePort() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer ln.Close()
	return ln.Addr().String(), nil
}

func waitReady(ctx context.Context, url string) error {
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		if res, err := http.Get(url); err == nil {
			res.Body.Close()
			if res.StatusCode == 200 {
				return nil
			}
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
	return fmt.Errorf("%s not ready within 30s", url)
}

// cleanup deletes the bench's keys (SCAN is fine here: not a hot path).
func cleanup(rdb *goredis.Client, prefix string) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	iter := rdb.Scan(ctx, 0, prefix+"*", 1000).Iterator()
	var batch []string
	for iter.Next(ctx) {
		batch = append(batch, iter.Val())
		if len(batch) == 500 {
			rdb.Unlink(ctx, batch...)
			batch = batch[:0]
		}
	}
	if len(batch) > 0 {
		rdb.Unlink(ctx, batch...)
	}
}

// waitSynced waits until the dirty set is empty and n users are online in
// PostgreSQL.
func waitSynced(ctx context.Context, rdb *goredis.Client, keys presence.Keys, dbURL string, n int) error {
	db, err := sql.Open("pgx", dbURL)
	if err != nil {
		return err
	}
	defer db.Close()
	deadline := time.Now().Add(2 * time.Minute)
	for time.Now().Before(deadline) {
		dirty, err := rdb.ZCard(ctx, keys.Dirty()).Result()
		if err != nil {
			return err
		}
		var online int
		if err := db.QueryRowContext(ctx, "SELECT count(*) FROM users WHERE is_online AND last_seen IS NOT NULL").Scan(&online); err != nil {
			return err
		}
		if dirty == 0 && online == n {
			return nil
		}
		time.Sleep(100 * time.Millisecond)
	}
	return errors.New("users table not in sync within 2 minutes")
}

// scratchDatabase creates a migrated database holding users 1..n and
// returns its URL and a function dropping it.
func scratchDatabase(ctx context.Context, baseURL string, n int) (string, func(), error) {
	admin, err := sql.Open("pgx", baseURL)
	if err != nil {
		return "", nil, err
	}
	name := fmt.Sprintf("relay_bench_%x", rand.Uint32())
	if _, err := admin.ExecContext(ctx, "CREATE DATABASE "+name); err != nil {
		admin.Close()
		return "", nil, fmt.Errorf("create database: %w", err)
	}
	drop := func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		_, _ = admin.ExecContext(ctx, "DROP DATABASE IF EXISTS "+name+" WITH (FORCE)")
		admin.Close()
	}
	u, err := url.Parse(baseURL)
	if err != nil {
		drop()
		return "", nil, err
	}
	u.Path = "/" + name
	db, err := sql.Open("pgx", u.String())
	if err != nil {
		drop()
		return "", nil, err
	}
	defer db.Close()
	if err := store.Migrate(ctx, db); err != nil {
		drop()
		return "", nil, err
	}
	if _, err := db.ExecContext(ctx, `INSERT INTO users (username, email, password_hash)
		SELECT 'u' || i, 'u' || i || '@bench.invalid', 'x' FROM generate_series(1, $1) AS i`, n); err != nil {
		drop()
		return "", nil, fmt.Errorf("insert users: %w", err)
	}
	return u.String(), drop, nil
}

func signalContext() (context.Context, context.CancelFunc) {
	return signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
}
