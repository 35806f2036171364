package packet

import (
	"encoding/json"
	"testing"

	"relay/pkg/chat"
)

// FuzzDecode feeds arbitrary Socket.IO packets to the decoder, and the
// payload of each EVENT it accepts to EventArgs, as a session does. It
// never panics, refuses only with BAD_REQUEST, and what it accepts is
// within the decoder's bounds: a known type, a namespace of at most 256
// bytes starting with '/', an ack id in range, a payload that is JSON of
// the type's shape.
func FuzzDecode(f *testing.F) {
	for _, s := range []string{
		`0{"token":"abc"}`, `0/admin,{"token":"x"}`, `1`, `2["send_message",{"roomId":"1","content":"hi"}]`,
		`212["join_room",{"roomId":"1","lastSeq":-1}]`, `2/chat,5["x"]`, `3123[{"ok":true}]`,
		`51-["upload",{"_placeholder":true,"num":0}]`, `61-/nsp,7[{"_placeholder":true,"num":0}]`,
		`4{"message":"no"}`, `2999999999999999999["a"]`, `2[1]`, `2[]`, `0[`, `9`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		p, err := Decode(b)
		if err != nil {
			if chat.ErrorCode(err) != chat.CodeBadRequest || chat.ErrorMessage(err) == "" {
				t.Fatalf("refused with %v", err)
			}
			return
		}
		if p.Type < TypeConnect || p.Type > TypeBinaryAck || p.Type == TypeConnectError {
			t.Fatalf("type %d accepted", p.Type)
		}
		if len(p.Nsp) == 0 || p.Nsp[0] != '/' || len(p.Nsp) > maxNamespaceLen {
			t.Fatalf("namespace %q accepted", p.Nsp)
		}
		if p.ID < -1 || p.Attachments < 0 || p.Attachments > maxAttachments {
			t.Fatalf("id %d, attachments %d accepted", p.ID, p.Attachments)
		}
		if p.Data != nil && !json.Valid(p.Data) {
			t.Fatalf("payload %q accepted", p.Data)
		}
		if p.Type != TypeEvent {
			return
		}
		if p.Data == nil || p.Data[0] != '[' {
			t.Fatalf("EVENT payload %q accepted", p.Data)
		}
		name, data, err := EventArgs(p.Data)
		if err != nil {
			if chat.ErrorCode(err) != chat.CodeBadRequest {
				t.Fatalf("EventArgs refused with %v", err)
			}
			return
		}
		if data != nil && !json.Valid(data) {
			t.Fatalf("event %q data %q is not JSON", name, data)
		}
	})
}
