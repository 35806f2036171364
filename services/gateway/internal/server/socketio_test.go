package server

import (
	"encoding/json"
	"io"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/fasthttp/websocket"

	"relay/pkg/chat"
	"relay/pkg/protocol"
)

// sioClient is a minimal Socket.IO client over the WebSocket transport.
type sioClient struct {
	t    testing.TB
	conn *websocket.Conn
}

// sioDial opens an Engine.IO WebSocket session (query and header go to the
// opening request) and reads the open packet.
func sioDial(t testing.TB, g *gateway, query string, header http.Header) *sioClient {
	t.Helper()
	u := strings.Replace(g.http, "http", "ws", 1) + "/socket.io/?EIO=4&transport=websocket" + query
	conn, resp, err := websocket.DefaultDialer.Dial(u, header)
	if resp != nil && resp.Body != nil {
		resp.Body.Close()
	}
	if err != nil {
		t.Fatalf("dial %s: %v", u, err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	c := &sioClient{t: t, conn: conn}
	if open := c.read(); !strings.HasPrefix(open, `0{"sid":`) {
		t.Fatalf("open packet %q", open)
	}
	return c
}

func (c *sioClient) write(s string) {
	c.t.Helper()
	if err := c.conn.WriteMessage(websocket.TextMessage, []byte(s)); err != nil {
		c.t.Fatalf("write: %v", err)
	}
}

// read returns the next packet that is not an Engine.IO ping (answered).
func (c *sioClient) read() string {
	c.t.Helper()
	for {
		_ = c.conn.SetReadDeadline(time.Now().Add(10 * time.Second))
		_, b, err := c.conn.ReadMessage()
		if err != nil {
			c.t.Fatalf("read: %v", err)
		}
		if string(b) == "2" {
			c.write("3")
			continue
		}
		return string(b)
	}
}

// connect sends CONNECT with auth (raw JSON or "") and returns the reply.
func (c *sioClient) connect(auth string) string {
	c.t.Helper()
	c.write("40" + auth)
	return c.read()
}

// until reads packets until one starts with prefix.
func (c *sioClient) until(prefix string) string {
	c.t.Helper()
	for {
		if p := c.read(); strings.HasPrefix(p, prefix) {
			return p
		}
	}
}

func TestSocketIOTokenSources(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	g := e.start(nil)
	_, tok := e.user("alice")
	cases := []struct {
		name, query, auth string
		header            http.Header
		want              string
	}{
		{"auth.token", "", `{"token":"` + tok + `"}`, nil, `40{"sid":"`},
		{"query token", "&token=" + tok, "", nil, `40{"sid":"`},
		{"Authorization header", "", "", http.Header{"Authorization": {"Bearer " + tok}}, `40{"sid":"`},
		{"auth wins over query", "&token=garbage", `{"token":"` + tok + `"}`, nil, `40{"sid":"`},
		{"no token", "", "", nil, `44{"message":"missing token","data":{"code":"UNAUTHORIZED"}}`},
		{"bad token", "", `{"token":"x.y.z"}`, nil, `44{"message":"invalid token","data":{"code":"UNAUTHORIZED"}}`},
		{"token not a string", "", `{"token":7}`, nil, `44{"message":"auth.token must be a string","data":{"code":"UNAUTHORIZED"}}`},
	}
	for _, c := range cases {
		cl := sioDial(t, g, c.query, c.header)
		if got := cl.connect(c.auth); !strings.HasPrefix(got, c.want) {
			t.Errorf("%s: CONNECT reply %q, want %q", c.name, got, c.want)
		}
	}
}

// TestSocketIOIsAGatewayClient: a Socket.IO socket gets the native acks and
// errors through the mapping, counts against MAX_CONNECTIONS, and is
// rate-limited like a /ws connection.
func TestSocketIOIsAGatewayClient(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	g := e.start(func(c *Config) { c.MaxConnections = 2; c.Rate = 1; c.Burst = 5 })
	alice, tok := e.user("alice")
	room := e.room(chat.RoomGroup, alice)

	s := sioDial(t, g, "", nil)
	s.connect(`{"token":"` + tok + `"}`)
	s.write(`421["join_room",{"roomId":"` + rid(room) + `"}]`)
	var ack []protocol.JoinAck
	if p := s.until("431"); json.Unmarshal([]byte(p[3:]), &ack) != nil || len(ack) != 1 || ack[0].RoomID != rid(room) {
		t.Fatalf("join ack %q", p)
	}
	s.write(`422["join_room",{"roomId":"999999"}]`)
	if p := s.until("432"); !strings.Contains(p, `[{"error":{"code":"NOT_FOUND"`) {
		t.Fatalf("join error %q", p)
	}
	s.write(`42["join_room",{"roomId":7}]`)
	if p := s.until(`42["error"`); !strings.Contains(p, `"code":"BAD_REQUEST"`) {
		t.Fatalf("error event %q", p)
	}

	// With the Socket.IO socket and a native one, the instance is full.
	n := e.dial(g, tok)
	n.ack(protocol.EventPing, nil, nil)
	res, err := http.Get(g.http + "/socket.io/?EIO=4&transport=polling")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(res.Body)
	res.Body.Close()
	if res.StatusCode != http.StatusServiceUnavailable || !strings.Contains(string(body), "SERVER_FULL") {
		t.Fatalf("handshake on a full instance: %d %s", res.StatusCode, body)
	}

	// The rate limit (burst 5) applies to Socket.IO events too.
	for i := range 8 {
		s.write(`42` + strconv.Itoa(10+i) + `["ping"]`)
	}
	limited := 0
	for range 8 {
		if p := s.until("43"); strings.Contains(p, "RATE_LIMITED") {
			limited++
		}
	}
	if limited == 0 {
		t.Fatal("no event was rate limited")
	}
}

// TestSocketIOShutdown: a graceful shutdown closes Socket.IO sockets like
// /ws ones (WebSocket: close 1012; polling: the close packet, so the
// clients reconnect) and is not held up by parked long-polls.
func TestSocketIOShutdown(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	g := e.start(nil)
	_, tok := e.user("alice")

	ws := sioDial(t, g, "", nil)
	ws.connect(`{"token":"` + tok + `"}`)

	// A polling session, connected, with a poll parked.
	res, err := http.Get(g.http + "/socket.io/?EIO=4&transport=polling")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(res.Body)
	res.Body.Close()
	var open struct {
		SID string `json:"sid"`
	}
	if err := json.Unmarshal(body[1:], &open); err != nil {
		t.Fatalf("open %q: %v", body, err)
	}
	poll := g.http + "/socket.io/?EIO=4&transport=polling&sid=" + open.SID
	if res, err := http.Post(poll, "text/plain", strings.NewReader(`40{"token":"`+tok+`"}`)); err != nil {
		t.Fatal(err)
	} else {
		res.Body.Close()
	}
	get := func() string {
		res, err := http.Get(poll)
		if err != nil {
			return err.Error()
		}
		defer res.Body.Close()
		b, _ := io.ReadAll(res.Body)
		return string(b)
	}
	if got := get(); !strings.HasPrefix(got, `40{"sid":"`) {
		t.Fatalf("CONNECT reply %q", got)
	}
	parked := make(chan string, 1)
	go func() { parked <- get() }()
	eventually(t, "the poll parked", func() bool {
		res, err := http.Get(g.http + "/metrics")
		if err != nil {
			return false
		}
		defer res.Body.Close()
		b, _ := io.ReadAll(res.Body)
		return strings.Contains(string(b), "\ngateway_socketio_polls_waiting 1\n")
	})
	eventually(t, "both sockets registered", func() bool { return g.svc.lc.Active() == 2 })

	g.stop()
	select {
	case err := <-g.done:
		if err != nil {
			t.Errorf("Run: %v", err)
		}
		g.done <- nil // for the cleanup's shutdown
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not return: a parked long-poll held the shutdown")
	}
	if got := <-parked; got != "1" {
		t.Errorf("parked poll got %q, want the close packet", got)
	}
	_ = ws.conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	for {
		_, b, err := ws.conn.ReadMessage()
		if err != nil {
			if !websocket.IsCloseError(err, protocol.CloseServiceRestart) {
				t.Errorf("websocket: %v, want close 1012", err)
			}
			break
		}
		if string(b) != "2" {
			t.Errorf("unexpected packet before the close: %q", b)
		}
	}
}
