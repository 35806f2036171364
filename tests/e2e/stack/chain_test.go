package stack

import (
	"strings"
	"testing"
)

func seqp(v int64) *int64 { return &v }

func ev(seq int64, prev *int64) RoomEvent {
	return RoomEvent{Event: "message", RoomID: "1", Seq: seq, PrevSeq: prev}
}

func TestCheckChain(t *testing.T) {
	cases := []struct {
		name string
		evs  []RoomEvent
		last *int64
		want string // substring of the error; "" means no error
	}{
		{"empty", nil, seqp(3), ""},
		{"from nothing", []RoomEvent{ev(0, nil), ev(4, seqp(0)), ev(9, seqp(4))}, nil, ""},
		{"from the join ack", []RoomEvent{ev(4, seqp(3)), ev(5, seqp(4))}, seqp(3), ""},
		{"gap", []RoomEvent{ev(4, seqp(3)), ev(9, seqp(7))}, seqp(3), "prevSeq 7, want 4 (gap)"},
		{"first after the ack missing", []RoomEvent{ev(9, seqp(4))}, seqp(3), "prevSeq 4, want 3"},
		{"duplicate", []RoomEvent{ev(4, seqp(3)), ev(4, seqp(3))}, seqp(3), "seq 4 not after 4"},
		{"out of order", []RoomEvent{ev(5, seqp(3)), ev(4, seqp(3))}, seqp(3), "not after 5"},
		{"prevSeq missing", []RoomEvent{ev(4, nil)}, seqp(3), "prevSeq none, want 3"},
		{"prevSeq where none was", []RoomEvent{ev(4, seqp(3))}, nil, "prevSeq 3, want none"},
		{"no seq", []RoomEvent{{Event: "message", Seq: -1}}, nil, "has no seq"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			err := CheckChain(c.evs, c.last)
			switch {
			case c.want == "" && err != nil:
				t.Errorf("unexpected error: %v", err)
			case c.want != "" && (err == nil || !strings.Contains(err.Error(), c.want)):
				t.Errorf("error %v, want one containing %q", err, c.want)
			}
		})
	}
}
