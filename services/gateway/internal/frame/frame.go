// Package frame encodes the frames the gateway itself sends (acks, errors,
// resync_required) and counts them; room events arrive already rendered.
package frame

import (
	"encoding/json"
	"log/slog"
	"strconv"
	"time"

	"relay/pkg/chat"
	"relay/pkg/protocol"
	"relay/services/gateway/internal/metrics"
)

// Encoder encodes server frames.
type Encoder struct {
	// Metrics counts frames by event and errors by code.
	Metrics *metrics.Metrics
	// Log gets encoding failures and INTERNAL/UNAVAILABLE errors.
	Log *slog.Logger
	// ResyncRetryAfter is the retryAfterMs of a resync_required that a
	// retry can cure.
	ResyncRetryAfter time.Duration
}

// Frame encodes a server frame; data is already JSON. It returns nil on
// invalid data (our bug, logged).
func (e *Encoder) Frame(event, ref string, data json.RawMessage) []byte {
	b, err := json.Marshal(protocol.Frame{Event: event, Ref: ref, Data: data})
	if err != nil {
		// Only invalid raw JSON can fail here, which would be our bug.
		e.Log.Error("encode frame", "event", event, "err", err)
		return nil
	}
	e.Metrics.FramesOut.WithLabelValues(event).Inc()
	return b
}

// Error encodes an error frame for user; anything that is not a
// *chat.Error is INTERNAL with a generic message, its detail only logged.
func (e *Encoder) Error(user int64, ref string, err error) []byte {
	code := chat.ErrorCode(err)
	if code == chat.CodeInternal || code == chat.CodeUnavailable {
		e.Log.Warn("frame failed", "user_id", user, "code", code, "err", err)
	}
	e.Metrics.Errors.WithLabelValues(string(code)).Inc()
	ed := protocol.ErrorData{Code: code, Message: chat.ErrorMessage(err)}
	if d := chat.RetryAfter(err); d > 0 {
		// Rounded up: retrying a millisecond early would be refused again.
		ed.RetryAfterMs = int64((d + time.Millisecond - 1) / time.Millisecond)
	}
	data, _ := json.Marshal(ed)
	return e.Frame(protocol.EventError, ref, data)
}

// Resync encodes a resync_required push. Reasons that a retry can cure
// carry retryAfterMs.
func (e *Encoder) Resync(room, fromSeq int64, reason string) []byte {
	r := protocol.ResyncRequired{RoomID: RoomString(room), FromSeq: fromSeq, Reason: reason}
	if reason == protocol.ResyncPersisterBehind || reason == protocol.ResyncUnavailable {
		r.RetryAfterMs = e.ResyncRetryAfter.Milliseconds()
	}
	e.Metrics.Resyncs.WithLabelValues(reason).Inc()
	return e.Frame(protocol.EventResyncRequired, "", MustJSON(r))
}

// MustJSON encodes a payload made of plain fields (cannot fail).
func MustJSON(v any) json.RawMessage {
	b, err := json.Marshal(v)
	if err != nil {
		return json.RawMessage(`{}`)
	}
	return b
}

// RoomString is a room id as the wire carries it.
func RoomString(id int64) string { return strconv.FormatInt(id, 10) }
