package socketio

import (
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/fasthttp/websocket"
	"github.com/gofiber/fiber/v2"

	"relay/pkg/chat"
	"relay/pkg/protocol"
	"relay/services/gateway/internal/transport/socketio/packet"
)

// echoHandler accepts every socket whose auth token is not "bad", hands
// each event to events and answers: an ack {"echo": name} when the client
// asked for one, the error of events with Err.
type echoHandler struct {
	events chan Event
	ended  chan struct{}
	auths  chan json.RawMessage
	// serve, when set, replaces the default behaviour after Accept.
	serve func(s *Session)
}

func newEcho() *echoHandler {
	return &echoHandler{events: make(chan Event, 64), ended: make(chan struct{}, 8), auths: make(chan json.RawMessage, 8)}
}

func (h *echoHandler) ServeSocket(s *Session, auth json.RawMessage) error {
	h.auths <- auth
	var a struct{ Token string }
	_ = json.Unmarshal(auth, &a)
	if a.Token == "bad" {
		return chat.Errorf(chat.CodeUnauthorized, "invalid token")
	}
	if err := s.Accept(); err != nil {
		return err
	}
	defer func() { h.ended <- struct{}{} }()
	if h.serve != nil {
		h.serve(s)
		return nil
	}
	for {
		ev, err := s.Next()
		if err != nil {
			return nil
		}
		h.events <- ev
		switch {
		case ev.Err != nil:
			data, _ := json.Marshal(protocol.ErrorData{Code: chat.ErrorCode(ev.Err), Message: chat.ErrorMessage(ev.Err)})
			f, _ := json.Marshal(protocol.Frame{Event: protocol.EventError, Ref: packet.Ref(ev.ID), Data: data})
			_ = s.SendNative(f, time.Time{})
		case ev.ID >= 0:
			f, _ := json.Marshal(protocol.Frame{Event: protocol.EventAck, Ref: packet.Ref(ev.ID), Data: json.RawMessage(`{"echo":"` + ev.Name + `"}`)})
			_ = s.SendNative(f, time.Time{})
		}
	}
}

// testServer serves o on a local listener and returns the server and the
// endpoint's base URL.
func testServer(t *testing.T, o Options) (*Server, string) {
	t.Helper()
	if o.Handler == nil {
		o.Handler = newEcho()
	}
	srv, err := NewServer(o)
	if err != nil {
		t.Fatal(err)
	}
	// Above MaxPayload, so the server's own limit is what answers.
	app := fiber.New(fiber.Config{DisableStartupMessage: true, BodyLimit: 2 * srv.BodyLimit()})
	// As in the gateway: fasthttp leaves hijacked connections open when
	// their handler returns, and the server must close its own.
	app.Server().KeepHijackedConns = true
	srv.Mount(app, "/socket.io")
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = app.Listener(ln) }()
	t.Cleanup(func() {
		srv.Close()
		_ = app.ShutdownWithTimeout(2 * time.Second)
	})
	return srv, "http://" + ln.Addr().String() + "/socket.io/"
}

func httpDo(t *testing.T, method, url, body string) (int, string) {
	t.Helper()
	req, err := http.NewRequest(method, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	return res.StatusCode, string(b)
}

// handshake opens a polling session and returns its sid.
func handshake(t *testing.T, base string) string {
	t.Helper()
	code, body := httpDo(t, http.MethodGet, base+"?EIO=4&transport=polling", "")
	if code != 200 || body[0] != '0' {
		t.Fatalf("handshake: %d %q", code, body)
	}
	var open struct {
		SID      string   `json:"sid"`
		Upgrades []string `json:"upgrades"`
	}
	if err := json.Unmarshal([]byte(body[1:]), &open); err != nil || open.SID == "" || len(open.Upgrades) != 1 || open.Upgrades[0] != "websocket" {
		t.Fatalf("open packet %q: %v", body, err)
	}
	return open.SID
}

func pollURL(base, sid string) string { return base + "?EIO=4&transport=polling&sid=" + sid }

// connectPolling opens a polling session and connects its socket.
func connectPolling(t *testing.T, base string) string {
	t.Helper()
	sid := handshake(t, base)
	if code, body := httpDo(t, http.MethodPost, pollURL(base, sid), `40{"token":"good"}`); code != 200 || body != "ok" {
		t.Fatalf("post CONNECT: %d %q", code, body)
	}
	if code, body := httpDo(t, http.MethodGet, pollURL(base, sid), ""); code != 200 || !strings.HasPrefix(body, `40{"sid":"`) {
		t.Fatalf("poll CONNECT reply: %d %q", code, body)
	}
	return sid
}

func recvEvent(t *testing.T, h *echoHandler) Event {
	t.Helper()
	select {
	case ev := <-h.events:
		return ev
	case <-time.After(5 * time.Second):
		t.Fatal("no event reached the handler")
		return Event{}
	}
}

func wantEngineError(t *testing.T, code int, body string, wantStatus, wantCode int) {
	t.Helper()
	var e struct {
		Code    int    `json:"code"`
		Message string `json:"message"`
	}
	if code != wantStatus || json.Unmarshal([]byte(body), &e) != nil || e.Code != wantCode || e.Message == "" {
		t.Fatalf("got %d %q, want %d with code %d", code, body, wantStatus, wantCode)
	}
}

// eventually polls cond until it holds (failing after 5 s).
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for end := time.Now().Add(5 * time.Second); time.Now().Before(end); time.Sleep(5 * time.Millisecond) {
		if cond() {
			return
		}
	}
	t.Fatalf("timed out waiting: %s", what)
}

func TestPollingSession(t *testing.T) {
	t.Parallel()
	h := newEcho()
	srv, base := testServer(t, Options{Handler: h})
	sid := connectPolling(t, base)
	if auth := <-h.auths; string(auth) != `{"token":"good"}` {
		t.Fatalf("auth %s", auth)
	}
	// Two packets in one payload: handled in order.
	if code, _ := httpDo(t, http.MethodPost, pollURL(base, sid), "42[\"hello\",{\"a\":1}]\x1e421[\"again\"]"); code != 200 {
		t.Fatalf("post: %d", code)
	}
	if ev := recvEvent(t, h); ev.Name != "hello" || string(ev.Data) != `{"a":1}` || ev.ID != -1 || ev.Err != nil {
		t.Fatalf("first event %+v", ev)
	}
	if ev := recvEvent(t, h); ev.Name != "again" || ev.Data != nil || ev.ID != 1 {
		t.Fatalf("second event %+v", ev)
	}
	if code, body := httpDo(t, http.MethodGet, pollURL(base, sid), ""); code != 200 || body != `431[{"echo":"again"}]` {
		t.Fatalf("poll: %d %q", code, body)
	}
	// The client closes: the socket ends and the sid is forgotten.
	httpDo(t, http.MethodPost, pollURL(base, sid), "1")
	<-h.ended
	eventually(t, "session forgotten", func() bool { return srv.Sessions() == 0 })
	code, body := httpDo(t, http.MethodGet, pollURL(base, sid), "")
	wantEngineError(t, code, body, 400, errUnknownSID)
}

func TestHandshakeErrors(t *testing.T) {
	t.Parallel()
	_, base := testServer(t, Options{})
	cases := []struct {
		method, query string
		code          int
	}{
		{http.MethodGet, "?transport=polling", errUnsupportedProtocol},
		{http.MethodGet, "?EIO=3&transport=polling", errUnsupportedProtocol},
		{http.MethodGet, "?EIO=4&transport=flashsocket", errTransportUnknown},
		{http.MethodGet, "?EIO=4", errTransportUnknown},
		{http.MethodGet, "?EIO=4&transport=polling&sid=nope", errUnknownSID},
		{http.MethodPost, "?EIO=4&transport=polling&sid=nope", errUnknownSID},
		{http.MethodPost, "?EIO=4&transport=polling", errBadHandshakeMethod},
		{http.MethodGet, "?EIO=4&transport=websocket", errBadRequest}, // not an upgrade request
	}
	for _, c := range cases {
		code, body := httpDo(t, c.method, base+c.query, "")
		wantEngineError(t, code, body, 400, c.code)
	}
	_, _, err := websocket.DefaultDialer.Dial(strings.Replace(base, "http", "ws", 1)+"?EIO=4&transport=websocket&sid=nope", nil)
	if !errors.Is(err, websocket.ErrBadHandshake) {
		t.Fatalf("websocket with unknown sid: %v", err)
	}
}

func TestPollingLimitsAndMalformedInput(t *testing.T) {
	t.Parallel()
	srv, base := testServer(t, Options{MaxPayload: 2048})
	t.Run("oversized POST", func(t *testing.T) {
		sid := connectPolling(t, base)
		code, _ := httpDo(t, http.MethodPost, pollURL(base, sid), `42["x","`+strings.Repeat("a", 3000)+`"]`)
		if code != http.StatusRequestEntityTooLarge {
			t.Fatalf("status %d", code)
		}
		code, body := httpDo(t, http.MethodGet, pollURL(base, sid), "")
		wantEngineError(t, code, body, 400, errUnknownSID)
	})
	t.Run("malformed Engine.IO packet", func(t *testing.T) {
		sid := connectPolling(t, base)
		code, body := httpDo(t, http.MethodPost, pollURL(base, sid), "9hello")
		wantEngineError(t, code, body, 400, errBadRequest)
		code, body = httpDo(t, http.MethodGet, pollURL(base, sid), "")
		wantEngineError(t, code, body, 400, errUnknownSID)
	})
	t.Run("empty packet in payload", func(t *testing.T) {
		sid := connectPolling(t, base)
		code, body := httpDo(t, http.MethodPost, pollURL(base, sid), "3\x1e\x1e3")
		wantEngineError(t, code, body, 400, errBadRequest)
	})
	t.Run("overlapping polls", func(t *testing.T) {
		sid := connectPolling(t, base)
		first := make(chan string, 1)
		go func() {
			_, body := httpDo(t, http.MethodGet, pollURL(base, sid), "")
			first <- body
		}()
		// Wait until the first poll is parked before sending the second.
		eventually(t, "first poll waiting", func() bool {
			s := srv.lookup(sid)
			if s == nil {
				return false
			}
			s.mu.Lock()
			defer s.mu.Unlock()
			return s.getting
		})
		code, body := httpDo(t, http.MethodGet, pollURL(base, sid), "")
		wantEngineError(t, code, body, 400, errBadRequest)
		// The session is closed: the parked poll gets the close packet.
		if got := <-first; got != "1" {
			t.Fatalf("parked poll got %q", got)
		}
	})
}

func TestSocketIOErrorsReachTheHandler(t *testing.T) {
	t.Parallel()
	h := newEcho()
	_, base := testServer(t, Options{Handler: h})
	sid := connectPolling(t, base)
	post := func(body string) {
		t.Helper()
		if code, got := httpDo(t, http.MethodPost, pollURL(base, sid), body); code != 200 {
			t.Fatalf("post %q: %d %q", body, code, got)
		}
	}
	// A binary event with an ack id and its base64 attachment: refused, the
	// attachment skipped, and the next event handled normally.
	post("451-5[\"upload\",{\"_placeholder\":true,\"num\":0}]\x1ebAQID")
	if ev := recvEvent(t, h); ev.ID != 5 || chat.ErrorCode(ev.Err) != chat.CodeBadRequest || !strings.Contains(ev.Err.Error(), "binary") {
		t.Fatalf("binary event: %+v", ev)
	}
	post(`42["after"]`)
	if ev := recvEvent(t, h); ev.Name != "after" {
		t.Fatalf("after binary: %+v", ev)
	}
	// A lone attachment, bad JSON, a non-string name, another namespace.
	post("bAQID")
	post(`42["x"`)
	post(`423[7,{}]`)
	post(`42/admin,9["x"]`)
	for i, want := range []struct {
		id   int64
		text string
	}{{-1, "binary"}, {-1, "not valid JSON"}, {3, "name must be a string"}, {-1, "namespace"}} {
		ev := recvEvent(t, h)
		if ev.ID != want.id || chat.ErrorCode(ev.Err) != chat.CodeBadRequest || !strings.Contains(ev.Err.Error(), want.text) {
			t.Fatalf("error %d: %+v, want id %d and %q", i, ev, want.id, want.text)
		}
	}
	code, body := httpDo(t, http.MethodGet, pollURL(base, sid), "")
	if code != 200 || !strings.Contains(body, `435[{"error":{"code":"BAD_REQUEST"`) ||
		!strings.Contains(body, `433[{"error":{"code":"BAD_REQUEST","message":"event name must be a string"}}]`) ||
		!strings.Contains(body, `42["error",{"code":"BAD_REQUEST"`) {
		t.Fatalf("replies: %q", body)
	}
	// Namespaces other than "/" are refused at CONNECT too.
	post(`40/admin,{}`)
	if code, body := httpDo(t, http.MethodGet, pollURL(base, sid), ""); !strings.Contains(body, `44/admin,{"message":"Invalid namespace","data":{"code":"BAD_REQUEST"}}`) {
		t.Fatalf("CONNECT /admin: %d %q", code, body)
	}
}

func TestConnectError(t *testing.T) {
	t.Parallel()
	h := newEcho()
	srv, base := testServer(t, Options{Handler: h})
	sid := handshake(t, base)
	httpDo(t, http.MethodPost, pollURL(base, sid), `40{"token":"bad"}`)
	if got := pollUntilClose(t, base, sid); len(got) != 2 || got[0] != `44{"message":"invalid token","data":{"code":"UNAUTHORIZED"}}` {
		t.Fatalf("polls: %q", got)
	}
	// Nothing half-open is left behind.
	eventually(t, "session forgotten", func() bool { return srv.Sessions() == 0 })
	code, body := httpDo(t, http.MethodGet, pollURL(base, sid), "")
	wantEngineError(t, code, body, 400, errUnknownSID)

	// Over WebSocket: CONNECT_ERROR, then the server closes.
	ws := dialWS(t, base, "")
	readWS(t, ws) // open packet
	writeWS(t, ws, `40{"token":"bad"}`)
	if got := readWS(t, ws); got != `44{"message":"invalid token","data":{"code":"UNAUTHORIZED"}}` {
		t.Fatalf("ws: %q", got)
	}
	if _, _, err := ws.ReadMessage(); err == nil {
		t.Fatal("websocket still open after CONNECT_ERROR")
	}
}

func TestConnectTimeout(t *testing.T) {
	t.Parallel()
	srv, base := testServer(t, Options{ConnectTimeout: 50 * time.Millisecond})
	sid := handshake(t, base)
	// Never sends CONNECT: the session ends on its own.
	eventually(t, "session closed", func() bool { return srv.Sessions() == 0 })
	code, body := httpDo(t, http.MethodGet, pollURL(base, sid), "")
	wantEngineError(t, code, body, 400, errUnknownSID)
}

// pollUntilClose polls until the close packet and returns every response,
// which must be 200s.
func pollUntilClose(t *testing.T, base, sid string) []string {
	t.Helper()
	var got []string
	for range 20 {
		code, body := httpDo(t, http.MethodGet, pollURL(base, sid), "")
		if code != 200 {
			t.Fatalf("poll after %q: %d %q", got, code, body)
		}
		got = append(got, body)
		if body == "1" {
			return got
		}
	}
	t.Fatalf("no close packet in %q", got)
	return nil
}

func dialWS(t *testing.T, base, sid string) *websocket.Conn {
	t.Helper()
	u := strings.Replace(base, "http", "ws", 1) + "?EIO=4&transport=websocket"
	if sid != "" {
		u += "&sid=" + sid
	}
	ws, _, err := websocket.DefaultDialer.Dial(u, nil)
	if err != nil {
		t.Fatalf("dial %s: %v", u, err)
	}
	t.Cleanup(func() { _ = ws.Close() })
	return ws
}

func readWS(t *testing.T, ws *websocket.Conn) string {
	t.Helper()
	_ = ws.SetReadDeadline(time.Now().Add(5 * time.Second))
	mt, b, err := ws.ReadMessage()
	if err != nil {
		t.Fatalf("read: %v", err)
	}
	if mt != websocket.TextMessage {
		t.Fatalf("message type %d", mt)
	}
	return string(b)
}

func writeWS(t *testing.T, ws *websocket.Conn, s string) {
	t.Helper()
	if err := ws.WriteMessage(websocket.TextMessage, []byte(s)); err != nil {
		t.Fatalf("write: %v", err)
	}
}

func TestWebSocketSession(t *testing.T) {
	t.Parallel()
	h := newEcho()
	srv, base := testServer(t, Options{Handler: h, MaxPayload: 2048})
	ws := dialWS(t, base, "")
	open := readWS(t, ws)
	if !strings.HasPrefix(open, `0{"sid":"`) || !strings.Contains(open, `"upgrades":[]`) || !strings.Contains(open, `"maxPayload":2048`) {
		t.Fatalf("open packet %q", open)
	}
	writeWS(t, ws, `40`)
	if got := readWS(t, ws); !strings.HasPrefix(got, `40{"sid":"`) {
		t.Fatalf("CONNECT reply %q", got)
	}
	if auth := <-h.auths; string(auth) != "null" {
		t.Fatalf("auth of a CONNECT without payload: %s", auth)
	}
	writeWS(t, ws, `4242["join_room",{"roomId":"1"}]`)
	if got := readWS(t, ws); got != `4342[{"echo":"join_room"}]` {
		t.Fatalf("ack %q", got)
	}
	// A binary frame: an error event, the socket stays.
	if err := ws.WriteMessage(websocket.BinaryMessage, []byte{1, 2, 3}); err != nil {
		t.Fatal(err)
	}
	recvEvent(t, h)
	if ev := recvEvent(t, h); chat.ErrorCode(ev.Err) != chat.CodeBadRequest {
		t.Fatalf("binary: %+v", ev)
	}
	if got := readWS(t, ws); !strings.HasPrefix(got, `42["error",{"code":"BAD_REQUEST"`) {
		t.Fatalf("binary reply %q", got)
	}
	// A message over MaxPayload closes the connection with 1009.
	writeWS(t, ws, `42["x","`+strings.Repeat("a", 3000)+`"]`)
	_ = ws.SetReadDeadline(time.Now().Add(5 * time.Second))
	_, _, err := ws.ReadMessage()
	if !websocket.IsCloseError(err, websocket.CloseMessageTooBig) {
		t.Fatalf("after an oversized message: %v", err)
	}
	<-h.ended
	eventually(t, "session forgotten", func() bool { return srv.Sessions() == 0 })
}

func TestWebSocketMalformedPacketCloses(t *testing.T) {
	t.Parallel()
	srv, base := testServer(t, Options{})
	ws := dialWS(t, base, "")
	readWS(t, ws)
	writeWS(t, ws, "x")
	_ = ws.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, _, err := ws.ReadMessage(); !websocket.IsCloseError(err, websocket.CloseUnsupportedData) {
		t.Fatalf("after a malformed packet: %v", err)
	}
	eventually(t, "session forgotten", func() bool { return srv.Sessions() == 0 })
}

func TestUpgrade(t *testing.T) {
	t.Parallel()
	h := newEcho()
	srv, base := testServer(t, Options{Handler: h})
	sid := connectPolling(t, base)
	// A poll is parked when the probe starts, as with socket.io-client.
	parked := make(chan string, 1)
	go func() {
		_, body := httpDo(t, http.MethodGet, pollURL(base, sid), "")
		parked <- body
	}()
	ws := dialWS(t, base, sid)
	writeWS(t, ws, "2probe")
	if got := readWS(t, ws); got != "3probe" {
		t.Fatalf("probe reply %q", got)
	}
	if got := <-parked; got != "6" {
		t.Fatalf("parked poll got %q, want a noop", got)
	}
	// Sent while the client pauses polling: flushed over the WebSocket.
	httpDo(t, http.MethodPost, pollURL(base, sid), `427["before upgrade"]`)
	eventually(t, "ack queued", func() bool {
		s := srv.lookup(sid)
		s.mu.Lock()
		defer s.mu.Unlock()
		return len(s.pending) > 0
	})
	writeWS(t, ws, "5")
	if got := readWS(t, ws); got != `437[{"echo":"before upgrade"}]` {
		t.Fatalf("flushed %q", got)
	}
	writeWS(t, ws, `428["after upgrade"]`)
	if got := readWS(t, ws); got != `438[{"echo":"after upgrade"}]` {
		t.Fatalf("over ws %q", got)
	}
	if s := srv.lookup(sid); s.Transport() != "websocket" {
		t.Fatalf("transport %s", s.Transport())
	}
	// Polling is over for this session.
	code, body := httpDo(t, http.MethodGet, pollURL(base, sid), "")
	wantEngineError(t, code, body, 400, errBadRequest)
	// A second upgrade is refused.
	_, _, err := websocket.DefaultDialer.Dial(strings.Replace(base, "http", "ws", 1)+"?EIO=4&transport=websocket&sid="+sid, nil)
	if !errors.Is(err, websocket.ErrBadHandshake) {
		t.Fatalf("second upgrade: %v", err)
	}
}

func TestFailedProbeKeepsPolling(t *testing.T) {
	t.Parallel()
	h := newEcho()
	_, base := testServer(t, Options{Handler: h})
	sid := connectPolling(t, base)
	ws := dialWS(t, base, sid)
	writeWS(t, ws, "2probe")
	readWS(t, ws)
	_ = ws.Close() // gives up before "5"
	httpDo(t, http.MethodPost, pollURL(base, sid), `421["still polling"]`)
	eventually(t, "ack over polling", func() bool {
		_, body := httpDo(t, http.MethodGet, pollURL(base, sid), "")
		return strings.Contains(body, `431[{"echo":"still polling"}]`)
	})
}

// TestWebSocketClosedWhenItsHandlerReturns: with KeepHijackedConns,
// fasthttp no longer closes a WebSocket whose handler returned; every way
// out of the handler must close it, or the client would wait forever.
func TestWebSocketClosedWhenItsHandlerReturns(t *testing.T) {
	t.Parallel()
	_, base := testServer(t, Options{})
	closed := func(ws *websocket.Conn) {
		t.Helper()
		_ = ws.SetReadDeadline(time.Now().Add(5 * time.Second))
		for {
			_, _, err := ws.ReadMessage()
			if err == nil {
				continue
			}
			if websocket.IsCloseError(err, websocket.CloseUnsupportedData, websocket.CloseNormalClosure) {
				// A close frame came: the TCP connection must end too.
				_, err = ws.NetConn().Read(make([]byte, 16))
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				t.Fatal("socket still open after its handler returned")
			}
			return
		}
	}
	// A probe that is not "2probe": the upgrade handler gives up.
	sid := connectPolling(t, base)
	ws := dialWS(t, base, sid)
	writeWS(t, ws, "2nope")
	closed(ws)
	// A probed upgrade whose client sends something else than "5".
	sid = connectPolling(t, base)
	ws = dialWS(t, base, sid)
	writeWS(t, ws, "2probe")
	readWS(t, ws)
	writeWS(t, ws, "6")
	closed(ws)
	// A WebSocket session ending on a malformed packet.
	ws = dialWS(t, base, "")
	readWS(t, ws) // open
	writeWS(t, ws, "x")
	closed(ws)
}

func TestPingTimeout(t *testing.T) {
	t.Parallel()
	// For the clients that are dropped: a first ping late enough that the
	// handshake and CONNECT (three requests when polling) come before it
	// also on a loaded machine, so the CONNECT reply is the first packet
	// after the open one and the handler starts.
	o := Options{PingInterval: 250 * time.Millisecond, PingTimeout: 100 * time.Millisecond}
	t.Run("websocket client that pongs stays", func(t *testing.T) {
		t.Parallel()
		// Frequent pings, a pong timeout a loaded machine's scheduler
		// cannot miss, and pings answered for several of them.
		o := Options{PingInterval: 20 * time.Millisecond, PingTimeout: 200 * time.Millisecond}
		_, base := testServer(t, o)
		ws := dialWS(t, base, "")
		readWS(t, ws)
		for start := time.Now(); time.Since(start) < 3*(o.PingInterval+o.PingTimeout); {
			if got := readWS(t, ws); got != "2" {
				t.Fatalf("want a ping, got %q", got)
			}
			writeWS(t, ws, "3")
		}
	})
	t.Run("websocket client that does not pong is dropped", func(t *testing.T) {
		t.Parallel()
		h := newEcho()
		srv, base := testServer(t, Options{Handler: h, PingInterval: o.PingInterval, PingTimeout: o.PingTimeout})
		ws := dialWS(t, base, "")
		readWS(t, ws)
		writeWS(t, ws, "40")
		readWS(t, ws)
		if got := readWS(t, ws); got != "2" {
			t.Fatalf("want a ping, got %q", got)
		}
		<-h.ended // the handler's Next failed
		_ = ws.SetReadDeadline(time.Now().Add(5 * time.Second))
		if _, _, err := ws.ReadMessage(); err == nil {
			t.Fatal("connection still open")
		}
		eventually(t, "session forgotten", func() bool { return srv.Sessions() == 0 })
	})
	t.Run("polling client that stops polling is dropped", func(t *testing.T) {
		t.Parallel()
		h := newEcho()
		srv, base := testServer(t, Options{Handler: h, PingInterval: o.PingInterval, PingTimeout: o.PingTimeout})
		sid := connectPolling(t, base)
		<-h.ended
		eventually(t, "session forgotten", func() bool { return srv.Sessions() == 0 })
		code, body := httpDo(t, http.MethodGet, pollURL(base, sid), "")
		wantEngineError(t, code, body, 400, errUnknownSID)
	})
}

func TestPollingBackpressure(t *testing.T) {
	t.Parallel()
	results := make(chan error, 3)
	h := newEcho()
	h.serve = func(s *Session) {
		f, _ := json.Marshal(protocol.Frame{Event: "message", Data: json.RawMessage(`{}`)})
		// The second send finds the queue full and must time out; the
		// third waits for the test's poll to make room, which a loaded
		// machine may take well over 50 ms to send.
		for _, d := range []time.Duration{50 * time.Millisecond, 50 * time.Millisecond, 10 * time.Second} {
			results <- s.SendNative(f, time.Now().Add(d))
		}
		_, _ = s.Next()
	}
	// One packet fits besides the CONNECT reply; the client never polls.
	_, base := testServer(t, Options{Handler: h, PollBuffer: 2})
	sid := handshake(t, base)
	httpDo(t, http.MethodPost, pollURL(base, sid), "40")
	if err := <-results; err != nil {
		t.Fatalf("first send: %v", err)
	}
	var ne net.Error
	if err := <-results; !errors.As(err, &ne) || !ne.Timeout() {
		t.Fatalf("send to a full queue: %v, want a timeout net.Error", err)
	}
	// A poll makes room again.
	code, body := httpDo(t, http.MethodGet, pollURL(base, sid), "")
	if code != 200 || body != "40{\"sid\":\""+body[len(`40{"sid":"`):len(`40{"sid":"`)+20]+"\"}\x1e42[\"message\",{}]" {
		t.Fatalf("poll: %d %q", code, body)
	}
	if err := <-results; err != nil {
		t.Fatalf("send after the poll: %v", err)
	}
}

func TestCloseCodes(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		code int
		want string // what the polling client gets after the CONNECT reply
	}{
		{protocol.CloseAuthExpired, "42[\"error\",{\"code\":\"UNAUTHORIZED\",\"message\":\"token expired\"}]\x1e41"},
		{protocol.CloseServiceRestart, ""},
		{protocol.CloseSlowConsumer, ""},
	} {
		h := newEcho()
		var once sync.Once
		h.serve = func(s *Session) {
			once.Do(func() {
				s.SetCloseCode(c.code)
				_ = s.Close()
			})
		}
		_, base := testServer(t, Options{Handler: h})
		sid := handshake(t, base)
		httpDo(t, http.MethodPost, pollURL(base, sid), "40")
		<-h.ended
		// The packets sent before the close come first, the close packet
		// alone in the next response.
		got := strings.Join(pollUntilClose(t, base, sid), "|")
		want := "|1"
		if c.want != "" {
			want = "\x1e" + c.want + want
		}
		if !strings.HasPrefix(got, `40{"sid":"`) || !strings.HasSuffix(got, want) {
			t.Errorf("close %d: got %q, want the CONNECT reply then %q", c.code, got, want)
		}
	}
	// Over WebSocket the close frame carries the code.
	h := newEcho()
	h.serve = func(s *Session) {
		s.SetCloseCode(protocol.CloseServiceRestart)
		_ = s.Close()
	}
	_, base := testServer(t, Options{Handler: h})
	ws := dialWS(t, base, "")
	readWS(t, ws)
	writeWS(t, ws, "40")
	readWS(t, ws)
	_ = ws.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, _, err := ws.ReadMessage(); !websocket.IsCloseError(err, protocol.CloseServiceRestart) {
		t.Fatalf("close: %v", err)
	}
}

func TestShutdownAndAdmit(t *testing.T) {
	t.Parallel()
	refuse := false
	var mu sync.Mutex
	srv, base := testServer(t, Options{MaxSessions: 1, Admit: func(*fiber.Ctx) error {
		mu.Lock()
		defer mu.Unlock()
		if refuse {
			return chat.Errorf(chat.CodeUnavailable, "no")
		}
		return nil
	}})
	sid := handshake(t, base)
	// Full: the next handshake is refused (the app's error handler renders it).
	if code, _ := httpDo(t, http.MethodGet, base+"?EIO=4&transport=polling", ""); code < 400 {
		t.Fatalf("handshake beyond MaxSessions: %d", code)
	}
	// Shutdown closes the unconnected session: its poll gets the close packet.
	srv.Shutdown()
	if _, body := httpDo(t, http.MethodGet, pollURL(base, sid), ""); body != "1" {
		t.Fatalf("poll after shutdown: %q", body)
	}
	mu.Lock()
	refuse = true
	mu.Unlock()
	if code, _ := httpDo(t, http.MethodGet, base+"?EIO=4&transport=polling", ""); code < 400 {
		t.Fatalf("handshake while draining: %d", code)
	}
}

func TestOptionsValidate(t *testing.T) {
	t.Parallel()
	if _, err := NewServer(Options{}); err == nil {
		t.Error("no handler accepted")
	}
	if _, err := NewServer(Options{Handler: newEcho(), MaxPayload: 10}); err == nil {
		t.Error("tiny MaxPayload accepted")
	}
	if _, err := NewServer(Options{Handler: newEcho(), PingInterval: -time.Second}); err == nil {
		t.Error("negative PingInterval accepted")
	}
}

// TestBusyHandlerIsNotAPingTimeout: while the handler is slow with the
// client's events (its inbox full), the client's pong waits behind them;
// that is not silence.
func TestBusyHandlerIsNotAPingTimeout(t *testing.T) {
	t.Parallel()
	release := make(chan struct{})
	h := newEcho()
	h.serve = func(s *Session) {
		<-release // busy, e.g. waiting for Kafka
		for {
			ev, err := s.Next()
			if err != nil {
				return
			}
			h.events <- ev
		}
	}
	o := Options{Handler: h, PingInterval: 20 * time.Millisecond, PingTimeout: 200 * time.Millisecond}
	srv, base := testServer(t, o)
	ws := dialWS(t, base, "")
	readWS(t, ws)
	// From the open packet on, every ping gets its pong at once (a pong
	// timeout a loaded machine's scheduler cannot miss): only the busy
	// handler can hold a pong back.
	var wmu sync.Mutex
	write := func(s string) {
		wmu.Lock()
		defer wmu.Unlock()
		_ = ws.WriteMessage(websocket.TextMessage, []byte(s))
	}
	go func() {
		for {
			_ = ws.SetReadDeadline(time.Now().Add(10 * time.Second))
			_, b, err := ws.ReadMessage()
			if err != nil {
				return
			}
			if string(b) == "2" {
				write("3")
			}
		}
	}()
	write("40")
	// More events than the inbox holds.
	for i := range 40 {
		write(`42["e` + strconv.Itoa(i) + `"]`)
	}
	// Several ping timeouts' worth of a busy handler.
	time.Sleep(5 * o.PingTimeout)
	if srv.Sessions() != 1 {
		t.Fatal("session closed while its handler was busy")
	}
	close(release)
	for i := range 40 {
		if ev := recvEvent(t, h); ev.Name != "e"+strconv.Itoa(i) {
			t.Fatalf("event %d: %+v", i, ev)
		}
	}
}
