package socketio

import (
	"bytes"
	"testing"

	"relay/pkg/chat"
	"relay/services/gateway/internal/transport/socketio/packet"
)

// FuzzEnginePayload feeds arbitrary polling bodies through what a POST
// does with them: the Engine.IO payload split, each packet's type, and
// the Socket.IO decoding of message packets. It never panics; an accepted
// split has no empty packet and joins back to the body; only the packet
// types a client may send are accepted.
func FuzzEnginePayload(f *testing.F) {
	for _, s := range []string{
		"40{\"token\":\"x\"}\x1e42[\"a\"]\x1e3", "3", "2probe", "5", "6", "1", "bAQID", "0{}",
		"42[\"send_message\",{\"roomId\":\"1\",\"content\":\"hi\"}]\x1e452-[\"x\"]", "\x1e", "3\x1e", "4",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		packets, ok := splitPayload(body)
		if !ok {
			return
		}
		if !bytes.Equal(joinPayload(nil, packets), body) {
			t.Fatalf("split %q does not join back to %q", packets, body)
		}
		for _, p := range packets {
			if len(p) == 0 || bytes.IndexByte(p, recordSeparator) >= 0 {
				t.Fatalf("packet %q accepted from %q", p, body)
			}
			typ, payload, ok := decodeEngine(p)
			if !ok {
				continue
			}
			if typ == engineOpen || len(payload) != len(p)-1 {
				t.Fatalf("engine packet %q decoded as %q %q", p, typ, payload)
			}
			if typ != engineMessage {
				continue
			}
			sp, err := packet.Decode(payload)
			if err != nil {
				if chat.ErrorCode(err) != chat.CodeBadRequest {
					t.Fatalf("socket.io packet %q refused with %v", payload, err)
				}
				continue
			}
			if sp.Type == packet.TypeEvent {
				_, _, _ = packet.EventArgs(sp.Data)
			}
		}
	})
}
