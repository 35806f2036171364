package httpapi

import (
	"context"
	"time"

	"golang.org/x/sync/errgroup"

	"relay/pkg/chat"
	"relay/pkg/events"
	"relay/pkg/store"
)

// Producing member events after the commit: a few attempts with backoff,
// each bounded, then a logged error. The request itself has succeeded by
// then and is not failed (the membership is in PostgreSQL either way). The
// worst case, about 15 s with Kafka down, fits the default shutdown timeout.
const (
	publishAttempts   = 3
	publishFirstPause = 100 * time.Millisecond
	publishTimeout    = 5 * time.Second
	// publishParallel bounds concurrent sends when a new room's members
	// are announced; they share one partition, so the producer batches them.
	publishParallel = 16
)

// memberEvent returns the member_joined or member_left event of u in roomID.
func memberEvent(typ events.Type, roomID int64, userID int64, username string, role chat.Role) *events.Event {
	e := &events.Event{Type: typ, RoomID: roomID, UserID: userID, Username: username, At: time.Now().UTC()}
	if typ == events.MemberJoined {
		e.Role = string(role)
	}
	return e
}

// publish produces e, retrying transient failures; it never fails the
// caller. ctx carries the request's trace but not its cancellation.
func (s *Service) publish(ctx context.Context, e *events.Event) {
	ctx = context.WithoutCancel(ctx)
	pause := publishFirstPause
	var err error
	for attempt := 1; attempt <= publishAttempts; attempt++ {
		actx, cancel := context.WithTimeout(ctx, publishTimeout)
		var seq int64
		_, seq, err = s.events.Publish(actx, e)
		cancel()
		if err == nil {
			s.log.DebugContext(ctx, "member event produced", "type", e.Type, "room", e.RoomID, "user", e.UserID, "seq", seq)
			return
		}
		if attempt < publishAttempts {
			s.log.WarnContext(ctx, "producing member event failed; retrying", "type", e.Type, "room", e.RoomID,
				"user", e.UserID, "attempt", attempt, "err", err)
			time.Sleep(pause)
			pause *= 2
		}
	}
	// The membership change is committed but its event is lost: live
	// clients will not hear of it until they reload the room.
	s.log.ErrorContext(ctx, "member event lost after retries", "type", e.Type, "room", e.RoomID,
		"user", e.UserID, "attempts", publishAttempts, "err", err)
}

// publishJoined announces the members of a new room: the creator first, so
// the room's log starts with its admin, then the others concurrently.
func (s *Service) publishJoined(ctx context.Context, roomID, creatorID int64, members []store.Member) {
	rest := make([]store.Member, 0, len(members))
	for _, m := range members {
		if m.UserID == creatorID {
			s.publish(ctx, memberEvent(events.MemberJoined, roomID, m.UserID, m.Username, m.Role))
			continue
		}
		rest = append(rest, m)
	}
	var g errgroup.Group
	g.SetLimit(publishParallel)
	for _, m := range rest {
		g.Go(func() error {
			s.publish(ctx, memberEvent(events.MemberJoined, roomID, m.UserID, m.Username, m.Role))
			return nil
		})
	}
	_ = g.Wait() // publish never fails
}
