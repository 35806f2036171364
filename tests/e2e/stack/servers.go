package stack

import (
	"bufio"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	goredis "github.com/redis/go-redis/v9"
)

// Servers are a private PostgreSQL, Redis and Kafka-protocol broker, each a
// child process on a free loopback port with its data in a temporary
// directory, for tests that stop and restart the servers themselves (the
// fault suite) without touching the shared ones other test packages use.
// Point a process at them with Env (testenv and NewStack read DATABASE_URL,
// REDIS_URL and KAFKA_BROKERS from the environment).
type Servers struct {
	// Postgres is the PostgreSQL server (superuser postgres, trust auth on
	// loopback).
	Postgres *Server
	// Redis is the redis-server (appendonly yes).
	Redis *Server
	// Kafka is the kafkabroker (tools/cmd/kafkabroker).
	Kafka *Server

	dir string
}

// ServersOptions shape StartServers.
type ServersOptions struct {
	// Dir holds the servers' data and logs; required. It must be reachable
	// by the postgres OS user (StartServers makes its own subdirectory
	// owned by that user).
	Dir string
	// Kafkabroker is the broker executable (BuildKafkabroker); required.
	Kafkabroker string
}

// Server is one private server process: stopped and started again on the
// same port and data directory.
type Server struct {
	// Name is postgres, redis or kafka.
	Name string
	// Addr is its 127.0.0.1:port.
	Addr string
	// Log is the file its output goes to.
	Log string

	cmd      func() *exec.Cmd
	stopSig  syscall.Signal
	ready    func(ctx context.Context, s *Server) error
	readyMsg string // a line of its output that says it is ready; "" when ready polls

	mu   sync.Mutex
	proc *exec.Cmd
	done chan struct{}
	err  error
	seen chan struct{} // closed when readyMsg was printed by the current process
}

// pgBinDir returns the newest /usr/lib/postgresql/<v>/bin holding postgres.
func pgBinDir() (string, error) {
	dirs, _ := filepath.Glob("/usr/lib/postgresql/*/bin/postgres")
	if len(dirs) == 0 {
		return "", errors.New("no /usr/lib/postgresql/*/bin/postgres (install postgresql)")
	}
	slices.SortFunc(dirs, func(a, b string) int {
		va, _ := strconv.Atoi(filepath.Base(filepath.Dir(filepath.Dir(a))))
		vb, _ := strconv.Atoi(filepath.Base(filepath.Dir(filepath.Dir(b))))
		return va - vb
	})
	return filepath.Dir(dirs[len(dirs)-1]), nil
}

// StartServers initialises and starts the three servers and waits until
// each answers. On error, whatever was started is stopped.
func StartServers(ctx context.Context, opts ServersOptions) (_ *Servers, err error) {
	if opts.Dir == "" || opts.Kafkabroker == "" {
		return nil, errors.New("servers: Dir and Kafkabroker required")
	}
	s := &Servers{dir: opts.Dir}
	defer func() {
		if err != nil {
			s.Close()
		}
	}()
	if s.Postgres, err = newPostgres(ctx, opts.Dir); err != nil {
		return nil, err
	}
	s.Redis, err = newRedis(opts.Dir)
	if err != nil {
		return nil, err
	}
	s.Kafka, err = newKafka(opts.Dir, opts.Kafkabroker)
	if err != nil {
		return nil, err
	}
	for _, srv := range s.All() {
		if err := srv.Start(ctx); err != nil {
			return nil, err
		}
	}
	return s, nil
}

// All lists the servers.
func (s *Servers) All() []*Server {
	var out []*Server
	for _, srv := range []*Server{s.Postgres, s.Redis, s.Kafka} {
		if srv != nil {
			out = append(out, srv)
		}
	}
	return out
}

// Env is what points testenv, the stack and the services at the servers.
func (s *Servers) Env() map[string]string {
	return map[string]string{
		"DATABASE_URL":  "postgres://postgres@" + s.Postgres.Addr + "/postgres?sslmode=disable",
		"REDIS_URL":     "redis://" + s.Redis.Addr + "/0",
		"KAFKA_BROKERS": s.Kafka.Addr,
	}
}

// Close stops every server that runs (errors are only logged to their
// files: the data directory is thrown away anyway).
func (s *Servers) Close() {
	for _, srv := range slices.Backward(s.All()) {
		_ = srv.Stop(context.Background())
	}
}

func newPostgres(ctx context.Context, dir string) (*Server, error) {
	bin, err := pgBinDir()
	if err != nil {
		return nil, fmt.Errorf("postgres: %w", err)
	}
	pgUser, err := user.Lookup("postgres")
	if err != nil {
		return nil, fmt.Errorf("postgres: OS user postgres: %w", err)
	}
	uid, _ := strconv.Atoi(pgUser.Uid)
	gid, _ := strconv.Atoi(pgUser.Gid)
	data := filepath.Join(dir, "pg")
	if err := os.MkdirAll(data, 0o700); err != nil {
		return nil, fmt.Errorf("postgres: %w", err)
	}
	// The postgres user must reach its cluster through dir.
	for _, d := range []string{dir, data} {
		if err := os.Chmod(d, 0o755); err != nil {
			return nil, fmt.Errorf("postgres: %w", err)
		}
	}
	if err := os.Chown(data, uid, gid); err != nil {
		return nil, fmt.Errorf("postgres: %w", err)
	}
	if err := os.Chmod(data, 0o700); err != nil {
		return nil, fmt.Errorf("postgres: %w", err)
	}
	logPath := filepath.Join(dir, "postgres.log")
	// As scripts/deps.sh does: initdb as the postgres user, from / (its
	// cwd may be unreadable to that user).
	initdb := exec.CommandContext(ctx, "runuser", "-u", "postgres", "--", filepath.Join(bin, "initdb"),
		"-D", data, "-U", "postgres", "-E", "UTF8", "--locale=C.UTF-8", "--auth-local=trust", "--auth-host=trust")
	initdb.Dir = "/"
	if out, err := initdb.CombinedOutput(); err != nil {
		return nil, fmt.Errorf("postgres: initdb: %w\n%s", err, out)
	}
	addr, err := freePort()
	if err != nil {
		return nil, err
	}
	_, port, _ := strings.Cut(addr, ":")
	// DEV ONLY, as in scripts/deps.sh: trust on loopback. fsync is off
	// because the faults stop the server cleanly (fast shutdown writes
	// everything out) and it keeps the suite off the disk's latency.
	conf := fmt.Sprintf(`
listen_addresses = '127.0.0.1'
port = %s
unix_socket_directories = '%s'
max_connections = 100
fsync = off
full_page_writes = off
`, port, data)
	f, err := os.OpenFile(filepath.Join(data, "postgresql.conf"), os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		return nil, fmt.Errorf("postgres: %w", err)
	}
	_, err = f.WriteString(conf)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return nil, fmt.Errorf("postgres: %w", err)
	}
	url := "postgres://postgres@" + addr + "/postgres?sslmode=disable&connect_timeout=2"
	return &Server{
		Name: "postgres", Addr: addr, Log: logPath,
		cmd: func() *exec.Cmd {
			c := exec.Command(filepath.Join(bin, "postgres"), "-D", data)
			c.Dir = "/"
			// Run directly as the postgres user rather than through runuser,
			// so the parent-death signal reaches the postmaster itself (Go
			// sets it after switching users) and a test binary that dies
			// takes its server with it.
			c.SysProcAttr = &syscall.SysProcAttr{
				Credential: &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)},
				Pdeathsig:  syscall.SIGKILL,
			}
			c.Env = []string{"PATH=" + os.Getenv("PATH"), "LANG=C.UTF-8"}
			return c
		},
		// SIGINT is PostgreSQL's fast shutdown: it ends the sessions and
		// exits cleanly. SIGTERM (smart) would wait for the services'
		// pools to disconnect, which they never do.
		stopSig: syscall.SIGINT,
		ready: func(ctx context.Context, _ *Server) error {
			db, err := sql.Open("pgx", url)
			if err != nil {
				return err
			}
			defer db.Close()
			return db.PingContext(ctx)
		},
	}, nil
}

func newRedis(dir string) (*Server, error) {
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		return nil, fmt.Errorf("redis: %w (install redis-server)", err)
	}
	data := filepath.Join(dir, "redis")
	if err := os.MkdirAll(data, 0o755); err != nil {
		return nil, fmt.Errorf("redis: %w", err)
	}
	addr, err := freePort()
	if err != nil {
		return nil, err
	}
	host, port, _ := strings.Cut(addr, ":")
	return &Server{
		Name: "redis", Addr: addr, Log: filepath.Join(dir, "redis.log"),
		cmd: func() *exec.Cmd {
			// As scripts/deps.sh runs it: AOF with everysec fsync, no RDB.
			c := exec.Command(bin, "--bind", host, "--port", port, "--dir", data,
				"--appendonly", "yes", "--appendfsync", "everysec", "--save", "", "--daemonize", "no")
			c.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
			return c
		},
		// SIGTERM: redis fsyncs the AOF and exits, like SHUTDOWN.
		stopSig: syscall.SIGTERM,
		ready: func(ctx context.Context, _ *Server) error {
			c := goredis.NewClient(&goredis.Options{Addr: addr, MaxRetries: -1, DialTimeout: time.Second})
			defer c.Close()
			return c.Ping(ctx).Err()
		},
	}, nil
}

func newKafka(dir, bin string) (*Server, error) {
	data := filepath.Join(dir, "kafka")
	if err := os.MkdirAll(data, 0o755); err != nil {
		return nil, fmt.Errorf("kafka: %w", err)
	}
	addr, err := freePort()
	if err != nil {
		return nil, err
	}
	return &Server{
		Name: "kafka", Addr: addr, Log: filepath.Join(dir, "kafka.log"),
		cmd: func() *exec.Cmd {
			c := exec.Command(bin, "-addr", addr, "-data-dir", data)
			c.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
			return c
		},
		// SIGTERM: kfake writes its state to the data dir and exits.
		stopSig:  syscall.SIGTERM,
		readyMsg: "kafkabroker listening on",
	}, nil
}

// Start starts the server (again, on the same port and data) and waits
// until it answers, at most 60 s.
func (s *Server) Start(ctx context.Context) error {
	s.mu.Lock()
	if s.done != nil {
		select {
		case <-s.done:
		default:
			s.mu.Unlock()
			return fmt.Errorf("%s: already running", s.Name)
		}
	}
	logf, err := os.OpenFile(s.Log, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		s.mu.Unlock()
		return fmt.Errorf("%s: log: %w", s.Name, err)
	}
	fmt.Fprintf(logf, "=== %s start %s\n", time.Now().Format(time.RFC3339Nano), s.Name)
	cmd := s.cmd()
	seen := make(chan struct{})
	var out io.Writer = logf
	var pw *io.PipeWriter
	if s.readyMsg != "" {
		var pr *io.PipeReader
		pr, pw = io.Pipe()
		out = pw
		go func() {
			sc := bufio.NewScanner(pr)
			once := sync.Once{}
			for sc.Scan() {
				line := sc.Text()
				fmt.Fprintln(logf, line)
				if strings.Contains(line, s.readyMsg) {
					once.Do(func() { close(seen) })
				}
			}
			_, _ = io.Copy(io.Discard, pr)
		}()
	}
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		s.mu.Unlock()
		logf.Close()
		return fmt.Errorf("%s: start: %w", s.Name, err)
	}
	done := make(chan struct{})
	s.proc, s.done, s.err, s.seen = cmd, done, nil, seen
	s.mu.Unlock()
	go func() {
		err := cmd.Wait()
		if pw != nil {
			pw.Close()
		}
		fmt.Fprintf(logf, "=== %s exit %s: %v\n", time.Now().Format(time.RFC3339Nano), s.Name, err)
		logf.Close()
		s.mu.Lock()
		s.err = err
		s.mu.Unlock()
		close(done)
	}()

	ctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	for {
		var err error
		if s.ready != nil {
			pctx, pcancel := context.WithTimeout(ctx, 2*time.Second)
			err = s.ready(pctx, s)
			pcancel()
			if err == nil {
				return nil
			}
		} else {
			select {
			case <-seen:
				return nil
			default:
				err = errors.New("no ready line yet")
			}
		}
		select {
		case <-done:
			return fmt.Errorf("%s exited while starting (log %s): %v", s.Name, s.Log, s.exitErr())
		case <-ctx.Done():
			return fmt.Errorf("%s not ready (log %s): %w", s.Name, s.Log, err)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

func (s *Server) exitErr() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.err
}

// Stop sends the server its clean-shutdown signal and waits for it to
// exit (killing it after 30 s); an unclean exit is an error. Stopping a
// server that does not run does nothing.
func (s *Server) Stop(ctx context.Context) error {
	s.mu.Lock()
	proc, done := s.proc, s.done
	s.mu.Unlock()
	if done == nil {
		return nil
	}
	select {
	case <-done:
		return nil
	default:
	}
	_ = proc.Process.Signal(s.stopSig)
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		_ = proc.Process.Kill()
		<-done
		return fmt.Errorf("%s did not stop within 30 s; killed", s.Name)
	case <-ctx.Done():
		_ = proc.Process.Kill()
		<-done
		return ctx.Err()
	}
	if err := s.exitErr(); err != nil {
		return fmt.Errorf("%s exited uncleanly: %w (log %s)", s.Name, err, s.Log)
	}
	return nil
}

// Running reports whether the server process is alive.
func (s *Server) Running() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.done == nil {
		return false
	}
	select {
	case <-s.done:
		return false
	default:
		return true
	}
}

// handedOut holds the ports freePort returned in this process. The kernel
// gives a port just closed to the next listen on port 0 again, so without
// it two services of one stack (or of two parallel tests) could be handed
// the same port before either listens on it. Process-wide, as ports are.
var handedOut = struct {
	sync.Mutex
	ports map[string]bool
}{ports: map[string]bool{}}

// freePort returns a 127.0.0.1 address nobody listens on now and that it
// never returned before in this process.
func freePort() (string, error) {
	handedOut.Lock()
	defer handedOut.Unlock()
	// Ports refused for being handed out already stay bound until a new one
	// is found, so the kernel offers another.
	var held []net.Listener
	defer func() {
		for _, ln := range held {
			_ = ln.Close()
		}
	}()
	for range 1000 {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return "", fmt.Errorf("free port: %w", err)
		}
		held = append(held, ln)
		addr := ln.Addr().String()
		if !handedOut.ports[addr] {
			handedOut.ports[addr] = true
			return addr, nil
		}
	}
	return "", errors.New("free port: every port offered was handed out before")
}
