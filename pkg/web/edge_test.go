package web

import (
	"bytes"
	"context"
	"io"
	"net/http/httptest"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/gofiber/fiber/v2"

	"relay/pkg/chat"
	"relay/pkg/config"
	"relay/pkg/telemetry"
	"relay/pkg/testenv"
)

// A compressed body is refused before any handler reads it: a 1 MiB body
// of zeros gzipped twice is a few hundred bytes that c.Body() would inflate.
func TestCompressedBodiesAreRefused(t *testing.T) {
	app := newApp(t, nil)
	inflated := false
	app.Post("/read", func(c *fiber.Ctx) error {
		inflated = true
		return c.SendString(string(c.Body()[:1]))
	})
	bomb := testenv.Gzip(t, testenv.Gzip(t, make([]byte, 1<<20)))
	for _, enc := range []string{"gzip", "gzip, gzip", "deflate", "br", "GZIP", "x-unknown"} {
		req := httptest.NewRequest("POST", "/read", bytes.NewReader(bomb))
		req.Header.Set("Content-Encoding", enc)
		resp, err := app.Test(req, -1)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != 415 || !strings.Contains(string(b), string(chat.CodeUnsupportedMediaType)) {
			t.Fatalf("Content-Encoding %q: %d %s, want 415 %s", enc, resp.StatusCode, b, chat.CodeUnsupportedMediaType)
		}
	}
	if inflated {
		t.Fatal("a handler read a compressed body")
	}
	req := httptest.NewRequest("POST", "/read", strings.NewReader("x"))
	req.Header.Set("Content-Encoding", "identity")
	if resp, err := app.Test(req, -1); err != nil || resp.StatusCode != 200 {
		t.Fatalf("identity: %v %v", resp, err)
	}
}

func TestSecurityHeadersOnEveryResponse(t *testing.T) {
	app := newApp(t, nil)
	for _, path := range []string{"/health", "/nowhere", "/chat-error"} {
		resp, err := app.Test(httptest.NewRequest("GET", path, nil), -1)
		if err != nil {
			t.Fatal(err)
		}
		if got := resp.Header.Get("X-Content-Type-Options"); got != "nosniff" {
			t.Errorf("%s: X-Content-Type-Options %q", path, got)
		}
		if got := resp.Header.Get("Content-Security-Policy"); got != ContentSecurityPolicy {
			t.Errorf("%s: CSP %q", path, got)
		}
		if got := resp.Header.Get("X-Frame-Options"); got != "DENY" {
			t.Errorf("%s: X-Frame-Options %q", path, got)
		}
	}
}

func corsApp(t *testing.T, origins []string) *fiber.App {
	t.Helper()
	tel, err := telemetry.Setup(context.Background(), "test", config.Telemetry{LogLevel: "error", LogFormat: "json"})
	if err != nil {
		t.Fatal(err)
	}
	app := NewApp(Options{Service: "test", Telemetry: tel, AllowedOrigins: origins})
	app.Post("/api/x", func(c *fiber.Ctx) error { return c.SendString("ok") })
	return app
}

func preflight(t *testing.T, app *fiber.App, origin string) string {
	t.Helper()
	req := httptest.NewRequest("OPTIONS", "/api/x", nil)
	req.Header.Set("Origin", origin)
	req.Header.Set("Access-Control-Request-Method", "POST")
	req.Header.Set("Access-Control-Request-Headers", "authorization,content-type")
	resp, err := app.Test(req, -1)
	if err != nil {
		t.Fatal(err)
	}
	return resp.Header.Get("Access-Control-Allow-Origin")
}

func TestCORSIsSameOriginUnlessConfigured(t *testing.T) {
	if got := preflight(t, corsApp(t, nil), "https://evil.example"); got != "" {
		t.Fatalf("default: Access-Control-Allow-Origin %q, want none", got)
	}
	origins, err := ParseOrigins([]string{"https://Chat.Example.com", " http://localhost:5173 "})
	if err != nil {
		t.Fatal(err)
	}
	app := corsApp(t, origins)
	if got := preflight(t, app, "https://chat.example.com"); got != "https://chat.example.com" {
		t.Fatalf("listed origin: %q", got)
	}
	if got := preflight(t, app, "https://evil.example"); got != "" {
		t.Fatalf("unlisted origin: %q", got)
	}
	for _, bad := range []string{"*", "https://*.example.com", "chat.example.com", "https://a.example/path", "ftp://a.example"} {
		if _, err := ParseOrigins([]string{bad}); err == nil {
			t.Errorf("ParseOrigins(%q) accepted", bad)
		}
	}
}

func TestOriginAllowed(t *testing.T) {
	allowed := []string{"https://app.example.com"}
	for _, c := range []struct {
		origin, host string
		want         bool
	}{
		{"", "chat.example.com", true}, // not a browser
		{"https://chat.example.com", "chat.example.com", true},
		{"http://localhost:3000", "localhost:3000", true},
		{"https://app.example.com", "chat.example.com", true},
		{"https://APP.example.com", "chat.example.com", true},
		{"https://evil.example", "chat.example.com", false},
		{"https://chat.example.com.evil.example", "chat.example.com", false},
		{"null", "chat.example.com", false},
	} {
		if got := OriginAllowed(c.origin, c.host, allowed); got != c.want {
			t.Errorf("OriginAllowed(%q, %q) = %v", c.origin, c.host, got)
		}
	}
}

func TestClientAddr(t *testing.T) {
	trusted, err := ParsePrefixes([]string{"10.0.0.0/8", "127.0.0.1"})
	if err != nil {
		t.Fatal(err)
	}
	a := netip.MustParseAddr
	for _, c := range []struct {
		peer, xff, want string
	}{
		{"203.0.113.9", "1.2.3.4", "203.0.113.9"},              // untrusted peer: its header is ignored
		{"10.1.1.1", "198.51.100.7", "198.51.100.7"},           // behind the proxy
		{"10.1.1.1", "6.6.6.6, 198.51.100.7", "198.51.100.7"},  // a client-sent entry is not believed
		{"10.1.1.1", "198.51.100.7, 10.2.2.2", "198.51.100.7"}, // two trusted hops
		{"10.1.1.1", "garbage, 10.2.2.2", "10.2.2.2"},
		{"10.1.1.1", "", "10.1.1.1"},
		{"::ffff:10.1.1.1", "198.51.100.7", "198.51.100.7"},
	} {
		if got := ClientAddr(a(c.peer), c.xff, trusted); got.String() != c.want {
			t.Errorf("ClientAddr(%s, %q) = %s, want %s", c.peer, c.xff, got, c.want)
		}
	}
	if _, err := ParsePrefixes([]string{"nope"}); err == nil {
		t.Error("ParsePrefixes accepted garbage")
	}
}

func TestRateLimitedCarriesRetryAfter(t *testing.T) {
	app := newApp(t, nil)
	app.Get("/limited", func(*fiber.Ctx) error { return chat.RateLimited(1500*time.Millisecond, "slow down") })
	resp, err := app.Test(httptest.NewRequest("GET", "/limited", nil), -1)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 429 || resp.Header.Get("Retry-After") != "2" || !strings.Contains(string(b), `"retryAfterMs":1500`) {
		t.Fatalf("%d Retry-After %q %s", resp.StatusCode, resp.Header.Get("Retry-After"), b)
	}
}
