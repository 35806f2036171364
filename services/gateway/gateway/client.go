package gateway

import (
	"bytes"
	"context"
	"errors"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/fasthttp/websocket"
	"golang.org/x/time/rate"

	"relay/pkg/auth"
	"relay/pkg/protocol"
	"relay/services/gateway/gateway/hub"
)

// socket is the part of a WebSocket connection the writer uses; tests and
// benchmarks substitute a discarding one.
type socket interface {
	WriteMessage(messageType int, data []byte) error
	WriteControl(messageType int, data []byte, deadline time.Time) error
	SetWriteDeadline(t time.Time) error
	Close() error
}

// client is one WebSocket connection. Its reader (reader.go; for Socket.IO
// the session's event loop) handles client frames in order. Data frames are
// written from a bounded queue by a writer goroutine that exists only while
// there is something to write, so a slow socket never blocks the reader or
// the fan-out. An idle native connection holds no goroutine at all: its
// reader runs only when there is input, and its timers (ping, token
// expiry) run on the runtime's timer goroutines.
type client struct {
	s        *Service
	ws       socket
	userID   int64
	username string
	// token is forwarded to the api when joining a channel.
	token   string
	limiter *rate.Limiter
	pinger  *time.Timer
	// connID names the connection in presence commands (unique per process).
	connID string
	// presName is the username as presence commands carry it.
	presName string
	// lastAlive is when the peer last showed life (a frame or a pong),
	// unix ns; only connections alive within PongTimeout are heartbeated.
	lastAlive atomic.Int64
	// watchdog: the ping timer closes the connection once the peer was
	// silent past PongTimeout (native sockets, which have no read deadline;
	// Socket.IO has its own heartbeat).
	watchdog bool
	// goneOnce makes the presence disconnect happen once.
	goneOnce atomic.Bool

	// rooms are the rooms joined on this connection; its reader only (one
	// turn at a time).
	rooms map[int64]*hub.Member
	// typing maps the rooms this connection started typing in to when that
	// typing has surely expired; its reader only.
	typing map[int64]time.Time

	mu    sync.Mutex
	queue [][]byte
	// bulk counts the frames of queue that came in a SendBulk burst (a
	// replay): they do not count against QueueSize. The writer takes the
	// whole queue at once, which resets it.
	bulk      int
	writing   bool
	closing   bool
	closeCode int
	closeText string
	// stop is set with closing for closes that drop the queue (slow
	// consumer, dead peer), so the writer stops between frames.
	stop atomic.Bool
	// done is closed once the socket was closed.
	done chan struct{}

	// pingMu serialises pings with stopPings: no ping may be written once
	// the connection is released (a Socket.IO session's transport is gone
	// then; a native socket is closed).
	pingMu   sync.Mutex
	pingsOff bool
}

func newClient(s *Service, ws socket, claims auth.Claims, token string) *client {
	c := &client{
		s: s, ws: ws, userID: claims.UserID, username: claims.Username, token: token,
		limiter:  rate.NewLimiter(rate.Limit(s.cfg.Rate), s.cfg.Burst),
		connID:   strconv.FormatUint(s.connSeq.Add(1), 36),
		presName: presenceName(claims.Username),
		done:     make(chan struct{}),
	}
	_, c.watchdog = ws.(*wsConn)
	c.lastAlive.Store(time.Now().UnixNano())
	// Under pingMu: the first ping may fire before the assignment is done.
	c.pingMu.Lock()
	c.pinger = time.AfterFunc(s.cfg.PingInterval, c.ping)
	c.pingMu.Unlock()
	return c
}

// UserID implements hub.Conn.
func (c *client) UserID() int64 { return c.userID }

// Send implements hub.Conn: it queues frame for the writer without blocking.
// A full queue means the client cannot keep up: it is closed with 4000.
func (c *client) Send(frame []byte) bool {
	c.mu.Lock()
	if c.closing {
		c.mu.Unlock()
		return false
	}
	if len(c.queue)-c.bulk >= c.s.cfg.QueueSize {
		c.mu.Unlock()
		c.CloseSlow()
		return false
	}
	c.queue = append(c.queue, frame)
	start := !c.writing
	c.writing = true
	c.mu.Unlock()
	if start {
		go c.drain()
	}
	return true
}

var _ hub.BulkConn = (*client)(nil)

// SendBulk implements hub.BulkConn: it queues a known burst (a replay, a
// repaired gap: at most REPLAY_LIMIT events) in order. The burst is not held
// against QueueSize, so a long replay does not look like a slow consumer;
// live frames queued behind it are.
func (c *client) SendBulk(frames [][]byte) bool {
	c.mu.Lock()
	if c.closing {
		c.mu.Unlock()
		return false
	}
	c.queue = append(c.queue, frames...)
	c.bulk += len(frames)
	start := !c.writing
	c.writing = true
	c.mu.Unlock()
	if start {
		go c.drain()
	}
	return true
}

// CloseSlow implements hub.Conn: closes the connection as a slow consumer.
func (c *client) CloseSlow() {
	if c.closeWith(protocol.CloseSlowConsumer, "slow consumer", true) {
		c.s.metrics.slowConsumers.Inc()
		c.s.log.Warn("slow consumer disconnected", "user_id", c.userID, "queue", c.s.cfg.QueueSize)
	}
}

// close asks the writer to flush what is queued, send a close frame with
// code and close the socket. Code 0 closes without a close frame (the peer
// is gone). It reports whether this call started the close.
func (c *client) close(code int, text string) bool {
	return c.closeWith(code, text, code == 0)
}

func (c *client) closeWith(code int, text string, drop bool) bool {
	c.mu.Lock()
	if c.closing {
		c.mu.Unlock()
		return false
	}
	c.closing, c.closeCode, c.closeText = true, code, text
	if drop {
		c.stop.Store(true)
		c.queue, c.bulk = nil, 0
	}
	start := !c.writing
	c.writing = true
	c.mu.Unlock()
	c.pinger.Stop()
	if start {
		go c.drain()
	}
	return true
}

// take moves the queued frames into batch (reusing its array). When there
// is nothing to write and no close to do, it ends the writer's turn.
func (c *client) take(batch [][]byte) (_ [][]byte, more, closing bool, code int, text string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.queue) == 0 && !c.closing {
		c.writing = false
		return batch, false, false, 0, ""
	}
	batch, c.queue = c.queue, batch[:0]
	c.bulk = 0
	// An idle connection should not keep a big array from one burst.
	if cap(c.queue) > 64 {
		c.queue = nil
	}
	return batch, true, c.closing, c.closeCode, c.closeText
}

// drain is the writer: the only goroutine writing data frames, started by
// Send or close when none runs. It writes until the queue is empty, and it
// is the one that closes the socket, after which done is closed.
func (c *client) drain() {
	var batch [][]byte
	for {
		var more, closing bool
		var code int
		var text string
		batch, more, closing, code, text = c.take(batch)
		if !more {
			return
		}
		for i := 0; i < len(batch); {
			if c.stop.Load() {
				break
			}
			n, err := c.writeFrames(batch[i:])
			if err != nil {
				c.writeFailed(err)
				closing, code, text = c.closeState()
				break
			}
			i += n
		}
		clear(batch)
		if closing {
			c.finish(code, text)
			close(c.done)
			return
		}
	}
}

// ping sends a protocol ping and schedules the next one; it runs on a
// timer, not on a goroutine of its own. A peer silent (no frame, no pong)
// past PongTimeout is dropped here, so the timer is also due then.
func (c *client) ping() {
	c.pingMu.Lock()
	defer c.pingMu.Unlock()
	if c.pingsOff {
		return
	}
	next := c.s.cfg.PingInterval
	if c.watchdog {
		left := c.s.cfg.PongTimeout - time.Since(time.Unix(0, c.lastAlive.Load()))
		if left <= 0 {
			c.close(0, "")
			return
		}
		next = min(next, left+time.Millisecond)
	}
	if err := c.ws.WriteControl(websocket.PingMessage, nil, time.Now().Add(c.s.cfg.WriteTimeout)); err != nil {
		c.writeFailed(err)
		return
	}
	c.mu.Lock()
	closing := c.closing
	c.mu.Unlock()
	if !closing {
		c.pinger.Reset(next)
	}
}

// stopPings ends the pings for good, waiting for one in flight; the
// connection's end calls it before the socket is released.
func (c *client) stopPings() {
	c.pingMu.Lock()
	defer c.pingMu.Unlock()
	c.pingsOff = true
	c.pinger.Stop()
}

// writeFrames writes the first of frames, or as many as one coalesced
// write takes when the socket supports it, and returns how many it wrote.
func (c *client) writeFrames(frames [][]byte) (int, error) {
	if bw, ok := c.ws.(batchWriter); ok {
		return bw.writeBatch(frames, time.Now().Add(c.s.cfg.WriteTimeout))
	}
	return 1, c.write(frames[0])
}

func (c *client) write(frame []byte) error {
	if err := c.ws.SetWriteDeadline(time.Now().Add(c.s.cfg.WriteTimeout)); err != nil {
		return err
	}
	return c.ws.WriteMessage(websocket.TextMessage, frame)
}

// writeFailed closes the connection after a failed write: a missed
// deadline means the client does not read (slow consumer), anything else
// that the peer is gone.
func (c *client) writeFailed(err error) {
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		c.CloseSlow()
		return
	}
	c.close(0, "")
}

func (c *client) closeState() (bool, int, string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.closing, c.closeCode, c.closeText
}

// finish sends the close frame (best effort, briefly) and closes the socket.
func (c *client) finish(code int, text string) {
	if code != 0 {
		_ = c.ws.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(code, text), time.Now().Add(time.Second))
	}
	_ = c.ws.Close()
}

// reply queues an ack or error frame; it is what handlers' results become.
func (c *client) reply(frame []byte) {
	if frame != nil {
		c.Send(frame)
	}
}

// leaveAll removes the connection from every room it joined.
func (c *client) leaveAll(ctx context.Context) {
	for id, m := range c.rooms {
		if err := c.s.hub.Leave(ctx, m); err != nil {
			c.s.log.WarnContext(ctx, "leave room on disconnect", "room_id", id, "err", err)
		}
		delete(c.rooms, id)
	}
}

// bufferPool recycles frame read buffers across connections, so an idle
// connection holds none.
type bufferPool struct{ p sync.Pool }

func (b *bufferPool) get() *bytes.Buffer {
	if v, ok := b.p.Get().(*bytes.Buffer); ok {
		v.Reset()
		return v
	}
	return new(bytes.Buffer)
}

func (b *bufferPool) put(buf *bytes.Buffer) {
	if buf.Cap() <= 64<<10 {
		b.p.Put(buf)
	}
}
