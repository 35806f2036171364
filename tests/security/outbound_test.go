package security

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/fasthttp/websocket"

	"relay/pkg/protocol"
	"relay/tests/e2e/stack"
)

// metric reads one unlabelled sample from a service's /metrics.
func metric(t *testing.T, base, name string) float64 {
	t.Helper()
	res, err := http.Get(base + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	sc := bufio.NewScanner(res.Body)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), name+" "); ok {
			f, err := strconv.ParseFloat(v, 64)
			if err != nil {
				t.Fatal(err)
			}
			return f
		}
	}
	t.Fatalf("no %s in %s/metrics", name, base)
	return 0
}

// A client that asks for the same replay over and over and never reads
// cannot make the gateway queue without bound: past the connection's
// outbound byte budget it is closed with 4000 (slow consumer, resumable),
// and the gateway's heap stays flat. Its ping and binary frames count
// against its frame rate: a ping flood gets at most a burst of pongs.
func TestOutboundBudgetAndFrameRate(t *testing.T) {
	s := newStack(t, stack.Options{ServiceEnv: map[string]map[string]string{"gateway": {
		"WS_OUTBOUND_BUDGET_BYTES": strconv.Itoa(256 << 10), "WS_RATE": "20", "WS_BURST": "40",
	}}})
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	api := s.API()
	ada, err := api.Register(ctx, "ada", "correct horse battery")
	if err != nil {
		t.Fatal(err)
	}
	room, err := api.CreateRoom(ctx, ada, "busy", "group")
	if err != nil {
		t.Fatal(err)
	}
	c, err := stack.Dial(ctx, s.GatewayURL(0), ada.Token)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Join(ctx, room.ID, nil); err != nil {
		t.Fatal(err)
	}
	body := strings.Repeat("x", 3000)
	for i := range 120 { // ~400 KB of history, paced under the send rate
		if _, err := c.Send(ctx, room.ID, fmt.Sprint(i, body), ""); err != nil {
			t.Fatal(err)
		}
		time.Sleep(55 * time.Millisecond)
	}
	c.Close()
	gw := s.HTTPURL(stack.GatewayName(0))
	heapBefore := metric(t, gw, "go_memstats_heap_inuse_bytes")
	slowBefore := metric(t, gw, "gateway_slow_consumer_disconnects_total")

	u, _ := url.Parse(s.GatewayURL(0))
	u.RawQuery = "token=" + url.QueryEscape(ada.Token)
	d := websocket.Dialer{HandshakeTimeout: 10 * time.Second, ReadBufferSize: 1024}
	ws, _, err := d.DialContext(ctx, u.String(), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer ws.Close()
	// Replays of ~400 KB each, never read: the budget is 256 KiB.
	for i := range 30 {
		frame := fmt.Sprintf(`{"event":"join_room","ref":"r%d","data":{"roomId":%q,"lastSeq":-1}}`, i, room.ID)
		_ = ws.SetWriteDeadline(time.Now().Add(5 * time.Second))
		if err := ws.WriteMessage(websocket.TextMessage, []byte(frame)); err != nil {
			break // the gateway closed us
		}
		time.Sleep(60 * time.Millisecond)
	}
	var closeErr *websocket.CloseError
	_ = ws.SetReadDeadline(time.Now().Add(30 * time.Second))
	for {
		if _, _, err = ws.ReadMessage(); err != nil {
			break
		}
	}
	if !errors.As(err, &closeErr) || closeErr.Code != protocol.CloseSlowConsumer {
		t.Fatalf("a client replaying without reading ended with %v, want close %d", err, protocol.CloseSlowConsumer)
	}
	if n := metric(t, gw, "gateway_slow_consumer_disconnects_total"); n != slowBefore+1 {
		t.Fatalf("slow consumer disconnects %v -> %v", slowBefore, n)
	}
	if heapAfter := metric(t, gw, "go_memstats_heap_inuse_bytes"); heapAfter > heapBefore+8<<20 {
		t.Fatalf("gateway heap grew from %.0f to %.0f bytes", heapBefore, heapAfter)
	}

	// A ping flood: 200 pings, at most the burst (40) plus the rate's refill
	// answered.
	ws2, _, err := d.DialContext(ctx, u.String(), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer ws2.Close()
	pongs := 0
	ws2.SetPongHandler(func(string) error { pongs++; return nil })
	start := time.Now()
	for range 200 {
		if err := ws2.WriteControl(websocket.PingMessage, nil, time.Now().Add(5*time.Second)); err != nil {
			t.Fatal(err)
		}
	}
	_ = ws2.SetReadDeadline(time.Now().Add(2 * time.Second))
	for {
		if _, _, err := ws2.ReadMessage(); err != nil {
			break
		}
	}
	allowed := 40 + int(20*time.Since(start).Seconds()) + 1
	if pongs == 0 || pongs > allowed {
		t.Fatalf("%d pongs to 200 pings, want between 1 and %d", pongs, allowed)
	}
}
