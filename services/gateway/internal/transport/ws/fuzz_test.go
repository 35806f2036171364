package ws

import (
	"errors"
	"testing"
)

// FuzzFrameReader feeds arbitrary bytes to the frame reader, in one piece
// and cut at a fuzzed point: it never panics, never hands over a message
// above the read limit (fragments included), and a cut changes nothing.
func FuzzFrameReader(f *testing.F) {
	stream, _ := testStream(false)
	f.Add(stream, uint16(7))
	f.Add(clientFragment(false, OpText, make([]byte, 600)), uint16(3))
	f.Add(append(clientFragment(false, OpText, make([]byte, 600)), clientFragment(true, OpContinuation, make([]byte, 600))...), uint16(100))
	f.Add(clientFrame(OpPing, make([]byte, 200)), uint16(1))
	f.Add([]byte{0x81, 0xff, 0x7f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff}, uint16(2))
	const limit = 1024
	f.Fuzz(func(t *testing.T, b []byte, cut uint16) {
		whole, errWhole, _ := feedAll(limit, b)
		k := int(cut) % (len(b) + 1)
		split, errSplit, _ := feedAll(limit, b[:k], b[k:])
		for _, ev := range whole {
			if len(ev.payload) > limit {
				t.Fatalf("a %d-byte message passed the %d-byte limit", len(ev.payload), limit)
			}
		}
		if (errWhole == nil) != (errSplit == nil) || (errWhole != nil && !errors.Is(errSplit, errWhole) && errSplit.Error() != errWhole.Error()) {
			t.Fatalf("cut at %d: error %v, in one piece %v", k, errSplit, errWhole)
		}
		if len(whole) != len(split) {
			t.Fatalf("cut at %d: %d events, in one piece %d", k, len(split), len(whole))
		}
		for i := range whole {
			if whole[i] != split[i] {
				t.Fatalf("cut at %d: event %d differs", k, i)
			}
		}
	})
}
