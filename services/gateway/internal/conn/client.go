// Package conn is the gateway's connection: one Client type over any
// transport (native WebSocket or Socket.IO), with its bounded outgoing
// queue, writer, pings and typed Disconnect, and the Lifecycle that admits,
// registers, ends and drains the connections of an instance.
package conn

import (
	"errors"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/fasthttp/websocket"
	"golang.org/x/time/rate"

	"relay/pkg/auth"
	"relay/services/gateway/internal/fanout/hub"
)

// Transport is the part of a connection the writer uses: a native socket,
// a Socket.IO session, or a discarding one in tests and benchmarks.
type Transport interface {
	WriteMessage(messageType int, data []byte) error
	WriteControl(messageType int, data []byte, deadline time.Time) error
	SetWriteDeadline(t time.Time) error
	Close() error
}

// Client is one connection. Its reader (the ws transport's reader; for
// Socket.IO the session's event loop) handles client frames in order. Data
// frames are written from a bounded queue by a writer goroutine that exists
// only while there is something to write, so a slow socket never blocks the
// reader or the fan-out. An idle native connection holds no goroutine at all: its
// reader runs only when there is input, and its timers (ping, token
// expiry) run on the runtime's timer goroutines.
type Client struct {
	l        *Lifecycle
	ws       Transport
	userID   int64
	username string
	// token is forwarded to the api when joining a channel.
	token   string
	limiter *rate.Limiter
	// replays limits the join replays of the connection; made at its
	// first replay (most connections never replay). Reader only.
	replays *rate.Limiter
	pinger  *time.Timer
	// expiry closes the connection when its token expires.
	expiry *time.Timer
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

	// Rooms are the rooms joined on this connection; its reader only (one
	// turn at a time), and the Lifecycle's end once the reader is done.
	Rooms map[int64]*hub.Member
	// Typing maps the rooms this connection started typing in to when that
	// typing has surely expired; its reader only, like Rooms.
	Typing map[int64]time.Time

	// protocol is "native" or "socketio", for gateway_connections.
	protocol string
	// addr is the client's address, for logs; releaseCaps gives back what
	// was acquired for the connection (OpenOptions.Release).
	addr        string
	releaseCaps func()

	mu    sync.Mutex
	queue [][]byte
	// waiters are told once the frames queued before them were written
	// (Flushed); the writer takes them with the queue. finished is set
	// once the writer is gone: a waiter is then told at once.
	waiters  []FlushWaiter
	finished bool
	// queued is the bytes of queue plus the batch the writer is writing,
	// held against Options.OutboundBudget.
	queued int
	// bulk counts the frames of queue that came in a SendBulk burst (a
	// replay): they do not count against QueueSize. The writer takes the
	// whole queue at once, which resets it.
	bulk    int
	writing bool
	closing bool
	reason  Disconnect
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

// NewClient makes a connection of the user claims names over t and starts
// its pings. Servers get their clients from Lifecycle.Open; tests and
// benchmarks call it directly.
func NewClient(l *Lifecycle, t Transport, claims auth.Claims, token string, watchdog bool) *Client {
	c := &Client{
		l: l, ws: t, userID: claims.UserID, username: claims.Username, token: token,
		limiter:  rate.NewLimiter(rate.Limit(l.o.Rate), l.o.Burst),
		connID:   strconv.FormatUint(l.connSeq.Add(1), 36),
		presName: PresenceName(claims.Username),
		done:     make(chan struct{}),
		watchdog: watchdog,
		protocol: "native",
	}
	c.lastAlive.Store(time.Now().UnixNano())
	// Under pingMu: the first ping may fire before the assignment is done.
	c.pingMu.Lock()
	c.pinger = time.AfterFunc(l.o.PingInterval, c.ping)
	c.pingMu.Unlock()
	return c
}

// UserID implements hub.Conn.
func (c *Client) UserID() int64 { return c.userID }

// Username is the user's name as the token carries it.
func (c *Client) Username() string { return c.username }

// Token is the JWT the connection was opened with.
func (c *Client) Token() string { return c.token }

// ConnID names the connection in presence commands.
func (c *Client) ConnID() string { return c.connID }

// PresenceName is the username as presence commands carry it.
func (c *Client) PresenceName() string { return c.presName }

// Allow takes one frame from the connection's rate limit.
func (c *Client) Allow() bool { return c.limiter.Allow() }

// ReplayWait is how long until the connection's replay limit
// (Options.ReplayRate, ReplayBurst) has a join replay for it; zero when it
// has one now. It takes nothing: TakeReplay does, once a join replayed.
// Reader only, like both.
func (c *Client) ReplayWait() time.Duration {
	if c.replays == nil {
		c.replays = rate.NewLimiter(rate.Limit(c.l.o.ReplayRate), c.l.o.ReplayBurst)
	}
	missing := 1 - c.replays.Tokens()
	if missing <= 0 {
		return 0
	}
	return time.Duration(missing / c.l.o.ReplayRate * float64(time.Second))
}

// TakeReplay counts one join replay against the connection's limit.
func (c *Client) TakeReplay() {
	if c.replays != nil {
		c.replays.Allow()
	}
}

// Touch records that the peer showed life (a frame or a pong).
func (c *Client) Touch() { c.lastAlive.Store(time.Now().UnixNano()) }

// AliveSince reports whether the peer showed life at or after t.
func (c *Client) AliveSince(t time.Time) bool { return c.lastAlive.Load() >= t.UnixNano() }

// Done is closed once the transport was closed.
func (c *Client) Done() <-chan struct{} { return c.done }

// Stopped reports whether the writer was told to stop between frames (a
// slow consumer or a dead peer); benchmarks check it.
func (c *Client) Stopped() bool { return c.stop.Load() }

// Send implements hub.Conn: it queues frame for the writer without blocking.
// A full queue means the client cannot keep up: it is closed with 4000.
func (c *Client) Send(frame []byte) bool {
	c.mu.Lock()
	if c.closing {
		c.mu.Unlock()
		return false
	}
	if len(c.queue)-c.bulk >= c.l.o.QueueSize || c.overBudget(len(frame)) {
		c.mu.Unlock()
		c.CloseSlow()
		return false
	}
	c.queue = append(c.queue, frame)
	c.queued += len(frame)
	start := !c.writing
	c.writing = true
	c.mu.Unlock()
	if start {
		go c.drain()
	}
	return true
}

var _ hub.BulkConn = (*Client)(nil)

// SendBulk implements hub.BulkConn: it queues a known burst (a replay, a
// repaired gap: at most REPLAY_LIMIT events) in order. The burst is not held
// against QueueSize, so a long replay does not look like a slow consumer;
// live frames queued behind it are. Its bytes do count against the
// outbound budget: a client that asks for replays and does not read them
// is closed as a slow consumer instead of growing the queue without bound.
func (c *Client) SendBulk(frames [][]byte) bool {
	n := 0
	for _, f := range frames {
		n += len(f)
	}
	c.mu.Lock()
	if c.closing {
		c.mu.Unlock()
		return false
	}
	if c.overBudget(n) {
		c.mu.Unlock()
		c.CloseSlow()
		return false
	}
	c.queue = append(c.queue, frames...)
	c.queued += n
	c.bulk += len(frames)
	start := !c.writing
	c.writing = true
	c.mu.Unlock()
	if start {
		go c.drain()
	}
	return true
}

// overBudget says whether n more bytes would exceed the outbound budget;
// c.mu is held.
func (c *Client) overBudget(n int) bool {
	return c.l.o.OutboundBudget > 0 && c.queued+n > c.l.o.OutboundBudget
}

// written gives back the budget of a batch the writer is done with.
func (c *Client) written(batch [][]byte) {
	n := 0
	for _, f := range batch {
		n += len(f)
	}
	c.mu.Lock()
	c.queued = max(0, c.queued-n)
	c.mu.Unlock()
}

// CloseSlow implements hub.Conn: closes the connection as a slow consumer.
func (c *Client) CloseSlow() {
	if c.Abort(DisconnectSlow) {
		c.l.o.Metrics.SlowConsumers.Inc()
		c.l.o.Log.Warn("slow consumer disconnected", "user_id", c.userID, "client_ip", c.addr, "queue", c.l.o.QueueSize)
	}
}

// Close asks the writer to flush what is queued, send d's close frame and
// close the transport. A d without a code closes without a close frame
// (the peer is gone) and drops the queue. It reports whether this call
// started the close (only that one is counted).
func (c *Client) Close(d Disconnect) bool {
	return c.closeWith(d, d.Code == 0)
}

// Abort is Close without flushing the queue: the writer stops between
// frames and sends d's close frame.
func (c *Client) Abort(d Disconnect) bool {
	return c.closeWith(d, true)
}

func (c *Client) closeWith(d Disconnect, drop bool) bool {
	c.mu.Lock()
	if c.closing {
		c.mu.Unlock()
		return false
	}
	c.closing, c.reason = true, d
	if drop {
		c.stop.Store(true)
		c.queue, c.bulk = nil, 0
	}
	start := !c.writing
	c.writing = true
	c.mu.Unlock()
	c.pinger.Stop()
	c.l.o.Metrics.Disconnects.WithLabelValues(d.label).Inc()
	if start {
		go c.drain()
	}
	return true
}

// take moves the queued frames into batch (reusing its array). When there
// is nothing to write and no close to do, it ends the writer's turn.
func (c *Client) take(batch [][]byte, waiters []FlushWaiter) (_ [][]byte, _ []FlushWaiter, more, closing bool, d Disconnect) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.queue) == 0 && !c.closing {
		c.writing = false
		// Nothing is queued: whoever waits has had its frames written.
		w := c.waiters
		c.waiters = waiters[:0]
		return batch, w, false, false, Disconnect{}
	}
	batch, c.queue = c.queue, batch[:0]
	waiters, c.waiters = c.waiters, waiters[:0]
	c.bulk = 0
	// An idle connection should not keep a big array from one burst.
	if cap(c.queue) > 64 {
		c.queue = nil
	}
	return batch, waiters, true, c.closing, c.reason
}

// FlushWaiter is told whether frames it waited for were written.
type FlushWaiter interface {
	// Flushed is called once, from the connection's writer (or at once):
	// written is false when the connection closed before writing them.
	Flushed(written bool)
}

// Flushed tells w once every frame queued so far was written to the
// socket, or that the connection closed first. The fan-out uses it to end
// a publication's span and measure delivery when the frames are out, not
// when they are queued.
func (c *Client) Flushed(w FlushWaiter) {
	c.mu.Lock()
	if c.finished {
		c.mu.Unlock()
		w.Flushed(false)
		return
	}
	if !c.writing && len(c.queue) == 0 {
		c.mu.Unlock()
		w.Flushed(true)
		return
	}
	c.waiters = append(c.waiters, w)
	c.mu.Unlock()
}

// tell answers waiters and returns the slice for reuse.
func tell(waiters []FlushWaiter, written bool) []FlushWaiter {
	for _, w := range waiters {
		w.Flushed(written)
	}
	clear(waiters)
	return waiters[:0]
}

// drain is the writer: the only goroutine writing data frames, started by
// Send or close when none runs. It writes until the queue is empty, and it
// is the one that closes the socket, after which done is closed.
func (c *Client) drain() {
	var batch [][]byte
	var waiters []FlushWaiter
	for {
		var more, closing bool
		var d Disconnect
		batch, waiters, more, closing, d = c.take(batch, waiters)
		if !more {
			tell(waiters, true)
			return
		}
		written := true
		for i := 0; i < len(batch); {
			if c.stop.Load() {
				written = false
				break
			}
			n, err := c.writeFrames(batch[i:])
			if err != nil {
				c.writeFailed(err)
				closing, d = c.closeState()
				written = false
				break
			}
			i += n
		}
		c.written(batch)
		clear(batch)
		waiters = tell(waiters, written)
		if closing {
			c.finish(d)
			c.mu.Lock()
			c.finished = true
			late := c.waiters
			c.waiters = nil
			c.mu.Unlock()
			tell(late, false)
			close(c.done)
			return
		}
	}
}

// ping sends a protocol ping and schedules the next one; it runs on a
// timer, not on a goroutine of its own. A peer silent (no frame, no pong)
// past PongTimeout is dropped here, so the timer is also due then.
func (c *Client) ping() {
	c.pingMu.Lock()
	defer c.pingMu.Unlock()
	if c.pingsOff {
		return
	}
	next := c.l.o.PingInterval
	if c.watchdog {
		left := c.l.o.PongTimeout - time.Since(time.Unix(0, c.lastAlive.Load()))
		if left <= 0 {
			c.Close(DisconnectPongTimeout)
			return
		}
		next = min(next, left+time.Millisecond)
	}
	if err := c.ws.WriteControl(websocket.PingMessage, nil, time.Now().Add(c.l.o.WriteTimeout)); err != nil {
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
// connection's end calls it before the transport is released.
func (c *Client) stopPings() {
	c.pingMu.Lock()
	defer c.pingMu.Unlock()
	c.pingsOff = true
	c.pinger.Stop()
}

// writeFrames writes the first of frames, or as many as one coalesced
// write takes when the socket supports it, and returns how many it wrote.
func (c *Client) writeFrames(frames [][]byte) (int, error) {
	if bw, ok := c.ws.(BatchWriter); ok {
		return bw.WriteBatch(frames, time.Now().Add(c.l.o.WriteTimeout))
	}
	return 1, c.write(frames[0])
}

func (c *Client) write(frame []byte) error {
	if err := c.ws.SetWriteDeadline(time.Now().Add(c.l.o.WriteTimeout)); err != nil {
		return err
	}
	return c.ws.WriteMessage(websocket.TextMessage, frame)
}

// writeFailed closes the connection after a failed write: a missed
// deadline means the client does not read (slow consumer), anything else
// that the peer is gone.
func (c *Client) writeFailed(err error) {
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		c.CloseSlow()
		return
	}
	c.Close(DisconnectLost)
}

func (c *Client) closeState() (bool, Disconnect) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.closing, c.reason
}

// finish sends the close frame (best effort, briefly) and closes the socket.
func (c *Client) finish(d Disconnect) {
	if d.Code != 0 {
		_ = c.ws.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(d.Code, d.Reason), time.Now().Add(time.Second))
	}
	_ = c.ws.Close()
}

// Reply queues an ack or error frame; nil (an encoding failure, logged
// where it happened) queues nothing.
func (c *Client) Reply(frame []byte) {
	if frame != nil {
		c.Send(frame)
	}
}

// BatchWriter is a transport that writes several text frames with one
// deadline and one write(2); the writer uses it when the transport has it.
type BatchWriter interface {
	// WriteBatch writes frames from the start, as many as fit one write,
	// and returns how many it wrote (at least one unless it fails).
	WriteBatch(frames [][]byte, deadline time.Time) (int, error)
}

// Addr is the client's address (OpenOptions.Addr).
func (c *Client) Addr() string { return c.addr }
