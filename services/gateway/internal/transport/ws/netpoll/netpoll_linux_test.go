//go:build linux

package netpoll

import (
	"errors"
	"io"
	"net"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// pair returns the two ends of a loopback TCP connection.
func pair(t *testing.T) (server, client *net.TCPConn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	cc, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	sc, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cc.Close(); _ = sc.Close() })
	return sc.(*net.TCPConn), cc.(*net.TCPConn)
}

func newPoller(t *testing.T) *Poller {
	t.Helper()
	p, err := New()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := p.Close(); err != nil {
			t.Error(err)
		}
	})
	return p
}

// reader is a handler that reads until ErrWouldBlock and reports what it
// read, and io.EOF or an error as the end.
type reader struct {
	conn  **Conn
	data  chan []byte
	ended chan error
}

func newReader() *reader {
	return &reader{conn: new(*Conn), data: make(chan []byte, 100), ended: make(chan error, 1)}
}

func (r *reader) handle() bool {
	buf := make([]byte, 3) // small: several reads per turn
	var got []byte
	for {
		n, err := (*r.conn).Read(buf)
		got = append(got, buf[:n]...)
		if errors.Is(err, ErrWouldBlock) {
			if len(got) > 0 {
				r.data <- got
			}
			return true
		}
		if err != nil {
			if len(got) > 0 {
				r.data <- got
			}
			r.ended <- err
			return false
		}
	}
}

func (r *reader) add(t *testing.T, p *Poller, c syscall.Conn) {
	t.Helper()
	// The handler may run before Add returns: publish the Conn first.
	started := make(chan struct{})
	h := r.handle
	pc, err := p.Add(c, func() bool { <-started; return h() })
	if err != nil {
		t.Fatal(err)
	}
	*r.conn = pc
	close(started)
}

func (r *reader) expect(t *testing.T, want string) {
	t.Helper()
	var got []byte
	for len(got) < len(want) {
		select {
		case b := <-r.data:
			got = append(got, b...)
		case err := <-r.ended:
			t.Fatalf("ended with %v after %q, want %q", err, got, want)
		case <-time.After(5 * time.Second):
			t.Fatalf("got %q, want %q", got, want)
		}
	}
	if string(got) != want {
		t.Fatalf("got %q, want %q", got, want)
	}
}

func TestReadsEachTimeThereIsInput(t *testing.T) {
	p := newPoller(t)
	sc, cc := pair(t)
	r := newReader()
	r.add(t, p, sc)
	for _, msg := range []string{"hello", "again, longer than the buffer", "x"} {
		if _, err := cc.Write([]byte(msg)); err != nil {
			t.Fatal(err)
		}
		r.expect(t, msg)
	}
	if p.Len() != 1 {
		t.Fatalf("Len %d, want 1", p.Len())
	}
	_ = cc.Close()
	select {
	case err := <-r.ended:
		if !errors.Is(err, io.EOF) {
			t.Fatalf("end %v, want EOF", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("peer close not seen")
	}
}

// TestInputBeforeAddIsSeen: readiness is level-triggered at registration.
func TestInputBeforeAddIsSeen(t *testing.T) {
	p := newPoller(t)
	sc, cc := pair(t)
	if _, err := cc.Write([]byte("early")); err != nil {
		t.Fatal(err)
	}
	time.Sleep(20 * time.Millisecond)
	r := newReader()
	r.add(t, p, sc)
	r.expect(t, "early")
}

func TestOneHandlerAtATimePerConnection(t *testing.T) {
	p := newPoller(t)
	sc, cc := pair(t)
	var running, most, total atomic.Int64
	var pc *Conn
	ready := make(chan struct{})
	pc, err := p.Add(sc, func() bool {
		<-ready
		n := running.Add(1)
		if n > most.Load() {
			most.Store(n)
		}
		buf := make([]byte, 1)
		for {
			_, err := pc.Read(buf)
			if err != nil {
				break
			}
			total.Add(1)
			time.Sleep(100 * time.Microsecond) // input keeps arriving meanwhile
		}
		running.Add(-1)
		return true
	})
	if err != nil {
		t.Fatal(err)
	}
	close(ready)
	for range 300 {
		if _, err := cc.Write([]byte{1}); err != nil {
			t.Fatal(err)
		}
		time.Sleep(50 * time.Microsecond)
	}
	deadline := time.Now().Add(10 * time.Second)
	for total.Load() < 300 && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	if total.Load() != 300 {
		t.Fatalf("read %d bytes, want 300", total.Load())
	}
	if most.Load() != 1 {
		t.Fatalf("%d handlers ran at once", most.Load())
	}
}

// TestShutdownWakesTheReader: shutting the socket down is how its owner
// makes the reader end it.
func TestShutdownWakesTheReader(t *testing.T) {
	p := newPoller(t)
	sc, _ := pair(t)
	r := newReader()
	r.add(t, p, sc)
	rc, _ := sc.SyscallConn()
	_ = rc.Control(func(fd uintptr) { _ = unix.Shutdown(int(fd), unix.SHUT_RDWR) })
	select {
	case err := <-r.ended:
		if !errors.Is(err, io.EOF) {
			t.Fatalf("end %v, want EOF", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("shutdown not seen")
	}
}

// TestRemovedConnectionsDescriptorReused: a connection removed and closed
// is never handled again, even when a new connection gets its descriptor.
func TestRemovedConnectionsDescriptorReused(t *testing.T) {
	p := newPoller(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	accept := func() (*net.TCPConn, net.Conn, int) {
		cc, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = cc.Close() })
		sc, err := ln.Accept()
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = sc.Close() })
		var fd int
		rc, _ := sc.(*net.TCPConn).SyscallConn()
		_ = rc.Control(func(f uintptr) { fd = int(f) })
		return sc.(*net.TCPConn), cc, fd
	}
	var oldRuns atomic.Int64
	for range 20 {
		sa, ca, fdA := accept()
		ra := newReader()
		ra.add(t, p, sa)
		if _, err := ca.Write([]byte("a")); err != nil {
			t.Fatal(err)
		}
		ra.expect(t, "a")
		(*ra.conn).Remove()
		_ = sa.Close()
		// Input for the removed connection must never reach a handler.
		_, _ = ca.Write([]byte("late"))
		_ = ca.Close()

		sb, cb, fdB := accept()
		if fdB != fdA {
			t.Logf("descriptor not reused (%d, %d)", fdA, fdB)
		}
		rb := newReader()
		rb.add(t, p, sb)
		if _, err := cb.Write([]byte("b")); err != nil {
			t.Fatal(err)
		}
		rb.expect(t, "b")
		select {
		case b := <-ra.data:
			oldRuns.Add(1)
			t.Fatalf("removed connection handled again: %q", b)
		case err := <-ra.ended:
			t.Fatalf("removed connection handled again: %v", err)
		default:
		}
		(*rb.conn).Remove()
		_ = sb.Close()
	}
	if p.Len() != 0 {
		t.Fatalf("Len %d after removing all", p.Len())
	}
}

func TestAddAfterClose(t *testing.T) {
	p, err := New()
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
	if err := p.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	sc, _ := pair(t)
	if _, err := p.Add(sc, func() bool { return true }); !errors.Is(err, ErrClosed) {
		t.Fatalf("Add after Close: %v, want ErrClosed", err)
	}
}

// TestCloseWhileATurnRuns: the turn finishes without re-arming on the
// closed epoll descriptor, and its connection is not handled again.
func TestCloseWhileATurnRuns(t *testing.T) {
	p, err := New()
	if err != nil {
		t.Fatal(err)
	}
	sc, cc := pair(t)
	inTurn := make(chan struct{})
	release := make(chan struct{})
	var turns atomic.Int64
	var pc *Conn
	ready := make(chan struct{})
	pc, err = p.Add(sc, func() bool {
		<-ready
		if turns.Add(1) == 1 {
			close(inTurn)
			<-release
		}
		buf := make([]byte, 16)
		for {
			if _, err := pc.Read(buf); err != nil {
				return true
			}
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	close(ready)
	if _, err := cc.Write([]byte("x")); err != nil {
		t.Fatal(err)
	}
	<-inTurn
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
	close(release)
	if _, err := cc.Write([]byte("y")); err != nil {
		t.Fatal(err)
	}
	// Longer than the retry of a failed re-arming.
	time.Sleep(3 * rearmRetry)
	pc.Remove()
	if n := turns.Load(); n != 1 {
		t.Fatalf("%d turns after Close, want 1", n)
	}
}
