package testenv

import (
	"context"
	"database/sql"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"sort"
	"strconv"
	"sync"
	"testing"
	"time"
)

// PGPair is a PostgreSQL primary and a hot-standby replica streaming from
// it (pg_basebackup -R), both private to one test: initdb'd in temporary
// directories, on free loopback ports, run as the postgres OS user with
// Debian's binaries. Unlike the shared server of Database it can have its
// replica stopped, paused and started again. Needs root (to become
// postgres), as `make test` runs in CI.
type PGPair struct {
	// PrimaryURL and ReplicaURL reach database relay as user relay.
	PrimaryURL, ReplicaURL string
	// ReplicaAdminURL reaches the replica as the superuser (pause replay).
	ReplicaAdminURL string

	bin                      string
	primaryDir, replicaDir   string
	primaryPort, replicaPort int
}

// StartPGPair initdb's a primary with database relay (owner relay), clones
// a replica from it and starts both; both are stopped and deleted when the
// test ends.
func StartPGPair(t testing.TB) *PGPair {
	t.Helper()
	bin, err := pgBinDir()
	if err != nil {
		t.Fatalf("testenv: %v", err)
	}
	if _, err := user.Lookup("postgres"); err != nil {
		t.Fatalf("testenv: PGPair needs the postgres OS user (Debian's postgresql package; `make deps`): %v", err)
	}
	if os.Geteuid() != 0 {
		t.Fatal("testenv: PGPair needs root to run PostgreSQL as the postgres user")
	}
	p := &PGPair{bin: bin, primaryPort: freePort(t), replicaPort: freePort(t)}
	p.primaryDir, p.replicaDir = pgDir(t), pgDir(t)
	t.Cleanup(func() {
		p.pgctl("stop", p.replicaDir, "-m", "immediate")
		p.pgctl("stop", p.primaryDir, "-m", "immediate")
		_ = os.RemoveAll(p.replicaDir)
		_ = os.RemoveAll(p.primaryDir)
	})
	// Primary: trust on loopback, replication included (test-only).
	if out, err := asPostgres(filepath.Join(bin, "initdb"), "-D", p.primaryDir, "-U", "postgres", "-E", "UTF8",
		"--locale=C.UTF-8", "--auth=trust"); err != nil {
		t.Fatalf("testenv: initdb: %v\n%s", err, out)
	}
	hba := "local all all trust\nhost all all 127.0.0.1/32 trust\nhost replication all 127.0.0.1/32 trust\n"
	if err := writeAsPostgres(filepath.Join(p.primaryDir, "pg_hba.conf"), hba); err != nil {
		t.Fatalf("testenv: %v", err)
	}
	p.start(t, p.primaryDir, p.primaryPort)
	admin := fmt.Sprintf("postgres://postgres@127.0.0.1:%d/postgres?sslmode=disable", p.primaryPort)
	db, err := sql.Open("pgx", admin)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	for _, q := range []string{`CREATE ROLE relay LOGIN PASSWORD 'relay'`, `CREATE DATABASE relay OWNER relay`} {
		if _, err := db.Exec(q); err != nil {
			t.Fatalf("testenv: %s: %v", q, err)
		}
	}
	// Replica: a base backup that writes standby.signal and primary_conninfo.
	if out, err := asPostgres(filepath.Join(bin, "pg_basebackup"), "-h", "127.0.0.1", "-p", strconv.Itoa(p.primaryPort),
		"-U", "postgres", "-D", p.replicaDir, "-R", "-X", "stream", "-c", "fast"); err != nil {
		t.Fatalf("testenv: pg_basebackup: %v\n%s", err, out)
	}
	p.start(t, p.replicaDir, p.replicaPort)
	p.PrimaryURL = fmt.Sprintf("postgres://relay:relay@127.0.0.1:%d/relay?sslmode=disable", p.primaryPort)
	p.ReplicaURL = fmt.Sprintf("postgres://relay:relay@127.0.0.1:%d/relay?sslmode=disable", p.replicaPort)
	p.ReplicaAdminURL = fmt.Sprintf("postgres://postgres@127.0.0.1:%d/relay?sslmode=disable", p.replicaPort)
	return p
}

// StopReplica stops the replica at once (as a crash would).
func (p *PGPair) StopReplica(t testing.TB) {
	t.Helper()
	if out, err := p.pgctl("stop", p.replicaDir, "-m", "immediate"); err != nil {
		t.Fatalf("testenv: stop replica: %v\n%s", err, out)
	}
}

// StartReplica starts the stopped replica again; it catches up from the
// primary's WAL.
func (p *PGPair) StartReplica(t testing.TB) {
	t.Helper()
	p.start(t, p.replicaDir, p.replicaPort)
}

// WaitReplayed waits until the replica has replayed everything the primary
// had written when it was called.
func (p *PGPair) WaitReplayed(t testing.TB) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	prim, err := sql.Open("pgx", p.PrimaryURL)
	if err != nil {
		t.Fatal(err)
	}
	defer prim.Close()
	rep, err := sql.Open("pgx", p.ReplicaAdminURL)
	if err != nil {
		t.Fatal(err)
	}
	defer rep.Close()
	var lsn string
	if err := prim.QueryRowContext(ctx, `SELECT pg_current_wal_lsn()::text`).Scan(&lsn); err != nil {
		t.Fatalf("testenv: primary lsn: %v", err)
	}
	for {
		var ok bool
		err := rep.QueryRowContext(ctx, `SELECT pg_last_wal_replay_lsn() >= $1::pg_lsn`, lsn).Scan(&ok)
		if err == nil && ok {
			return
		}
		select {
		case <-ctx.Done():
			t.Fatalf("testenv: replica did not replay %s: %v", lsn, err)
		case <-time.After(20 * time.Millisecond):
		}
	}
}

func (p *PGPair) start(t testing.TB, dir string, port int) {
	t.Helper()
	// max_connections is the same on both: a hot standby refuses to start
	// with fewer than its primary.
	opts := fmt.Sprintf("-p %d -k %s -c listen_addresses=127.0.0.1 -c max_connections=100 -c hot_standby=on -c fsync=off", port, dir)
	if out, err := p.pgctl("start", dir, "-w", "-t", "60", "-l", filepath.Join(dir, "server.log"), "-o", opts); err != nil {
		log, _ := os.ReadFile(filepath.Join(dir, "server.log"))
		t.Fatalf("testenv: pg_ctl start %s: %v\n%s\n%s", dir, err, out, log)
	}
}

func (p *PGPair) pgctl(action, dir string, args ...string) ([]byte, error) {
	return asPostgres(filepath.Join(p.bin, "pg_ctl"), append([]string{action, "-D", dir, "-s"}, args...)...)
}

func asPostgres(name string, args ...string) ([]byte, error) {
	cmd := exec.Command("runuser", append([]string{"-u", "postgres", "--", name}, args...)...)
	cmd.Dir = "/"
	return cmd.CombinedOutput()
}

func writeAsPostgres(path, content string) error {
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		return err
	}
	u, err := user.Lookup("postgres")
	if err != nil {
		return err
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	return os.Chown(path, uid, gid)
}

// pgDir makes an empty directory the postgres user owns.
func pgDir(t testing.TB) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "relay-pg-")
	if err != nil {
		t.Fatal(err)
	}
	u, err := user.Lookup("postgres")
	if err != nil {
		t.Fatal(err)
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	if err := os.Chown(dir, uid, gid); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	return dir
}

// pgBinDir is the newest /usr/lib/postgresql/<major>/bin.
func pgBinDir() (string, error) {
	dirs, _ := filepath.Glob("/usr/lib/postgresql/*/bin")
	sort.Slice(dirs, func(i, j int) bool {
		a, _ := strconv.Atoi(filepath.Base(filepath.Dir(dirs[i])))
		b, _ := strconv.Atoi(filepath.Base(filepath.Dir(dirs[j])))
		return a < b
	})
	for i := len(dirs) - 1; i >= 0; i-- {
		if _, err := os.Stat(filepath.Join(dirs[i], "pg_basebackup")); err == nil {
			return dirs[i], nil
		}
	}
	return "", fmt.Errorf("no PostgreSQL binaries under /usr/lib/postgresql (Debian's postgresql; `make deps` installs it)")
}

var (
	portsMu sync.Mutex
	ports   = map[int]bool{}
)

// freePort returns a loopback port nothing listens on, never the same one
// twice in a process (a just-closed port is often handed out again).
func freePort(t testing.TB) int {
	t.Helper()
	portsMu.Lock()
	defer portsMu.Unlock()
	for {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		port := ln.Addr().(*net.TCPAddr).Port
		_ = ln.Close()
		if !ports[port] {
			ports[port] = true
			return port
		}
	}
}
