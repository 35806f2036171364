package rest

import (
	"testing"

	"relay/pkg/chat"
)

// The shapes of the api's request bodies: strings, optional strings and
// booleans, and arrays of string ids.
type (
	registerShape struct {
		Username    string `json:"username"`
		Email       string `json:"email"`
		Password    string `json:"password"`
		DisplayName string `json:"displayName"`
	}
	createRoomShape struct {
		Name      string   `json:"name"`
		Type      string   `json:"type"`
		MemberIDs []string `json:"memberIds"`
	}
	patchShape struct {
		Name     *string `json:"name"`
		IsActive *bool   `json:"isActive"`
	}
)

// FuzzDecodeBody feeds arbitrary bodies to the REST body decoder with every
// shape of request body: it never panics, and every refusal is a
// BAD_REQUEST whose message is ours (the decoder's detail stays in the
// cause).
func FuzzDecodeBody(f *testing.F) {
	for _, s := range []string{
		`{"username":"ada","email":"ada@example.com","password":"correct horse"}`,
		`{"username":"ada","password":"x"}`,
		`{"name":"general","type":"channel","memberIds":["2","3"]}`,
		`{"userId":"7"}`, `{"name":"x","isActive":false}`,
		`{"memberIds":{"a":"b"}}`, `{"name":1}`, `{} {}`, `[1]`, ``, `{"a":"\ud800"}`, "{\"name\":\"\x00\"}",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		for _, v := range []any{&registerShape{}, &createRoomShape{}, &patchShape{}} {
			err := DecodeJSONBody(body, v)
			if err == nil {
				continue
			}
			if chat.ErrorCode(err) != chat.CodeBadRequest {
				t.Fatalf("decode %q into %T: %v, want BAD_REQUEST", body, v, err)
			}
		}
	})
}
