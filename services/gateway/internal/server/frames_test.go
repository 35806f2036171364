package server

import (
	"encoding/json"
	"math/rand/v2"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/fasthttp/websocket"

	"relay/pkg/chat"
	"relay/pkg/protocol"
)

// Every class of bad frame gets its documented error, with the ref when it
// could be read, and the connection stays usable afterwards.
func TestBadFramesGetErrorsAndConnectionStaysUsable(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	g := e.start(func(c *Config) { c.Rate, c.Burst = 1000, 1000 })
	alice, tok := e.user("alice")
	room := rid(e.room(chat.RoomGroup, alice))
	c := e.dial(g, tok)
	long := strings.Repeat("a", chat.MaxContentBytes+1)

	cases := []struct {
		name  string
		frame string
		code  chat.Code
		ref   string // expected ref on the error ("" = none)
	}{
		{"not json", `{"event": "ping",`, chat.CodeBadRequest, ""},
		{"array", `["ping"]`, chat.CodeBadRequest, ""},
		{"string", `"ping"`, chat.CodeBadRequest, ""},
		{"number", `42`, chat.CodeBadRequest, ""},
		{"empty object", `{}`, chat.CodeBadRequest, ""},
		{"missing event", `{"ref":"b1","data":{}}`, chat.CodeBadRequest, "b1"},
		{"event not a string", `{"event":5,"ref":"b2"}`, chat.CodeBadRequest, "b2"},
		{"ref not a string", `{"event":"ping","ref":7}`, chat.CodeBadRequest, ""},
		{"unknown event", `{"event":"launch_rockets","ref":"b3"}`, chat.CodeUnknownEvent, "b3"},
		{"data not an object", `{"event":"join_room","ref":"b4","data":[1]}`, chat.CodeBadRequest, "b4"},
		{"missing data", `{"event":"join_room","ref":"b5"}`, chat.CodeBadRequest, "b5"},
		{"roomId a number", `{"event":"join_room","ref":"b6","data":{"roomId":1}}`, chat.CodeBadRequest, "b6"},
		{"roomId not decimal", `{"event":"join_room","ref":"b7","data":{"roomId":"abc"}}`, chat.CodeBadRequest, "b7"},
		{"roomId zero", `{"event":"send_message","ref":"b8","data":{"roomId":"0","content":"x"}}`, chat.CodeBadRequest, "b8"},
		{"roomId overflow", `{"event":"send_message","ref":"b9","data":{"roomId":"99999999999999999999","content":"x"}}`, chat.CodeBadRequest, "b9"},
		{"lastSeq a string", `{"event":"join_room","ref":"b10","data":{"roomId":"` + room + `","lastSeq":"3"}}`, chat.CodeBadRequest, "b10"},
		{"empty content", `{"event":"send_message","ref":"b11","data":{"roomId":"` + room + `","content":"  \n "}}`, chat.CodeBadRequest, "b11"},
		{"content too long", `{"event":"send_message","ref":"b12","data":{"roomId":"` + room + `","content":"` + long + `"}}`, chat.CodeTooLarge, "b12"},
		{"content NUL", `{"event":"send_message","ref":"b13","data":{"roomId":"` + room + `","content":"a\u0000b"}}`, chat.CodeBadRequest, "b13"},
		{"bad type", `{"event":"send_message","ref":"b14","data":{"roomId":"` + room + `","content":"x","type":"video"}}`, chat.CodeBadRequest, "b14"},
		{"metadata array", `{"event":"send_message","ref":"b15","data":{"roomId":"` + room + `","content":"x","metadata":[1]}}`, chat.CodeBadRequest, "b15"},
		{"metadata too large", `{"event":"send_message","ref":"b16","data":{"roomId":"` + room + `","content":"x","metadata":{"k":"` + strings.Repeat("m", chat.MaxMetadataBytes) + `"}}}`, chat.CodeTooLarge, "b16"},
		{"clientMsgId with space", `{"event":"send_message","ref":"b17","data":{"roomId":"` + room + `","content":"x","clientMsgId":"a b"}}`, chat.CodeBadRequest, "b17"},
		{"clientMsgId too long", `{"event":"send_message","ref":"b18","data":{"roomId":"` + room + `","content":"x","clientMsgId":"` + strings.Repeat("c", 65) + `"}}`, chat.CodeBadRequest, "b18"},
		{"messageId not a uuid", `{"event":"edit_message","ref":"b19","data":{"roomId":"` + room + `","messageId":"42","content":"x"}}`, chat.CodeBadRequest, "b19"},
		{"missing messageId", `{"event":"delete_message","ref":"b20","data":{"roomId":"` + room + `"}}`, chat.CodeBadRequest, "b20"},
		{"seq missing", `{"event":"mark_read","ref":"b21","data":{"roomId":"` + room + `"}}`, chat.CodeBadRequest, "b21"},
		{"seq negative", `{"event":"mark_read","ref":"b22","data":{"roomId":"` + room + `","seq":-1}}`, chat.CodeBadRequest, "b22"},
		{"seq fractional", `{"event":"mark_read","ref":"b23","data":{"roomId":"` + room + `","seq":1.5}}`, chat.CodeBadRequest, "b23"},
		{"invalid utf-8", "{\"event\":\"ping\",\"ref\":\"b25\",\"data\":{\"x\":\"\xff\xfe\"}}", chat.CodeBadRequest, ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c.t = t
			c.sendRaw(tc.frame)
			f, err := c.read()
			if err != nil {
				t.Fatal(err)
			}
			var ed protocol.ErrorData
			_ = json.Unmarshal(f.Data, &ed)
			if f.Event != protocol.EventError || ed.Code != tc.code || f.Ref != tc.ref || ed.Message == "" {
				t.Fatalf("got %s ref=%q %s, want error %s ref=%q", f.Event, f.Ref, f.Data, tc.code, tc.ref)
			}
			c.ack(protocol.EventPing, struct{}{}, nil)
		})
	}
	c.t = t

	t.Run("binary frame", func(t *testing.T) {
		c.t = t
		if err := c.conn.WriteMessage(websocket.BinaryMessage, []byte(`{"event":"ping","ref":"x"}`)); err != nil {
			t.Fatal(err)
		}
		f, err := c.read()
		var ed protocol.ErrorData
		if err == nil {
			_ = json.Unmarshal(f.Data, &ed)
		}
		if err != nil || f.Event != protocol.EventError || ed.Code != chat.CodeBadRequest {
			t.Fatalf("got %+v %v, want BAD_REQUEST", f, err)
		}
		c.ack(protocol.EventPing, struct{}{}, nil)
	})
	c.t = t

	// A frame without ref gets no ack, but its error still comes.
	c.sendRaw(`{"event":"ping"}`)
	c.sendRaw(`{"event":"nope"}`)
	f, err := c.read()
	if err != nil || f.Event != protocol.EventError || f.Ref != "" {
		t.Fatalf("got %+v %v, want one error without ref (and no ack for the ping)", f, err)
	}
	c.ack(protocol.EventPing, struct{}{}, nil)
}

// The read limit is the largest frame handled (16 KiB): a frame of that
// size is answered, one byte more closes the socket with 1009, and so
// does a message of small fragments that add up to more.
func TestFrameOverTheLimitClosesWith1009(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	g := e.start(nil)
	_, tok := e.user("alice")
	framed := func(n int) string {
		head := `{"event":"ping","ref":"p","data":"`
		return head + strings.Repeat("x", n-len(head)-2) + `"}`
	}
	c := e.dial(g, tok)
	c.sendRaw(framed(16 << 10))
	if f, err := c.read(); err != nil || f.Event != protocol.EventAck || f.Ref != "p" {
		t.Fatalf("a 16 KiB frame: %+v %v, want its ack", f, err)
	}
	c.sendRaw(framed(16<<10 + 1))
	if code := c.closeCode(); code != websocket.CloseMessageTooBig {
		t.Fatalf("close code %d, want 1009", code)
	}

	c = e.dial(g, tok)
	w, err := c.conn.NextWriter(websocket.TextMessage)
	if err != nil {
		t.Fatal(err)
	}
	for range 17 { // 17 KiB, sent as fragments of the client's 4 KiB buffer
		if _, err := w.Write([]byte(strings.Repeat("y", 1<<10))); err != nil {
			break
		}
	}
	_ = w.Close()
	if code := c.closeCode(); code != websocket.CloseMessageTooBig {
		t.Fatalf("fragmented: close code %d, want 1009", code)
	}
}

func TestRateLimit(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	g := e.start(func(c *Config) { c.Rate = 2; c.Burst = 5 })
	_, tok := e.user("alice")
	c := e.dial(g, tok)
	limited := 0
	for range 15 {
		if f := c.call(protocol.EventPing, struct{}{}); f.Event == protocol.EventError {
			var ed protocol.ErrorData
			_ = json.Unmarshal(f.Data, &ed)
			if ed.Code != chat.CodeRateLimited {
				t.Fatalf("error %s, want RATE_LIMITED", ed.Code)
			}
			limited++
		}
	}
	if limited == 0 {
		t.Fatal("15 frames at once with burst 5 were never limited")
	}
	// The bucket refills: the connection is usable again.
	eventually(t, "rate limit to lift", func() bool {
		return c.call(protocol.EventPing, struct{}{}).Event == protocol.EventAck
	})
}

func TestMaxConnections(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	g := e.start(func(c *Config) { c.MaxConnections = 1 })
	_, tok := e.user("alice")
	first := e.dial(g, tok)
	first.ack(protocol.EventPing, struct{}{}, nil)
	_, resp, err := websocket.DefaultDialer.Dial(g.url+"?token="+tok, nil)
	if err == nil || resp == nil || resp.StatusCode != 503 {
		t.Fatalf("second connection: %v %v, want 503", resp, err)
	}
	var eb struct {
		Error protocol.ErrorData `json:"error"`
	}
	if json.NewDecoder(resp.Body).Decode(&eb) != nil || eb.Error.Code != chat.CodeServerFull {
		t.Fatalf("body %+v, want SERVER_FULL", eb)
	}
	_ = first.conn.Close()
	eventually(t, "slot to free", func() bool {
		c, err := dialWS(g.url, tok)
		if err != nil {
			return false
		}
		c.Close()
		return true
	})
}

func TestKeepaliveDropsSilentConnections(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	g := e.start(func(c *Config) { c.PingInterval = 50 * time.Millisecond; c.PongTimeout = 300 * time.Millisecond })
	_, tok := e.user("alice")
	// A client that reads answers pings (the library replies with pongs)
	// and stays; one that never reads sends no pongs and is dropped.
	live := e.dial(g, tok)
	var pings atomic.Int64
	live.conn.SetPingHandler(func(string) error {
		pings.Add(1)
		return live.conn.WriteControl(websocket.PongMessage, nil, time.Now().Add(time.Second))
	})
	readErr := make(chan error, 1)
	go func() {
		for {
			if _, _, err := live.conn.ReadMessage(); err != nil {
				readErr <- err
				return
			}
		}
	}()
	e.dial(g, tok) // silent: never reads
	eventually(t, "silent connection dropped", func() bool { return g.svc.lc.Active() == 1 })
	// Several pong timeouts later the reading client is still there.
	eventually(t, "pings to the live client", func() bool { return pings.Load() >= 15 })
	select {
	case err := <-readErr:
		t.Fatalf("live client dropped: %v", err)
	default:
	}
	if n := g.svc.lc.Active(); n != 1 {
		t.Fatalf("active %d, want the live client only", n)
	}
}

func TestTokenExpiryClosesWith4001(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	g := e.start(nil)
	uid, _ := e.user("alice")
	// Expiry has one-second precision and is truncated (exp = floor(now +
	// TTL)): this token lives two to three seconds, so a slow dial still
	// gets in before it expires.
	short, err := newTokens(3 * time.Second)
	if err != nil {
		t.Fatal(err)
	}
	tok, _, _ := short.Issue(uid, "alice")
	c := e.dial(g, tok)
	if code := c.closeCode(); code != protocol.CloseAuthExpired {
		t.Fatalf("close code %d, want %d", code, protocol.CloseAuthExpired)
	}
}

// TestPingsStopWithTheConnection: with pings every millisecond, many
// connections closing (by the client, mid-ping) must never have a ping
// written through a socket fasthttp already took back (that crashed the
// process with a nil dereference).
func TestPingsStopWithTheConnection(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	g := e.start(func(c *Config) { c.PingInterval = time.Millisecond; c.PongTimeout = time.Second })
	_, tok := e.user("alice")
	for range 200 {
		c, err := dialWS(g.url, tok)
		if err != nil {
			t.Fatal(err)
		}
		time.Sleep(time.Duration(rand.IntN(3)) * time.Millisecond)
		_ = c.Close()
	}
	eventually(t, "connections closed", func() bool { return g.svc.lc.Active() == 0 })
	time.Sleep(50 * time.Millisecond) // timers of the last ones fire now, if any were left
	c := e.dial(g, tok)
	c.ack(protocol.EventPing, struct{}{}, nil)
}
