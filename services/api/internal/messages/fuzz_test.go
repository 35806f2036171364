package messages

import (
	"encoding/base64"
	"testing"
	"time"

	"relay/pkg/chat"
	"relay/pkg/store"
)

// FuzzSearchCursor: a cursor decodes only to what encodeSearchCursor could
// have produced, and any other string is a BAD_REQUEST, never a panic.
func FuzzSearchCursor(f *testing.F) {
	f.Add(encodeSearchCursor(&store.SearchCursor{Rank: 0.5, CreatedAt: time.Unix(1700000000, 0).UTC(), ID: "0190b3a4-7c1e-7000-8000-000000000001"}))
	f.Add("")
	f.Add("e30")
	f.Add(base64.RawURLEncoding.EncodeToString([]byte(`{"r":1,"t":"2024-01-01T00:00:00Z","i":"x"}`)))
	f.Fuzz(func(t *testing.T, s string) {
		c, err := decodeSearchCursor(s)
		if err != nil {
			if chat.ErrorCode(err) != chat.CodeBadRequest {
				t.Fatalf("decodeSearchCursor(%q): %v", s, err)
			}
			return
		}
		again, err := decodeSearchCursor(encodeSearchCursor(c))
		if err != nil || !again.CreatedAt.Equal(c.CreatedAt) || again.ID != c.ID {
			t.Fatalf("cursor %q does not survive a round trip: %+v %v", s, again, err)
		}
	})
}
