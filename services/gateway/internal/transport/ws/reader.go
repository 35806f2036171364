package ws

import (
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/fasthttp/websocket"

	"relay/services/gateway/internal/conn"
	"relay/services/gateway/internal/transport/ws/netpoll"
)

// readChunk is the size of the pooled buffers turns read into.
const readChunk = 4096

// readBufs recycles the buffers of reader turns: an idle connection holds
// none (only a partial frame, while there is one).
var readBufs = sync.Pool{New: func() any { b := make([]byte, readChunk); return &b }}

// errShut stops the handling of input once the connection is ending.
var errShut = errors.New("ws: connection shut")

// reader reads and handles one native connection's frames. With the
// poller, it runs in turns: a goroutine started when the socket has input
// reads until nothing is left (handling each frame in order, as they come),
// then the socket is watched again and no goroutine remains. The poller's
// one-shot arming runs one turn at a time, so frames are handled in order
// and c.Rooms and c.Typing stay single-goroutine. Without the poller (no
// epoll, no descriptor) one goroutine reads with blocking reads instead.
//
// The turn that sees the end of input (the peer left, or Close shut the
// socket down) ends the connection: that is where Lifecycle.End runs, once.
type reader struct {
	srv *Server
	c   *conn.Client
	ws  *Conn
	// mu is held for a whole turn. The poller never runs two at once; the
	// mutex makes each turn happen-before the next in Go's memory model
	// (they run on different goroutines, ordered through the kernel only).
	mu     sync.Mutex
	frames frameReader
	ended  bool
}

// turn reads and handles what the socket has; false once the connection
// ended (then it is out of the poller and closed).
func (r *reader) turn() bool {
	return r.guarded(func() bool {
		bp := readBufs.Get().(*[]byte)
		defer readBufs.Put(bp)
		for {
			n, err := netpoll.Read(r.ws.rc, *bp)
			if n > 0 && !r.consume((*bp)[:n]) {
				break
			}
			if errors.Is(err, netpoll.ErrWouldBlock) {
				return true
			}
			if err != nil {
				break
			}
		}
		r.end()
		return false
	})
}

// block is the reader without the poller: a goroutine in blocking reads.
func (r *reader) block() {
	r.guarded(func() bool {
		buf := make([]byte, r.srv.o.ReadBufferSize)
		for {
			n, err := r.ws.nc.Read(buf)
			if n > 0 && !r.consume(buf[:n]) {
				break
			}
			if err != nil {
				break
			}
		}
		r.end()
		return false
	})
}

// first handles the frames that came with the upgrade request; false when
// they ended the connection.
func (r *reader) first(early []byte) bool {
	return r.guarded(func() bool {
		if r.consume(early) {
			return true
		}
		r.end()
		return false
	})
}

// guarded runs f; a panic (our bug) closes the connection with 1011 and
// ends it, instead of taking the process down.
func (r *reader) guarded(f func() bool) (more bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	defer func() {
		if p := recover(); p != nil {
			r.srv.o.Log.Error("panic in connection handler", "panic", fmt.Sprint(p))
			r.c.Abort(conn.DisconnectInternal)
			r.end()
			more = false
		}
	}()
	return f()
}

// consume handles the frames data completes; false when the connection
// must end (the peer closed, broke the protocol, or we shut it).
func (r *reader) consume(data []byte) bool {
	if r.ws.shut.Load() {
		// Ending: input is read (to its end) but no longer handled.
		return true
	}
	err := r.frames.feed(data, r.handle)
	if err == nil {
		return true
	}
	var fe *frameError
	if errors.As(err, &fe) {
		// Like the library did: the close frame names the violation, and
		// what was queued is dropped.
		r.c.Abort(fe.d)
	}
	return false
}

// handle handles one client message or control frame, as the library's
// reader did: text and binary messages go to the Handler, pings get a
// pong, a close the same close back.
func (r *reader) handle(op byte, payload []byte) error {
	h, c := r.srv.o.Handler, r.c
	c.Touch()
	switch op {
	case OpText:
		h.Text(c, payload)
	case OpBinary:
		h.Binary(c)
	case OpPing:
		_ = r.ws.WriteControl(websocket.PongMessage, payload, time.Now().Add(time.Second))
	case OpClose:
		reply, err := closeReply(payload)
		if err != nil {
			return err
		}
		_ = r.ws.WriteControl(websocket.CloseMessage, reply, time.Now().Add(time.Second))
		return errPeerClosed
	}
	if r.ws.shut.Load() {
		return errShut
	}
	return nil
}

// end is what follows the last read, once: the connection's End (close,
// leave rooms and presence, release the socket).
func (r *reader) end() {
	if r.ended {
		return
	}
	r.ended = true
	r.srv.o.Lifecycle.End(r.c)
}
