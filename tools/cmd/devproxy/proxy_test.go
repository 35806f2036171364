package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"
)

// upstream is an httptest server that names itself in the body and echoes
// raw bytes after a WebSocket-style upgrade.
func upstream(t *testing.T, name string) *httptest.Server {
	t.Helper()
	s := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.EqualFold(r.Header.Get("Upgrade"), "websocket") {
			hj, ok := w.(http.Hijacker)
			if !ok {
				http.Error(w, "no hijack", http.StatusInternalServerError)
				return
			}
			conn, brw, err := hj.Hijack()
			if err != nil {
				return
			}
			defer conn.Close()
			fmt.Fprintf(brw, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nX-Served-By: %s\r\n\r\n", name)
			brw.Flush()
			buf := make([]byte, 64)
			n, _ := brw.Read(buf)
			conn.Write([]byte(name + ":" + string(buf[:n])))
			return
		}
		w.Header().Set("X-Host-Seen", r.Host)
		fmt.Fprintf(w, "%s %s", name, r.URL.Path)
	}))
	t.Cleanup(s.Close)
	return s
}

func mustURL(t *testing.T, s string) *url.URL {
	t.Helper()
	u, err := parseUpstream(s)
	if err != nil {
		t.Fatal(err)
	}
	return u
}

type fixture struct {
	proxy *httptest.Server
	api   *httptest.Server
	gws   []*httptest.Server
}

func newFixture(t *testing.T, nGateways int) *fixture {
	t.Helper()
	f := &fixture{api: upstream(t, "api")}
	var gwURLs []*url.URL
	for i := range nGateways {
		g := upstream(t, fmt.Sprintf("gw%d", i))
		f.gws = append(f.gws, g)
		gwURLs = append(gwURLs, mustURL(t, g.URL))
	}
	p, err := NewProxy(Options{
		API:      mustURL(t, f.api.URL),
		Gateways: gwURLs,
		Logger:   slog.New(slog.NewTextHandler(io.Discard, nil)),
		ProbeTTL: time.Nanosecond, // re-probe every request so dead-upstream tests are immediate
	})
	if err != nil {
		t.Fatal(err)
	}
	f.proxy = httptest.NewServer(p)
	t.Cleanup(f.proxy.Close)
	return f
}

// get returns body and response; cookie may be empty.
func get(t *testing.T, base, path, cookie string) (string, *http.Response) {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, base+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	if cookie != "" {
		req.AddCookie(&http.Cookie{Name: StickyCookie, Value: cookie})
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	if err != nil {
		t.Fatal(err)
	}
	return string(b), res
}

func stickyFrom(res *http.Response) string {
	for _, c := range res.Cookies() {
		if c.Name == StickyCookie {
			return c.Value
		}
	}
	return ""
}

func TestRouting(t *testing.T) {
	f := newFixture(t, 2)
	cases := []struct{ path, wantPrefix string }{
		{"/api", "api /api"},
		{"/api/v1/rooms", "api /api/v1/rooms"},
		{"/", "api /"},
		{"/apix", "api /apix"},
		{"/ws", "gw"},
		{"/ws/chat", "gw"},
		{"/socket.io/", "gw"},
		{"/socket.io/?EIO=4&transport=polling", "gw"},
		{"/wsx", "api /wsx"},
	}
	for _, c := range cases {
		body, res := get(t, f.proxy.URL, c.path, "")
		if res.StatusCode != http.StatusOK || !strings.HasPrefix(body, c.wantPrefix) {
			t.Errorf("GET %s = %d %q, want prefix %q", c.path, res.StatusCode, body, c.wantPrefix)
		}
		if res.Header.Get(UpstreamHeader) == "" {
			t.Errorf("GET %s: missing %s", c.path, UpstreamHeader)
		}
		if stickyFrom(res) == "" {
			t.Errorf("GET %s without cookie did not set %s", c.path, StickyCookie)
		}
	}
	// The browser-facing Host is preserved for upstream origin checks.
	_, res := get(t, f.proxy.URL, "/api", "")
	if want := strings.TrimPrefix(f.proxy.URL, "http://"); res.Header.Get("X-Host-Seen") != want {
		t.Errorf("upstream saw Host %q, want %q", res.Header.Get("X-Host-Seen"), want)
	}
	// An existing cookie is not replaced.
	_, res = get(t, f.proxy.URL, "/ws", "abc")
	if stickyFrom(res) != "" {
		t.Error("cookie re-set although the client sent one")
	}
}

func TestHealth(t *testing.T) {
	f := newFixture(t, 1)
	f.api.Close() // health must not depend on upstreams
	body, res := get(t, f.proxy.URL, "/health", "")
	if res.StatusCode != http.StatusOK || strings.TrimSpace(body) != `{"status":"ok"}` || res.Header.Get("Content-Type") != "application/json" {
		t.Fatalf("health = %d %q %q", res.StatusCode, body, res.Header.Get("Content-Type"))
	}
	body, res = get(t, f.proxy.URL, "/api", "")
	if res.StatusCode != http.StatusBadGateway {
		t.Fatalf("dead api = %d %q, want 502", res.StatusCode, body)
	}
}

func TestStickiness(t *testing.T) {
	f := newFixture(t, 3)
	// The same cookie always reaches the same gateway, and many cookies
	// spread over all gateways.
	used := map[string]int{}
	for i := range 60 {
		cookie := fmt.Sprintf("client-%d", i)
		first, _ := get(t, f.proxy.URL, "/ws", cookie)
		for range 3 {
			again, _ := get(t, f.proxy.URL, "/socket.io/", cookie)
			if gwName(again) != gwName(first) {
				t.Fatalf("cookie %s moved from %q to %q", cookie, first, again)
			}
		}
		used[gwName(first)]++
	}
	if len(used) != 3 {
		t.Fatalf("60 clients used gateways %v, want all 3", used)
	}

	// Without a cookie the client address decides (stable), and the cookie
	// handed out keeps the client on that same gateway.
	body, res := get(t, f.proxy.URL, "/ws", "")
	for range 5 {
		again, _ := get(t, f.proxy.URL, "/ws", "")
		if gwName(again) != gwName(body) {
			t.Fatalf("address stickiness broke: %q then %q", body, again)
		}
	}
	token := stickyFrom(res)
	if token == "" {
		t.Fatal("no cookie set on gateway response")
	}
	withCookie, _ := get(t, f.proxy.URL, "/ws", token)
	if gwName(withCookie) != gwName(body) {
		t.Fatalf("issued cookie moved client from %q to %q", body, withCookie)
	}
}

func TestDeadGatewaySkipped(t *testing.T) {
	f := newFixture(t, 2)
	// Find a cookie pinned to gw0, then kill gw0.
	var cookie string
	for i := range 100 {
		c := fmt.Sprintf("c%d", i)
		if b, _ := get(t, f.proxy.URL, "/ws", c); gwName(b) == "gw0" {
			cookie = c
			break
		}
	}
	if cookie == "" {
		t.Fatal("no cookie mapped to gw0")
	}
	f.gws[0].Close()
	body, res := get(t, f.proxy.URL, "/ws", cookie)
	if res.StatusCode != http.StatusOK || gwName(body) != "gw1" {
		t.Fatalf("with gw0 down got %d %q, want gw1", res.StatusCode, body)
	}
	f.gws[1].Close()
	_, res = get(t, f.proxy.URL, "/ws", cookie)
	if res.StatusCode != http.StatusBadGateway {
		t.Fatalf("all gateways down = %d, want 502", res.StatusCode)
	}
}

func TestWebSocketUpgradeProxied(t *testing.T) {
	f := newFixture(t, 2)
	conn, err := net.Dial("tcp", strings.TrimPrefix(f.proxy.URL, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(5 * time.Second))
	fmt.Fprintf(conn, "GET /ws HTTP/1.1\r\nHost: localhost:3000\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nCookie: %s=abc\r\n\r\n", StickyCookie)
	br := bufio.NewReader(conn)
	res, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	if res.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("upgrade status = %d", res.StatusCode)
	}
	served := res.Header.Get("X-Served-By")
	if _, err := conn.Write([]byte("hello")); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 64)
	n, err := br.Read(buf)
	if err != nil {
		t.Fatal(err)
	}
	if got := string(buf[:n]); got != served+":hello" {
		t.Fatalf("echo = %q, want %q", got, served+":hello")
	}
	// Same cookie, plain request: same gateway as the upgrade went to.
	if body, _ := get(t, f.proxy.URL, "/ws", "abc"); gwName(body) != served {
		t.Fatalf("upgrade went to %s but plain request to %q", served, body)
	}
}

func TestRunGracefulShutdown(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	env := map[string]string{"DEVPROXY_ADDR": addr, "GATEWAY_UPSTREAMS": "http://127.0.0.1:1, http://127.0.0.1:2"}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, nil, func(k string) string { return env[k] }, io.Discard, slog.New(slog.NewTextHandler(io.Discard, nil)))
	}()
	deadline := time.Now().Add(5 * time.Second)
	for {
		res, err := http.Get("http://" + addr + "/health")
		if err == nil {
			res.Body.Close()
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("devproxy never became healthy: %v", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("run returned %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("run did not return after cancel")
	}
}

func TestParseUpstreams(t *testing.T) {
	ups, err := parseUpstreams(" http://127.0.0.1:8090 ,http://localhost,")
	if err != nil || len(ups) != 2 || ups[1].Host != "localhost:80" {
		t.Fatalf("parseUpstreams = %v, %v", ups, err)
	}
	for _, bad := range []string{"", "127.0.0.1:8090", "ftp://x:1"} {
		if _, err := parseUpstreams(bad); err == nil {
			t.Errorf("parseUpstreams(%q) succeeded", bad)
		}
	}
}

func gwName(body string) string {
	name, _, _ := strings.Cut(body, " ")
	return name
}
