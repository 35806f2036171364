package tracker

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	goredis "github.com/redis/go-redis/v9"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"

	"relay/pkg/presence"
)

// ensureGroup creates the stream and the consumer group when missing. A
// new group starts at the stream's beginning, so commands gateways sent
// before any presence instance ran are applied too.
func (s *Service) ensureGroup(ctx context.Context) error {
	err := s.rdb.XGroupCreateMkStream(ctx, s.keys.Commands(), presence.Group, "0").Err()
	if err != nil && !goredis.HasErrorPrefix(err, "BUSYGROUP") {
		return fmt.Errorf("presence: create group: %w", err)
	}
	return nil
}

// consume reads the commands stream as s.consumer and applies each entry
// in order, acknowledging it after. On start, and after any failure, it
// first re-reads its own pending entries (id "0"), so nothing it was given
// is skipped. Every ClaimIdle/2 it takes over entries another instance was
// given but never acknowledged (a crashed instance).
func (s *Service) consume(ctx context.Context) error {
	ownPending := true
	nextClaim := time.Now()
	backoff := 50 * time.Millisecond
	for ctx.Err() == nil {
		if time.Now().After(nextClaim) {
			if err := s.claim(ctx); err != nil && ctx.Err() == nil {
				s.log.WarnContext(ctx, "presence: claiming stale commands failed", "err", err)
			}
			nextClaim = time.Now().Add(s.cfg.ClaimIdle / 2)
		}
		id, block := ">", time.Second
		if ownPending {
			// BLOCK does not apply to history reads; -1 omits it.
			id, block = "0", -1
		}
		res, err := s.rdb.XReadGroup(ctx, &goredis.XReadGroupArgs{
			Group: presence.Group, Consumer: s.consumer, Streams: []string{s.keys.Commands(), id},
			Count: s.cfg.ReadCount, Block: block,
		}).Result()
		if errors.Is(err, goredis.Nil) {
			continue // nothing new within the block time
		}
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			if goredis.HasErrorPrefix(err, "NOGROUP") {
				// Redis lost the stream (flushed or restarted empty).
				s.log.WarnContext(ctx, "presence: consumer group missing; recreating")
				if err := s.ensureGroup(ctx); err != nil {
					s.log.WarnContext(ctx, "presence: recreate group failed", "err", err)
				}
			} else {
				s.log.WarnContext(ctx, "presence: reading commands failed", "err", err)
			}
			ownPending = true
			sleep(ctx, backoff)
			backoff = min(backoff*2, 5*time.Second)
			continue
		}
		var msgs []goredis.XMessage
		if len(res) > 0 {
			msgs = res[0].Messages
		}
		if ownPending && len(msgs) == 0 {
			ownPending = false
			continue
		}
		if err := s.applyBatch(ctx, msgs); err != nil {
			if ctx.Err() != nil {
				return nil
			}
			s.log.WarnContext(ctx, "presence: applying commands failed; retrying", "err", err)
			ownPending = true
			sleep(ctx, backoff)
			backoff = min(backoff*2, 5*time.Second)
			continue
		}
		backoff = 50 * time.Millisecond
	}
	return nil
}

func sleep(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}

// applyBatch applies msgs in order and acknowledges the applied ones. It
// stops at the first retryable failure. The batch in hand is finished even
// when ctx is cancelled (shutdown), so a stop does not leave work pending.
func (s *Service) applyBatch(ctx context.Context, msgs []goredis.XMessage) error {
	ctx = context.WithoutCancel(ctx)
	ids := make([]string, 0, len(msgs))
	var applyErr error
	for _, m := range msgs {
		if err := s.apply(ctx, m); err != nil {
			applyErr = err
			break
		}
		ids = append(ids, m.ID)
	}
	if len(ids) > 0 {
		if err := s.rdb.XAck(ctx, s.keys.Commands(), presence.Group, ids...).Err(); err != nil {
			// Unacknowledged entries are applied again: every command is idempotent.
			return errors.Join(applyErr, fmt.Errorf("ack: %w", err))
		}
	}
	return applyErr
}

// apply applies one entry. It returns an error only when the entry should
// be retried (Redis unreachable); a malformed entry or one Redis rejects is
// logged, counted and acknowledged, so it cannot stall the stream.
func (s *Service) apply(ctx context.Context, m goredis.XMessage) error {
	raw, _ := m.Values["c"].(string)
	cmd, err := presence.DecodeCommand([]byte(raw))
	if err != nil {
		s.m.commands.WithLabelValues("invalid", "invalid").Inc()
		s.log.WarnContext(ctx, "presence: dropping invalid command", "id", m.ID, "err", err)
		return nil
	}
	now, err := presence.EntryTime(m.ID)
	if err != nil {
		s.m.commands.WithLabelValues(string(cmd.Op), "invalid").Inc()
		s.log.WarnContext(ctx, "presence: dropping command", "id", m.ID, "err", err)
		return nil
	}
	if len(cmd.Trace) > 0 {
		ctx = s.tel.Propagator.Extract(ctx, propagation.MapCarrier(cmd.Trace))
	}
	ctx, span := s.tel.Tracer.Start(ctx, "presence.apply "+string(cmd.Op), trace.WithSpanKind(trace.SpanKindConsumer),
		trace.WithAttributes(attribute.String("presence.gateway", cmd.Gateway), attribute.String("messaging.message.id", m.ID)))
	defer span.End()

	var (
		ts []Transition
		tc *TypingChange
	)
	switch cmd.Op {
	case presence.OpConnect:
		var t *Transition
		t, err = s.state.Connect(ctx, cmd.Gateway, cmd.UserID, cmd.ConnID, now)
		if t != nil {
			ts = append(ts, *t)
		}
	case presence.OpDisconnect:
		var t *Transition
		t, err = s.state.Disconnect(ctx, cmd.Gateway, cmd.UserID, cmd.ConnID, now)
		if t != nil {
			ts = append(ts, *t)
		}
	case presence.OpHeartbeat:
		ts, err = s.state.Heartbeat(ctx, cmd.Gateway, cmd.Conns, now)
	case presence.OpTypingStart:
		tc, err = s.state.TypingStart(ctx, cmd.RoomID, cmd.UserID, cmd.Username, now)
	case presence.OpTypingStop:
		tc, err = s.state.TypingStop(ctx, cmd.RoomID, cmd.UserID, cmd.Username)
	}
	// Publish what did change, even when a later chunk of a heartbeat failed.
	var tcs []TypingChange
	if tc != nil {
		tcs = append(tcs, *tc)
	}
	s.publish(ctx, ts, tcs)
	if err != nil {
		span.RecordError(err)
		if permanent(err) {
			// Redis answered with an error: retrying cannot help.
			s.m.commands.WithLabelValues(string(cmd.Op), "rejected").Inc()
			s.log.ErrorContext(ctx, "presence: command rejected by Redis; dropped", "id", m.ID, "op", cmd.Op, "err", err)
			return nil
		}
		s.m.commands.WithLabelValues(string(cmd.Op), "error").Inc()
		return fmt.Errorf("%s %s: %w", cmd.Op, m.ID, err)
	}
	s.m.commands.WithLabelValues(string(cmd.Op), "applied").Inc()
	return nil
}

// permanent reports whether Redis rejected a command in a way a retry
// cannot fix (a script error, a key of the wrong type), as opposed to an
// unreachable or busy server.
func permanent(err error) bool {
	var rerr goredis.Error
	if !errors.As(err, &rerr) {
		return false
	}
	msg := rerr.Error()
	return strings.HasPrefix(msg, "WRONGTYPE") || strings.HasPrefix(msg, "ERR")
}

// claim takes over entries pending for longer than ClaimIdle with another
// consumer (a crashed or stuck instance), applies them, and forgets
// consumers that have been idle for long with nothing pending.
func (s *Service) claim(ctx context.Context) error {
	start := "0-0"
	for range 100 {
		msgs, next, err := s.rdb.XAutoClaim(ctx, &goredis.XAutoClaimArgs{
			Stream: s.keys.Commands(), Group: presence.Group, Consumer: s.consumer,
			MinIdle: s.cfg.ClaimIdle, Start: start, Count: s.cfg.ReadCount,
		}).Result()
		if err != nil {
			return fmt.Errorf("xautoclaim: %w", err)
		}
		if len(msgs) > 0 {
			s.m.claimed.Add(float64(len(msgs)))
			s.log.InfoContext(ctx, "presence: took over stale commands", "count", len(msgs))
			if err := s.applyBatch(ctx, msgs); err != nil {
				return err
			}
		}
		if next == "0-0" || next == "" {
			break
		}
		start = next
	}
	consumers, err := s.rdb.XInfoConsumers(ctx, s.keys.Commands(), presence.Group).Result()
	if err != nil {
		return fmt.Errorf("xinfo consumers: %w", err)
	}
	for _, c := range consumers {
		if c.Name != s.consumer && c.Pending == 0 && c.Idle > time.Hour {
			if err := s.rdb.XGroupDelConsumer(ctx, s.keys.Commands(), presence.Group, c.Name).Err(); err != nil {
				return fmt.Errorf("delete consumer: %w", err)
			}
		}
	}
	return nil
}

// horizon returns the stream time up to which every command has been
// applied: Redis' clock when nothing is pending or undelivered, else the
// time of the oldest pending (or the last delivered) entry. The sweeper
// expires only what expired before it, so a backlog (a presence restart,
// a crashed instance's pending entries) never takes users offline whose
// heartbeats are still waiting in the stream.
func (s *Service) horizon(ctx context.Context) (int64, error) {
	stream := s.keys.Commands()
	var (
		tm     *goredis.TimeCmd
		groups *goredis.XInfoGroupsCmd
		pend   *goredis.XPendingCmd
		last   *goredis.XMessageSliceCmd
	)
	_, err := s.rdb.TxPipelined(ctx, func(p goredis.Pipeliner) error {
		tm = p.Time(ctx)
		groups = p.XInfoGroups(ctx, stream)
		pend = p.XPending(ctx, stream, presence.Group)
		last = p.XRevRangeN(ctx, stream, "+", "-", 1)
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("horizon: %w", err)
	}
	h := tm.Val().UnixMilli()
	var g *goredis.XInfoGroup
	for i := range groups.Val() {
		if groups.Val()[i].Name == presence.Group {
			g = &groups.Val()[i]
		}
	}
	if g == nil {
		return 0, errors.New("horizon: consumer group missing")
	}
	if p := pend.Val(); p != nil && p.Count > 0 {
		t, err := presence.EntryTime(p.Lower)
		if err != nil {
			return 0, err
		}
		h = min(h, t)
	}
	if msgs := last.Val(); len(msgs) > 0 && idLess(g.LastDeliveredID, msgs[0].ID) {
		t, err := presence.EntryTime(g.LastDeliveredID)
		if err != nil {
			return 0, err
		}
		h = min(h, t)
	}
	return h, nil
}

// idLess compares stream ids "<ms>-<seq>".
func idLess(a, b string) bool {
	am, as := splitID(a)
	bm, bs := splitID(b)
	return am < bm || (am == bm && as < bs)
}

func splitID(id string) (int64, int64) {
	m, sq, _ := strings.Cut(id, "-")
	mv, _ := strconv.ParseInt(m, 10, 64)
	sv, _ := strconv.ParseInt(sq, 10, 64)
	return mv, sv
}
