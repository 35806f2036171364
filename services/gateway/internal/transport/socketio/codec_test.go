package socketio

import (
	"encoding/json"
	"testing"
)

func TestSplitPayload(t *testing.T) {
	t.Parallel()
	got, ok := splitPayload([]byte("40{\"token\":\"x\"}\x1e42[\"a\"]\x1e3"))
	if !ok || len(got) != 3 || string(got[0]) != `40{"token":"x"}` || string(got[1]) != `42["a"]` || string(got[2]) != "3" {
		t.Fatalf("split: %q %v", got, ok)
	}
	for _, in := range []string{"", "\x1e", "3\x1e", "\x1e3", "3\x1e\x1e4"} {
		if _, ok := splitPayload([]byte(in)); ok {
			t.Errorf("split %q: accepted", in)
		}
	}
	if got := joinPayload(nil, [][]byte{[]byte("2"), []byte(`42["a"]`)}); string(got) != "2\x1e42[\"a\"]" {
		t.Errorf("join: %q", got)
	}
}

func TestOpenPacket(t *testing.T) {
	t.Parallel()
	o := Options{}.withDefaults()
	p := openPacket("abc", []string{"websocket"}, o)
	if p[0] != '0' {
		t.Fatalf("type %q", p[0])
	}
	var v map[string]any
	if err := json.Unmarshal(p[1:], &v); err != nil {
		t.Fatal(err)
	}
	want := map[string]any{"sid": "abc", "upgrades": []any{"websocket"}, "pingInterval": 25000.0, "pingTimeout": 20000.0, "maxPayload": 1e6}
	for k, w := range want {
		if got, _ := json.Marshal(v[k]); string(got) != mustMarshal(w) {
			t.Errorf("%s = %s, want %s", k, got, mustMarshal(w))
		}
	}
}

func mustMarshal(v any) string {
	b, _ := json.Marshal(v)
	return string(b)
}
