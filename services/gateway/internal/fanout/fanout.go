// Package fanout delivers room events to this instance's connections: the
// hub (hub/) registers local members per room, Redis sharded pub/sub
// (SSUBSCRIBE) carries the channels of the rooms with local members (one
// connection, or on Redis Cluster one per hash slot in use), and
// the sequencer checks each room's publications for gaps and repairs them
// from the room log (Redis history, then PostgreSQL).
package fanout

import (
	"context"
	"log/slog"
	"sync"
	"time"

	goredis "github.com/redis/go-redis/v9"
	"gorm.io/gorm"

	"relay/pkg/redis"
	"relay/pkg/telemetry"
	"relay/services/gateway/internal/fanout/hub"
	"relay/services/gateway/internal/frame"
	"relay/services/gateway/internal/metrics"
)

// Watcher is told of a user_joined or user_left of a room before the
// room's local members get it (presence routing drops what it cached).
type Watcher interface {
	MembershipChanged(room int64, frame []byte)
}

// Roles forgets a user's cached role in a room once the user left it, so
// a send made once the leaver was told is checked against PostgreSQL.
type Roles interface {
	Forget(room, user int64)
}

// Typing ends a user's typing in a room (*presence.Publisher).
type Typing interface {
	TypingStop(ctx context.Context, room, user int64, username string) error
}

// Options configure New. Watcher, Roles and Typing may be nil.
type Options struct {
	// Redis carries the room channels and the recent history.
	Redis goredis.UniversalClient
	// DB is read for the room log beyond the Redis history.
	DB *gorm.DB
	// Keys names the Redis keys and channels.
	Keys redis.Keys
	// Tel traces fan-outs and repairs; Metrics counts them.
	Tel     *telemetry.Telemetry
	Metrics *metrics.Metrics
	// Frames encodes resync_required.
	Frames *frame.Encoder
	// QueueSize bounds the publications held for a member still replaying.
	QueueSize int
	// ReplayLimit bounds one log read; RepairHold the live publications
	// held behind a repair; RepairWait how long a repair waits for
	// PostgreSQL; SendTimeout bounds one read.
	ReplayLimit, RepairHold int
	RepairWait, SendTimeout time.Duration
	Watcher                 Watcher
	Roles                   Roles
	Typing                  Typing
}

// Fanout is the fan-out of one instance.
type Fanout struct {
	o      Options
	log    *slog.Logger
	hub    *hub.Hub
	broker *roomBroker
	// ctx bounds the work of user_left evictions; Close cancels it.
	ctx    context.Context
	cancel context.CancelFunc
	// leaves tracks the evictions after a user_left, for Close.
	leaves sync.WaitGroup
}

// New makes the fan-out; Run receives publications.
func New(o Options) *Fanout {
	f := &Fanout{o: o, log: o.Tel.Log}
	f.ctx, f.cancel = context.WithCancel(context.Background())
	f.broker = newRoomBroker(f)
	f.hub = hub.New(f.broker, hub.Options{MaxBuffered: o.QueueSize})
	return f
}

// Hub is the registry of local room members.
func (f *Fanout) Hub() *hub.Hub { return f.hub }

// Run receives and fans out publications until Close.
func (f *Fanout) Run() { f.broker.run() }

// Close ends the subscriptions, the gap repairs and the user_left
// evictions, and waits for them; Run returns. It is idempotent.
func (f *Fanout) Close() error {
	err := f.broker.close()
	f.cancel()
	f.leaves.Wait()
	return err
}

// LastSeq reads the room's last seq (nil when Redis does not know it).
func (f *Fanout) LastSeq(ctx context.Context, room int64) (*int64, error) {
	return redis.LastSeq(ctx, f.o.Redis, f.o.Keys, room)
}

// Baseline tells the sequencer the room's position read right after a
// join's subscription was confirmed, so a publication lost right after it
// is noticed too.
func (f *Fanout) Baseline(room int64, last *int64) { f.broker.seq.baseline(room, last) }

// Join makes c a member of room here (see hub.Hub.Join).
func (f *Fanout) Join(ctx context.Context, room int64, c hub.Conn) (*hub.Member, error) {
	return f.hub.Join(ctx, room, c)
}

// Leave ends a membership (see hub.Hub.Leave).
func (f *Fanout) Leave(ctx context.Context, m *hub.Member) error { return f.hub.Leave(ctx, m) }
