package events

import (
	"reflect"
	"testing"
)

// FuzzUnmarshal: a record value either decodes to a valid event that
// encodes and decodes back to the same event, or is refused; never a panic.
// (The consumers dead-letter what Unmarshal refuses.)
func FuzzUnmarshal(f *testing.F) {
	for _, s := range []string{
		`{"type":"message_created","roomId":"1","userId":"2","messageId":"m","messageType":"text","content":"hi","at":"2024-01-01T00:00:00Z"}`,
		`{"type":"message_edited","roomId":"1","userId":"2","messageId":"m","content":"x","at":"2024-01-01T00:00:00Z"}`,
		`{"type":"read_marked","roomId":"1","userId":"2","readSeq":-1,"at":"2024-01-01T00:00:00Z"}`,
		`{"type":"member_joined","roomId":"9223372036854775807","userId":"2","role":"admin","at":"2024-01-01T00:00:00Z"}`,
		`{"type":"message_created","roomId":1}`, `{"metadata":{"a":[1,2]}}`, `null`, ``,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		e, err := Unmarshal(b)
		if err != nil {
			return
		}
		out, err := Marshal(e)
		if err != nil {
			t.Fatalf("decoded %q but cannot encode it: %v", b, err)
		}
		again, err := Unmarshal(out)
		if err != nil {
			t.Fatalf("re-encoded %q does not decode: %v", out, err)
		}
		if !reflect.DeepEqual(normalize(e), normalize(again)) {
			t.Fatalf("round trip changed the event:\n%+v\n%+v", e, again)
		}
	})
}

// normalize drops what encoding legitimately changes: the metadata's
// whitespace and the time's monotonic reading and location.
func normalize(e *Event) Event {
	c := *e
	c.Metadata = nil
	c.At = c.At.UTC()
	return c
}
