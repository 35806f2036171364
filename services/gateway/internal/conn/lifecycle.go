package conn

import (
	"context"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/fasthttp/websocket"

	"relay/pkg/auth"
	"relay/pkg/chat"
	"relay/services/gateway/internal/metrics"
)

// Options configure a Lifecycle and its clients. Every field is required
// (the gateway's config applies the defaults).
type Options struct {
	// MaxConnections caps the open connections of the instance.
	MaxConnections int
	// QueueSize bounds a client's outgoing queue (live frames).
	QueueSize int
	// OutboundBudget bounds the bytes queued to one client, replays
	// included, and those its writer is still writing; past it the client
	// is closed as a slow consumer (4000, resumable). Zero means no bound.
	OutboundBudget int
	// Rate and Burst limit the client frames of one connection.
	Rate  float64
	Burst int
	// ReplayRate (per second) and ReplayBurst limit the join replays of
	// one connection (ReserveReplay).
	ReplayRate  float64
	ReplayBurst int
	// PingInterval is the period of server pings; PongTimeout drops a
	// watched connection silent that long; WriteTimeout bounds one write.
	PingInterval, PongTimeout, WriteTimeout time.Duration
	// Metrics counts connections and disconnects.
	Metrics *metrics.Metrics
	// Log gets slow-consumer disconnects.
	Log *slog.Logger
	// Hooks are told about registrations and ends; nil means none.
	Hooks Hooks
}

// Hooks are what the rest of the gateway does when a connection is
// registered and when it ended.
type Hooks interface {
	// Opened runs when c is registered, under the registry's lock, so
	// what it tells presence precedes any heartbeat that includes c.
	Opened(c *Client)
	// Closed runs once c's transport closed and its reader is done: c
	// leaves its rooms, its typing and presence.
	Closed(ctx context.Context, c *Client)
}

// OpenOptions are the transport's part of opening a connection.
type OpenOptions struct {
	// Watchdog closes the connection after PongTimeout of silence (native
	// sockets, which have no read deadline; Socket.IO has its own heartbeat).
	Watchdog bool
	// Accept, when set, runs before the connection is registered (Socket.IO
	// answers CONNECT there, so no push can precede it); an error ends the
	// connection and is returned by Open.
	Accept func(c *Client) error
	// Protocol labels the connection in gateway_connections: "native" or
	// "socketio" ("" counts as native).
	Protocol string
	// Addr is the client's address (behind a trusted proxy, the one it
	// forwarded), for logs.
	Addr string
	// Release, when set, runs once when the connection ends, or at once
	// when Open refuses it: what the transport acquired for it (its
	// connection caps) is given back.
	Release func()
}

// ErrFull refuses a connection above MaxConnections; ErrDraining one that
// comes while the instance shuts down.
var (
	ErrFull     = chat.Errorf(chat.CodeServerFull, "server is full; retry later or elsewhere")
	ErrDraining = chat.Errorf(chat.CodeUnavailable, "server is shutting down; reconnect")
)

// Lifecycle is the one lifecycle of the instance's connections, whatever
// their transport: Admit before the handshake, Open (count, register, arm
// the token expiry), End (close, leave, release) once, and the shutdown's
// StartDraining, CloseAll and Wait.
type Lifecycle struct {
	o    Options
	base context.Context

	// connSeq numbers connections for their presence ids.
	connSeq atomic.Uint64
	// active counts open connections (MAX_CONNECTIONS).
	active atomic.Int64

	mu sync.Mutex
	// draining is set, under mu, once shutdown began.
	draining bool
	clients  map[*Client]struct{}
	// conns counts the registered connections whose End has not finished.
	conns sync.WaitGroup
}

// NewLifecycle makes the registry; base bounds the work of Hooks.Closed
// (with a grace period after it is cancelled).
func NewLifecycle(base context.Context, o Options) *Lifecycle {
	for _, d := range disconnects {
		o.Metrics.Disconnects.WithLabelValues(d.label)
	}
	o.Metrics.MaxConnections.Set(float64(o.MaxConnections))
	return &Lifecycle{o: o, base: base, clients: make(map[*Client]struct{})}
}

// Admit refuses new connections, native and Socket.IO, while draining or
// full (the exact check is made by Open).
func (l *Lifecycle) Admit() error {
	if l.Draining() {
		return ErrDraining
	}
	if l.active.Load() >= int64(l.o.MaxConnections) {
		return ErrFull
	}
	return nil
}

// Open makes the connection of claims over t and registers it. It returns
// ErrFull (no client was made: the caller refuses t, see Refuse),
// ErrDraining (the client was closed with DisconnectRestart and released),
// or the error of o.Accept (the client was closed and released).
func (l *Lifecycle) Open(t Transport, claims auth.Claims, token string, o OpenOptions) (*Client, error) {
	// Admit is racy under a burst; this check is exact.
	if l.active.Add(1) > int64(l.o.MaxConnections) {
		l.active.Add(-1)
		if o.Release != nil {
			o.Release()
		}
		return nil, ErrFull
	}
	c := NewClient(l, t, claims, token, o.Watchdog)
	c.protocol, c.addr, c.releaseCaps = o.Protocol, o.Addr, o.Release
	if c.protocol == "" {
		c.protocol = "native"
	}
	if o.Accept != nil {
		if err := o.Accept(c); err != nil {
			l.abandon(c, DisconnectLost)
			return nil, err
		}
	}
	if !l.Register(c) {
		l.abandon(c, DisconnectRestart)
		return nil, ErrDraining
	}
	l.o.Metrics.Connections.WithLabelValues(c.protocol).Inc()
	c.expiry = time.AfterFunc(time.Until(claims.ExpiresAt), func() { c.Close(DisconnectAuthExpired) })
	return c, nil
}

// Refuse closes a transport that Open refused before it had a client.
func (l *Lifecycle) Refuse(t Transport, d Disconnect) {
	l.o.Metrics.Disconnects.WithLabelValues(d.label).Inc()
	_ = t.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(d.Code, d.Reason), time.Now().Add(time.Second))
	release(t)
}

// abandon ends a client that was never registered.
func (l *Lifecycle) abandon(c *Client, d Disconnect) {
	c.Close(d)
	<-c.done
	c.stopPings()
	release(c.ws)
	c.giveBack()
	l.active.Add(-1)
}

// Register adds c to the instance (false while draining); Open does it
// for the connections of a server, benchmarks for clients of NewClient.
func (l *Lifecycle) Register(c *Client) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.draining {
		return false
	}
	l.clients[c] = struct{}{}
	l.conns.Add(1)
	if l.o.Hooks != nil {
		l.o.Hooks.Opened(c)
	}
	return true
}

// End is what follows the last read of a registered connection, once: the
// writer closes the transport (after a close frame when one was asked
// for), then the client leaves its rooms and presence (Hooks.Closed), and
// the transport is released.
func (l *Lifecycle) End(c *Client) {
	c.expiry.Stop()
	c.Close(DisconnectLost)
	<-c.done
	l.o.Metrics.Connections.WithLabelValues(c.protocol).Dec()
	l.release(c)
	// No ping may touch the transport once it is released.
	c.stopPings()
	release(c.ws)
	c.giveBack()
	l.active.Add(-1)
}

// giveBack runs the connection's OpenOptions.Release.
func (c *Client) giveBack() {
	if c.releaseCaps != nil {
		c.releaseCaps()
	}
}

func (l *Lifecycle) release(c *Client) {
	defer l.conns.Done()
	l.mu.Lock()
	delete(l.clients, c)
	l.mu.Unlock()
	if l.o.Hooks == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(l.base), 5*time.Second)
	defer cancel()
	l.o.Hooks.Closed(ctx, c)
}

// releaser is a transport with something to give back after its close
// (the ws transport leaves the poller and closes its descriptor).
type releaser interface{ Release() }

func release(t Transport) {
	if r, ok := t.(releaser); ok {
		r.Release()
	}
}

// Active is the number of open connections.
func (l *Lifecycle) Active() int64 { return l.active.Load() }

// Draining reports whether shutdown began.
func (l *Lifecycle) Draining() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.draining
}

// StartDraining refuses new connections from now on.
func (l *Lifecycle) StartDraining() {
	l.mu.Lock()
	l.draining = true
	l.mu.Unlock()
}

// Each calls f for every registered connection, under the registry's lock
// (f must not block).
func (l *Lifecycle) Each(f func(c *Client)) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for c := range l.clients {
		f(c)
	}
}

// Clients returns the registered connections.
func (l *Lifecycle) Clients() []*Client {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := make([]*Client, 0, len(l.clients))
	for c := range l.clients {
		out = append(out, c)
	}
	return out
}

// CloseAll closes every registered connection with d, after its queue.
func (l *Lifecycle) CloseAll(d Disconnect) {
	for _, c := range l.Clients() {
		c.Close(d)
	}
}

// Wait waits until every registered connection ended, or until deadline;
// it reports whether they did. The waiting goroutine it starts ends with
// the last connection.
func (l *Lifecycle) Wait(deadline time.Time) bool {
	waited := make(chan struct{})
	go func() {
		l.conns.Wait()
		close(waited)
	}()
	t := time.NewTimer(time.Until(deadline))
	defer t.Stop()
	select {
	case <-waited:
		return true
	case <-t.C:
		return false
	}
}

// socketCloser is a transport whose socket can be closed at once, without
// the writer (after the readers are gone, at the very end of a shutdown).
type socketCloser interface{ CloseSocket() error }

// CloseSockets closes the sockets of the connections still registered:
// with the poller closed they have no reader left.
func (l *Lifecycle) CloseSockets() {
	l.Each(func(c *Client) {
		if sc, ok := c.ws.(socketCloser); ok {
			_ = sc.CloseSocket()
		}
	})
}

// MarkGone reports whether this is the first call for c: presence is told
// of a connection's end once, by its End or by the shutdown.
func (c *Client) MarkGone() bool { return c.goneOnce.CompareAndSwap(false, true) }
