package ws

import (
	"bytes"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/fasthttp/websocket"
)

// event is what frameReader.feed reported: a message or control frame.
type event struct {
	op      byte
	payload string
}

// feedAll feeds chunks in order and returns the events and the error.
func feedAll(limit int64, chunks ...[]byte) ([]event, error, *frameReader) {
	r := &frameReader{limit: limit}
	var got []event
	for _, c := range chunks {
		// feed unmasks in place: give it a copy, as a socket read would.
		err := r.feed(bytes.Clone(c), func(op byte, p []byte) error {
			got = append(got, event{op, string(p)})
			return nil
		})
		if err != nil {
			return got, err, r
		}
	}
	return got, nil, r
}

func sameEvents(t *testing.T, label string, got, want []event) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%s: %d events, want %d", label, len(got), len(want))
	}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("%s: event %d = %d %.40q, want %d %.40q", label, i, got[i].op, got[i].payload, want[i].op, want[i].payload)
		}
	}
}

// testStream is frames of every kind a client sends, and what they mean.
func testStream(big bool) ([]byte, []event) {
	var s []byte
	var want []event
	add := func(frame []byte, ev ...event) {
		s = append(s, frame...)
		want = append(want, ev...)
	}
	add(clientFrame(OpText, []byte(`{"event":"ping"}`)), event{OpText, `{"event":"ping"}`})
	add(clientFrame(OpText, nil), event{OpText, ""})
	mid := strings.Repeat("m", 300) // 16-bit length
	add(clientFrame(OpText, []byte(mid)), event{OpText, mid})
	add(clientFrame(OpPing, []byte("hi")), event{OpPing, "hi"})
	// A fragmented message with a control frame between its fragments.
	add(clientFragment(false, OpText, []byte("hel")))
	add(clientFragment(false, OpContinuation, []byte("lo ")))
	add(clientFrame(OpPong, nil), event{OpPong, ""})
	add(clientFragment(true, OpContinuation, []byte("world")), event{OpText, "hello world"})
	add(clientFrame(OpBinary, []byte{0, 1, 2}), event{OpBinary, "\x00\x01\x02"})
	if big {
		large := strings.Repeat("L", 70000) // 64-bit length
		add(clientFrame(OpText, []byte(large)), event{OpText, large})
	}
	add(clientFrame(OpClose, []byte{0x03, 0xE8}), event{OpClose, "\x03\xe8"})
	return s, want
}

// TestFrameReaderEverySplit: a stream cut at any byte (and at every
// second byte) gives the same messages as in one piece.
func TestFrameReaderEverySplit(t *testing.T) {
	t.Parallel()
	s, want := testStream(false)
	got, err, r := feedAll(1<<20, s)
	if err != nil {
		t.Fatal(err)
	}
	sameEvents(t, "whole", got, want)
	if r.pending != nil || r.msg != nil {
		t.Fatal("buffers kept after complete frames")
	}
	for i := 1; i < len(s); i++ {
		got, err, r := feedAll(1<<20, s[:i], s[i:])
		if err != nil {
			t.Fatalf("split at %d: %v", i, err)
		}
		sameEvents(t, fmt.Sprintf("split at %d", i), got, want)
		if r.pending != nil {
			t.Fatalf("split at %d: pending kept", i)
		}
		for j := i + 1; j < len(s); j += 7 {
			got, err, _ := feedAll(1<<20, s[:i], s[i:j], s[j:])
			if err != nil {
				t.Fatalf("split at %d, %d: %v", i, j, err)
			}
			sameEvents(t, fmt.Sprintf("split at %d, %d", i, j), got, want)
		}
	}
}

func TestFrameReaderByteByByte(t *testing.T) {
	t.Parallel()
	s, want := testStream(true)
	chunks := make([][]byte, len(s))
	for i := range s {
		chunks[i] = s[i : i+1]
	}
	got, err, _ := feedAll(1<<20, chunks...)
	if err != nil {
		t.Fatal(err)
	}
	sameEvents(t, "byte by byte", got, want)
}

// TestFrameReaderReadLimit: a message above the limit is refused from its
// header (1009), fragmented or not.
func TestFrameReaderReadLimit(t *testing.T) {
	t.Parallel()
	head := clientFrame(OpText, make([]byte, 2000))[:8] // header and mask only
	if _, err, _ := feedAll(1000, head); !errors.Is(err, errReadLimit) {
		t.Fatalf("oversize header: %v, want the read limit", err)
	}
	if _, err, _ := feedAll(1000, clientFrame(OpText, make([]byte, 1000))); err != nil {
		t.Fatalf("message at the limit: %v", err)
	}
	_, err, _ := feedAll(1000, clientFragment(false, OpText, make([]byte, 600)), clientFragment(true, OpContinuation, make([]byte, 600)))
	var fe *frameError
	if !errors.As(err, &fe) || fe.d.Code != websocket.CloseMessageTooBig {
		t.Fatalf("fragmented oversize: %v, want 1009", err)
	}
}

func TestFrameReaderProtocolErrors(t *testing.T) {
	t.Parallel()
	unmasked := appendFrame(nil, OpText, []byte("x"))
	rsv := clientFrame(OpText, []byte("x"))
	rsv[0] |= 0x40
	longPing := clientFrame(OpPing, make([]byte, 126))
	for name, chunks := range map[string][][]byte{
		"unmasked":                 {unmasked},
		"reserved bits":            {rsv},
		"unknown opcode":           {clientFrame(0x3, nil)},
		"fragmented control":       {clientFragment(false, OpPing, nil)},
		"long control":             {longPing},
		"orphan continuation":      {clientFrame(OpContinuation, []byte("x"))},
		"message inside a message": {clientFragment(false, OpText, []byte("a")), clientFrame(OpText, []byte("b"))},
	} {
		_, err, _ := feedAll(1<<20, chunks...)
		var fe *frameError
		if !errors.As(err, &fe) || fe.d.Code != websocket.CloseProtocolError {
			t.Errorf("%s: %v, want 1002", name, err)
		}
	}
}

// TestFrameReaderStopsAtHandlerError: nothing after the frame whose
// handling failed is handled.
func TestFrameReaderStopsAtHandlerError(t *testing.T) {
	t.Parallel()
	stop := errors.New("stop")
	s := append(clientFrame(OpClose, nil), clientFrame(OpText, []byte("after"))...)
	r := &frameReader{limit: 100}
	n := 0
	err := r.feed(s, func(op byte, _ []byte) error {
		n++
		if op == OpClose {
			return stop
		}
		return nil
	})
	if !errors.Is(err, stop) || n != 1 {
		t.Fatalf("err %v after %d frames, want stop after 1", err, n)
	}
}

func TestCloseReply(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		payload []byte
		reply   []byte
		bad     bool
	}{
		{nil, nil, false},
		{[]byte{0x03}, nil, true},
		{[]byte{0x03, 0xE8}, []byte{0x03, 0xE8}, false},
		{append([]byte{0x0F, 0xA0}, "bye"...), []byte{0x0F, 0xA0}, false}, // 4000
		{[]byte{0x03, 0xED}, nil, true},                                   // 1005 may not be sent
		{[]byte{0x03, 0xE8, 0xFF}, nil, true},                             // reason not UTF-8
	} {
		reply, err := closeReply(tc.payload)
		if (err != nil) != tc.bad || !bytes.Equal(reply, tc.reply) {
			t.Errorf("close % x: reply % x, err %v", tc.payload, reply, err)
		}
	}
}

func TestUnmaskMatchesBytewise(t *testing.T) {
	t.Parallel()
	key := [4]byte{1, 2, 3, 250}
	for n := range 40 {
		b := make([]byte, n)
		for i := range b {
			b[i] = byte(i * 7)
		}
		want := bytes.Clone(b)
		for i := range want {
			want[i] ^= key[i%4]
		}
		unmask(b, key)
		if !bytes.Equal(b, want) {
			t.Fatalf("length %d: % x, want % x", n, b, want)
		}
	}
}

// BenchmarkFrameReaderSend parses a masked send_message frame (the
// common client frame), as one read delivers it.
func BenchmarkFrameReaderSend(b *testing.B) {
	frame := clientFrame(OpText, sendFrame)
	buf := make([]byte, len(frame))
	r := &frameReader{limit: 1 << 20}
	n := 0
	handle := func(byte, []byte) error { n++; return nil }
	b.SetBytes(int64(len(frame)))
	b.ReportAllocs()
	for b.Loop() {
		copy(buf, frame)
		if err := r.feed(buf, handle); err != nil {
			b.Fatal(err)
		}
	}
	if n == 0 {
		b.Fatal("no frame handled")
	}
}

// clientFrame encodes one final client frame of opcode op.
func clientFrame(op byte, payload []byte) []byte { return AppendClientFrame(nil, true, op, payload) }

// clientFragment encodes one client frame; fin false leaves the message
// open for continuation frames.
func clientFragment(fin bool, op byte, payload []byte) []byte {
	return AppendClientFrame(nil, fin, op, payload)
}

// sendFrame is the common client frame: a send_message.
var sendFrame = []byte(`{"event":"send_message","ref":"c42","data":{"roomId":"12345","content":"hello there, how is it going?","type":"text","metadata":{"replyTo":"0190a7d2-1111-7000-8000-000000000001"},"clientMsgId":"m-000123"}}`)
