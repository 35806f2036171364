package bench

import (
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/fasthttp/websocket"
)

func TestCentrifugoEncode(t *testing.T) {
	t.Parallel()
	c := &conn{}
	got, err := centrifugo{}.encode(c, "join_room", "j3", []byte(`{"roomId":"r-42"}`))
	if err != nil || string(got) != `{"id":2,"subscribe":{"channel":"r-42"}}` {
		t.Fatalf("join: %s %v", got, err)
	}
	data := `{"roomId":"r-42","content":"hi","metadata":{"bench":{"r":"x","p":0,"s":1,"n":2,"t":5}},"clientMsgId":"x.0.1.2"}`
	got, err = centrifugo{}.encode(c, "send_message", "m0.1.2", []byte(data))
	if err != nil || string(got) != `{"id":3,"publish":{"channel":"r-42","data":`+data+`}}` {
		t.Fatalf("send: %s %v", got, err)
	}
	if _, err := (centrifugo{}).encode(c, "ping", "p5", nil); err == nil {
		t.Fatal("ping has no Centrifugo command, but was encoded")
	}
	if _, err := (centrifugo{}).encode(c, "send_message", "m0.1.3", []byte(`{"content":"no room"}`)); err == nil {
		t.Fatal("a send without roomId was encoded")
	}
	if ref, ok := c.acks.take(1); !ok || ref != "m0.1.2" {
		t.Fatalf("command id 3 maps to %q %v, want m0.1.2", ref, ok)
	}
}

func TestCentrifugoDecode(t *testing.T) {
	t.Parallel()
	c := &conn{}
	c.acks.add("j0")     // id 2
	c.acks.add("m0.0.1") // id 3
	c.acks.add("m0.0.2") // id 4
	for _, tc := range []struct {
		name, raw, event, ref, data string
		ok                          bool
	}{
		// The shapes of Centrifugo v6's JSON protocol replies and pushes.
		{"publication", `{"push":{"channel":"40","pub":{"data":{"roomId":"40","clientMsgId":"r.0.0.1"},"offset":17}}}`, "message", "", `{"roomId":"40","clientMsgId":"r.0.0.1","seq":17}`, true},
		{"publication without offset", `{"push":{"channel":"40","pub":{"data":{"roomId":"40"}}}}`, "message", "", `{"roomId":"40","seq":0}`, true},
		{"subscribe reply", `{"id":2,"subscribe":{"recoverable":true,"epoch":"abc","offset":9,"positioned":true}}`, "ack", "j0", `{"recoverable":true,"epoch":"abc","offset":9,"positioned":true,"lastSeq":9}`, true},
		{"publish reply", `{"id":3,"publish":{}}`, "ack", "m0.0.1", `{}`, true},
		{"error reply", `{"id":4,"error":{"code":103,"message":"permission denied"}}`, "error", "m0.0.2", `{"code":"CENTRIFUGO_103","message":"permission denied"}`, true},
		{"answered twice", `{"id":3,"publish":{}}`, "", "", "", false},
		{"unknown id", `{"id":99,"publish":{}}`, "", "", "", false},
		{"join push", `{"push":{"channel":"40","join":{"info":{"client":"x"}}}}`, "", "", "", true},
		{"non-object data", `{"push":{"channel":"40","pub":{"data":"text"}}}`, "", "", "", false},
		{"corrupt", `{"push":`, "", "", "", false},
		{"not an object", `[1]`, "", "", "", false},
	} {
		in, ok := centrifugo{}.decode(c, []byte(tc.raw))
		if ok != tc.ok || in.event != tc.event || string(in.ref) != tc.ref {
			t.Errorf("%s: got %q %q ok=%v, want %q %q ok=%v", tc.name, in.event, in.ref, ok, tc.event, tc.ref, tc.ok)
			continue
		}
		if tc.data != "" && (in.data == nil || in.data.String() != tc.data) {
			t.Errorf("%s: data %v, want %s", tc.name, in.data, tc.data)
		}
	}
}

// TestCentrifugoAccounting runs Centrifugo frames through handle: several
// messages in one frame, publications found by their bench metadata with
// the offset as seq.
func TestCentrifugoAccounting(t *testing.T) {
	t.Parallel()
	r, cs, st := fakeRun(t, 1, 2, []int{2})
	r.tr, r.p.Protocol = centrifugo{}, ProtocolCentrifugo
	for _, c := range cs {
		if _, err := r.tr.encode(c, "join_room", "j0", []byte(`{"roomId":"40"}`)); err != nil {
			t.Fatal(err)
		}
		c.handle([]byte(`{"id":2,"subscribe":{"offset":4}}`))
	}
	if got := r.joined[0].Load(); got != 2 {
		t.Fatalf("joined %d, want 2", got)
	}
	sent := time.Now().Add(-time.Millisecond)
	for n := range 2 {
		rec := st.rec(0, n)
		rec.recipients.Store(2)
		rec.sentAt.Store(sent.UnixNano())
		st.sent.Add(1)
		if _, err := r.tr.encode(cs[0], "send_message", "m0.0."+strconv.Itoa(n), []byte(`{"roomId":"40"}`)); err != nil {
			t.Fatal(err)
		}
	}
	pub := func(n, off int) string {
		return `{"push":{"channel":"40","pub":{"data":{"roomId":"40","content":"x","metadata":{"bench":{"r":"run1","p":0,"s":0,"n":` +
			strconv.Itoa(n) + `,"t":` + strconv.FormatInt(sent.UnixNano(), 10) + `}}},"offset":` + strconv.Itoa(off) + `}}}`
	}
	// Both publish replies and both publications in one frame for the
	// sender; the other connection gets the publications, one twice.
	cs[0].handle([]byte(`{"id":3,"publish":{}}` + "\n" + `{"id":4,"publish":{}}` + "\n" + pub(0, 5) + "\n" + pub(1, 6) + "\n"))
	cs[1].handle([]byte(pub(0, 5)))
	cs[1].handle([]byte(pub(1, 6) + "\n" + pub(1, 6)))
	a := st.account()
	if a.Acked != 2 || a.Delivered != 4 || a.Lost != 0 || a.Duplicates != 1 || a.Gaps != 0 {
		t.Fatalf("accounting %+v, want 2 acked, 4 delivered, 0 lost, 1 duplicate", a)
	}
	if n := st.deliver.Total().Count; n != 4 {
		t.Fatalf("%d delivery latencies, want 4", n)
	}
	if n := st.ack.Total().Count; n != 2 {
		t.Fatalf("%d ack latencies, want 2", n)
	}
	if n := r.undecodable.Load(); n != 0 {
		t.Fatalf("%d undecodable frames, want 0", n)
	}
}

// centrifugoServer answers the connect command (after a ping that must be
// answered with {}), or refuses it.
func centrifugoServer(t *testing.T, refuse bool, pong *atomic.Bool) string {
	t.Helper()
	up := websocket.Upgrader{}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		ws, err := up.Upgrade(w, req, nil)
		if err != nil {
			return
		}
		defer ws.Close()
		_, msg, err := ws.ReadMessage()
		if err != nil || !strings.Contains(string(msg), `"connect":`) {
			return
		}
		if refuse {
			_ = ws.WriteMessage(websocket.TextMessage, []byte(`{"id":1,"error":{"code":101,"message":"unauthorized"}}`))
			return
		}
		_ = ws.WriteMessage(websocket.TextMessage, []byte("{}\n"+`{"id":1,"connect":{"client":"c1","version":"6.9.1","ping":25,"pong":true}}`))
		if _, msg, err = ws.ReadMessage(); err == nil && string(msg) == "{}" {
			pong.Store(true)
		}
		_, _, _ = ws.ReadMessage() // until the client closes
	}))
	t.Cleanup(srv.Close)
	return "ws" + strings.TrimPrefix(srv.URL, "http") + "/connection/websocket"
}

func centrifugoRunner(t *testing.T, gw string) *runner {
	t.Helper()
	r := &runner{
		p:  Params{Gateways: []string{gw}, Protocol: ProtocolCentrifugo},
		tr: centrifugo{}, accs: []account{{Token: "tok"}},
		connectLat: NewLatency(1), gwConns: make([]atomic.Int64, 1),
	}
	if err := r.setupDialer(); err != nil {
		t.Fatal(err)
	}
	return r
}

func TestCentrifugoHandshake(t *testing.T) {
	t.Parallel()
	var pong atomic.Bool
	r := centrifugoRunner(t, centrifugoServer(t, false, &pong))
	c, err := r.dial(t.Context(), 0, 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	c.close()
	if !pong.Load() {
		t.Fatal("the ping sent before the connect reply was not answered with {}")
	}
	if n := r.connectLat.Total().Count; n != 1 {
		t.Fatalf("%d connect latencies, want 1", n)
	}
}

func TestCentrifugoConnectError(t *testing.T) {
	t.Parallel()
	r := centrifugoRunner(t, centrifugoServer(t, true, new(atomic.Bool)))
	if _, err := r.dial(t.Context(), 0, 0, 0); err == nil || !strings.Contains(err.Error(), "CONNECT_ERROR 101 unauthorized") {
		t.Fatalf("got %v, want CONNECT_ERROR 101 unauthorized", err)
	}
	if got := r.connFail.Snapshot(); got["CONNECT_ERROR 101 unauthorized"] != 1 {
		t.Fatalf("connect failures %v", got)
	}
}
