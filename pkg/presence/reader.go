package presence

import (
	"cmp"
	"context"
	"fmt"
	"slices"
	"strconv"
	"time"

	goredis "github.com/redis/go-redis/v9"
)

// Reader answers presence questions from the state the presence service
// keeps in Redis (the api's GET /api/users/:id/presence and
// GET /api/rooms/:id/presence). It reports what was last published: a user
// is online from the online event until the offline event.
type Reader struct {
	rdb  goredis.Cmdable
	keys Keys
}

// NewReader returns a Reader on rdb.
func NewReader(rdb goredis.Cmdable, keys Keys) *Reader {
	return &Reader{rdb: rdb, keys: keys}
}

// User returns one user's presence.
func (r *Reader) User(ctx context.Context, userID int64) (Status, error) {
	s, err := r.Users(ctx, []int64{userID})
	if err != nil {
		return Status{}, err
	}
	return s[0], nil
}

// Users returns the presence of each of ids, in the same order.
func (r *Reader) Users(ctx context.Context, ids []int64) ([]Status, error) {
	out := make([]Status, 0, len(ids))
	const chunk = 1000
	for len(ids) > 0 {
		part := ids[:min(chunk, len(ids))]
		ids = ids[len(part):]
		members := make([]string, len(part))
		for i, id := range part {
			members[i] = strconv.FormatInt(id, 10)
		}
		var scores *goredis.FloatSliceCmd
		var seen *goredis.SliceCmd
		_, err := r.rdb.Pipelined(ctx, func(p goredis.Pipeliner) error {
			scores = p.ZMScore(ctx, r.keys.Online(), members...)
			seen = p.HMGet(ctx, r.keys.LastSeen(), members...)
			return nil
		})
		if err != nil {
			return nil, fmt.Errorf("presence: read users: %w", err)
		}
		for i, id := range part {
			st := Status{UserID: id, Status: StatusOffline}
			// Scores are expiry times, never 0; ZMSCORE's nil reads as 0.
			if scores.Val()[i] > 0 {
				st.Status = StatusOnline
			}
			if s, ok := seen.Val()[i].(string); ok {
				if ms, err := strconv.ParseInt(s, 10, 64); err == nil {
					t := time.UnixMilli(ms).UTC()
					st.LastSeen = &t
				}
			}
			out = append(out, st)
		}
	}
	return out, nil
}

// Typing returns who is typing in roomID, in user id order.
func (r *Reader) Typing(ctx context.Context, roomID int64) ([]Typist, error) {
	var ids *goredis.StringSliceCmd
	var names *goredis.MapStringStringCmd
	_, err := r.rdb.Pipelined(ctx, func(p goredis.Pipeliner) error {
		ids = p.ZRange(ctx, r.keys.Typing(roomID), 0, -1)
		names = p.HGetAll(ctx, r.keys.TypingNames(roomID))
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("presence: read typing: %w", err)
	}
	out := make([]Typist, 0, len(ids.Val()))
	for _, s := range ids.Val() {
		id, err := strconv.ParseInt(s, 10, 64)
		if err != nil {
			continue
		}
		out = append(out, Typist{UserID: id, Username: names.Val()[s]})
	}
	slices.SortFunc(out, func(a, b Typist) int { return cmp.Compare(a.UserID, b.UserID) })
	return out, nil
}
