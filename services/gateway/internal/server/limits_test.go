package server

import (
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/fasthttp/websocket"

	"relay/pkg/chat"
	"relay/pkg/protocol"
)

// refusal dials with headers and returns the refused upgrade's status and
// body (101 and "" when it was accepted, and the connection closed).
func refusal(t *testing.T, url, token string, h http.Header) (int, string) {
	t.Helper()
	c, res, err := websocket.DefaultDialer.Dial(url+"?token="+token, h)
	if err == nil {
		_ = c.Close()
		return http.StatusSwitchingProtocols, ""
	}
	if res == nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	return res.StatusCode, string(b)
}

// A foreign Origin is refused before the upgrade (403); the gateway's own
// and the listed ones are not. A user at the connection cap is refused
// with 429, and the place comes back when a connection ends.
func TestUpgradeOriginAndConnectionCaps(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	g := e.start(func(c *Config) {
		c.MaxConnsPerUser = 1
		c.HTTP.AllowedOrigins = []string{"https://app.example.com"}
	})
	alice, tok := e.user("alice")
	host := strings.TrimPrefix(g.http, "http://")
	for origin, want := range map[string]int{
		"https://evil.example.com": http.StatusForbidden,
		"https://app.example.com":  http.StatusSwitchingProtocols,
		"http://" + host:           http.StatusSwitchingProtocols,
		"":                         http.StatusSwitchingProtocols,
	} {
		h := http.Header{}
		if origin != "" {
			h.Set("Origin", origin)
		}
		// Each accepted one is closed before the next: wait for its place.
		var status int
		var body string
		eventually(t, "the previous connection's place", func() bool {
			status, body = refusal(t, g.url, tok, h)
			return status != http.StatusTooManyRequests
		})
		if status != want || (want == http.StatusForbidden && !strings.Contains(body, string(chat.CodeForbidden))) {
			t.Fatalf("Origin %q: %d %s, want %d", origin, status, body, want)
		}
	}
	eventually(t, "no connection left", func() bool { n, _ := g.svc.caps.Counts(alice, ""); return n == 0 })
	c := e.dial(g, tok)
	status, body := refusal(t, g.url, tok, nil)
	if status != http.StatusTooManyRequests || !strings.Contains(body, string(chat.CodeRateLimited)) {
		t.Fatalf("second connection of a user capped at 1: %d %s", status, body)
	}
	_ = c.conn.Close()
	eventually(t, "the place given back", func() bool {
		status, _ := refusal(t, g.url, tok, nil)
		return status == http.StatusSwitchingProtocols
	})
}

// Two connections of one user share one send budget (burst 3, 1/s).
func TestSendsPerUserAcrossConnections(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	g := e.start(func(c *Config) { c.SendRate, c.SendBurst = 1, 3 })
	alice, tok := e.user("alice")
	room := e.room(chat.RoomGroup, alice)
	a, b := e.dial(g, tok), e.dial(g, tok)
	start := time.Now()
	acked := 0
	var last protocol.ErrorData
	for i := range 10 {
		c := a
		if i%2 == 1 {
			c = b
		}
		f := c.call(protocol.EventSendMessage, protocol.SendMessage{RoomID: rid(room), Content: "hi"})
		switch f.Event {
		case protocol.EventAck:
			acked++
		default:
			last = protocol.ErrorData{}
			if err := json.Unmarshal(f.Data, &last); err != nil || last.Code != chat.CodeRateLimited || last.RetryAfterMs <= 0 {
				t.Fatalf("send %d: %s %s", i, f.Event, f.Data)
			}
		}
	}
	if most := 3 + int(time.Since(start).Seconds()) + 1; acked < 1 || acked > most {
		t.Fatalf("%d of 10 sends acked on two connections, want at most %d", acked, most)
	}
	if last.Code != chat.CodeRateLimited {
		t.Fatal("no send was limited")
	}
}
