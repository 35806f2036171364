// Package outbox relays the api's transactional outbox of member events to
// the room event log in Kafka.
package outbox

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/prometheus/client_golang/prometheus"
	"go.opentelemetry.io/otel/propagation"
	"golang.org/x/sync/errgroup"

	"relay/pkg/kafka"
	"relay/pkg/store"
)

// The outbox relay (see docs/architecture.md, "Member events"). Member
// events are written to the outbox table in the transaction of their
// membership change (pkg/store); the relay produces them to Kafka in id
// order and deletes each once Kafka acked it. Only one relay of all api
// instances runs at a time: it holds a session advisory lock on a
// connection of its own, through which it also reads, deletes and listens,
// so a relay whose connection died can delete nothing more and another
// instance takes over when PostgreSQL ends the session.
const (
	// outboxLockKey is the advisory lock (per database) of the relay.
	outboxLockKey int64 = 0x72656c61795f6f62 // "relay_ob"
	// outboxChannel is notified by the outbox trigger when rows commit.
	outboxChannel = "outbox"
	// outboxBatch bounds the rows read and produced per round.
	outboxBatch = 500
	// outboxRooms bounds the rooms produced concurrently; a room's own
	// events are produced one after another, in order.
	outboxRooms = 16
	// outboxPoll is the longest the relay sleeps without a notification;
	// notifications are not lost on a live connection, so this is only a
	// safety net.
	outboxPoll = time.Second
	// outboxStandby is how often an instance without the lock tries it.
	outboxStandby = 500 * time.Millisecond
	// outboxStatement bounds each statement on the relay's connection, so a
	// connection cut without a reset is noticed.
	outboxStatement = 5 * time.Second
	// publishTimeout bounds one produce; Kafka's own retries run inside it.
	publishTimeout = 5 * time.Second
	// The wait after a failed round doubles from the first to the last.
	outboxFirstPause = 50 * time.Millisecond
	outboxMaxPause   = 2 * time.Second
	// outboxBlockedLog is how often a blocked relay repeats its error.
	outboxBlockedLog = 10 * time.Second
	// outboxGrace is how long produces in flight may finish after Run's
	// context ends, so their rows are deleted instead of produced again
	// by the next relay.
	outboxGrace = time.Second
)

// Publisher produces room events in order and says how many of them, from
// the first, Kafka stored (kafka.Producer.PublishBatch in production).
type Publisher interface {
	PublishBatch(ctx context.Context, records []kafka.Record) (stored int, err error)
}

// Relay produces the outbox to Kafka.
type Relay struct {
	url string
	pub Publisher
	log *slog.Logger
	// pending is the outbox depth as last seen; active is 1 while this
	// instance holds the relay lock; failures counts failed produces.
	pending  prometheus.Gauge
	active   prometheus.Gauge
	failures prometheus.Counter
}

// New returns a relay reading the outbox of the database at url (on a
// connection of its own) and producing through pub; Run relays.
func New(url string, pub Publisher, log *slog.Logger, reg prometheus.Registerer) (*Relay, error) {
	r := &Relay{
		url: url, pub: pub, log: log,
		pending: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "api_outbox_pending", Help: "Member events in the outbox waiting to be produced to Kafka (as last seen by this instance).",
		}),
		active: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "api_outbox_relay_active", Help: "1 while this instance holds the outbox relay lock and relays, else 0.",
		}),
		failures: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "api_outbox_publish_failures_total", Help: "Outbox events whose produce failed (they are retried).",
		}),
	}
	for _, c := range []prometheus.Collector{r.pending, r.active, r.failures} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("outbox metrics: %w", err)
		}
	}
	return r, nil
}

// Run relays until ctx ends: it connects, waits for the relay lock, and
// relays while it holds it; a lost connection starts over.
func (r *Relay) Run(ctx context.Context) {
	for ctx.Err() == nil {
		err := r.session(ctx)
		if ctx.Err() != nil {
			return
		}
		r.log.WarnContext(ctx, "outbox relay: connection lost; reconnecting", "err", err)
		sleep(ctx, outboxStandby)
	}
}

// session is one connection's life: standby until the lock is won, then
// relay. It returns only on an error or when ctx ends.
func (r *Relay) session(ctx context.Context) error {
	cfg, err := pgx.ParseConfig(r.url)
	if err != nil {
		return fmt.Errorf("outbox: %w", err)
	}
	cfg.RuntimeParams["application_name"] = "relay-api-outbox"
	// Server-side keepalives, so that PostgreSQL ends the session (and
	// frees the lock for another instance) within about 25 s of this
	// process vanishing without closing its socket.
	cfg.RuntimeParams["tcp_keepalives_idle"] = "10"
	cfg.RuntimeParams["tcp_keepalives_interval"] = "5"
	cfg.RuntimeParams["tcp_keepalives_count"] = "3"
	cctx, cancel := context.WithTimeout(ctx, outboxStatement)
	conn, err := pgx.ConnectConfig(cctx, cfg)
	cancel()
	if err != nil {
		return fmt.Errorf("outbox: connect: %w", err)
	}
	defer func() {
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), outboxStatement)
		defer cancel()
		_ = conn.Close(cctx) // ends the session, and so the lock
	}()
	for {
		won, err := r.tryLock(ctx, conn)
		if err != nil {
			return err
		}
		if won {
			break
		}
		// The standby still reports the depth, so every instance's gauge
		// shows a stuck outbox.
		if n, err := r.depth(ctx, conn); err == nil {
			r.pending.Set(float64(n))
		}
		if !sleep(ctx, outboxStandby) {
			return ctx.Err()
		}
	}
	r.active.Set(1)
	defer r.active.Set(0)
	r.log.InfoContext(ctx, "outbox relay: holding the relay lock; relaying")
	if err := r.statement(ctx, func(ctx context.Context) error {
		_, err := conn.Exec(ctx, "LISTEN "+outboxChannel)
		return err
	}); err != nil {
		return fmt.Errorf("outbox: listen: %w", err)
	}
	return r.relay(ctx, conn)
}

func (r *Relay) tryLock(ctx context.Context, conn *pgx.Conn) (bool, error) {
	var won bool
	err := r.statement(ctx, func(ctx context.Context) error {
		return conn.QueryRow(ctx, "SELECT pg_try_advisory_lock($1)", outboxLockKey).Scan(&won)
	})
	if err != nil {
		return false, fmt.Errorf("outbox: lock: %w", err)
	}
	return won, nil
}

func (r *Relay) depth(ctx context.Context, conn *pgx.Conn) (int64, error) {
	var n int64
	err := r.statement(ctx, func(ctx context.Context) error {
		var err error
		n, err = store.OutboxDepth(ctx, conn)
		return err
	})
	return n, err
}

// statement runs fn with a bounded context.
func (r *Relay) statement(ctx context.Context, fn func(context.Context) error) error {
	ctx, cancel := context.WithTimeout(ctx, outboxStatement)
	defer cancel()
	return fn(ctx)
}

// relay produces the outbox while the lock is held: read the head, produce
// it, delete what was acked; wait for a notification when it is empty and
// back off while Kafka refuses. It returns on a database error (the
// session starts over) or when ctx ends.
func (r *Relay) relay(ctx context.Context, conn *pgx.Conn) error {
	// Produces and the deletes that follow them run on hard, which outlives
	// ctx by outboxGrace: a shutdown does not abandon acked events.
	hard, cancelHard := context.WithCancel(context.WithoutCancel(ctx))
	defer cancelHard()
	stop := context.AfterFunc(ctx, func() { time.AfterFunc(outboxGrace, cancelHard) })
	defer stop()

	pause := outboxFirstPause
	var blockedSince, lastLog time.Time
	for ctx.Err() == nil {
		var rows []store.OutboxEvent
		err := r.statement(ctx, func(ctx context.Context) error {
			var err error
			rows, err = store.PendingOutbox(ctx, conn, outboxBatch)
			return err
		})
		if err != nil {
			return err
		}
		if len(rows) == 0 {
			r.pending.Set(0)
			if err := r.wait(ctx, conn); err != nil {
				return err
			}
			continue
		}
		if len(rows) < outboxBatch {
			r.pending.Set(float64(len(rows)))
		} else if n, err := r.depth(ctx, conn); err == nil {
			r.pending.Set(float64(n))
		}
		produced, perr, err := r.produce(hard, conn, rows)
		if err != nil {
			// An acked row that could not be deleted is produced again by
			// the next relay, right after its first copy: at least once.
			return err
		}
		if perr == nil {
			if !blockedSince.IsZero() {
				r.log.InfoContext(ctx, "outbox relay: unblocked; Kafka accepts events again",
					"blocked", time.Since(blockedSince).Round(time.Millisecond))
				blockedSince = time.Time{}
			}
			pause = outboxFirstPause
			continue
		}
		now := time.Now()
		if blockedSince.IsZero() {
			blockedSince, lastLog = now, now
			r.log.WarnContext(ctx, "outbox relay: blocked; producing member events failed, retrying",
				"pending", len(rows)-produced, "err", perr)
		} else if now.Sub(lastLog) >= outboxBlockedLog {
			lastLog = now
			n, _ := r.depth(ctx, conn)
			r.log.ErrorContext(ctx, "outbox relay: still blocked; member events wait in the outbox",
				"blocked", now.Sub(blockedSince).Round(time.Second), "pending", n, "err", perr)
		}
		if !sleep(ctx, pause) {
			break
		}
		pause = min(2*pause, outboxMaxPause)
	}
	return ctx.Err()
}

// wait returns when rows may have committed: on a notification, after
// outboxPoll, or when ctx ends (nil then; the caller checks ctx).
func (r *Relay) wait(ctx context.Context, conn *pgx.Conn) error {
	wctx, cancel := context.WithTimeout(ctx, outboxPoll)
	defer cancel()
	_, err := conn.WaitForNotification(wctx)
	if err != nil && wctx.Err() == nil {
		return fmt.Errorf("outbox: wait: %w", err)
	}
	return nil
}

// produce publishes rows, each room's in order and rooms concurrently:
// each room's rows of the round go to Kafka as one batch, and the rows
// Kafka stored are deleted at once. It returns how many went out. A room
// stops at its first failure (perr, the first one), so its later events
// never overtake it. A crash or a lost connection between Kafka's ack and
// the delete leaves at most that batch to be produced again, right after
// its first copy in the room's log (at least once). A failed delete
// (dbErr) stops every room.
func (r *Relay) produce(ctx context.Context, conn *pgx.Conn, rows []store.OutboxEvent) (produced int, perr, dbErr error) {
	var order []int64
	byRoom := map[int64][]*store.OutboxEvent{}
	for i := range rows {
		id := rows[i].RoomID
		if _, ok := byRoom[id]; !ok {
			order = append(order, id)
		}
		byRoom[id] = append(byRoom[id], &rows[i])
	}
	var (
		mu    sync.Mutex // guards conn (one statement at a time), produced, first
		first error
	)
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(outboxRooms)
	for _, room := range order {
		g.Go(func() error {
			batch := byRoom[room]
			stored, err := r.publish(gctx, batch)
			if err != nil {
				mu.Lock()
				if first == nil {
					first = err
				}
				mu.Unlock()
			}
			if stored == 0 {
				return nil
			}
			ids := make([]int64, stored)
			for i, o := range batch[:stored] {
				ids[i] = o.ID
			}
			mu.Lock()
			defer mu.Unlock()
			if err := r.statement(ctx, func(ctx context.Context) error { return store.DeleteOutbox(ctx, conn, ids) }); err != nil {
				return err
			}
			produced += stored
			return nil
		})
	}
	dbErr = g.Wait()
	return produced, first, dbErr
}

// publish produces a room's outbox events, each under the trace of its
// change, and returns how many of them, from the first, Kafka stored.
func (r *Relay) publish(ctx context.Context, batch []*store.OutboxEvent) (int, error) {
	records := make([]kafka.Record, len(batch))
	for i, o := range batch {
		records[i] = kafka.Record{Event: &o.Event, Trace: o.Trace}
	}
	ctx, cancel := context.WithTimeout(ctx, publishTimeout)
	defer cancel()
	stored, err := r.pub.PublishBatch(ctx, records)
	if err != nil {
		r.failures.Inc()
		o := batch[stored]
		err = fmt.Errorf("outbox event %d (%s, room %d): %w", o.ID, o.Event.Type, o.RoomID, err)
	}
	if stored > 0 {
		last := batch[stored-1]
		r.log.DebugContext(ctx, "member events produced", "room", last.RoomID, "count", stored, "outbox_last", last.ID)
	}
	return stored, err
}

// sleep waits d or until ctx ends; it reports whether d passed.
func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

// TraceOf returns the trace context of ctx for an outbox row, so the
// relayed event continues the request's trace.
func TraceOf(ctx context.Context, prop propagation.TextMapPropagator) store.Trace {
	carrier := propagation.MapCarrier{}
	prop.Inject(ctx, carrier)
	if len(carrier) == 0 {
		return nil
	}
	return store.Trace(carrier)
}
