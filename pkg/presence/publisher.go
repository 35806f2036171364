package presence

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	goredis "github.com/redis/go-redis/v9"
	"go.opentelemetry.io/otel/propagation"
)

// ErrClosed is returned by a Publisher's methods after Close.
var ErrClosed = errors.New("presence: publisher closed")

// ErrDropped is returned when a heartbeat or typing command was dropped
// because the queue of such commands was full (Redis slow or down). The
// caller may ignore it: heartbeats come again and typing expires.
var ErrDropped = errors.New("presence: queue full, command dropped")

// PublisherOptions configure a Publisher.
type PublisherOptions struct {
	// QueueSize bounds the heartbeat and typing commands waiting to be
	// sent; beyond it they are dropped and counted. Zero means 1024.
	// Connects and disconnects are never dropped: their number is bounded
	// by the gateway's connections.
	QueueSize int
	// MaxLen caps the commands stream approximately; zero means
	// DefaultStreamMaxLen.
	MaxLen int64
	// Registerer, when set, registers the publisher's metrics.
	Registerer prometheus.Registerer
	// Log reports send failures; nil discards them.
	Log *slog.Logger
}

// Publisher is the gateway's client of the presence service. Its methods
// never wait for Redis: they encode the command and queue it; one goroutine
// sends the queue in order, pipelining the XADDs, and retries with backoff
// while Redis is unreachable.
type Publisher struct {
	rdb  goredis.Cmdable
	keys Keys
	gw   string
	o    PublisherOptions
	log  *slog.Logger
	prop propagation.TraceContext

	mu         sync.Mutex
	queue      []queued
	droppables int
	closed     bool

	wake   chan struct{}
	stop   chan struct{}
	done   chan struct{}
	ctx    context.Context
	cancel context.CancelFunc
	once   sync.Once

	sent, dropped, failed atomic.Uint64
	mSent, mDropped       prometheus.Counter
	mFailed               prometheus.Counter
}

type queued struct {
	value     []byte
	droppable bool
}

// NewPublisher starts a publisher for the gateway instance gatewayID
// (unique among live gateways, e.g. host name plus a random suffix). Call
// Close to flush and stop it.
func NewPublisher(rdb goredis.Cmdable, keys Keys, gatewayID string, o PublisherOptions) (*Publisher, error) {
	if gatewayID == "" || len(gatewayID) > MaxIDLen {
		return nil, errors.New("presence: gateway id required (at most 128 bytes)")
	}
	if o.QueueSize <= 0 {
		o.QueueSize = 1024
	}
	if o.MaxLen <= 0 {
		o.MaxLen = DefaultStreamMaxLen
	}
	log := o.Log
	if log == nil {
		log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	ctx, cancel := context.WithCancel(context.Background())
	p := &Publisher{
		rdb: rdb, keys: keys, gw: gatewayID, o: o, log: log,
		wake: make(chan struct{}, 1), stop: make(chan struct{}), done: make(chan struct{}),
		ctx: ctx, cancel: cancel,
		mSent: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "presence_commands_sent_total", Help: "Presence commands appended to the commands stream.",
		}),
		mDropped: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "presence_commands_dropped_total", Help: "Heartbeat and typing commands dropped because the queue was full.",
		}),
		mFailed: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "presence_command_send_errors_total", Help: "Failed attempts to append presence commands (retried).",
		}),
	}
	if o.Registerer != nil {
		for _, c := range []prometheus.Collector{p.mSent, p.mDropped, p.mFailed, prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "presence_commands_queued", Help: "Presence commands waiting to be sent.",
		}, func() float64 { return float64(p.Queued()) })} {
			if err := o.Registerer.Register(c); err != nil {
				cancel()
				return nil, fmt.Errorf("presence: metrics: %w", err)
			}
		}
	}
	go p.run()
	return p, nil
}

// Connect tells presence that connID of userID opened on this gateway.
func (p *Publisher) Connect(ctx context.Context, userID int64, username, connID string) error {
	return p.enqueue(ctx, &Command{Op: OpConnect, UserID: userID, Username: username, ConnID: connID}, false)
}

// Disconnect tells presence that connID of userID closed.
func (p *Publisher) Disconnect(ctx context.Context, userID int64, connID string) error {
	return p.enqueue(ctx, &Command{Op: OpDisconnect, UserID: userID, ConnID: connID}, false)
}

// Heartbeat renews every listed connection of this gateway in one command.
// The gateway sends all its connections every heartbeat interval.
func (p *Publisher) Heartbeat(ctx context.Context, conns []Conn) error {
	if len(conns) == 0 {
		return nil
	}
	return p.enqueue(ctx, &Command{Op: OpHeartbeat, Conns: conns}, true)
}

// TypingStart starts or renews userID's typing in roomID. The gateway also
// calls TypingStop when the user sends a message, leaves the room, or the
// connection that typed closes.
func (p *Publisher) TypingStart(ctx context.Context, roomID, userID int64, username string) error {
	return p.enqueue(ctx, &Command{Op: OpTypingStart, RoomID: roomID, UserID: userID, Username: username}, true)
}

// TypingStop ends userID's typing in roomID; a no-op when not typing.
func (p *Publisher) TypingStop(ctx context.Context, roomID, userID int64, username string) error {
	return p.enqueue(ctx, &Command{Op: OpTypingStop, RoomID: roomID, UserID: userID, Username: username}, true)
}

// Queued returns how many commands wait to be sent.
func (p *Publisher) Queued() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.queue)
}

// Stats returns the commands sent, dropped, and failed send attempts so far.
func (p *Publisher) Stats() (sent, dropped, failed uint64) {
	return p.sent.Load(), p.dropped.Load(), p.failed.Load()
}

func (p *Publisher) enqueue(ctx context.Context, c *Command, droppable bool) error {
	c.Gateway = p.gw
	if err := c.Validate(); err != nil {
		return err
	}
	carrier := propagation.MapCarrier{}
	p.prop.Inject(ctx, carrier)
	if len(carrier) > 0 {
		c.Trace = carrier
	}
	b, err := json.Marshal(c)
	if err != nil {
		return fmt.Errorf("presence: encode command: %w", err)
	}
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return ErrClosed
	}
	if droppable && p.droppables >= p.o.QueueSize {
		p.mu.Unlock()
		p.dropped.Add(1)
		p.mDropped.Inc()
		return ErrDropped
	}
	p.queue = append(p.queue, queued{value: b, droppable: droppable})
	if droppable {
		p.droppables++
	}
	p.mu.Unlock()
	select {
	case p.wake <- struct{}{}:
	default:
	}
	return nil
}

// take removes and returns everything queued.
func (p *Publisher) take() []queued {
	p.mu.Lock()
	defer p.mu.Unlock()
	q := p.queue
	p.queue = nil
	p.droppables = 0
	return q
}

func (p *Publisher) run() {
	defer close(p.done)
	stopping := false
	for {
		if !stopping {
			select {
			case <-p.wake:
			case <-p.stop:
				stopping = true
			}
		}
		batch := p.take()
		if len(batch) == 0 {
			if stopping {
				return
			}
			continue
		}
		if err := p.sendRetrying(batch); err != nil {
			// Only cancellation by Close ends the retries.
			p.log.Warn("presence: commands not sent at close", "count", len(batch), "err", err)
			return
		}
	}
}

// sendRetrying sends batch in order, retrying what failed with backoff
// until it succeeds or the publisher is cancelled.
func (p *Publisher) sendRetrying(batch []queued) error {
	backoff := 50 * time.Millisecond
	for {
		n, err := p.send(batch)
		batch = batch[n:]
		if err == nil {
			return nil
		}
		p.failed.Add(1)
		p.mFailed.Inc()
		p.log.Warn("presence: sending commands failed; retrying", "pending", len(batch), "err", err)
		select {
		case <-time.After(backoff):
		case <-p.ctx.Done():
			return p.ctx.Err()
		}
		backoff = min(backoff*2, 5*time.Second)
	}
}

// send pipelines the XADDs of batch in chunks and returns how many leading
// commands were appended.
func (p *Publisher) send(batch []queued) (int, error) {
	const chunk = 256
	done := 0
	for done < len(batch) {
		part := batch[done:min(done+chunk, len(batch))]
		cmds, err := p.rdb.Pipelined(p.ctx, func(pipe goredis.Pipeliner) error {
			for _, q := range part {
				pipe.XAdd(p.ctx, &goredis.XAddArgs{
					Stream: p.keys.Commands(), MaxLen: p.o.MaxLen, Approx: true,
					Values: []string{"c", string(q.value)},
				})
			}
			return nil
		})
		for i, c := range cmds {
			if c.Err() != nil {
				// Commands before the first failure are in the stream. Later
				// ones may be too and are sent again: every command is
				// idempotent for the presence service.
				p.count(i)
				return done + i, fmt.Errorf("presence: xadd: %w", c.Err())
			}
		}
		if err != nil {
			return done, fmt.Errorf("presence: xadd: %w", err)
		}
		p.count(len(part))
		done += len(part)
	}
	return done, nil
}

func (p *Publisher) count(n int) {
	p.sent.Add(uint64(n))
	p.mSent.Add(float64(n))
}

// Close stops accepting commands, sends what is queued and returns when it
// is sent or ctx ends (then the rest is lost). It is idempotent.
func (p *Publisher) Close(ctx context.Context) error {
	p.once.Do(func() {
		p.mu.Lock()
		p.closed = true
		p.mu.Unlock()
		close(p.stop)
	})
	select {
	case <-p.done:
		p.cancel()
		return nil
	case <-ctx.Done():
		p.cancel()
		<-p.done
		if n := p.Queued(); n > 0 {
			return fmt.Errorf("presence: close: %d commands not sent: %w", n, ctx.Err())
		}
		return fmt.Errorf("presence: close: %w", ctx.Err())
	}
}

// Gateway returns the publisher's gateway id.
func (p *Publisher) Gateway() string { return p.gw }
