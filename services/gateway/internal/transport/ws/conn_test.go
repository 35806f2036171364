package ws

import "testing"

func TestAppendTextFrameHeaders(t *testing.T) {
	for _, tc := range []struct {
		n    int
		head []byte
	}{
		{0, []byte{0x81, 0}},
		{125, []byte{0x81, 125}},
		{126, []byte{0x81, 126, 0, 126}},
		{65535, []byte{0x81, 126, 0xFF, 0xFF}},
		{65536, []byte{0x81, 127, 0, 0, 0, 0, 0, 1, 0, 0}},
	} {
		b := appendFrame(nil, OpText, make([]byte, tc.n))
		if string(b[:len(tc.head)]) != string(tc.head) || len(b) != len(tc.head)+tc.n {
			t.Errorf("length %d: header % x, total %d", tc.n, b[:min(len(b), 10)], len(b))
		}
	}
}
