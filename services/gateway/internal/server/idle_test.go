package server

import (
	"bytes"
	"context"
	"net"
	"os"
	"runtime"
	"runtime/pprof"
	"strconv"
	"strings"
	"testing"
	"time"

	"go.opentelemetry.io/otel/trace/noop"

	"relay/pkg/chat"
	"relay/services/gateway/internal/frame"
	"relay/services/gateway/internal/transport/ws"
)

// upgradeRequest is a hand-written WebSocket upgrade of /ws.
func upgradeRequest(addr, token string) []byte {
	return []byte("GET /ws?token=" + token + " HTTP/1.1\r\nHost: " + addr +
		"\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")
}

// clientFrame encodes one final client frame of opcode op, masked as RFC
// 6455 requires of clients.
func clientFrame(op byte, payload []byte) []byte {
	return ws.AppendClientFrame(nil, true, op, payload)
}

// clientFragment encodes one masked client frame; fin false leaves the
// message open for continuation frames.
func clientFragment(fin bool, op byte, payload []byte) []byte {
	return ws.AppendClientFrame(nil, fin, op, payload)
}

// event is one frame the server wrote.
type event struct {
	op      byte
	payload string
}

// Opcodes of the frames the tests write and read.
const (
	opContinuation = ws.OpContinuation
	opText         = ws.OpText
	opClose        = ws.OpClose
	opPing         = ws.OpPing
	opPong         = ws.OpPong
)

// readUntil reads from conn until what it read contains want.
func readUntil(t testing.TB, conn net.Conn, want string) []byte {
	t.Helper()
	var got []byte
	buf := make([]byte, 4096)
	_ = conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	for !bytes.Contains(got, []byte(want)) {
		n, err := conn.Read(buf)
		got = append(got, buf[:n]...)
		if err != nil {
			t.Fatalf("read %q: %v (got %q)", want, err, got)
		}
	}
	return got
}

// TestIdleConnectionFootprint measures what idle /ws connections cost the
// gateway: GATEWAY_IDLE_CONNS=2000 go test ./gateway -run IdleConnectionFootprint -v.
// Each connection joins a room, gets its ack and then stays silent. The
// clients are raw sockets in this process (a few hundred bytes each, also
// counted). It reports, it does not assert: the numbers depend on the
// machine. GATEWAY_IDLE_HEAPPROFILE=<file> also writes a heap profile of
// the idle state.
func TestIdleConnectionFootprint(t *testing.T) {
	n, _ := strconv.Atoi(os.Getenv("GATEWAY_IDLE_CONNS"))
	if n <= 0 {
		t.Skip("set GATEWAY_IDLE_CONNS to measure")
	}
	e := newEnv(t)
	// As in production without an OTLP endpoint: no span is recorded (the
	// harness's recorder would keep every upgrade's span).
	tel, _ := testTelemetry(t)
	tel.TracerProvider = noop.NewTracerProvider()
	tel.Tracer = tel.TracerProvider.Tracer("gateway-test")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	svc, err := New(ctx, e.config(), tel)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	runCtx, stop := context.WithCancel(context.Background())
	g := &gateway{svc: svc, stop: stop, done: make(chan error, 1)}
	go func() { g.done <- svc.Run(runCtx, ln) }()
	t.Cleanup(func() {
		g.shutdown(t)
		_ = svc.Close()
	})
	uid, tok := e.user("alice")
	room := e.room(chat.RoomGroup, uid)
	addr := ln.Addr().String()
	join := clientFrame(0x1, []byte(`{"event":"join_room","ref":"j","data":{"roomId":"`+frame.RoomString(room)+`"}}`))

	measure := func() (goroutines int, stack, heap uint64) {
		runtime.GC()
		runtime.GC()
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		return runtime.NumGoroutine(), ms.StackInuse, ms.HeapAlloc
	}
	g0, s0, h0 := measure()
	conns := make([]net.Conn, 0, n)
	defer func() {
		for _, c := range conns {
			_ = c.Close()
		}
	}()
	for range n {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		conns = append(conns, c)
		// As a browser does: the upgrade, its answer, then frames.
		if _, err := c.Write(upgradeRequest(addr, tok)); err != nil {
			t.Fatal(err)
		}
		readUntil(t, c, "\r\n\r\n")
		if _, err := c.Write(join); err != nil {
			t.Fatal(err)
		}
		readUntil(t, c, `"ref":"j"`)
		_ = c.SetReadDeadline(time.Time{})
	}
	time.Sleep(time.Second)
	g1, s1, h1 := measure()
	per := func(a, b uint64) float64 { return float64(int64(b)-int64(a)) / float64(n) }
	if path := os.Getenv("GATEWAY_IDLE_HEAPPROFILE"); path != "" {
		f, err := os.Create(path)
		if err != nil {
			t.Fatal(err)
		}
		if err := pprof.WriteHeapProfile(f); err != nil {
			t.Fatal(err)
		}
		_ = f.Close()
	}
	t.Logf("%d idle connections: goroutines %d → %d (%.2f per connection), stack in use %.0f B/conn, live heap %.0f B/conn",
		n, g0, g1, float64(g1-g0)/float64(n), per(s0, s1), per(h0, h1))
}

// serverFrames parses the unmasked frames the server wrote after its 101
// response; rest is an incomplete tail.
func serverFrames(t testing.TB, b []byte) (frames []event, rest []byte) {
	t.Helper()
	if i := bytes.Index(b, []byte("\r\n\r\n")); i >= 0 && bytes.HasPrefix(b, []byte("HTTP/1.1 101")) {
		b = b[i+4:]
	}
	for {
		op, payload, n, ok := ws.ParseFrame(b)
		if !ok {
			return frames, b
		}
		frames = append(frames, event{op, string(payload)})
		b = b[n:]
	}
}

// rawDial opens a TCP connection to g and writes the upgrade request
// followed by first (in the same write).
func rawDial(t *testing.T, g *gateway, token string, first []byte) net.Conn {
	t.Helper()
	addr := strings.TrimPrefix(strings.TrimSuffix(g.url, "/ws"), "ws://")
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	if _, err := c.Write(append(upgradeRequest(addr, token), first...)); err != nil {
		t.Fatal(err)
	}
	return c
}

// TestFramesInTheUpgradePacket: frames sent in the same write as the
// upgrade request (read ahead into fasthttp's buffer, which goes back to
// its pool) are all handled, in order, and then the connection is idle
// in the poller.
func TestFramesInTheUpgradePacket(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	g := e.start(nil)
	_, tok := e.user("alice")
	var first []byte
	first = append(first, clientFrame(opText, []byte(`{"event":"ping","ref":"a"}`))...)
	first = append(first, clientFragment(false, opText, []byte(`{"event":"ping",`))...)
	first = append(first, clientFrame(opPing, []byte("p1"))...)
	first = append(first, clientFragment(true, opContinuation, []byte(`"ref":"b"}`))...)
	conn := rawDial(t, g, tok, first)
	got := readUntil(t, conn, `"ref":"b"`)
	frames, _ := serverFrames(t, got)
	// Acks come in order; the pong is written by the reader directly, so
	// it may overtake the queued ack of a.
	var acks []string
	pong := false
	for _, f := range frames {
		switch f.op {
		case opPong:
			pong = pong || f.payload == "p1"
		case opText:
			acks = append(acks, f.payload)
		}
	}
	want := []string{`{"event":"ack","data":{},"ref":"a"}`, `{"event":"ack","data":{},"ref":"b"}`}
	if strings.Join(acks, "|") != strings.Join(want, "|") || !pong {
		t.Fatalf("got acks %q and pong %v, want %q and the pong", acks, pong, want)
	}
	if g.svc.ws.Poller() == nil {
		t.Skip("no poller on this platform")
	}
	eventually(t, "connection watched by the poller", func() bool { return g.svc.ws.Poller().Len() == 1 })
	_ = conn.Close()
	eventually(t, "connection released", func() bool { return g.svc.ws.Poller().Len() == 0 && g.svc.lc.Active() == 0 })
}

// TestFrameTrickledByteByByte: a frame arriving over many reads (many
// poller turns) is handled once, whole.
func TestFrameTrickledByteByByte(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	g := e.start(nil)
	_, tok := e.user("alice")
	conn := rawDial(t, g, tok, nil)
	readUntil(t, conn, "\r\n\r\n")
	f := clientFrame(opText, []byte(`{"event":"ping","ref":"slow","data":{}}`))
	for i := range f {
		if _, err := conn.Write(f[i : i+1]); err != nil {
			t.Fatal(err)
		}
		time.Sleep(time.Millisecond)
	}
	frames, _ := serverFrames(t, readUntil(t, conn, `"ref":"slow"`))
	if len(frames) != 1 || frames[0].payload != `{"event":"ack","data":{},"ref":"slow"}` {
		t.Fatalf("got %q, want one ack", frames)
	}
	// A client close is answered with the same close, and the socket ends.
	if _, err := conn.Write(clientFrame(opClose, []byte{0x03, 0xE8})); err != nil {
		t.Fatal(err)
	}
	var rest []byte
	buf := make([]byte, 64)
	_ = conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	for {
		n, err := conn.Read(buf)
		rest = append(rest, buf[:n]...)
		if err != nil {
			break
		}
	}
	frames, _ = serverFrames(t, rest)
	if len(frames) != 1 || frames[0].op != opClose || frames[0].payload != "\x03\xe8" {
		t.Fatalf("after close: %q, want close 1000", frames)
	}
	eventually(t, "connection released", func() bool { return g.svc.lc.Active() == 0 })
}
