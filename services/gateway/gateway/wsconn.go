package gateway

import (
	"encoding/binary"
	"errors"
	"sync"
	"sync/atomic"
	"time"

	"github.com/fasthttp/websocket"
)

// batchWriter is a socket that writes several text frames with one
// deadline and one write(2); the writer uses it when the socket has it.
type batchWriter interface {
	// writeBatch writes frames from the start, as many as fit one write,
	// and returns how many it wrote (at least one unless it fails).
	writeBatch(frames [][]byte, deadline time.Time) (int, error)
}

// maxBatchBytes bounds one coalesced write: large enough that a burst of
// small chat frames is one syscall, small enough that a pooled buffer stays
// cheap and the stop flag (slow consumer) is checked between writes.
const maxBatchBytes = 32 << 10

// wsSocket is a native WebSocket connection whose data frames are encoded
// here and written to the TCP connection in batches: the library writes
// one frame per write(2) and sets the deadline for each, which was most of
// the gateway's CPU in fan-out. Control frames (pings, pongs, close) still
// go through the library. A write to the net.Conn is atomic (the file
// descriptor's write lock is held for the whole buffer) and each batch
// holds whole frames, so a control frame written meanwhile lands between
// frames, never inside one.
type wsSocket struct {
	*websocket.Conn
	// broken is set once a batch failed: it may have ended inside a frame,
	// after which no control frame (a close) may follow.
	broken atomic.Bool
}

var _ batchWriter = (*wsSocket)(nil)

// errBrokenFrame refuses control frames after a failed batch.
var errBrokenFrame = errors.New("gateway: write failed inside a frame")

// WriteControl writes a control frame through the library unless a batch
// failed.
func (w *wsSocket) WriteControl(messageType int, data []byte, deadline time.Time) error {
	if w.broken.Load() {
		return errBrokenFrame
	}
	return w.Conn.WriteControl(messageType, data, deadline)
}

// batchBufs recycles the buffers batches are encoded into, so an idle
// connection holds none.
var batchBufs = sync.Pool{New: func() any { b := make([]byte, 0, 4096); return &b }}

func (w *wsSocket) writeBatch(frames [][]byte, deadline time.Time) (int, error) {
	bp := batchBufs.Get().(*[]byte)
	buf := (*bp)[:0]
	n := 0
	for _, f := range frames {
		if n > 0 && len(buf)+len(f)+10 > maxBatchBytes {
			break
		}
		buf = appendTextFrame(buf, f)
		n++
	}
	nc := w.NetConn()
	err := nc.SetWriteDeadline(deadline)
	if err == nil {
		_, err = nc.Write(buf)
	}
	if cap(buf) <= 2*maxBatchBytes {
		*bp = buf[:0]
		batchBufs.Put(bp)
	}
	if err != nil {
		w.broken.Store(true)
		return 0, err
	}
	return n, nil
}

// appendTextFrame appends payload as one final, unmasked text frame (RFC
// 6455 §5.2; a server never masks).
func appendTextFrame(buf, payload []byte) []byte {
	const finText = 0x80 | websocket.TextMessage
	switch n := len(payload); {
	case n < 126:
		buf = append(buf, finText, byte(n))
	case n <= 0xFFFF:
		buf = append(buf, finText, 126)
		buf = binary.BigEndian.AppendUint16(buf, uint16(n))
	default:
		buf = append(buf, finText, 127)
		buf = binary.BigEndian.AppendUint64(buf, uint64(n))
	}
	return append(buf, payload...)
}
