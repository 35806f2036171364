// Package presence is the gateway's side of the presence service (see
// services/presence/README.md): it tells presence about connections
// (connect, disconnect, one heartbeat batch per interval) and typing, and
// routes the presence_update events presence publishes to the local
// connections of users who share a room with the event's user.
package presence

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/golang-lru/v2/expirable"
	goredis "github.com/redis/go-redis/v9"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"
	"gorm.io/gorm"

	"relay/pkg/chat"
	"relay/pkg/presence"
	"relay/pkg/protocol"
	"relay/pkg/store"
	"relay/pkg/telemetry"
	"relay/services/gateway/internal/conn"
	"relay/services/gateway/internal/metrics"
)

// heartbeatChunk bounds the connections of one heartbeat command, so one
// stream entry stays small (~30 KB) on a full instance.
const heartbeatChunk = 1000

// Options configure New; every field is required.
type Options struct {
	// Publisher sends the commands to the presence service.
	Publisher *presence.Publisher
	// Lifecycle lists the connections for the heartbeat batch.
	Lifecycle *conn.Lifecycle
	// Redis and Keys locate the presence events stream.
	Redis goredis.UniversalClient
	Keys  presence.Keys
	// DB is read for the rooms and members routing uses.
	DB *gorm.DB
	// Tel traces routing; Metrics counts it.
	Tel     *telemetry.Telemetry
	Metrics *metrics.Metrics
	// HeartbeatInterval is the heartbeat batch period; PongTimeout the
	// silence after which a connection is no longer heartbeated; TypingTTL
	// presence's typing lifetime; SendTimeout bounds one read.
	HeartbeatInterval, PongTimeout, TypingTTL, SendTimeout time.Duration
	// MaxRooms bounds the typing tracked per connection.
	MaxRooms int
	// CacheTTL and CacheSize bound the routing caches; QueueSize the
	// events waiting to be routed; MaxRoomMembers the rooms that route.
	CacheTTL                             time.Duration
	CacheSize, QueueSize, MaxRoomMembers int
}

// Presence is the gateway's presence client and router.
type Presence struct {
	o   Options
	log *slog.Logger
	// base bounds the connect commands; the service cancels it on Close.
	base context.Context
	// users indexes the local connections by user, for presence_update.
	users  *userIndex
	router *presenceRouter
}

// New makes the client; Follow and Route deliver presence_update,
// Heartbeats renews the live connections.
func New(base context.Context, o Options) *Presence {
	p := &Presence{o: o, log: o.Tel.Log, base: base, users: newUserIndex()}
	p.router = newPresenceRouter(p)
	return p
}

// Opened indexes c and tells presence it connected (conn.Hooks, under the
// registry's lock: no heartbeat of c precedes its connect).
func (p *Presence) Opened(c *conn.Client) {
	p.users.add(c)
	p.hello(p.base, c)
}

// Forget takes c out of the index once it closed.
func (p *Presence) Forget(c *conn.Client) { p.users.remove(c) }

// Closed ends what c still types and tells presence it is gone.
func (p *Presence) Closed(ctx context.Context, c *conn.Client) {
	for room := range c.Typing {
		p.StopTyping(ctx, c, room)
	}
	p.Goodbye(ctx, c)
}

// hello tells presence that c opened. Connects are never dropped by the
// publisher; an error means it is closed (shutting down).
func (p *Presence) hello(ctx context.Context, c *conn.Client) {
	if err := p.o.Publisher.Connect(ctx, c.UserID(), c.PresenceName(), c.ConnID()); err != nil {
		p.log.WarnContext(ctx, "presence connect not sent", "user_id", c.UserID(), "err", err)
	}
}

// Goodbye tells presence that c closed, once. Callers first take c out
// of the heartbeat set, so no later batch renews it.
func (p *Presence) Goodbye(ctx context.Context, c *conn.Client) {
	if !c.MarkGone() {
		return
	}
	if err := p.o.Publisher.Disconnect(ctx, c.UserID(), c.ConnID()); err != nil && !errors.Is(err, presence.ErrClosed) {
		p.log.WarnContext(ctx, "presence disconnect not sent", "user_id", c.UserID(), "err", err)
	}
}

// Heartbeats sends, every HeartbeatInterval, the heartbeat batch of the
// live connections until ctx ends.
func (p *Presence) Heartbeats(ctx context.Context) {
	t := time.NewTicker(p.o.HeartbeatInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			p.heartbeat(ctx)
		}
	}
}

// heartbeat sends one batch of every connection that showed life (a frame
// or a pong) within PongTimeout. A dead peer stops being renewed at once,
// even before the ping timer closes it.
func (p *Presence) heartbeat(ctx context.Context) {
	cutoff := time.Now().Add(-p.o.PongTimeout)
	var conns []presence.Conn
	p.o.Lifecycle.Each(func(c *conn.Client) {
		if c.AliveSince(cutoff) {
			conns = append(conns, presence.Conn{UserID: c.UserID(), ConnID: c.ConnID()})
		}
	})
	for len(conns) > 0 {
		part := conns[:min(heartbeatChunk, len(conns))]
		conns = conns[len(part):]
		if err := p.o.Publisher.Heartbeat(ctx, part); err != nil {
			// Dropped (Redis slow or down): the next batch renews them, and
			// presence's timeout is two intervals by default.
			p.o.Metrics.HeartbeatsDropped.Inc()
			p.log.WarnContext(ctx, "presence heartbeat not sent", "connections", len(part), "err", err)
		}
	}
}

// StartTyping records that c typed in room and tells presence.
func (p *Presence) StartTyping(ctx context.Context, c *conn.Client, room int64) error {
	if err := p.o.Publisher.TypingStart(ctx, room, c.UserID(), c.PresenceName()); err != nil {
		return chat.Wrap(chat.CodeUnavailable, err, "could not publish typing; retry")
	}
	now := time.Now()
	if _, ok := c.Typing[room]; !ok && len(c.Typing) >= p.o.MaxRooms {
		// Forget what already expired; stops of it would be no-ops anyway.
		for r, until := range c.Typing {
			if now.After(until) {
				delete(c.Typing, r)
			}
		}
	}
	if c.Typing == nil {
		c.Typing = make(map[int64]time.Time, 1)
	}
	// Past MaxRooms live entries a start is still sent, only not
	// tracked: its typing ends by expiry instead of at once.
	if _, ok := c.Typing[room]; ok || len(c.Typing) < p.o.MaxRooms {
		// A second of slack for clock skew between gateway and Redis.
		c.Typing[room] = now.Add(p.o.TypingTTL + time.Second)
	}
	return nil
}

// StopTyping ends c's typing in room if c is (as far as it knows) still
// typing there: sending a message, leaving the room and closing end typing
// at once, without a stream write for each message of a user who did not
// type.
func (p *Presence) StopTyping(ctx context.Context, c *conn.Client, room int64) {
	until, ok := c.Typing[room]
	if !ok {
		return
	}
	delete(c.Typing, room)
	if time.Now().After(until) {
		return // expired: presence already said typing false
	}
	if err := p.o.Publisher.TypingStop(ctx, room, c.UserID(), c.PresenceName()); err != nil && !errors.Is(err, presence.ErrClosed) {
		p.log.WarnContext(ctx, "typing stop not sent; it expires instead", "room_id", room, "err", err)
	}
}

// userIndex is the local connections by user id, sharded by user id. A
// user's slice is replaced, never changed in place, so readers use it
// without a copy.
type userIndex struct {
	shards [64]struct {
		mu sync.RWMutex
		m  map[int64][]*conn.Client
	}
	users atomic.Int64
}

func newUserIndex() *userIndex {
	x := &userIndex{}
	for i := range x.shards {
		x.shards[i].m = make(map[int64][]*conn.Client)
	}
	return x
}

func (x *userIndex) shard(user int64) int { return int(uint64(user) % uint64(len(x.shards))) }

func (x *userIndex) add(c *conn.Client) {
	sh := &x.shards[x.shard(c.UserID())]
	sh.mu.Lock()
	defer sh.mu.Unlock()
	cs := sh.m[c.UserID()]
	if len(cs) == 0 {
		x.users.Add(1)
	}
	sh.m[c.UserID()] = append(cs[:len(cs):len(cs)], c)
}

func (x *userIndex) remove(c *conn.Client) {
	sh := &x.shards[x.shard(c.UserID())]
	sh.mu.Lock()
	defer sh.mu.Unlock()
	cs := sh.m[c.UserID()]
	out := make([]*conn.Client, 0, len(cs))
	for _, o := range cs {
		if o != c {
			out = append(out, o)
		}
	}
	switch {
	case len(out) == len(cs):
	case len(out) == 0:
		delete(sh.m, c.UserID())
		x.users.Add(-1)
	default:
		sh.m[c.UserID()] = out
	}
}

// conns returns the user's local connections (do not modify).
func (x *userIndex) conns(user int64) []*conn.Client {
	sh := &x.shards[x.shard(user)]
	sh.mu.RLock()
	defer sh.mu.RUnlock()
	return sh.m[user]
}

// len returns the number of users with local connections.
func (x *userIndex) len() int64 { return x.users.Load() }

// presenceRouter routes presence_update events to the local connections
// of users who share a room with the event's user: the event's user's
// rooms (cached) → each room's members (cached) → their local connections.
// One goroutine does it, so a user's events keep their order; the Redis
// receive loop only hands events over and never waits on PostgreSQL.
type presenceRouter struct {
	p      *Presence
	events chan *presence.Event
	// userRooms caches user id → the rooms the user is a member of.
	userRooms *expirable.LRU[int64, []int64]
	// roomMembers caches room id → the room's member user ids, nil for a
	// room over PresenceMaxRoomMembers (it routes nothing).
	roomMembers *expirable.LRU[int64, []int64]
}

func newPresenceRouter(p *Presence) *presenceRouter {
	return &presenceRouter{
		p:           p,
		events:      make(chan *presence.Event, p.o.QueueSize),
		userRooms:   expirable.NewLRU[int64, []int64](p.o.CacheSize, nil, p.o.CacheTTL),
		roomMembers: expirable.NewLRU[int64, []int64](p.o.CacheSize, nil, p.o.CacheTTL),
	}
}

// Follow reads the presence events stream into the routing queue until
// ctx ends (see presenceRouter.follow); the channel is closed after that.
func (p *Presence) Follow(ctx context.Context) <-chan struct{} { return p.router.follow(ctx) }

// Route routes the queued events until Follow ended.
func (p *Presence) Route(ctx context.Context) { p.router.run(ctx) }

// MembershipChanged drops the routing data a user_joined or user_left
// made stale (fanout.Watcher).
func (p *Presence) MembershipChanged(room int64, frame []byte) {
	p.router.membershipChanged(room, frame)
}

// follow reads the presence events stream into the routing queue until
// ctx ends, then closes the queue; the returned channel is closed after
// that. It first reads where the stream ends (bounded by SendTimeout), so
// connections accepted once it returned get every event from then on, also
// across a dropped Redis connection: the reader goes on from the last
// event it read.
func (r *presenceRouter) follow(ctx context.Context) <-chan struct{} {
	p := r.p
	tctx, cancel := context.WithTimeout(ctx, p.o.SendTimeout)
	after, err := presence.EventsTail(tctx, p.o.Redis, p.o.Keys)
	cancel()
	if err != nil {
		// "$" is each read's own start until one succeeds: events between
		// those reads are missed, only until Redis answers.
		after = "$"
		p.log.Warn("presence events position unknown; presence_update may be missed until Redis answers", "err", err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		defer close(r.events)
		var failing bool
		presence.FollowEvents(ctx, p.o.Redis, p.o.Keys, after, func(payload []byte) {
			if failing {
				failing = false
				p.log.Info("reading presence events again")
			}
			r.offer(payload)
		}, presence.FollowOptions{OnError: func(err error) {
			if !failing {
				failing = true
				p.log.Warn("reading presence events failed; retrying from the last one read", "err", err)
			}
		}})
	}()
	return done
}

// offer queues an event of the presence events stream. A full queue drops
// the event (counted): the state stays readable over REST.
func (r *presenceRouter) offer(payload []byte) {
	ev, err := presence.DecodeEvent(payload)
	if err != nil {
		r.p.log.Warn("undecodable presence event", "err", err)
		r.p.o.Metrics.PresenceEvents.WithLabelValues("invalid").Inc()
		return
	}
	if r.p.users.len() == 0 {
		r.p.o.Metrics.PresenceEvents.WithLabelValues("no_recipients").Inc()
		return
	}
	select {
	case r.events <- ev:
	default:
		r.p.o.Metrics.PresenceEvents.WithLabelValues("dropped").Inc()
		r.p.log.Warn("presence event dropped: routing queue full", "user_id", ev.UserID)
	}
}

// run routes queued events until the queue is closed.
func (r *presenceRouter) run(ctx context.Context) {
	for ev := range r.events {
		r.route(ctx, ev)
	}
}

// route writes ev's frame once to every local connection of every user
// sharing a room with ev.UserID (that user's own other connections too).
func (r *presenceRouter) route(ctx context.Context, ev *presence.Event) {
	p := r.p
	if len(ev.Trace) > 0 {
		ctx = p.o.Tel.Propagator.Extract(ctx, propagation.MapCarrier(ev.Trace))
	}
	ctx, span := p.o.Tel.Tracer.Start(ctx, "gateway.presence", trace.WithSpanKind(trace.SpanKindConsumer))
	defer span.End()
	qctx, cancel := context.WithTimeout(ctx, p.o.SendTimeout)
	defer cancel()
	recipients, err := r.recipients(qctx, ev.UserID)
	if err != nil {
		p.o.Metrics.PresenceEvents.WithLabelValues("error").Inc()
		p.log.WarnContext(ctx, "presence event not routed", "user_id", ev.UserID, "err", err)
		return
	}
	n := 0
	for _, u := range recipients {
		for _, c := range p.users.conns(u) {
			if c.Send(ev.Frame) {
				n++
			}
		}
	}
	if span.IsRecording() {
		span.SetAttributes(attribute.Int64("user.id", ev.UserID), attribute.String("status", ev.Status), attribute.Int("recipients", n))
	}
	if n == 0 {
		p.o.Metrics.PresenceEvents.WithLabelValues("no_recipients").Inc()
		return
	}
	p.o.Metrics.PresenceEvents.WithLabelValues("delivered").Inc()
	p.o.Metrics.FramesOut.WithLabelValues(protocol.EventPresenceUpdate).Add(float64(n))
}

// recipients returns, once each, the users with local connections who are
// members of a room user is a member of.
func (r *presenceRouter) recipients(ctx context.Context, user int64) ([]int64, error) {
	rooms, err := r.roomsOf(ctx, user)
	if err != nil {
		return nil, err
	}
	members, err := r.membersOf(ctx, rooms)
	if err != nil {
		return nil, err
	}
	seen := make(map[int64]struct{})
	var out []int64
	for _, ids := range members {
		for _, u := range ids {
			if _, dup := seen[u]; dup {
				continue
			}
			seen[u] = struct{}{}
			if len(r.p.users.conns(u)) > 0 {
				out = append(out, u)
			}
		}
	}
	return out, nil
}

// roomsOf returns the rooms user is a member of (read-only, cached).
func (r *presenceRouter) roomsOf(ctx context.Context, user int64) ([]int64, error) {
	if rooms, ok := r.userRooms.Get(user); ok {
		return rooms, nil
	}
	rooms, err := store.RoomsOf(ctx, r.p.o.DB, user)
	if err != nil {
		return nil, err
	}
	r.userRooms.Add(user, rooms)
	return rooms, nil
}

// membersOf returns the member ids of each of rooms, reading the ones not
// cached in one query; a room over PresenceMaxRoomMembers has none. Like
// Discord's large guilds, such a room carries no presence pushes: one
// change would go to every member, and all of them change now and then.
func (r *presenceRouter) membersOf(ctx context.Context, rooms []int64) ([][]int64, error) {
	out := make([][]int64, 0, len(rooms))
	var missing []int64
	for _, room := range rooms {
		if ids, ok := r.roomMembers.Get(room); ok {
			out = append(out, ids)
		} else {
			missing = append(missing, room)
		}
	}
	if len(missing) == 0 {
		return out, nil
	}
	// Members of the rooms not over the limit, without reading the others'.
	byRoom, err := store.MembersOf(ctx, r.p.o.DB, missing, r.p.o.MaxRoomMembers)
	if err != nil {
		return nil, err
	}
	for _, room := range missing {
		ids := byRoom[room]
		r.roomMembers.Add(room, ids)
		out = append(out, ids)
	}
	return out, nil
}

// membershipChanged drops the cached rooms and members a user_joined or
// user_left publication made stale, so presence follows membership
// changes in rooms this instance receives without waiting for the TTL.
func (r *presenceRouter) membershipChanged(room int64, frame []byte) {
	r.roomMembers.Remove(room)
	var f struct {
		Data struct {
			UserID string `json:"userId"`
		} `json:"data"`
	}
	if json.Unmarshal(frame, &f) != nil {
		return
	}
	if user, err := strconv.ParseInt(f.Data.UserID, 10, 64); err == nil {
		r.userRooms.Remove(user)
	}
}

// EndTyping ends the user's typing in room, started on any of their
// connections (typing_stop); a no-op for presence when they were not
// typing.
func (p *Presence) EndTyping(ctx context.Context, c *conn.Client, room int64) error {
	delete(c.Typing, room)
	return p.o.Publisher.TypingStop(ctx, room, c.UserID(), c.PresenceName())
}
