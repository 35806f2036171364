package stack

import (
	"bufio"
	"context"
	"database/sql"
	"fmt"
	"maps"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/IBM/sarama"
	_ "github.com/jackc/pgx/v5/stdlib" // database/sql driver "pgx"
	goredis "github.com/redis/go-redis/v9"

	"relay/pkg/redis"
	"relay/pkg/testenv"
)

// Secret is the JWT_SECRET every process of a stack shares.
const Secret = "e2e-test-secret-0123456789abcdef"

// Options shape a stack. The zero value is one gateway on a one-partition
// topic with the services' default settings.
type Options struct {
	// Binaries are the built services (Build); required.
	Binaries Binaries
	// Gateways is the number of gateway processes; zero means 1.
	Gateways int
	// Partitions of the test's topic; zero means 1.
	Partitions int32
	// Env is added to every process's environment, over the stack's defaults.
	Env map[string]string
	// ServiceEnv is added per service ("gateway" applies to every gateway),
	// over Env.
	ServiceEnv map[string]map[string]string
	// ReadyTimeout bounds the wait for a process's /ready; zero means 30 s.
	ReadyTimeout time.Duration
}

// Stack is one test's running services and its slice of the servers.
type Stack struct {
	t    testing.TB
	opts Options

	// DatabaseURL is the test's own migrated database.
	DatabaseURL string
	// Redis is a client of the test server; Keys carries the test's prefix.
	Redis *goredis.Client
	// Keys names the stack's Redis keys.
	Keys redis.Keys
	// Brokers and Topic are the Kafka brokers and the test's room event topic.
	Brokers []string
	// Topic is the room event log of this stack.
	Topic string
	// LogPath is the file all processes write to, each line prefixed by the
	// process name.
	LogPath string

	log   *os.File
	logMu sync.Mutex
	procs map[string]*process
	order []string
	db    *sql.DB
}

// NewStack starts api, delivery, persister, presence and the gateways as
// child processes and waits until every /ready answers 200. Everything is
// stopped (SIGTERM, then SIGKILL) when the test ends; a process that exits
// on its own, or uncleanly after SIGTERM, fails the test, and on failure the
// tail of every process's log is printed.
func NewStack(t testing.TB, opts Options) *Stack {
	t.Helper()
	if opts.Binaries.Dir == "" {
		t.Fatal("stack: Options.Binaries required (see Build)")
	}
	if opts.Gateways <= 0 {
		opts.Gateways = 1
	}
	if opts.Partitions <= 0 {
		opts.Partitions = 1
	}
	if opts.ReadyTimeout <= 0 {
		opts.ReadyTimeout = 30 * time.Second
	}
	s := &Stack{t: t, opts: opts, procs: map[string]*process{}}
	s.DatabaseURL = testenv.Database(t)
	var prefix string
	s.Redis, prefix = testenv.Redis(t)
	s.Keys = redis.Keys{Prefix: prefix}
	s.Brokers, s.Topic = testenv.Kafka(t, opts.Partitions)
	// The delivery worker and the persister create <topic>.dlq; testenv
	// only deletes the topic it made.
	t.Cleanup(func() { deleteTopic(s.Brokers, s.Topic+".dlq") })

	dir := os.Getenv("E2E_LOG_DIR")
	if dir == "" {
		dir = t.TempDir()
	} else if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatalf("stack: %v", err)
	}
	f, err := os.Create(filepath.Join(dir, sanitize(t.Name())+".log"))
	if err != nil {
		t.Fatalf("stack: log file: %v", err)
	}
	s.log, s.LogPath = f, f.Name()
	// Registered first so it runs last: after the processes stopped, with
	// their shutdown lines in the file.
	t.Cleanup(func() {
		if t.Failed() {
			s.printTails(40)
		}
		_ = f.Close()
		if s.db != nil {
			_ = s.db.Close()
		}
	})

	_, rc, _ := testenv.Env(t)
	base := map[string]string{
		"DATABASE_URL": s.DatabaseURL,
		// Six processes share the server's 100 connections with parallel tests.
		"DATABASE_MAX_CONNS": "4",
		"REDIS_URL":          rc.URL,
		"REDIS_PREFIX":       prefix,
		"KAFKA_BROKERS":      strings.Join(s.Brokers, ","),
		"KAFKA_TOPIC":        s.Topic,
		"KAFKA_PARTITIONS":   strconv.Itoa(int(opts.Partitions)),
		"JWT_SECRET":         Secret,
		// The database URL carries the development password.
		"RELAY_ENV":         "development",
		"LOG_LEVEL":         "warn",
		"LOG_FORMAT":        "text",
		"SHUTDOWN_TIMEOUT":  "5s",
		"DELIVERY_GROUP":    testenv.RandomName("e2e-delivery-"),
		"PERSIST_GROUP":     testenv.RandomName("e2e-persist-"),
		"PRESENCE_CONSUMER": testenv.RandomName("e2e-presence-"),
		// Tests register a handful of users from one address, and some
		// make many requests as one user; tests/security sets its own.
		"AUTH_RATE_LIMIT":         "10000",
		"RATE_WRITES_PER_MIN":     "100000",
		"RATE_ROOMS_PER_HOUR":     "100000",
		"RATE_SEARCHES_PER_MIN":   "100000",
		"ROOM_CREATE_MAX_MEMBERS": "1000",
		// Likewise the gateway's per-user send and join limits and its
		// connection caps: tests open many connections from one address.
		"RATE_SENDS_PER_SEC":          "100000",
		"RATE_JOINS_PER_SEC":          "100000",
		"MAX_CONNECTIONS_PER_USER":    "100000",
		"MAX_CONNECTIONS_PER_IP":      "100000",
		"SOCKETIO_MAX_PENDING_PER_IP": "100000",
	}
	if lvl := os.Getenv("E2E_LOG_LEVEL"); lvl != "" {
		base["LOG_LEVEL"] = lvl
	}
	maps.Copy(base, opts.Env)

	add := func(name, service string) {
		env := maps.Clone(base)
		env["HTTP_ADDR"] = freeAddr(t)
		// Static group members, as scripts/run.sh runs them: a consumer
		// restarted after a SIGKILL takes its partitions back at once.
		env["KAFKA_GROUP_INSTANCE_ID"] = testenv.RandomName(name + "-")
		// The process name, as scripts/run.sh sets it: traces tell the
		// gateways apart by it (service.instance.id).
		env["INSTANCE_ID"] = name
		maps.Copy(env, opts.ServiceEnv[service])
		s.procs[name] = &process{name: name, bin: opts.Binaries.Path(service), addr: env["HTTP_ADDR"], env: env}
		s.order = append(s.order, name)
	}
	add("api", "api")
	base["API_URL"] = "http://" + s.procs["api"].addr
	add("delivery", "delivery")
	add("persister", "persister")
	add("presence", "presence")
	for i := range opts.Gateways {
		add(GatewayName(i), "gateway")
	}

	t.Cleanup(s.shutdown)
	// The api first: it migrates and the gateways call it.
	s.start(s.procs["api"])
	if err := s.waitReady(s.procs["api"]); err != nil {
		t.Fatalf("stack: %v", err)
	}
	rest := s.order[1:]
	for _, name := range rest {
		s.start(s.procs[name])
	}
	for _, name := range rest {
		if err := s.waitReady(s.procs[name]); err != nil {
			t.Fatalf("stack: %v", err)
		}
	}
	return s
}

// GatewayName is the process name of gateway i (0-based).
func GatewayName(i int) string { return "gateway" + strconv.Itoa(i) }

// Names lists the stack's processes in start order.
func (s *Stack) Names() []string { return slices.Clone(s.order) }

// HTTPURL returns the base http:// URL of a process.
func (s *Stack) HTTPURL(name string) string { return "http://" + s.proc(name).addr }

// APIURL is the api's base URL.
func (s *Stack) APIURL() string { return s.HTTPURL("api") }

// GatewayURL returns the ws:// URL of gateway i's /ws.
func (s *Stack) GatewayURL(i int) string { return "ws://" + s.proc(GatewayName(i)).addr + "/ws" }

// API returns a REST client of the stack's api.
func (s *Stack) API() *API { return NewAPI(s.APIURL()) }

// SQL returns a pool on the stack's database, closed at the end of the test.
func (s *Stack) SQL() *sql.DB {
	s.t.Helper()
	if s.db == nil {
		db, err := sql.Open("pgx", s.DatabaseURL)
		if err != nil {
			s.t.Fatalf("stack: %v", err)
		}
		db.SetMaxOpenConns(2)
		s.db = db
	}
	return s.db
}

// Kill sends SIGKILL to a process and waits for it to be gone.
func (s *Stack) Kill(name string) {
	s.t.Helper()
	p := s.proc(name)
	done, ok := p.markStopping()
	if !ok {
		s.t.Fatalf("stack: kill %s: not running", name)
	}
	p.signal(syscall.SIGKILL)
	<-done
	s.logf("stack: %s killed (SIGKILL)", name)
}

// Stop sends SIGTERM and waits for the process to exit; it fails the test
// when the exit is not clean (status 0) within the shutdown timeout plus
// 10 s (then it is killed).
func (s *Stack) Stop(name string) {
	s.t.Helper()
	if err := s.stop(s.proc(name)); err != nil {
		s.t.Errorf("stack: %v", err)
	}
}

// Start restarts a stopped or killed process with the same environment and
// port, and waits for its /ready.
func (s *Stack) Start(name string) {
	s.t.Helper()
	p := s.proc(name)
	if p.running() {
		s.t.Fatalf("stack: start %s: already running", name)
	}
	s.start(p)
	if err := s.waitReady(p); err != nil {
		s.t.Fatalf("stack: %v", err)
	}
}

func (s *Stack) proc(name string) *process {
	p, ok := s.procs[name]
	if !ok {
		s.t.Fatalf("stack: no process %q (have %v)", name, s.order)
	}
	return p
}

// process is one service instance; its command changes on restart.
type process struct {
	name string
	bin  string
	addr string
	env  map[string]string

	mu       sync.Mutex
	cmd      *exec.Cmd
	done     chan struct{} // closed when cmd exited
	exitErr  error
	stopping bool // the exit was asked for
	crashed  []string
}

func (p *process) running() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.done == nil {
		return false
	}
	select {
	case <-p.done:
		return false
	default:
		return true
	}
}

// markStopping records that the coming exit is expected and returns the
// channel closed by it; false when nothing runs.
func (p *process) markStopping() (<-chan struct{}, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.done == nil {
		return nil, false
	}
	select {
	case <-p.done:
		return nil, false
	default:
	}
	p.stopping = true
	return p.done, true
}

func (p *process) signal(sig syscall.Signal) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd != nil && p.cmd.Process != nil {
		_ = p.cmd.Process.Signal(sig)
	}
}

// environ is the process environment: a few variables of the test's own
// (PATH, HOME, ...; OTEL_* so a developer can trace a run) and env.
func environ(env map[string]string) []string {
	var out []string
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		switch {
		case k == "PATH", k == "HOME", k == "TMPDIR", k == "TZ", k == "LANG", k == "GOCOVERDIR",
			strings.HasPrefix(k, "OTEL_"):
			if _, override := env[k]; !override {
				out = append(out, kv)
			}
		}
	}
	for _, k := range slices.Sorted(maps.Keys(env)) {
		out = append(out, k+"="+env[k])
	}
	return out
}

func (s *Stack) start(p *process) {
	s.t.Helper()
	w := &lineWriter{s: s, prefix: p.name}
	cmd := exec.Command(p.bin)
	cmd.Env = environ(p.env)
	cmd.Stdout, cmd.Stderr = w, w
	// Pdeathsig: children never outlive a test binary that dies.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		s.t.Fatalf("stack: start %s: %v", p.name, err)
	}
	done := make(chan struct{})
	p.mu.Lock()
	p.cmd, p.done, p.exitErr, p.stopping = cmd, done, nil, false
	p.mu.Unlock()
	s.logf("stack: %s started (pid %d, %s)", p.name, cmd.Process.Pid, p.addr)
	go func() {
		err := cmd.Wait()
		w.flush()
		p.mu.Lock()
		p.exitErr = err
		if !p.stopping {
			p.crashed = append(p.crashed, fmt.Sprintf("%s exited on its own: %v", p.name, err))
		}
		p.mu.Unlock()
		s.logf("stack: %s exited: %v", p.name, err)
		close(done)
	}()
}

// stop sends SIGTERM and waits; an unclean or late exit is an error.
func (s *Stack) stop(p *process) error {
	done, ok := p.markStopping()
	if !ok {
		return nil
	}
	grace := 15 * time.Second
	if d, err := time.ParseDuration(p.env["SHUTDOWN_TIMEOUT"]); err == nil {
		grace = d + 10*time.Second
	}
	p.signal(syscall.SIGTERM)
	select {
	case <-done:
	case <-time.After(grace):
		p.signal(syscall.SIGKILL)
		<-done
		return fmt.Errorf("%s did not exit within %v of SIGTERM; killed", p.name, grace)
	}
	p.mu.Lock()
	err := p.exitErr
	p.mu.Unlock()
	if err != nil {
		return fmt.Errorf("%s exited uncleanly after SIGTERM: %w", p.name, err)
	}
	return nil
}

// shutdown stops every process concurrently (gateways first would not
// matter: each must shut down gracefully on its own) and reports crashes.
func (s *Stack) shutdown() {
	var wg sync.WaitGroup
	errs := make([]error, len(s.order))
	for i, name := range s.order {
		wg.Go(func() { errs[i] = s.stop(s.procs[name]) })
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			s.t.Errorf("stack: %v", err)
		}
	}
	for _, name := range s.order {
		p := s.procs[name]
		p.mu.Lock()
		for _, c := range p.crashed {
			s.t.Errorf("stack: %s", c)
		}
		p.mu.Unlock()
	}
}

// waitReady polls the process's /ready until it answers 200.
func (s *Stack) waitReady(p *process) error {
	deadline := time.Now().Add(s.opts.ReadyTimeout)
	client := &http.Client{Timeout: 2 * time.Second}
	p.mu.Lock()
	done := p.done
	p.mu.Unlock()
	var last string
	for time.Now().Before(deadline) {
		select {
		case <-done:
			return fmt.Errorf("%s exited before it was ready (see its log below)", p.name)
		default:
		}
		resp, err := client.Get("http://" + p.addr + "/ready")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
			last = resp.Status
		} else {
			last = err.Error()
		}
		time.Sleep(100 * time.Millisecond)
	}
	return fmt.Errorf("%s not ready after %v: %s", p.name, s.opts.ReadyTimeout, last)
}

// Logf writes a harness line to the stack's log, to place a test's own
// steps (a server stopped, ...) among the processes' lines.
func (s *Stack) Logf(format string, args ...any) { s.logf(format, args...) }

// logf writes a harness line to the shared log.
func (s *Stack) logf(format string, args ...any) {
	s.writeLine("harness", fmt.Sprintf(format, args...)+"\n")
}

func (s *Stack) writeLine(prefix, line string) {
	s.logMu.Lock()
	defer s.logMu.Unlock()
	_, _ = fmt.Fprintf(s.log, "%s %-9s | %s", time.Now().Format("15:04:05.000"), prefix, line)
}

// printTails logs the last n lines of each process (and the harness).
func (s *Stack) printTails(n int) {
	s.logMu.Lock()
	_ = s.log.Sync()
	s.logMu.Unlock()
	f, err := os.Open(s.LogPath)
	if err != nil {
		s.t.Logf("stack: read log: %v", err)
		return
	}
	defer f.Close()
	tails := map[string][]string{}
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		fields := strings.Fields(line)
		if len(fields) < 2 {
			continue
		}
		name := fields[1]
		tl := append(tails[name], line)
		if len(tl) > n {
			tl = tl[len(tl)-n:]
		}
		tails[name] = tl
	}
	for _, name := range append([]string{"harness"}, s.order...) {
		if len(tails[name]) == 0 {
			continue
		}
		s.t.Logf("--- last %d lines of %s (full log: %s) ---\n%s", len(tails[name]), name, s.LogPath, strings.Join(tails[name], "\n"))
	}
}

// lineWriter prefixes each complete line a process writes and appends it
// to the stack's log. exec.Cmd calls Write from one goroutine at a time
// when Stdout and Stderr are the same writer.
type lineWriter struct {
	s      *Stack
	prefix string
	buf    []byte
}

func (w *lineWriter) Write(b []byte) (int, error) {
	w.buf = append(w.buf, b...)
	for {
		i := strings.IndexByte(string(w.buf), '\n')
		if i < 0 {
			break
		}
		w.s.writeLine(w.prefix, string(w.buf[:i+1]))
		w.buf = w.buf[i+1:]
	}
	return len(b), nil
}

func (w *lineWriter) flush() {
	if len(w.buf) > 0 {
		w.s.writeLine(w.prefix, string(w.buf)+"\n")
		w.buf = nil
	}
}

// freeAddr is freePort for a service: a 127.0.0.1 address nobody listens
// on now. A process restarted later reuses it (the services listen with
// SO_REUSEADDR, Go's default).
func freeAddr(t testing.TB) string {
	t.Helper()
	addr, err := freePort()
	if err != nil {
		t.Fatalf("stack: %v", err)
	}
	return addr
}

func sanitize(name string) string {
	return strings.Map(func(r rune) rune {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9', r == '-', r == '_':
			return r
		}
		return '_'
	}, name)
}

func deleteTopic(brokers []string, topic string) {
	cfg := sarama.NewConfig()
	cfg.Version = sarama.V3_6_0_0
	admin, err := sarama.NewClusterAdmin(brokers, cfg)
	if err != nil {
		return
	}
	defer admin.Close()
	_ = admin.DeleteTopic(topic) // absent when nothing created it
}

// WaitFor polls cond every 50 ms until it returns true or timeout passes;
// it returns the last error cond gave (nil when cond succeeded).
func WaitFor(ctx context.Context, timeout time.Duration, cond func(context.Context) (bool, error)) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var last error
	for {
		ok, err := cond(ctx)
		if ok {
			return nil
		}
		if err != nil {
			last = err
		}
		select {
		case <-ctx.Done():
			if last == nil {
				last = ctx.Err()
			}
			return fmt.Errorf("after %v: %w", timeout, last)
		case <-time.After(50 * time.Millisecond):
		}
	}
}
