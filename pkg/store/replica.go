package store

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync/atomic"
	"time"

	"gorm.io/gorm"

	"relay/pkg/chat"
)

// Server names the database a read ran on.
type Server string

// Where Reads ran a read.
const (
	OnPrimary Server = "primary"
	OnReplica Server = "replica"
)

// replicaRetryAfter is how long a replica that failed a read is left alone
// before reads try it again; meanwhile they go straight to the primary, so
// a replica that is down costs one failed attempt, not one per request.
const replicaRetryAfter = 2 * time.Second

// Reads routes read-only queries to a streaming (hot-standby) replica and
// falls back to the primary when there is no replica, when the replica
// failed recently or fails this read (down, restarting, a query cancelled
// by a conflict with recovery), and, for reads that must see a given room
// event, when the replica has not replayed that event yet. Writes and reads
// that decide access (membership) always use the primary, not Reads.
type Reads struct {
	primary, replica *gorm.DB
	log              *slog.Logger
	// downUntil is the unix-nano time before which the replica is skipped.
	downUntil atomic.Int64
	// Observe, when set, is called with where each read ran (metrics).
	Observe func(Server)
}

// NewReads routes reads between primary and replica; a nil replica sends
// every read to the primary.
func NewReads(primary, replica *gorm.DB, log *slog.Logger) *Reads {
	if log == nil {
		log = slog.Default()
	}
	return &Reads{primary: primary, replica: replica, log: log}
}

// Do runs read on the replica when it is usable, else (or when read fails
// there) on the primary, and says where it ran. read must be read-only and
// safe to run twice.
func (r *Reads) Do(ctx context.Context, read func(*gorm.DB) error) (Server, error) {
	return r.do(ctx, nil, read)
}

// DoAt is Do for a read that must see the room's event seq (history after
// a seq the client already has, say): the replica is used only when it
// holds that event in room_events, i.e. has replayed at least that far.
func (r *Reads) DoAt(ctx context.Context, roomID, seq int64, read func(*gorm.DB) error) (Server, error) {
	return r.do(ctx, func(db *gorm.DB) (bool, error) {
		var ok bool
		err := db.WithContext(ctx).Raw(
			`SELECT EXISTS (SELECT 1 FROM room_events WHERE room_id = ? AND seq >= ?)`, roomID, seq).Scan(&ok).Error
		return ok, err
	}, read)
}

func (r *Reads) do(ctx context.Context, caughtUp func(*gorm.DB) (bool, error), read func(*gorm.DB) error) (Server, error) {
	if r.replica != nil && time.Now().UnixNano() >= r.downUntil.Load() {
		err := r.tryReplica(caughtUp, read)
		if err == nil {
			r.observe(OnReplica)
			return OnReplica, nil
		}
		var answer *chat.Error
		if errors.As(err, &answer) {
			// The read's own verdict (bad request, not found): the primary
			// would say the same.
			r.observe(OnReplica)
			return OnReplica, err
		}
		if ctx.Err() != nil {
			return OnReplica, fmt.Errorf("store: replica read: %w", err)
		}
		if !errors.Is(err, errBehind) {
			r.downUntil.Store(time.Now().Add(replicaRetryAfter).UnixNano())
			r.log.WarnContext(ctx, "replica read failed; reading from the primary", "err", err, "retry_after", replicaRetryAfter)
		}
	}
	r.observe(OnPrimary)
	return OnPrimary, read(r.primary)
}

// errBehind: the replica has not replayed what the read must see.
var errBehind = errors.New("store: replica behind")

func (r *Reads) tryReplica(caughtUp func(*gorm.DB) (bool, error), read func(*gorm.DB) error) error {
	if caughtUp != nil {
		ok, err := caughtUp(r.replica)
		if err != nil {
			return err
		}
		if !ok {
			return errBehind
		}
	}
	return read(r.replica)
}

func (r *Reads) observe(s Server) {
	if r.Observe != nil {
		r.Observe(s)
	}
}
