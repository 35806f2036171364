package bench

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/fasthttp/websocket"
)

func TestSocketIOEncode(t *testing.T) {
	t.Parallel()
	c := &conn{}
	got, err := socketIO{}.encode(c, "join_room", "j3", []byte(`{"roomId":"42"}`))
	if err != nil || string(got) != `420["join_room",{"roomId":"42"}]` {
		t.Fatalf("join: %s %v", got, err)
	}
	got, _ = socketIO{}.encode(c, "send_message", "m0.1.2", []byte(`{"roomId":"42","content":"hi"}`))
	if string(got) != `421["send_message",{"roomId":"42","content":"hi"}]` {
		t.Fatalf("send: %s", got)
	}
	got, _ = socketIO{}.encode(c, "typing_start", "", []byte(`{"roomId":"42"}`))
	if string(got) != `42["typing_start",{"roomId":"42"}]` {
		t.Fatalf("no ack: %s", got)
	}
	got, _ = socketIO{}.encode(c, "ping", "p5", nil)
	if string(got) != `422["ping"]` {
		t.Fatalf("ping: %s", got)
	}
	if ref, ok := c.acks.take(1); !ok || ref != "m0.1.2" {
		t.Fatalf("ack 1 maps to %q %v, want m0.1.2", ref, ok)
	}
	if _, ok := c.acks.take(1); ok {
		t.Fatal("an ack id is answered once")
	}
	got, _ = native{}.encode(c, "join_room", "j3", []byte(`{"roomId":"42"}`))
	if string(got) != `{"event":"join_room","data":{"roomId":"42"},"ref":"j3"}` {
		t.Fatalf("native: %s", got)
	}
}

func TestSocketIODecode(t *testing.T) {
	t.Parallel()
	c := &conn{}
	c.acks.add("j0")
	c.acks.add("m0.0.1")
	c.acks.add("m0.0.2")
	for _, tc := range []struct {
		name, raw, event, ref, data string
		ok                          bool
	}{
		// Captured from socket.io 4.8 (the Node seed) and the gateway.
		{"push", `42["message",{"id":"a","roomId":"40","seq":"17","clientMsgId":"r.0.0.1"}]`, "message", "", `{"id":"a","roomId":"40","seq":"17","clientMsgId":"r.0.0.1"}`, true},
		{"join ack", `430[{"roomId":"40","lastSeq":9}]`, "ack", "j0", `{"roomId":"40","lastSeq":9}`, true},
		{"send ack", `431[{"id":"b","seq":12,"clientMsgId":"r.0.0.1"}]`, "ack", "m0.0.1", `{"id":"b","seq":12,"clientMsgId":"r.0.0.1"}`, true},
		{"error ack", `432[{"error":{"code":"RATE_LIMITED","message":"slow down"}}]`, "error", "m0.0.2", `{"code":"RATE_LIMITED","message":"slow down"}`, true},
		{"error push", `42["error",{"code":"BAD_REQUEST","message":"x"}]`, "error", "", `{"code":"BAD_REQUEST","message":"x"}`, true},
		{"unknown ack id", `437[{}]`, "", "", "", false},
		{"noop", `6`, "", "", "", true},
		{"connect", `40{"sid":"x"}`, "", "", "", true},
		{"corrupt", `42["message",`, "", "", "", false},
		{"not an event", `42[1,2]`, "", "", "", false},
		{"empty", ``, "", "", "", false},
	} {
		in, ok := socketIO{}.decode(c, []byte(tc.raw))
		if ok != tc.ok || in.event != tc.event || string(in.ref) != tc.ref {
			t.Errorf("%s: got %q %q ok=%v, want %q %q ok=%v", tc.name, in.event, in.ref, ok, tc.event, tc.ref, tc.ok)
			continue
		}
		if tc.data != "" && (in.data == nil || in.data.String() != tc.data) {
			t.Errorf("%s: data %v, want %s", tc.name, in.data, tc.data)
		}
	}
}

// TestSocketIOAccounting runs the seed's frames through handle: no
// metadata (the record is found by clientMsgId), seq as a string, pushes
// without seq.
func TestSocketIOAccounting(t *testing.T) {
	t.Parallel()
	r, cs, st := fakeRun(t, 1, 2, []int{1})
	r.tr, r.p.Protocol = socketIO{}, ProtocolSocketIO
	for _, c := range cs {
		if _, err := r.tr.encode(c, "join_room", "j0", []byte(`{"roomId":"40"}`)); err != nil {
			t.Fatal(err)
		}
		c.handle([]byte(`430[{"ok":true}]`))
	}
	if got := r.joined[0].Load(); got != 2 {
		t.Fatalf("joined %d, want 2", got)
	}
	rec := st.rec(0, 0)
	rec.recipients.Store(2)
	rec.sentAt.Store(time.Now().Add(-time.Millisecond).UnixNano())
	st.sent.Add(1)
	if _, err := r.tr.encode(cs[0], "send_message", "m0.0.0", []byte(`{}`)); err != nil {
		t.Fatal(err)
	}
	cs[0].handle([]byte(`431[{"id":"a","seq":"17","clientMsgId":"run1.0.0.0"}]`))
	msg := `42["message",{"id":"a","roomId":"40","userId":"7","username":"7","content":"x","type":"text","clientMsgId":"run1.0.0.0","timestamp":"2026-11-27T01:00:00.000Z","seq":"17"}]`
	for _, c := range cs {
		c.handle([]byte(`42["user_joined",{"roomId":"40","userId":"8","username":"8"}]`))
		c.handle([]byte(msg))
	}
	cs[1].handle([]byte(msg))
	a := st.account()
	if a.Acked != 1 || a.Delivered != 2 || a.Lost != 0 || a.Duplicates != 1 {
		t.Fatalf("accounting %+v, want 1 acked, 2 delivered, 0 lost, 1 duplicate", a)
	}
	if n := st.deliver.Total().Count; n != 2 {
		t.Fatalf("%d delivery latencies, want 2", n)
	}
	if n := r.undecodable.Load(); n != 0 {
		t.Fatalf("%d undecodable frames, want 0", n)
	}
}

// sioServer is a minimal Socket.IO server for the handshake: it sends the
// Engine.IO open, checks CONNECT's token, then pings once and records the
// pong.
func sioServer(t *testing.T, refuse bool, pong *atomic.Bool) string {
	t.Helper()
	up := websocket.Upgrader{}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		if req.URL.Path != "/socket.io/" || req.URL.Query().Get("EIO") != "4" || req.URL.Query().Get("transport") != "websocket" {
			http.Error(w, "bad path "+req.URL.String(), http.StatusNotFound)
			return
		}
		ws, err := up.Upgrade(w, req, nil)
		if err != nil {
			return
		}
		defer ws.Close()
		_ = ws.WriteMessage(websocket.TextMessage, []byte(`0{"sid":"abc","upgrades":[],"pingInterval":25000,"pingTimeout":20000,"maxPayload":1000000}`))
		_, msg, err := ws.ReadMessage()
		if err != nil {
			return
		}
		if refuse || string(msg) != `40{"token":"tok"}` {
			_ = ws.WriteMessage(websocket.TextMessage, []byte(`44{"message":"UNAUTHORIZED"}`))
			return
		}
		_ = ws.WriteMessage(websocket.TextMessage, []byte(`40{"sid":"def"}`))
		_ = ws.WriteMessage(websocket.TextMessage, []byte(`2`))
		if _, msg, err = ws.ReadMessage(); err == nil && string(msg) == "3" {
			pong.Store(true)
		}
		_, _, _ = ws.ReadMessage() // until the client closes
	}))
	t.Cleanup(srv.Close)
	return "ws" + strings.TrimPrefix(srv.URL, "http")
}

func sioRunner(t *testing.T, gw string) *runner {
	t.Helper()
	u, err := socketIOURL(gw)
	if err != nil {
		t.Fatal(err)
	}
	r := &runner{
		p:  Params{Gateways: []string{u}, Protocol: ProtocolSocketIO},
		tr: socketIO{}, accs: []account{{Token: "tok"}},
		connectLat: NewLatency(1), gwConns: make([]atomic.Int64, 1),
	}
	if err := r.setupDialer(); err != nil {
		t.Fatal(err)
	}
	return r
}

func TestSocketIOHandshake(t *testing.T) {
	t.Parallel()
	var pong atomic.Bool
	r := sioRunner(t, sioServer(t, false, &pong))
	c, err := r.dial(t.Context(), 0, 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for !pong.Load() && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	c.close()
	if !pong.Load() {
		t.Fatal("the Engine.IO ping was not answered with 3")
	}
	if n := r.connectLat.Total().Count; n != 1 {
		t.Fatalf("%d connect latencies, want 1", n)
	}
}

func TestSocketIOConnectError(t *testing.T) {
	t.Parallel()
	r := sioRunner(t, sioServer(t, true, new(atomic.Bool)))
	if _, err := r.dial(t.Context(), 0, 0, 0); err == nil || !strings.Contains(err.Error(), "CONNECT_ERROR UNAUTHORIZED") {
		t.Fatalf("got %v, want CONNECT_ERROR UNAUTHORIZED", err)
	}
	if got := r.connFail.Snapshot(); got["CONNECT_ERROR UNAUTHORIZED"] != 1 {
		t.Fatalf("connect failures %v", got)
	}
}

func TestSocketIOURL(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]string{
		"ws://127.0.0.1:8090/ws":           "ws://127.0.0.1:8090/socket.io/?EIO=4&transport=websocket",
		"ws://127.0.0.1:3100":              "ws://127.0.0.1:3100/socket.io/?EIO=4&transport=websocket",
		"wss://example.com/chat/socket.io": "wss://example.com/chat/socket.io/?EIO=4&transport=websocket",
		"ws://h:1/socket.io/?EIO=3&x=y":    "ws://h:1/socket.io/?EIO=4&transport=websocket&x=y",
	} {
		if got, err := socketIOURL(in); err != nil || got != want {
			t.Errorf("%s: got %s %v, want %s", in, got, err, want)
		}
	}
	p, err := ParseArgs([]string{"--protocol", "socketio", "--gateways", "127.0.0.1:3100"}, new(strings.Builder))
	if err != nil || p.Gateways[0] != "ws://127.0.0.1:3100/socket.io/?EIO=4&transport=websocket" {
		t.Fatalf("ParseArgs: %v %v", p.Gateways, err)
	}
	if _, err := ParseArgs([]string{"--protocol", "mqtt"}, new(strings.Builder)); err == nil {
		t.Fatal("--protocol mqtt was accepted")
	}
}
