package fanout

import (
	"context"
	"fmt"

	"relay/pkg/protocol"
	"relay/pkg/redis"
	"relay/pkg/store"
)

// LogRead is what ReadLog could establish of a room's log after a seq.
type LogRead struct {
	// Pubs are the events after the requested seq, in seq order, each
	// verified to follow the one before it (the first one to follow the
	// requested seq): no event between them is missing.
	Pubs []*redis.Publication
	// Last is the seq of the last of Pubs, or the requested seq when
	// there are none.
	Last int64
	// Gap is "" when Pubs reach as far as required, otherwise why they
	// stop short (a protocol.Resync* reason).
	Gap string
}

// ReadLog returns the room's events after seq after, at most limit, as a
// verified chain: first from the Redis recent history and, where that no
// longer reaches back or cannot prove an event's predecessor, from the log
// the persister keeps in PostgreSQL (room_events). until, when not nil, is
// a seq the chain must reach (the room's last seq, or the predecessor of a
// live event): if neither store gets there, gap says why. nil means the
// room's last seq is unknown (Redis lost it), so PostgreSQL is always asked.
//
// PostgreSQL holds a prefix of each room's log (the persister writes a
// partition in offset order, one transaction per batch), so its rows are
// consecutive: a row's predecessor is the row before it. A Redis entry's
// predecessor is its prevSeq, when Redis knew it. The chain stops at the
// first event neither proves follows the previous one.
//
// A Redis failure is returned as an error; a PostgreSQL failure ends the
// chain with gap protocol.ResyncUnavailable.
func (f *Fanout) ReadLog(ctx context.Context, room, after int64, until *int64, limit int) (LogRead, error) {
	out := LogRead{Last: after}
	hist, _, err := redis.History(ctx, f.o.Redis, f.o.Keys, room, after, int64(limit)+1)
	if err != nil {
		return out, err
	}
	// The common case: the recent history links up to the present.
	i := 0
	for ; i < len(hist); i++ {
		if !follows(hist[i].PrevSeq, out.Last) {
			break
		}
		out.Pubs = append(out.Pubs, hist[i])
		out.Last = hist[i].Seq
	}
	if i == len(hist) && until != nil && out.Last >= *until {
		return out.capped(limit), nil
	}
	if len(out.Pubs) > limit {
		return out.capped(limit), nil
	}

	rows, err := store.RoomEvents(ctx, f.o.DB, room, out.Last, limit+1-len(out.Pubs))
	if err != nil {
		f.log.WarnContext(ctx, "read room log from postgres", "room_id", room, "after", out.Last, "err", err)
		out.Gap = protocol.ResyncUnavailable
		return out, nil
	}
	rowsFull := len(rows) == limit+1-len(out.Pubs)
	var prev *int64
	if len(rows) > 0 {
		if prev, err = store.PrevEventSeq(ctx, f.o.DB, room, rows[0].Seq); err != nil {
			f.log.WarnContext(ctx, "read room log from postgres", "room_id", room, "err", err)
			out.Gap = protocol.ResyncUnavailable
			return out, nil
		}
	}
	rest := hist[i:]
	pgNewest := out.Last
	if len(rows) > 0 {
		pgNewest = rows[len(rows)-1].Seq
	}
	// Merge by seq: a row of PostgreSQL proves its own predecessor; an
	// entry only Redis has needs its prevSeq.
	r, h := 0, 0
	for r < len(rows) || h < len(rest) {
		switch {
		case h == len(rest) || (r < len(rows) && rows[r].Seq <= rest[h].Seq):
			row := rows[r]
			r++
			var p *redis.Publication
			if h < len(rest) && rest[h].Seq == row.Seq {
				// In both: Redis's bytes are what the others got live,
				// unless Redis did not know the predecessor.
				if rest[h].PrevSeq != nil {
					p = rest[h]
				}
				h++
			}
			if p == nil {
				if p, err = renderRow(room, row, prev); err != nil {
					// Not renderable, so the delivery worker published
					// nothing for it either; it is still a link.
					f.log.WarnContext(ctx, "skip room event", "room_id", room, "seq", row.Seq, "err", err)
				}
			}
			if p != nil {
				out.Pubs = append(out.Pubs, p)
			}
			out.Last = row.Seq
			seq := row.Seq
			prev = &seq
		default:
			e := rest[h]
			h++
			if e.Seq <= out.Last {
				continue // cannot happen with sorted inputs; harmless
			}
			if !follows(e.PrevSeq, out.Last) {
				switch {
				case rowsFull:
					out.Gap = protocol.ResyncReplayLimit
				case pgNewest < e.Seq:
					out.Gap = protocol.ResyncPersisterBehind
				default:
					out.Gap = protocol.ResyncHistoryTrimmed
				}
				return out.capped(limit), nil
			}
			out.Pubs = append(out.Pubs, e)
			out.Last = e.Seq
			seq := e.Seq
			prev = &seq
		}
	}
	if until != nil && out.Last < *until {
		if rowsFull {
			out.Gap = protocol.ResyncReplayLimit
		} else {
			out.Gap = protocol.ResyncPersisterBehind
		}
	}
	return out.capped(limit), nil
}

// capped keeps the first limit events; beyond them is a replay_limit gap.
func (l LogRead) capped(limit int) LogRead {
	if len(l.Pubs) > limit {
		l.Pubs = l.Pubs[:limit]
		l.Last = l.Pubs[limit-1].Seq
		l.Gap = protocol.ResyncReplayLimit
	}
	return l
}

// follows reports whether an event whose predecessor is prev comes right
// after seq last: nothing lies between prev and the event, so nothing is
// missed when prev <= last. An unknown predecessor proves nothing.
func follows(prev *int64, last int64) bool {
	return prev != nil && *prev <= last
}

// renderRow renders a room_events row into the publication the delivery
// worker would have published for it.
func renderRow(room int64, row store.LoggedEvent, prev *int64) (*redis.Publication, error) {
	frame, err := protocol.RenderEvent(row.Event, row.Seq, prev)
	if err != nil {
		return nil, fmt.Errorf("render seq %d: %w", row.Seq, err)
	}
	var p *int64
	if prev != nil {
		v := *prev
		p = &v
	}
	return &redis.Publication{RoomID: room, Seq: row.Seq, PrevSeq: p, Frame: frame}, nil
}
