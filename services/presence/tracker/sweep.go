package tracker

import (
	"context"
	"encoding/json"
	"strconv"
	"time"

	goredis "github.com/redis/go-redis/v9"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"

	"relay/pkg/presence"
	"relay/pkg/protocol"
)

// sweepLoop expires connections, typists and tombs every SweepInterval.
func (s *Service) sweepLoop(ctx context.Context) error {
	t := time.NewTicker(s.cfg.SweepInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		if err := s.sweep(ctx); err != nil && ctx.Err() == nil {
			s.m.sweepErrors.Inc()
			s.log.WarnContext(ctx, "presence: sweep failed", "err", err)
		}
	}
}

// sweep runs one pass at the stream horizon.
func (s *Service) sweep(ctx context.Context) error {
	start := time.Now()
	defer func() { s.m.sweepSeconds.Observe(time.Since(start).Seconds()) }()
	h, err := s.horizon(ctx)
	if err != nil {
		return err
	}
	s.m.horizonLag.Set(float64(time.Now().UnixMilli()-h) / 1000)
	ts, uerr := s.state.SweepUsers(ctx, h)
	tcs, terr := s.state.SweepTyping(ctx, h)
	if len(ts) > 0 || len(tcs) > 0 {
		// A span only for sweeps that changed something, dated from the start.
		var span trace.Span
		ctx, span = s.tel.Tracer.Start(ctx, "presence.sweep", trace.WithTimestamp(start),
			trace.WithAttributes(attribute.Int("presence.offline", len(ts)), attribute.Int("presence.typing_expired", len(tcs))))
		defer span.End()
	}
	s.publish(ctx, ts, tcs)
	if uerr != nil {
		return uerr
	}
	if terr != nil {
		return terr
	}
	return s.state.TrimTombs(ctx, h)
}

// publish sends one event per transition and typing change, pipelined.
// A transition was already decided by the script that returned it, so a
// failed publish is logged and counted, not retried by re-applying.
func (s *Service) publish(ctx context.Context, ts []Transition, tcs []TypingChange) {
	if len(ts) == 0 && len(tcs) == 0 {
		return
	}
	carrier := propagation.MapCarrier{}
	s.tel.Propagator.Inject(ctx, carrier)
	var tr map[string]string
	if len(carrier) > 0 {
		tr = carrier
	}
	cmds, err := s.rdb.Pipelined(ctx, func(p goredis.Pipeliner) error {
		for _, t := range ts {
			b, err := renderPresence(t, tr)
			if err != nil {
				return err
			}
			presence.AddEvent(ctx, p, s.keys, b)
		}
		for _, c := range tcs {
			b, err := renderTyping(c, tr)
			if err != nil {
				return err
			}
			p.SPublish(ctx, s.keys.RoomChannel(c.RoomID), b)
		}
		return nil
	})
	failed := 0
	for _, c := range cmds {
		if c.Err() != nil {
			failed++
		}
	}
	if err != nil || failed > 0 {
		s.m.publishErrors.Add(float64(max(failed, 1)))
		s.log.ErrorContext(ctx, "presence: publishing events failed", "events", len(ts)+len(tcs), "failed", failed, "err", err)
	}
	for _, t := range ts {
		status := presence.StatusOffline
		if t.Online {
			status = presence.StatusOnline
		}
		s.m.transitions.WithLabelValues(status).Inc()
	}
	for _, c := range tcs {
		s.m.typing.WithLabelValues(strconv.FormatBool(c.Typing)).Inc()
	}
}

// renderPresence renders the presence_update frame of t in its Event.
func renderPresence(t Transition, tr map[string]string) ([]byte, error) {
	status := presence.StatusOffline
	if t.Online {
		status = presence.StatusOnline
	}
	data, err := json.Marshal(presence.PresenceUpdate{
		UserID: strconv.FormatInt(t.UserID, 10), Status: status, LastSeen: time.UnixMilli(t.LastSeen).UTC(),
	})
	if err != nil {
		return nil, err
	}
	frame, err := json.Marshal(protocol.Frame{Event: protocol.EventPresenceUpdate, Data: data})
	if err != nil {
		return nil, err
	}
	return json.Marshal(presence.Event{UserID: t.UserID, Status: status, Trace: tr, Frame: frame})
}

// renderTyping renders the typing frame of c in an ephemeral room
// publication that skips the typist.
func renderTyping(c TypingChange, tr map[string]string) ([]byte, error) {
	data, err := json.Marshal(protocol.Typing{
		RoomID: strconv.FormatInt(c.RoomID, 10), UserID: strconv.FormatInt(c.UserID, 10),
		Username: c.Username, Typing: c.Typing,
	})
	if err != nil {
		return nil, err
	}
	frame, err := json.Marshal(protocol.Frame{Event: protocol.EventTyping, Data: data})
	if err != nil {
		return nil, err
	}
	pub := protocol.Publication{RoomID: c.RoomID, Ephemeral: true, SkipUserID: c.UserID, Trace: tr, Frame: frame}
	return pub.Encode()
}
