package worker

import (
	"fmt"
	"time"

	"relay/pkg/events"
	"relay/pkg/protocol"
	"relay/pkg/redis"
)

// renderPublication wraps the frame with its position and trace context:
// the bytes published on the room channel and kept in its history.
func renderPublication(e *events.Event, seq int64, prev *int64, trace map[string]string) ([]byte, error) {
	frame, err := protocol.RenderEvent(e, seq, prev)
	if err != nil {
		return nil, err
	}
	p := redis.Publication{RoomID: e.RoomID, Seq: seq, PrevSeq: prev, Trace: trace, Frame: frame, PublishedAt: time.Now().UnixNano()}
	if !e.At.IsZero() {
		p.EventAt = e.At.UnixNano()
	}
	b, err := p.Encode()
	if err != nil {
		return nil, fmt.Errorf("render publication: %w", err)
	}
	return b, nil
}
