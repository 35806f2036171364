package gateway

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/hashicorp/golang-lru/v2/expirable"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"

	"relay/pkg/chat"
	"relay/pkg/presence"
	"relay/pkg/protocol"
)

// This file is the gateway's side of the presence service (see
// services/presence/README.md): it tells presence about connections
// (connect, disconnect, one heartbeat batch per interval) and typing, and
// routes the presence_update events presence publishes to the local
// connections of users who share a room with the event's user.

// heartbeatChunk bounds the connections of one heartbeat command, so one
// stream entry stays small (~30 KB) on a full instance.
const heartbeatChunk = 1000

// defaultInstanceID is unique per process: the host name plus random bytes.
func defaultInstanceID() string {
	host, err := os.Hostname()
	if err != nil || host == "" {
		host = "gateway"
	}
	host = truncateUTF8(host, 64)
	var b [4]byte
	_, _ = rand.Read(b[:])
	return host + "-" + hex.EncodeToString(b[:])
}

// truncateUTF8 cuts s to at most n bytes on a rune boundary.
func truncateUTF8(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n]
}

// presenceName is the username carried in presence commands (tokens come
// from the api, which keeps names far below the limit; this only guards it).
func presenceName(name string) string { return truncateUTF8(name, presence.MaxUsernameLen) }

// hello tells presence that c opened. Connects are never dropped by the
// publisher; an error means it is closed (shutting down).
func (s *Service) hello(ctx context.Context, c *client) {
	if err := s.pub.Connect(ctx, c.userID, c.presName, c.connID); err != nil {
		s.log.WarnContext(ctx, "presence connect not sent", "user_id", c.userID, "err", err)
	}
}

// goodbye tells presence that c closed, once. Callers first take c out
// of the heartbeat set, so no later batch renews it.
func (s *Service) goodbye(ctx context.Context, c *client) {
	if !c.goneOnce.CompareAndSwap(false, true) {
		return
	}
	if err := s.pub.Disconnect(ctx, c.userID, c.connID); err != nil && !errors.Is(err, presence.ErrClosed) {
		s.log.WarnContext(ctx, "presence disconnect not sent", "user_id", c.userID, "err", err)
	}
}

// heartbeatLoop sends, every HeartbeatInterval, the heartbeat batch of the
// live connections until ctx ends.
func (s *Service) heartbeatLoop(ctx context.Context) {
	t := time.NewTicker(s.cfg.HeartbeatInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			s.heartbeat(ctx)
		}
	}
}

// heartbeat sends one batch of every connection that showed life (a frame
// or a pong) within PongTimeout. A dead peer stops being renewed at once,
// even before the ping timer closes it.
func (s *Service) heartbeat(ctx context.Context) {
	cutoff := time.Now().Add(-s.cfg.PongTimeout).UnixNano()
	s.clientsMu.Lock()
	conns := make([]presence.Conn, 0, len(s.clients))
	for c := range s.clients {
		if c.lastAlive.Load() >= cutoff {
			conns = append(conns, presence.Conn{UserID: c.userID, ConnID: c.connID})
		}
	}
	s.clientsMu.Unlock()
	for len(conns) > 0 {
		part := conns[:min(heartbeatChunk, len(conns))]
		conns = conns[len(part):]
		if err := s.pub.Heartbeat(ctx, part); err != nil {
			// Dropped (Redis slow or down): the next batch renews them, and
			// presence's timeout is two intervals by default.
			s.metrics.heartbeatsDropped.Inc()
			s.log.WarnContext(ctx, "presence heartbeat not sent", "connections", len(part), "err", err)
		}
	}
}

// startTyping records that c typed in room and tells presence.
func (s *Service) startTyping(ctx context.Context, c *client, room int64) error {
	if err := s.pub.TypingStart(ctx, room, c.userID, c.presName); err != nil {
		return chat.Wrap(chat.CodeUnavailable, err, "could not publish typing; retry")
	}
	now := time.Now()
	if _, ok := c.typing[room]; !ok && len(c.typing) >= s.cfg.MaxRooms {
		// Forget what already expired; stops of it would be no-ops anyway.
		for r, until := range c.typing {
			if now.After(until) {
				delete(c.typing, r)
			}
		}
	}
	if c.typing == nil {
		c.typing = make(map[int64]time.Time, 1)
	}
	// Past MaxRooms live entries a start is still sent, only not
	// tracked: its typing ends by expiry instead of at once.
	if _, ok := c.typing[room]; ok || len(c.typing) < s.cfg.MaxRooms {
		// A second of slack for clock skew between gateway and Redis.
		c.typing[room] = now.Add(s.cfg.TypingTTL + time.Second)
	}
	return nil
}

// stopTyping ends c's typing in room if c is (as far as it knows) still
// typing there: sending a message, leaving the room and closing end typing
// at once, without a stream write for each message of a user who did not
// type.
func (s *Service) stopTyping(ctx context.Context, c *client, room int64) {
	until, ok := c.typing[room]
	if !ok {
		return
	}
	delete(c.typing, room)
	if time.Now().After(until) {
		return // expired: presence already said typing false
	}
	if err := s.pub.TypingStop(ctx, room, c.userID, c.presName); err != nil && !errors.Is(err, presence.ErrClosed) {
		s.log.WarnContext(ctx, "typing stop not sent; it expires instead", "room_id", room, "err", err)
	}
}

// userIndex is the local connections by user id, sharded by user id. A
// user's slice is replaced, never changed in place, so readers use it
// without a copy.
type userIndex struct {
	shards [64]struct {
		mu sync.RWMutex
		m  map[int64][]*client
	}
	users atomic.Int64
}

func newUserIndex() *userIndex {
	x := &userIndex{}
	for i := range x.shards {
		x.shards[i].m = make(map[int64][]*client)
	}
	return x
}

func (x *userIndex) shard(user int64) int { return int(uint64(user) % uint64(len(x.shards))) }

func (x *userIndex) add(c *client) {
	sh := &x.shards[x.shard(c.userID)]
	sh.mu.Lock()
	defer sh.mu.Unlock()
	cs := sh.m[c.userID]
	if len(cs) == 0 {
		x.users.Add(1)
	}
	sh.m[c.userID] = append(cs[:len(cs):len(cs)], c)
}

func (x *userIndex) remove(c *client) {
	sh := &x.shards[x.shard(c.userID)]
	sh.mu.Lock()
	defer sh.mu.Unlock()
	cs := sh.m[c.userID]
	out := make([]*client, 0, len(cs))
	for _, o := range cs {
		if o != c {
			out = append(out, o)
		}
	}
	switch {
	case len(out) == len(cs):
	case len(out) == 0:
		delete(sh.m, c.userID)
		x.users.Add(-1)
	default:
		sh.m[c.userID] = out
	}
}

// conns returns the user's local connections (do not modify).
func (x *userIndex) conns(user int64) []*client {
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
	s      *Service
	keys   presence.Keys
	events chan *presence.Event
	// userRooms caches user id → the rooms the user is a member of.
	userRooms *expirable.LRU[int64, []int64]
	// roomMembers caches room id → the room's member user ids, nil for a
	// room over PresenceMaxRoomMembers (it routes nothing).
	roomMembers *expirable.LRU[int64, []int64]
}

func newPresenceRouter(s *Service, keys presence.Keys) *presenceRouter {
	return &presenceRouter{
		s:           s,
		keys:        keys,
		events:      make(chan *presence.Event, s.cfg.PresenceQueueSize),
		userRooms:   expirable.NewLRU[int64, []int64](s.cfg.PresenceCacheSize, nil, s.cfg.PresenceCacheTTL),
		roomMembers: expirable.NewLRU[int64, []int64](s.cfg.PresenceCacheSize, nil, s.cfg.PresenceCacheTTL),
	}
}

// follow reads the presence events stream into the routing queue until
// ctx ends, then closes the queue; the returned channel is closed after
// that. It first reads where the stream ends (bounded by SendTimeout), so
// connections accepted once it returned get every event from then on, also
// across a dropped Redis connection: the reader goes on from the last
// event it read.
func (r *presenceRouter) follow(ctx context.Context) <-chan struct{} {
	s := r.s
	tctx, cancel := context.WithTimeout(ctx, s.cfg.SendTimeout)
	after, err := presence.EventsTail(tctx, s.rdb, r.keys)
	cancel()
	if err != nil {
		// "$" is each read's own start until one succeeds: events between
		// those reads are missed, only until Redis answers.
		after = "$"
		s.log.Warn("presence events position unknown; presence_update may be missed until Redis answers", "err", err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		defer close(r.events)
		var failing bool
		presence.FollowEvents(ctx, s.rdb, r.keys, after, func(payload []byte) {
			if failing {
				failing = false
				s.log.Info("reading presence events again")
			}
			r.offer(payload)
		}, presence.FollowOptions{OnError: func(err error) {
			if !failing {
				failing = true
				s.log.Warn("reading presence events failed; retrying from the last one read", "err", err)
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
		r.s.log.Warn("undecodable presence event", "err", err)
		r.s.metrics.presenceEvents.WithLabelValues("invalid").Inc()
		return
	}
	if r.s.users.len() == 0 {
		r.s.metrics.presenceEvents.WithLabelValues("no_recipients").Inc()
		return
	}
	select {
	case r.events <- ev:
	default:
		r.s.metrics.presenceEvents.WithLabelValues("dropped").Inc()
		r.s.log.Warn("presence event dropped: routing queue full", "user_id", ev.UserID)
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
	s := r.s
	if len(ev.Trace) > 0 {
		ctx = s.tel.Propagator.Extract(ctx, propagation.MapCarrier(ev.Trace))
	}
	ctx, span := s.tel.Tracer.Start(ctx, "gateway.presence", trace.WithSpanKind(trace.SpanKindConsumer))
	defer span.End()
	qctx, cancel := context.WithTimeout(ctx, s.cfg.SendTimeout)
	defer cancel()
	recipients, err := r.recipients(qctx, ev.UserID)
	if err != nil {
		s.metrics.presenceEvents.WithLabelValues("error").Inc()
		s.log.WarnContext(ctx, "presence event not routed", "user_id", ev.UserID, "err", err)
		return
	}
	n := 0
	for _, u := range recipients {
		for _, c := range s.users.conns(u) {
			if c.Send(ev.Frame) {
				n++
			}
		}
	}
	if span.IsRecording() {
		span.SetAttributes(attribute.Int64("user.id", ev.UserID), attribute.String("status", ev.Status), attribute.Int("recipients", n))
	}
	if n == 0 {
		s.metrics.presenceEvents.WithLabelValues("no_recipients").Inc()
		return
	}
	s.metrics.presenceEvents.WithLabelValues("delivered").Inc()
	s.metrics.framesOut.WithLabelValues(protocol.EventPresenceUpdate).Add(float64(n))
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
			if len(r.s.users.conns(u)) > 0 {
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
	var rooms []int64
	if err := r.s.db.WithContext(ctx).Raw(`SELECT room_id FROM room_members WHERE user_id = ?`, user).Scan(&rooms).Error; err != nil {
		return nil, fmt.Errorf("rooms of user %d: %w", user, err)
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
	var rows []struct {
		RoomID int64
		UserID int64
	}
	// Members of the rooms not over the limit, without reading the others'.
	err := r.s.db.WithContext(ctx).Raw(`SELECT room_id, user_id FROM room_members WHERE room_id IN (
		SELECT room_id FROM room_members WHERE room_id IN ? GROUP BY room_id HAVING count(*) <= ?)`,
		missing, r.s.cfg.PresenceMaxRoomMembers).Scan(&rows).Error
	if err != nil {
		return nil, fmt.Errorf("members of %d rooms: %w", len(missing), err)
	}
	byRoom := make(map[int64][]int64, len(missing))
	for _, row := range rows {
		byRoom[row.RoomID] = append(byRoom[row.RoomID], row.UserID)
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
