package protocol

import (
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
)

// Publication is what the delivery worker publishes on a room channel and
// keeps in the room history: the rendered client frame with its position.
type Publication struct {
	// RoomID is the room the event belongs to.
	RoomID int64 `json:"roomId,string"`
	// Seq is the event's Kafka offset.
	Seq int64 `json:"seq"`
	// PrevSeq is the seq of the room's previous event; nil when unknown.
	PrevSeq *int64 `json:"prevSeq,omitempty"`
	// Trace carries W3C trace context (traceparent, tracestate).
	Trace map[string]string `json:"trace,omitempty"`
	// PublishedAt is when the publisher sent it, in Unix nanoseconds (0:
	// unknown); a receiver of the live channel measures pub/sub latency
	// from it (a history entry keeps its original time).
	PublishedAt int64 `json:"pubAt,omitempty"`
	// EventAt is the event's time in Unix nanoseconds (0: none), which the
	// gateway sets just before producing it: receivers measure produce ->
	// delivered-to-socket from it.
	EventAt int64 `json:"eventAt,omitempty"`
	// Frame is the server frame to write to sockets as it is.
	Frame json.RawMessage `json:"frame"`
	// Ephemeral marks a frame without a log position (typing): Seq is 0,
	// it is never in the history, and receivers skip their seq checks.
	Ephemeral bool `json:"ephemeral,omitempty"`
	// SkipUserID, when non-zero, is a user whose connections must not get
	// the frame (the typist of a typing frame).
	SkipUserID int64 `json:"skipUserId,string,omitempty"`
}

// Encode returns p as json.Marshal does, but appends Frame as it is
// instead of compacting and validating it again: Frame must be compact
// JSON, as a rendered frame is. The delivery worker encodes one
// publication per record, and this is most of what that costs.
func (p *Publication) Encode() ([]byte, error) {
	b := make([]byte, 0, len(p.Frame)+192)
	b = append(b, `{"roomId":"`...)
	b = strconv.AppendInt(b, p.RoomID, 10)
	b = append(b, `","seq":`...)
	b = strconv.AppendInt(b, p.Seq, 10)
	if p.PrevSeq != nil {
		b = append(b, `,"prevSeq":`...)
		b = strconv.AppendInt(b, *p.PrevSeq, 10)
	}
	if len(p.Trace) > 0 {
		t, err := json.Marshal(p.Trace)
		if err != nil {
			return nil, fmt.Errorf("protocol: publication trace: %w", err)
		}
		b = append(b, `,"trace":`...)
		b = append(b, t...)
	}
	if p.PublishedAt != 0 {
		b = append(b, `,"pubAt":`...)
		b = strconv.AppendInt(b, p.PublishedAt, 10)
	}
	if p.EventAt != 0 {
		b = append(b, `,"eventAt":`...)
		b = strconv.AppendInt(b, p.EventAt, 10)
	}
	if len(p.Frame) == 0 {
		return nil, errors.New("protocol: publication without a frame")
	}
	b = append(b, `,"frame":`...)
	b = append(b, p.Frame...)
	if p.Ephemeral {
		b = append(b, `,"ephemeral":true`...)
	}
	if p.SkipUserID != 0 {
		b = append(b, `,"skipUserId":"`...)
		b = strconv.AppendInt(b, p.SkipUserID, 10)
		b = append(b, '"')
	}
	return append(b, '}'), nil
}

// DecodePublication parses a channel message or history entry.
func DecodePublication(b []byte) (*Publication, error) {
	var p Publication
	if err := json.Unmarshal(b, &p); err != nil {
		return nil, fmt.Errorf("protocol: publication: %w", err)
	}
	if p.RoomID <= 0 || len(p.Frame) == 0 {
		return nil, errors.New("protocol: publication: roomId and frame required")
	}
	return &p, nil
}
