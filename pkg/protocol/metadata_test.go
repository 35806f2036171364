package protocol

import (
	"encoding/json"
	"strings"
	"testing"
	"unicode/utf8"

	"relay/pkg/chat"
)

func TestCheckJSONBRefusesWhatPostgresRefuses(t *testing.T) {
	for _, c := range []struct {
		in    string
		field string // "" when accepted
	}{
		{`{"a":"\ud800"}`, "metadata.a"},
		{`{"a":"\udc00x"}`, "metadata.a"},
		{`{"a":"\ud800\u0041"}`, "metadata.a"},
		{`{"a":"\ud83d\ude00"}`, ""},
		{`{"a":"\u0000"}`, "metadata.a"},
		{`{"a":[1,{"b":1e999999}]}`, "metadata.a[1].b"},
		{`{"n":1e131071}`, ""},
		{`{"n":1e131072}`, "metadata.n"},
		{`{"n":123e-16383}`, ""},
		{`{"n":0.1e-16383}`, "metadata.n"},
		{`{"n":0e999999}`, ""},
		{`{"n":0e2000000000}`, "metadata.n"},
		{`{"n":-0.0001e131075}`, ""},
		{`{"\ud800":1}`, "metadata"},
		{`{"a":1,"a":2}`, ""},
		{`{"a":"é ☃ 𝄞"}`, ""},
		{`{"a":01}`, "metadata"},
		{`{"a":1.}`, "metadata.a"},
		{`{"a":tru}`, "metadata.a"},
		{`{"a":1} x`, "metadata"},
		{"{\"a\":\"\x01\"}", "metadata.a"},
		{"{\"a\":\"\xff\"}", "metadata"},
	} {
		err := CheckJSONB([]byte(c.in), "metadata")
		if c.field == "" {
			if err != nil {
				t.Errorf("%s: refused: %v", c.in, err)
			}
			continue
		}
		if chat.ErrorCode(err) != chat.CodeBadRequest || !strings.HasPrefix(chat.ErrorMessage(err), c.field+" ") {
			t.Errorf("%s: %v, want BAD_REQUEST naming %s", c.in, err, c.field)
		}
	}
}

func TestCheckMetadataURLs(t *testing.T) {
	for _, c := range []struct {
		in    string
		field string
	}{
		{`{"url":"https://cdn.example.com/a.png","alt":"javascript:alert(1)"}`, ""},
		{`{"thumbnailUrl":"http://x.example/t.png","links":[{"href":"https://a.example"}]}`, ""},
		{`{"url":"javascript:alert(1)"}`, "metadata.url"},
		{`{"imageURL":"data:text/html;base64,PHNjcmlwdD4="}`, "metadata.imageURL"},
		{`{"links":[{"href":"https://a.example"},{"href":"file:///etc/passwd"}]}`, "metadata.links[1].href"},
		{`{"src":" https://a.example"}`, "metadata.src"},
		{`{"src":"java\tscript:alert(1)"}`, "metadata.src"},
		{`{"avatar_uri":"//evil.example/x"}`, "metadata.avatar_uri"},
		{`{"url":"https://user:pw@a.example/"}`, "metadata.url"},
		{`{"url":"/relative/path"}`, "metadata.url"},
		{`{"url":"/api/uploads/3q2-7wZ_aB9xYc1dEfGh0A"}`, ""}, // an upload of the api's own
		{`{"url":"/api/uploads/../users/1"}`, "metadata.url"},
		{`{"url":"/api/uploads/x?y=1"}`, "metadata.url"},
		{`{"url":"//evil.example/api/uploads/x"}`, "metadata.url"},
		{`{"url":"/api/uploads/"}`, "metadata.url"},
		{`{"url":42}`, ""}, // not a string: nothing a browser would follow
	} {
		err := CheckMetadata([]byte(c.in))
		if c.field == "" {
			if err != nil {
				t.Errorf("%s: refused: %v", c.in, err)
			}
			continue
		}
		if chat.ErrorCode(err) != chat.CodeBadRequest || !strings.HasPrefix(chat.ErrorMessage(err), c.field+" ") {
			t.Errorf("%s: %v, want BAD_REQUEST naming %s", c.in, err, c.field)
		}
	}
}

// FuzzCheckMetadata: the checks never panic, and what they accept is JSON
// that encoding/json accepts too (the gateway decodes it again).
func FuzzCheckMetadata(f *testing.F) {
	for _, s := range []string{`{}`, `{"a":"\ud800"}`, `{"n":1e131071}`, `{"url":"https://a.example"}`, `[1,2,{"x":null}]`,
		`{"a":"\ud83d\ude00","b":[true,false,null,-0.5e-3]}`, `"\u0000"`, `0e999999`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		if err := CheckJSONB(b, "metadata"); err == nil {
			if !json.Valid(b) || !utf8.Valid(b) {
				t.Fatalf("CheckJSONB accepted %q, which is not valid JSON", b)
			}
		} else if chat.ErrorCode(err) != chat.CodeBadRequest {
			t.Fatalf("CheckJSONB(%q): %v", b, err)
		}
		if err := CheckMetadata(b); err != nil && chat.ErrorCode(err) != chat.CodeBadRequest {
			t.Fatalf("CheckMetadata(%q): %v", b, err)
		}
	})
}
