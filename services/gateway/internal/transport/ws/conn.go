package ws

import (
	"errors"
	"net"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"relay/services/gateway/internal/conn"
	"relay/services/gateway/internal/transport/ws/netpoll"
)

// maxBatchBytes bounds one coalesced write: large enough that a burst of
// small chat frames is one syscall, small enough that a pooled buffer stays
// cheap and the stop flag (slow consumer) is checked between writes.
const maxBatchBytes = 32 << 10

// Conn is a native WebSocket connection on the TCP connection fasthttp
// hijacked: frames are encoded and decoded here (frames.go), not by the
// library, which only did the handshake. Its reader (reader.go) runs only
// while there is input, so a silent connection holds no goroutine.
//
// Data frames are written in batches: one deadline and one write(2) for
// many frames, which was most of the gateway's CPU in fan-out when the
// library wrote them one by one. Every write (a batch or a control frame)
// holds wmu for its deadline and its write(2), and a batch holds whole
// frames, so a control frame lands between data frames, never inside one.
type Conn struct {
	nc net.Conn
	// rc is nc's descriptor, nil when nc has none (then the reader blocks
	// in a goroutine of its own).
	rc syscall.RawConn

	wmu sync.Mutex
	// deadline is the write deadline last set on nc (under wmu).
	deadline time.Time
	// broken is set once a write failed: it may have ended inside a frame,
	// after which no control frame (a close) may follow.
	broken atomic.Bool
	// shut is set by Close: the connection is ending, its reader handles
	// no more input.
	shut atomic.Bool

	// pmu guards pc, which is set once the poller watches the connection.
	pmu sync.Mutex
	pc  *netpoll.Conn
}

var (
	_ conn.Transport   = (*Conn)(nil)
	_ conn.BatchWriter = (*Conn)(nil)
)

// errBrokenFrame refuses control frames after a failed write.
var errBrokenFrame = errors.New("ws: write failed inside a frame")

// errControlTooLong refuses a control frame payload above 125 bytes.
var errControlTooLong = errors.New("ws: control frame payload too long")

func newConn(nc net.Conn) *Conn {
	w := &Conn{nc: nc}
	if sc, ok := nc.(syscall.Conn); ok {
		if rc, err := sc.SyscallConn(); err == nil {
			w.rc = rc
		}
	}
	return w
}

// batchBufs recycles the buffers batches are encoded into, so an idle
// connection holds none.
var batchBufs = sync.Pool{New: func() any { b := make([]byte, 0, 4096); return &b }}

// WriteBatch implements conn.BatchWriter.
func (w *Conn) WriteBatch(frames [][]byte, deadline time.Time) (int, error) {
	bp := batchBufs.Get().(*[]byte)
	buf := (*bp)[:0]
	n := 0
	for _, f := range frames {
		if n > 0 && len(buf)+len(f)+10 > maxBatchBytes {
			break
		}
		buf = appendFrame(buf, OpText, f)
		n++
	}
	err := w.write(buf, deadline)
	if cap(buf) <= 2*maxBatchBytes {
		*bp = buf[:0]
		batchBufs.Put(bp)
	}
	if err != nil {
		return 0, err
	}
	return n, nil
}

// write writes whole frames with deadline.
func (w *Conn) write(frames []byte, deadline time.Time) error {
	w.wmu.Lock()
	defer w.wmu.Unlock()
	err := w.setDeadline(deadline)
	if err == nil {
		_, err = w.nc.Write(frames)
	}
	if err != nil {
		w.broken.Store(true)
	}
	return err
}

// setDeadline makes the write deadline at least deadline and at most an
// eighth of the time left to it later. Setting a deadline is a runtime
// timer update under a lock, and it was a tenth of a busy gateway's CPU when
// every batch set its own (CPU profile, docs/performance.md); with the slack
// a connection that keeps writing moves its deadline a few times per write
// timeout instead, and a write still fails no sooner than it was allowed to
// and only slightly later.
func (w *Conn) setDeadline(deadline time.Time) error {
	if !w.deadline.Before(deadline) && !w.deadline.After(deadline.Add(time.Until(deadline)/8)) {
		return nil
	}
	at := deadline.Add(time.Until(deadline) / 8)
	if err := w.nc.SetWriteDeadline(at); err != nil {
		return err
	}
	w.deadline = at
	return nil
}

// WriteControl writes a ping, pong or close frame unless a write failed.
func (w *Conn) WriteControl(messageType int, data []byte, deadline time.Time) error {
	if w.broken.Load() {
		return errBrokenFrame
	}
	if len(data) > maxControlPayload {
		return errControlTooLong
	}
	var b [2 + maxControlPayload]byte
	return w.write(appendFrame(b[:0], byte(messageType), data), deadline)
}

// WriteMessage writes one data frame with the deadline last set (the
// writer uses WriteBatch; this completes conn.Transport).
func (w *Conn) WriteMessage(messageType int, data []byte) error {
	w.wmu.Lock()
	defer w.wmu.Unlock()
	_, err := w.nc.Write(appendFrame(nil, byte(messageType), data))
	if err != nil {
		w.broken.Store(true)
	}
	return err
}

// SetWriteDeadline implements conn.Transport.
func (w *Conn) SetWriteDeadline(t time.Time) error {
	w.wmu.Lock()
	defer w.wmu.Unlock()
	if err := w.nc.SetWriteDeadline(t); err != nil {
		return err
	}
	w.deadline = t
	return nil
}

// halfCloser is a connection that can be shut down without closing its
// descriptor (*net.TCPConn).
type halfCloser interface {
	CloseRead() error
	CloseWrite() error
}

// Close ends the connection from our side: it shuts the socket down,
// which wakes the reader (end of input; a socket that is no longer
// connected wakes it with a hang-up), and the reader ends the connection
// and closes the descriptor once it is out of the poller. What was written
// before is still sent. A connection that cannot be shut down is closed,
// which fails its (blocked) reader just the same.
func (w *Conn) Close() error {
	if w.shut.Swap(true) {
		return nil
	}
	if hc, ok := w.nc.(halfCloser); ok {
		_ = hc.CloseWrite()
		_ = hc.CloseRead()
		return nil
	}
	return w.nc.Close()
}

// pollable tells whether the poller can watch the connection: it needs a
// descriptor, and a Close that wakes the reader.
func (w *Conn) pollable() bool {
	_, ok := w.nc.(halfCloser)
	return ok && w.rc != nil
}

// Release takes the connection out of the poller and closes it; the
// connection's End calls it last. Removal comes first: once closed, the
// descriptor number may be reused by the next connection.
func (w *Conn) Release() {
	w.shut.Store(true)
	w.pmu.Lock()
	pc := w.pc
	w.pc = nil
	w.pmu.Unlock()
	if pc != nil {
		pc.Remove()
	}
	_ = w.nc.Close()
}

// CloseSocket closes the TCP connection at once; the shutdown uses it for
// connections left without a reader (the poller closed).
func (w *Conn) CloseSocket() error { return w.nc.Close() }
