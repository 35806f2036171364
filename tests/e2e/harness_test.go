// Package e2e runs the real services as processes (package stack) against
// the real servers and checks the platform's guarantees end to end.
package e2e

import (
	"context"
	"flag"
	"fmt"
	"os"
	"testing"
	"time"

	"relay/pkg/testenv"
	"relay/tests/e2e/stack"
)

// binaries are the service executables TestMain built; set once before any
// test runs and only read afterwards.
var binaries stack.Binaries

func TestMain(m *testing.M) {
	flag.Parse() // testenv.Short reads -short
	os.Exit(run(m))
}

func run(m *testing.M) int {
	if testenv.Short() {
		return m.Run() // every test skips
	}
	dir, err := stack.BinDir()
	if err != nil {
		fmt.Fprintln(os.Stderr, "e2e:", err)
		return 1
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	start := time.Now()
	binaries, err = stack.Build(ctx, dir)
	if err != nil {
		fmt.Fprintln(os.Stderr, "e2e:", err)
		return 1
	}
	if testing.Verbose() {
		fmt.Printf("e2e: built %v in %v\n", stack.ServiceNames(), time.Since(start).Round(time.Millisecond))
	}
	return m.Run()
}

// newStack starts a stack for t; it skips under -short.
func newStack(t *testing.T, opts stack.Options) *stack.Stack {
	t.Helper()
	if testenv.Short() {
		t.Skip("end-to-end test: needs the servers (make deps)")
	}
	opts.Binaries = binaries
	start := time.Now()
	s := stack.NewStack(t, opts)
	t.Logf("stack of %d processes ready in %v (log %s)", len(s.Names()), time.Since(start).Round(time.Millisecond), s.LogPath)
	return s
}

// testCtx is a context bounded well inside the module's time budget.
func testCtx(t *testing.T, d time.Duration) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

const password = "correct-horse-battery"

// register creates a user with a name unique to the test run.
func register(t *testing.T, ctx context.Context, api *stack.API, name string) *stack.User {
	t.Helper()
	u, err := api.Register(ctx, name, password)
	if err != nil {
		t.Fatalf("register %s: %v", name, err)
	}
	return u
}

// dial connects u to gateway i of s; the socket is closed when t ends.
func dial(t *testing.T, ctx context.Context, s *stack.Stack, i int, u *stack.User) *stack.Conn {
	t.Helper()
	c, err := stack.Dial(ctx, s.GatewayURL(i), u.Token)
	if err != nil {
		t.Fatalf("dial gateway %d as %s: %v", i, u.Username, err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// join joins room on c and returns the ack's lastSeq.
func join(t *testing.T, ctx context.Context, c *stack.Conn, roomID string) *int64 {
	t.Helper()
	ack, err := c.Join(ctx, roomID, nil)
	if err != nil {
		t.Fatalf("join %s: %v", roomID, err)
	}
	if ack.RoomID != roomID {
		t.Fatalf("join ack room %q, want %q", ack.RoomID, roomID)
	}
	return ack.LastSeq
}

// relayed waits until the api's outbox relay has produced every member
// event committed so far: the HTTP answer does not wait for Kafka, and a
// row leaves the outbox only once Kafka stored its event. A test that
// checks a room's log order against sends made right after creating the
// room calls it first.
func relayed(t *testing.T, ctx context.Context, s *stack.Stack) {
	t.Helper()
	err := stack.WaitFor(ctx, 20*time.Second, func(ctx context.Context) (bool, error) {
		var n int
		if err := s.SQL().QueryRowContext(ctx, "SELECT count(*) FROM outbox").Scan(&n); err != nil {
			return false, err
		}
		return n == 0, fmt.Errorf("%d member events still in the outbox", n)
	})
	if err != nil {
		t.Fatalf("outbox relay: %v", err)
	}
}

// wantCode fails t unless err carries code.
func wantCode(t *testing.T, what string, err error, code string) {
	t.Helper()
	if got := stack.ErrorCode(err); string(got) != code {
		t.Errorf("%s: got %v (code %q), want code %s", what, err, got, code)
	}
}
