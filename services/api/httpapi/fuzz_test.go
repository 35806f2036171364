package httpapi

import (
	"encoding/base64"
	"testing"
	"time"

	"relay/pkg/chat"
	"relay/pkg/store"
)

// FuzzDecodeBody feeds arbitrary bodies to the REST body decoder with every
// request type: it never panics, and every refusal is a BAD_REQUEST whose
// message is ours (the decoder's detail stays in the cause).
func FuzzDecodeBody(f *testing.F) {
	for _, s := range []string{
		`{"username":"ada","email":"ada@example.com","password":"correct horse"}`,
		`{"username":"ada","password":"x"}`,
		`{"name":"general","type":"channel","memberIds":["2","3"]}`,
		`{"userId":"7"}`,
		`{"memberIds":{"a":"b"}}`, `{"name":1}`, `{} {}`, `[1]`, ``, `{"a":"\ud800"}`, "{\"name\":\"\x00\"}",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		targets := []any{&registerRequest{}, &loginRequest{}, &createRoomRequest{}, &addMemberRequest{}}
		for _, v := range targets {
			err := decodeJSONBody(body, v)
			if err == nil {
				continue
			}
			if chat.ErrorCode(err) != chat.CodeBadRequest {
				t.Fatalf("decode %q into %T: %v, want BAD_REQUEST", body, v, err)
			}
		}
	})
}

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
