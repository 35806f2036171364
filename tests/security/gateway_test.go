package security

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/fasthttp/websocket"

	"relay/pkg/chat"
	"relay/pkg/protocol"
	"relay/tests/e2e/stack"
)

// The gateway's edges, on two gateways with low limits: the read limit,
// replays per connection, sends per user across gateways, connection caps
// per user and per address (an X-Forwarded-For from a peer that is not a
// trusted proxy changes nothing), Socket.IO sessions without CONNECT, and
// the Origin allowlist.
func TestGatewayEdges(t *testing.T) {
	s := newStack(t, stack.Options{Gateways: 2, ServiceEnv: map[string]map[string]string{"gateway": {
		"WS_REPLAY_RATE": "0.1", "WS_REPLAY_BURST": "3",
		"RATE_SENDS_PER_SEC": "1", "RATE_SENDS_BURST": "10",
		"MAX_CONNECTIONS_PER_USER": "2", "MAX_CONNECTIONS_PER_IP": "6",
		"SOCKETIO_MAX_PENDING_PER_IP": "3", "SOCKETIO_CONNECT_TIMEOUT": "1s",
		// The tests connect from 127.0.0.1, which is therefore no proxy.
		"TRUSTED_PROXIES":      "10.99.0.1/32",
		"CORS_ALLOWED_ORIGINS": "https://chat.example.com",
	}}})
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	api := s.API()
	users := map[string]*stack.User{}
	for _, name := range []string{"reader", "replayer", "sender", "amy", "ben", "cat", "dan", "eve"} {
		u, err := api.Register(ctx, name, "correct horse battery")
		if err != nil {
			t.Fatal(err)
		}
		users[name] = u
	}
	g0, g1 := s.GatewayURL(0), s.GatewayURL(1)
	sio0 := s.HTTPURL(stack.GatewayName(0)) + "/socket.io/"
	// refusedSID is the Socket.IO session refused at CONNECT below.
	var refusedSID string

	// A frame one byte over the largest frame handled (16 KiB) closes the
	// socket with 1009 from its header, instead of being read (up to 1 MiB).
	t.Run("read limit", func(t *testing.T) {
		ws := rawDial(t, ctx, g0, users["reader"].Token, nil)
		defer ws.Close()
		head := `{"event":"ping","ref":"p","data":"`
		frame := head + strings.Repeat("x", 16<<10+1-len(head)-2) + `"}`
		if err := ws.WriteMessage(websocket.TextMessage, []byte(frame)); err != nil {
			t.Fatal(err)
		}
		if code := closeCode(ws); code != websocket.CloseMessageTooBig {
			t.Fatalf("a 16 KiB + 1 frame: close %d, want 1009", code)
		}
	})

	// Joins that replay are limited per connection: the fourth replay in a
	// row is RATE_LIMITED with retryAfterMs (burst 3, one per 10 s).
	t.Run("replay rate", func(t *testing.T) {
		u := users["replayer"]
		room, err := api.CreateRoom(ctx, u, "replays", "group")
		if err != nil {
			t.Fatal(err)
		}
		c := dial(t, ctx, g0, u.Token)
		defer c.Close()
		if _, err := c.Join(ctx, room.ID, nil); err != nil {
			t.Fatal(err)
		}
		for i := range 3 {
			if _, err := c.Send(ctx, room.ID, fmt.Sprint("m", i), ""); err != nil {
				t.Fatal(err)
			}
		}
		// Delivered: the recent history has them to replay.
		if _, err := c.WaitMessages(ctx, room.ID, 3); err != nil {
			t.Fatal(err)
		}
		zero := int64(0)
		for i := range 3 {
			if _, err := c.Join(ctx, room.ID, &zero); err != nil {
				t.Fatalf("replay %d: %v", i+1, err)
			}
		}
		ed := callError(t, ctx, c, protocol.EventJoinRoom, protocol.JoinRoom{RoomID: room.ID, LastSeq: &zero})
		if ed.Code != chat.CodeRateLimited || ed.RetryAfterMs < 1000 || ed.RetryAfterMs > 10000 {
			t.Fatalf("fourth replay: %+v, want RATE_LIMITED with retryAfterMs up to 10 s", ed)
		}
	})

	// One user on two gateways shares one send budget (burst 10, 1/s):
	// 30 sends alternating between the connections get about 10 acks.
	t.Run("sends per user across gateways", func(t *testing.T) {
		u := users["sender"]
		room, err := api.CreateRoom(ctx, u, "chatty", "group")
		if err != nil {
			t.Fatal(err)
		}
		a, b := dial(t, ctx, g0, u.Token), dial(t, ctx, g1, u.Token)
		defer a.Close()
		defer b.Close()
		start := time.Now()
		acked, limited := 0, 0
		var last protocol.ErrorData
		for i := range 30 {
			c := a
			if i%2 == 1 {
				c = b
			}
			f, err := c.Call(ctx, protocol.EventSendMessage, protocol.SendMessage{RoomID: room.ID, Content: fmt.Sprint("s", i)})
			if err != nil {
				t.Fatal(err)
			}
			switch f.Event {
			case protocol.EventAck:
				acked++
			case protocol.EventError:
				_ = json.Unmarshal(f.Data, &last)
				if last.Code != chat.CodeRateLimited {
					t.Fatalf("send %d: %+v", i, last)
				}
				limited++
			}
		}
		most := 10 + int(time.Since(start).Seconds()) + 1
		// Fewer than 10 only if a lease expired unspent on a slow machine.
		if acked < 5 || acked > most || last.RetryAfterMs <= 0 {
			t.Fatalf("%d of 30 sends acked on two gateways (%d limited, last %+v), want 5 to %d with retryAfterMs", acked, limited, last, most)
		}
		t.Logf("%d of 30 sends acked, %d RATE_LIMITED", acked, limited)
	})

	// Two connections per user per gateway: the third is refused before
	// the upgrade with 429 RATE_LIMITED, and so is a Socket.IO socket of
	// the same user (CONNECT_ERROR with data.code RATE_LIMITED).
	t.Run("connections per user", func(t *testing.T) {
		u := users["amy"]
		for range 2 {
			c := dial(t, ctx, g0, u.Token)
			defer c.Close()
		}
		_, err := stack.Dial(ctx, g0, u.Token)
		var ae *stack.APIError
		if !errors.As(err, &ae) || ae.Status != http.StatusTooManyRequests || ae.Code != chat.CodeRateLimited {
			t.Fatalf("third connection of a user: %v, want 429 RATE_LIMITED", err)
		}
		refusedSID = sioHandshake(t, sio0, nil)
		sioPost(t, sio0, refusedSID, `40{"token":"`+u.Token+`"}`)
		if reply := sioPoll(t, sio0, refusedSID); !strings.HasPrefix(reply, "44") || !strings.Contains(reply, `"code":"RATE_LIMITED"`) {
			t.Fatalf("Socket.IO CONNECT of a user at the cap: %q, want CONNECT_ERROR RATE_LIMITED", reply)
		}
	})

	// Six connections per address per gateway, whoever they are; an
	// X-Forwarded-For from a peer that is no trusted proxy does not make
	// the seventh another address.
	t.Run("connections per address", func(t *testing.T) {
		for _, name := range []string{"ben", "cat", "dan"} {
			for range 2 {
				c := dial(t, ctx, g1, users[name].Token)
				defer c.Close()
			}
		}
		for _, xff := range []string{"", "203.0.113.9"} {
			h := http.Header{}
			if xff != "" {
				h.Set("X-Forwarded-For", xff)
			}
			status, body := refusedDial(t, ctx, g1, users["eve"].Token, h)
			if status != http.StatusTooManyRequests || !strings.Contains(body, `"RATE_LIMITED"`) {
				t.Fatalf("seventh connection of an address (X-Forwarded-For %q): %d %s, want 429 RATE_LIMITED", xff, status, body)
			}
		}
	})

	// Socket.IO sessions that never send CONNECT: three per address, each
	// gone within SOCKETIO_CONNECT_TIMEOUT (1 s), after which the address
	// may open sessions again.
	t.Run("socket.io sessions without CONNECT", func(t *testing.T) {
		base := sio0
		// The session refused at CONNECT above is gone after its grace
		// period (its client may still poll for the close packet).
		if refusedSID != "" {
			eventually(t, "the refused session is gone", func() bool {
				res, err := http.Get(base + "?EIO=4&transport=polling&sid=" + refusedSID)
				if err != nil {
					t.Fatal(err)
				}
				res.Body.Close()
				return res.StatusCode == http.StatusBadRequest
			})
		}
		first := ""
		for range 3 {
			sid := sioHandshake(t, base, nil)
			if first == "" {
				first = sid
			}
		}
		if code := sioTryHandshake(t, base); code != http.StatusTooManyRequests {
			t.Fatalf("fourth session without CONNECT: %d, want 429", code)
		}
		start := time.Now()
		eventually(t, "sessions without CONNECT expire", func() bool { return sioTryHandshake(t, base) == http.StatusOK })
		if took := time.Since(start); took > 4*time.Second {
			t.Fatalf("sessions without CONNECT lasted %v", took)
		}
		res, err := http.Get(base + "?EIO=4&transport=polling&sid=" + first)
		if err != nil {
			t.Fatal(err)
		}
		res.Body.Close()
		if res.StatusCode != http.StatusBadRequest {
			t.Fatalf("poll of an expired session: %d, want 400 (Session ID unknown)", res.StatusCode)
		}
	})

	// An Origin other than the gateway's own or CORS_ALLOWED_ORIGINS is
	// refused with 403 on /ws and on /socket.io/.
	t.Run("origin", func(t *testing.T) {
		tok := users["reader"].Token
		u0, _ := url.Parse(g0)
		for origin, want := range map[string]int{
			"https://evil.example":     http.StatusForbidden,
			"https://chat.example.com": http.StatusSwitchingProtocols,
			"http://" + u0.Host:        http.StatusSwitchingProtocols,
		} {
			h := http.Header{"Origin": {origin}}
			if want == http.StatusForbidden {
				status, body := refusedDial(t, ctx, g0, tok, h)
				if status != want || !strings.Contains(body, `"FORBIDDEN"`) {
					t.Fatalf("/ws from %s: %d %s, want 403 FORBIDDEN", origin, status, body)
				}
				continue
			}
			rawDial(t, ctx, g0, tok, h).Close()
		}
		req, _ := http.NewRequest(http.MethodGet, s.HTTPURL(stack.GatewayName(0))+"/socket.io/?EIO=4&transport=polling", nil)
		req.Header.Set("Origin", "https://evil.example")
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		res.Body.Close()
		if res.StatusCode != http.StatusForbidden {
			t.Fatalf("/socket.io/ from another origin: %d, want 403", res.StatusCode)
		}
	})
}

func dial(t *testing.T, ctx context.Context, wsURL, token string) *stack.Conn {
	t.Helper()
	c, err := stack.Dial(ctx, wsURL, token)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// rawDial opens a WebSocket with extra headers.
func rawDial(t *testing.T, ctx context.Context, wsURL, token string, h http.Header) *websocket.Conn {
	t.Helper()
	d := websocket.Dialer{HandshakeTimeout: 10 * time.Second}
	ws, res, err := d.DialContext(ctx, wsURL+"?token="+url.QueryEscape(token), h)
	if err != nil {
		body := ""
		if res != nil {
			b, _ := io.ReadAll(res.Body)
			res.Body.Close()
			body = fmt.Sprint(res.StatusCode, " ", string(b))
		}
		t.Fatalf("dial: %v %s", err, body)
	}
	return ws
}

// refusedDial expects the upgrade to be refused and returns its status
// and body.
func refusedDial(t *testing.T, ctx context.Context, wsURL, token string, h http.Header) (int, string) {
	t.Helper()
	d := websocket.Dialer{HandshakeTimeout: 10 * time.Second}
	ws, res, err := d.DialContext(ctx, wsURL+"?token="+url.QueryEscape(token), h)
	if err == nil {
		ws.Close()
		return http.StatusSwitchingProtocols, ""
	}
	if res == nil {
		t.Fatalf("dial: %v", err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	return res.StatusCode, string(b)
}

// closeCode reads until the server closes and returns the close code.
func closeCode(ws *websocket.Conn) int {
	_ = ws.SetReadDeadline(time.Now().Add(10 * time.Second))
	for {
		_, _, err := ws.ReadMessage()
		if err == nil {
			continue
		}
		var ce *websocket.CloseError
		if errors.As(err, &ce) {
			return ce.Code
		}
		return -1
	}
}

// callError sends event and requires an error frame back.
func callError(t *testing.T, ctx context.Context, c *stack.Conn, event string, data any) protocol.ErrorData {
	t.Helper()
	f, err := c.Call(ctx, event, data)
	if err != nil {
		t.Fatal(err)
	}
	var ed protocol.ErrorData
	if f.Event != protocol.EventError || json.Unmarshal(f.Data, &ed) != nil {
		t.Fatalf("%s: got %s %s, want an error", event, f.Event, f.Data)
	}
	return ed
}

// sioHandshake opens a Socket.IO polling session and returns its sid.
func sioHandshake(t *testing.T, base string, h http.Header) string {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, base+"?EIO=4&transport=polling", nil)
	for k, v := range h {
		req.Header[k] = v
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	var open struct {
		SID string `json:"sid"`
	}
	if res.StatusCode != http.StatusOK || len(b) < 2 || json.Unmarshal(b[1:], &open) != nil || open.SID == "" {
		t.Fatalf("socket.io handshake: %d %s", res.StatusCode, b)
	}
	return open.SID
}

// sioTryHandshake opens a polling session and returns the status.
func sioTryHandshake(t *testing.T, base string) int {
	t.Helper()
	res, err := http.Get(base + "?EIO=4&transport=polling")
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	return res.StatusCode
}

func sioPost(t *testing.T, base, sid, body string) {
	t.Helper()
	res, err := http.Post(base+"?EIO=4&transport=polling&sid="+sid, "text/plain;charset=UTF-8", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != http.StatusOK {
		t.Fatalf("socket.io post: %d", res.StatusCode)
	}
}

func sioPoll(t *testing.T, base, sid string) string {
	t.Helper()
	res, err := http.Get(base + "?EIO=4&transport=polling&sid=" + sid)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	return string(b)
}

func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); !cond(); time.Sleep(100 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting: %s", what)
		}
	}
}
