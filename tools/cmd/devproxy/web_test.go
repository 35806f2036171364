package main

import (
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// webFixture is a proxy serving a built app from a temp dir, beside fake
// api and gateway upstreams. An empty index leaves the app unbuilt.
func webFixture(t *testing.T, index string) *httptest.Server {
	t.Helper()
	dir := t.TempDir()
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(os.MkdirAll(filepath.Join(dir, "assets"), 0o755))
	if index != "" {
		must(os.WriteFile(filepath.Join(dir, "index.html"), []byte(index), 0o644))
	}
	must(os.WriteFile(filepath.Join(dir, "assets", "index-abc.js"), []byte("console.log(1)"), 0o644))
	api, gw := upstream(t, "api"), upstream(t, "gw0")
	p, err := NewProxy(Options{
		API:      mustURL(t, api.URL),
		Gateways: []*url.URL{mustURL(t, gw.URL)},
		Logger:   slog.New(slog.NewTextHandler(io.Discard, nil)),
		WebDir:   dir,
	})
	must(err)
	s := httptest.NewServer(p)
	t.Cleanup(s.Close)
	return s
}

func TestWebAppRoutes(t *testing.T) {
	const page = "<!doctype html><title>app</title>"
	s := webFixture(t, page)
	cases := []struct {
		path, want string
		status     int
	}{
		{"/", page, 200},
		{"/index.html", page, 200},
		{"/rooms/42", page, 200}, // an app route: the page, so deep links work
		{"/assets/index-abc.js", "console.log(1)", 200},
		{"/assets/missing.js", "404 page not found\n", 404},
		{"/../../etc/passwd", "invalid URL path", 400}, // never a file outside the app
		{"/api/rooms", "api /api/rooms", 200},
		{"/ready", "api /ready", 200},
		{"/ws", "gw0", 200},
	}
	for _, c := range cases {
		body, res := get(t, s.URL, c.path, "")
		if res.StatusCode != c.status || !strings.HasPrefix(body, c.want) {
			t.Errorf("GET %s = %d %q, want %d %q", c.path, res.StatusCode, body, c.status, c.want)
		}
		if strings.HasPrefix(c.path, "/api") || c.path == "/ws" || c.path == "/ready" {
			continue
		}
		if got := res.Header.Get("X-Content-Type-Options"); got != "nosniff" {
			t.Errorf("GET %s: X-Content-Type-Options %q", c.path, got)
		}
		if got := res.Header.Get("Content-Security-Policy"); got != ContentSecurityPolicy {
			t.Errorf("GET %s: Content-Security-Policy %q", c.path, got)
		}
	}
	_, res := get(t, s.URL, "/assets/index-abc.js", "")
	if got := res.Header.Get("Content-Type"); !strings.HasPrefix(got, "text/javascript") {
		t.Errorf("script served as %q", got)
	}
	if got := res.Header.Get("Cache-Control"); !strings.Contains(got, "immutable") {
		t.Errorf("hashed asset Cache-Control %q", got)
	}
	_, res = get(t, s.URL, "/", "")
	if got := res.Header.Get("Cache-Control"); got != "no-cache" {
		t.Errorf("page Cache-Control %q", got)
	}
	req, _ := http.NewRequest(http.MethodPost, s.URL+"/", strings.NewReader("x"))
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != http.StatusMethodNotAllowed {
		t.Errorf("POST / = %d, want 405", res.StatusCode)
	}
}

func TestWebAppNotBuilt(t *testing.T) {
	s := webFixture(t, "")
	body, res := get(t, s.URL, "/", "")
	if res.StatusCode != 200 || body != "api /" {
		t.Errorf("GET / without a build = %d %q, want the api", res.StatusCode, body)
	}
}

func TestCSPIsStrict(t *testing.T) {
	for _, bad := range []string{"'unsafe-inline'", "'unsafe-eval'", "*"} {
		if strings.Contains(ContentSecurityPolicy, bad) {
			t.Errorf("CSP allows %s", bad)
		}
	}
}
