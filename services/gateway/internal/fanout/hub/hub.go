// Package hub is the gateway's registry of local connections per room and
// its fan-out: one publication, encoded once, is queued to every local
// member of its room in the order the room channel delivered it, and each
// member drops what it already got (seq <= its last delivered seq).
//
// The registry is sharded by room id. A shard lock is held only to read or
// swap a room's member slice (copy-on-write), never during I/O or a send.
// Subscribing and unsubscribing the room channel is serialised per room by a
// separate set of locks, so fan-out never waits on the broker.
package hub

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"

	"relay/pkg/redis"
)

// Conn is a local connection as the hub sees it.
type Conn interface {
	// Send queues frame without blocking. It returns false when the
	// connection is closed, or when its queue overflowed (the connection then
	// closes itself as a slow consumer).
	Send(frame []byte) bool
	// UserID is the authenticated user of the connection.
	UserID() int64
	// CloseSlow closes the connection as a slow consumer.
	CloseSlow()
}

// BulkConn is a Conn that can queue a known burst at once (a replay or a
// repaired gap) without counting it against the queue bound meant for live
// traffic; the hub uses it when a connection implements it.
type BulkConn interface {
	Conn
	// SendBulk queues frames in order, like Send for each.
	SendBulk(frames [][]byte) bool
}

// Broker subscribes this instance to room channels.
type Broker interface {
	// Subscribe starts the subscription of roomID and returns a channel
	// closed once the broker confirmed it (from then on every publication
	// of the room reaches Hub.Publish).
	Subscribe(ctx context.Context, roomID int64) (<-chan struct{}, error)
	// Unsubscribe ends the subscription of roomID.
	Unsubscribe(ctx context.Context, roomID int64) error
}

// Options configure New.
type Options struct {
	// Shards is the number of registry shards; zero means 64.
	Shards int
	// MaxBuffered bounds the publications held for a member that is still
	// replaying; beyond it the connection is closed as slow. Zero means 256.
	MaxBuffered int
}

// Hub is the registry of local room members.
type Hub struct {
	broker      Broker
	maxBuffered int
	shards      []shard
	subLocks    []sync.Mutex
	members     atomic.Int64
}

type shard struct {
	mu    sync.RWMutex
	rooms map[int64]*room
}

// room is a room with local members. members is never modified in place:
// joins and leaves swap in a new slice, so fan-out reads it without a copy.
type room struct {
	members []*Member
	// ready is closed once the broker confirmed the subscription.
	ready <-chan struct{}
}

// New returns an empty hub that subscribes through broker.
func New(broker Broker, o Options) *Hub {
	if o.Shards <= 0 {
		o.Shards = 64
	}
	if o.MaxBuffered <= 0 {
		o.MaxBuffered = 256
	}
	h := &Hub{broker: broker, maxBuffered: o.MaxBuffered, shards: make([]shard, o.Shards), subLocks: make([]sync.Mutex, o.Shards)}
	for i := range h.shards {
		h.shards[i].rooms = make(map[int64]*room)
	}
	return h
}

func (h *Hub) index(roomID int64) int {
	return int(uint64(roomID) % uint64(len(h.shards)))
}

// ErrNotReady is returned by Join when the broker did not confirm the
// subscription before ctx ended.
var ErrNotReady = errors.New("hub: room subscription not confirmed")

// Join adds conn to roomID and returns its membership. The member starts
// in replay mode: live publications are held until Start is called, so the
// caller can first read what the member missed. Join returns once the room
// channel's subscription is active; on error nothing was added.
func (h *Hub) Join(ctx context.Context, roomID int64, conn Conn) (*Member, error) {
	m := &Member{hub: h, room: roomID, conn: conn, lastSeq: -1, buffering: true}
	i := h.index(roomID)
	h.subLocks[i].Lock()
	sh := &h.shards[i]
	sh.mu.Lock()
	r := sh.rooms[roomID]
	first := r == nil
	if first {
		r = &room{}
		sh.rooms[roomID] = r
	}
	r.members = append(r.members[:len(r.members):len(r.members)], m)
	sh.mu.Unlock()
	if first {
		ready, err := h.broker.Subscribe(ctx, roomID)
		if err != nil {
			h.remove(m)
			h.subLocks[i].Unlock()
			return nil, fmt.Errorf("hub: subscribe room %d: %w", roomID, err)
		}
		sh.mu.Lock()
		r.ready = ready
		sh.mu.Unlock()
	}
	sh.mu.RLock()
	ready := r.ready
	sh.mu.RUnlock()
	h.subLocks[i].Unlock()
	h.members.Add(1)

	select {
	case <-ready:
		return m, nil
	case <-ctx.Done():
		_ = h.Leave(context.WithoutCancel(ctx), m)
		return nil, fmt.Errorf("%w: %w", ErrNotReady, ctx.Err())
	}
}

// Leave removes m from its room, unsubscribing the room channel when m was
// its last local member. It is idempotent.
func (h *Hub) Leave(ctx context.Context, m *Member) error {
	i := h.index(m.room)
	h.subLocks[i].Lock()
	defer h.subLocks[i].Unlock()
	removed, last := h.remove(m)
	if !removed {
		return nil
	}
	h.members.Add(-1)
	if last {
		if err := h.broker.Unsubscribe(ctx, m.room); err != nil {
			return fmt.Errorf("hub: unsubscribe room %d: %w", m.room, err)
		}
	}
	return nil
}

// remove takes m out of the registry; last reports that the room is now
// empty (and was deleted). Callers hold the room's sub lock.
func (h *Hub) remove(m *Member) (removed, last bool) {
	if m.removed.Swap(true) {
		return false, false
	}
	sh := &h.shards[h.index(m.room)]
	sh.mu.Lock()
	defer sh.mu.Unlock()
	r := sh.rooms[m.room]
	if r == nil {
		return true, false
	}
	members := make([]*Member, 0, len(r.members))
	for _, x := range r.members {
		if x != m {
			members = append(members, x)
		}
	}
	if len(members) == 0 {
		delete(sh.rooms, m.room)
		return true, true
	}
	r.members = members
	return true, false
}

// Members returns the room's local members (a snapshot).
func (h *Hub) Members(roomID int64) []*Member {
	sh := &h.shards[h.index(roomID)]
	sh.mu.RLock()
	defer sh.mu.RUnlock()
	if r := sh.rooms[roomID]; r != nil {
		return r.members
	}
	return nil
}

// Rooms returns the ids of the rooms with local members.
func (h *Hub) Rooms() []int64 {
	var ids []int64
	for i := range h.shards {
		sh := &h.shards[i]
		sh.mu.RLock()
		for id := range sh.rooms {
			ids = append(ids, id)
		}
		sh.mu.RUnlock()
	}
	return ids
}

// Size returns the number of memberships (connection, room) in the hub.
func (h *Hub) Size() int64 { return h.members.Load() }

// Publish queues p's frame to every local member of its room that has not
// had it yet, in call order, and returns how many members it was queued to.
// Callers deliver one room's publications from one goroutine, in order.
func (h *Hub) Publish(p *redis.Publication) int {
	n := 0
	for _, m := range h.Members(p.RoomID) {
		if m.deliver(p) {
			n++
		}
	}
	return n
}

// Member is one connection's membership in one room on this instance.
type Member struct {
	hub     *Hub
	room    int64
	conn    Conn
	removed atomic.Bool
	// evicted is set by Evict: the member gets nothing more, even before
	// Leave took it out of the registry.
	evicted atomic.Bool

	mu sync.Mutex
	// lastSeq is the seq of the last event queued to the connection; -1
	// before any.
	lastSeq int64
	// buffering holds live publications in buf until Start.
	buffering bool
	buf       []*redis.Publication
	// notes are frames built at Start, after the replay, for notices that
	// came while buffering (a resync_required of a failed gap repair).
	notes []func(lastSeq int64) []byte
}

// RoomID returns the member's room.
func (m *Member) RoomID() int64 { return m.room }

// Conn returns the member's connection.
func (m *Member) Conn() Conn { return m.conn }

// Removed reports whether the member left its room (or was evicted).
func (m *Member) Removed() bool { return m.removed.Load() || m.evicted.Load() }

// Evict ends the memberships of userID's connections in roomID (the user
// left the room): from this call on they are queued nothing of the room.
// It does no I/O; the caller takes the returned members out of the
// registry with Leave, which may unsubscribe the room channel.
func (h *Hub) Evict(roomID, userID int64) []*Member {
	var out []*Member
	for _, m := range h.Members(roomID) {
		if m.conn.UserID() != userID || m.evicted.Swap(true) {
			continue
		}
		m.mu.Lock()
		m.buf, m.notes = nil, nil
		m.mu.Unlock()
		out = append(out, m)
	}
	return out
}

// LastSeq returns the seq of the last event queued to the connection, -1
// before any.
func (m *Member) LastSeq() int64 {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.lastSeq
}

// Start ends replay mode: it queues the frames of before (e.g. the join
// ack), sets the last delivered seq to at least lastSeq, queues replay
// (publications the member missed, in seq order) and then the live
// publications held since Join, each only when newer than what was queued.
func (m *Member) Start(lastSeq int64, replay []*redis.Publication, before ...[]byte) {
	m.Resume(Resume{Before: before, LastSeq: lastSeq, Replay: replay})
}

// Resume says how a member leaves replay mode.
type Resume struct {
	// Before are frames queued first (the join ack).
	Before [][]byte
	// LastSeq is the seq the member already has; -1 for none.
	LastSeq int64
	// Replay are the publications after LastSeq, in seq order.
	Replay []*redis.Publication
	// After are frames queued after the replay and before the live
	// publications held since Join (a resync_required when the replay
	// could not reach the present).
	After [][]byte
}

// Resume ends replay mode like Start, with frames after the replay too. It
// is queued as one burst: the replay does not count against the
// connection's queue bound when the connection is a BulkConn.
func (m *Member) Resume(r Resume) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.evicted.Load() {
		m.buffering = false
		m.sendAll(r.Before)
		return
	}
	frames := make([][]byte, 0, len(r.Before)+len(r.Replay)+len(r.After)+len(m.buf))
	frames = append(frames, r.Before...)
	m.lastSeq = max(m.lastSeq, r.LastSeq)
	m.buffering = false
	for _, p := range r.Replay {
		frames = m.appendNew(frames, p)
	}
	frames = append(frames, r.After...)
	for _, build := range m.notes {
		frames = append(frames, build(m.lastSeq))
	}
	m.notes = nil
	// Held publications can come from the live channel and from a gap
	// repair at once; seq order is what the member must see.
	slices.SortStableFunc(m.buf, func(a, b *redis.Publication) int { return cmpSeq(a.Seq, b.Seq) })
	for _, p := range m.buf {
		frames = m.appendNew(frames, p)
	}
	m.buf = nil
	m.sendAll(frames)
}

func cmpSeq(a, b int64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// appendNew appends p's frame when p is newer than what the member had.
// Callers hold m.mu.
func (m *Member) appendNew(frames [][]byte, p *redis.Publication) [][]byte {
	if p.Seq <= m.lastSeq {
		return frames
	}
	m.lastSeq = p.Seq
	return append(frames, p.Frame)
}

// sendAll queues frames in one burst when the connection supports it.
// Callers hold m.mu, so bursts of one member never interleave.
func (m *Member) sendAll(frames [][]byte) bool {
	if len(frames) == 0 {
		return true
	}
	if bc, ok := m.conn.(BulkConn); ok && len(frames) > 1 {
		return bc.SendBulk(frames)
	}
	for _, f := range frames {
		if !m.conn.Send(f) {
			return false
		}
	}
	return true
}

// Notify queues the frame build makes from the member's last delivered seq
// (e.g. a resync_required), in order with the member's events: during the
// join replay it waits for Start and follows the replay.
func (m *Member) Notify(build func(lastSeq int64) []byte) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.evicted.Load() {
		return
	}
	if m.buffering {
		m.notes = append(m.notes, build)
		return
	}
	m.conn.Send(build(m.lastSeq))
}

// Deliver queues p to the member unless it already had it.
func (m *Member) Deliver(p *redis.Publication) bool { return m.deliver(p) }

// PublishRun queues a run of publications of one room (in seq order, e.g.
// a repaired gap) to every local member of the room, each member getting
// the ones newer than what it had as one burst. It returns how many
// members got at least one. Like Publish, one room's publications are
// handed over from one goroutine at a time.
func (h *Hub) PublishRun(roomID int64, run []*redis.Publication) int {
	if len(run) == 0 {
		return 0
	}
	n := 0
	for _, m := range h.Members(roomID) {
		if m.deliverRun(run) {
			n++
		}
	}
	return n
}

func (m *Member) deliverRun(run []*redis.Publication) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.evicted.Load() {
		return false
	}
	if m.buffering {
		// Start sorts and filters the held publications; a known burst is
		// not a slow consumer.
		m.buf = append(m.buf, run...)
		return true
	}
	var frames [][]byte
	for _, p := range run {
		frames = m.appendNew(frames, p)
	}
	return len(frames) > 0 && m.sendAll(frames)
}

func (m *Member) deliver(p *redis.Publication) bool {
	if m.evicted.Load() {
		return false
	}
	if p.Ephemeral {
		// No position: no seq check and no replay ordering to keep.
		if p.SkipUserID != 0 && p.SkipUserID == m.conn.UserID() {
			return false
		}
		return m.conn.Send(p.Frame)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.buffering {
		if len(m.buf) >= m.hub.maxBuffered {
			m.conn.CloseSlow()
			return false
		}
		m.buf = append(m.buf, p)
		return true
	}
	return m.deliverLocked(p)
}

func (m *Member) deliverLocked(p *redis.Publication) bool {
	if p.Seq <= m.lastSeq {
		return false // a redelivery, or already replayed
	}
	m.lastSeq = p.Seq
	return m.conn.Send(p.Frame)
}
