package web

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gofiber/fiber/v2"

	"relay/pkg/chat"
	"relay/pkg/config"
	"relay/pkg/telemetry"
)

func newApp(t *testing.T, checks map[string]Check) *fiber.App {
	t.Helper()
	tel, err := telemetry.Setup(context.Background(), "test", config.Telemetry{LogLevel: "error", LogFormat: "json"})
	if err != nil {
		t.Fatal(err)
	}
	app := NewApp(Options{Service: "test", Telemetry: tel, Checks: checks, BodyLimit: 16})
	app.Get("/chat-error", func(*fiber.Ctx) error { return chat.Errorf(chat.CodeForbidden, "not yours") })
	app.Get("/plain-error", func(*fiber.Ctx) error { return errors.New("secret detail") })
	app.Get("/panic", func(*fiber.Ctx) error { panic("boom") })
	app.Post("/echo", func(c *fiber.Ctx) error { return c.Send(c.Body()) })
	return app
}

func do(t *testing.T, app *fiber.App, method, path, body string) (int, ErrorBody, string) {
	t.Helper()
	req := httptest.NewRequest(method, path, strings.NewReader(body))
	resp, err := app.Test(req, -1)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	var eb ErrorBody
	_ = json.Unmarshal(b, &eb)
	return resp.StatusCode, eb, string(b)
}

func TestErrorsBecomeCodedJSON(t *testing.T) {
	app := newApp(t, nil)
	cases := []struct {
		path, method, body string
		status             int
		code               chat.Code
	}{
		{"/chat-error", "GET", "", 403, chat.CodeForbidden},
		{"/plain-error", "GET", "", 500, chat.CodeInternal},
		{"/panic", "GET", "", 500, chat.CodeInternal},
		{"/nowhere", "GET", "", 404, chat.CodeNotFound},
	}
	for _, c := range cases {
		status, eb, raw := do(t, app, c.method, c.path, c.body)
		if status != c.status || eb.Error.Code != c.code {
			t.Errorf("%s %s: %d %s, want %d %s (%s)", c.method, c.path, status, eb.Error.Code, c.status, c.code, raw)
		}
		if strings.Contains(raw, "secret detail") {
			t.Errorf("%s leaks the internal error: %s", c.path, raw)
		}
	}
}

// An oversized body is read and refused with 413 TOO_LARGE, and the
// connection stays usable: a client still writing its body gets the answer
// rather than a reset.
func TestBodyLimitOverTheWire(t *testing.T) {
	app := newApp(t, nil)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- ServeListener(ctx, app, ln, time.Second) }()
	defer func() { cancel(); <-done }()
	conn, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
	br := bufio.NewReader(conn)
	post := func(body string) (*http.Response, string) {
		t.Helper()
		req, _ := http.NewRequest("POST", "http://"+ln.Addr().String()+"/echo", strings.NewReader(body))
		if err := req.Write(conn); err != nil {
			t.Fatal(err)
		}
		resp, err := http.ReadResponse(br, req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		return resp, string(b)
	}
	resp, body := post(strings.Repeat("x", 64<<10))
	var eb ErrorBody
	_ = json.Unmarshal([]byte(body), &eb)
	if resp.StatusCode != 413 || eb.Error.Code != chat.CodeTooLarge || resp.Close {
		t.Fatalf("oversized body: %d %+v (close %v)", resp.StatusCode, eb, resp.Close)
	}
	if resp, body = post("small"); resp.StatusCode != 200 || body != "small" {
		t.Fatalf("same connection after the 413: %d %q", resp.StatusCode, body)
	}
}

func TestHealthReadyMetrics(t *testing.T) {
	failing := false
	app := newApp(t, map[string]Check{
		"db": func(context.Context) error {
			if failing {
				return errors.New("down")
			}
			return nil
		},
	})
	if status, _, _ := do(t, app, "GET", "/health", ""); status != 200 {
		t.Fatalf("health %d", status)
	}
	if status, _, raw := do(t, app, "GET", "/ready", ""); status != 200 || !strings.Contains(raw, `"db":"ok"`) {
		t.Fatalf("ready %d %s", status, raw)
	}
	failing = true
	if status, _, raw := do(t, app, "GET", "/ready", ""); status != 503 || !strings.Contains(raw, "down") {
		t.Fatalf("ready while failing %d %s", status, raw)
	}
	do(t, app, "GET", "/chat-error", "")
	if status, _, raw := do(t, app, "GET", "/metrics", ""); status != 200 || !strings.Contains(raw, `http_requests_total{method="GET",route="/chat-error",status="403"} 1`) {
		t.Fatalf("metrics %d %s", status, raw)
	}
}

func TestPprofOnlyWhenAsked(t *testing.T) {
	off := newApp(t, nil)
	if status, _, _ := do(t, off, "GET", "/debug/pprof/", ""); status != 404 {
		t.Fatalf("pprof served without being asked: %d", status)
	}
	tel, err := telemetry.Setup(context.Background(), "test", config.Telemetry{LogLevel: "error", LogFormat: "json"})
	if err != nil {
		t.Fatal(err)
	}
	on := NewApp(Options{Service: "test", Telemetry: tel, Pprof: true})
	if status, _, _ := do(t, on, "GET", "/debug/pprof/", ""); status != 200 {
		t.Fatalf("pprof index: %d", status)
	}
}

// TestMetricsLabelsSurviveKeepAlive: fasthttp reuses a connection's request
// buffer, and Fiber's method string points into it, so a label stored
// without a copy changed with the next request on the connection
// (GET turned POS, and /metrics failed with duplicate series).
func TestMetricsLabelsSurviveKeepAlive(t *testing.T) {
	app := newApp(t, nil)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- ServeListener(ctx, app, ln, time.Second) }()
	defer func() { cancel(); <-done }()
	base := "http://" + ln.Addr().String()
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 1, MaxConnsPerHost: 1}}
	get := func(path string) (int, string) {
		t.Helper()
		resp, err := client.Get(base + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	for range 3 {
		get("/chat-error")
		resp, err := client.Post(base+"/echo", "text/plain", strings.NewReader("hi"))
		if err != nil {
			t.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		_ = resp.Body.Close()
	}
	status, raw := get("/metrics")
	if status != 200 || !strings.Contains(raw, `http_requests_total{method="GET",route="/chat-error",status="403"} 3`) ||
		!strings.Contains(raw, `http_requests_total{method="POST",route="/echo",status="200"} 3`) {
		t.Fatalf("metrics %d %s", status, raw)
	}
}

// With StreamBody, the chosen route reads its body as a stream of any
// size, while every other route still gets bounded, fully read bodies.
func TestStreamBody(t *testing.T) {
	tel, err := telemetry.Setup(context.Background(), "test", config.Telemetry{LogLevel: "error", LogFormat: "json"})
	if err != nil {
		t.Fatal(err)
	}
	app := NewApp(Options{Service: "test", Telemetry: tel, BodyLimit: 16,
		StreamBody: func(c *fiber.Ctx) bool { return c.Path() == "/stream" }})
	app.Post("/echo", func(c *fiber.Ctx) error { return c.Send(c.Body()) })
	app.Post("/stream", func(c *fiber.Ctx) error {
		n, err := io.Copy(io.Discard, c.Request().BodyStream())
		if err != nil {
			return err
		}
		return c.SendString(strconv.FormatInt(n, 10))
	})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- ServeListener(ctx, app, ln, time.Second) }()
	defer func() { cancel(); <-done }()
	post := func(path string, body io.Reader, size int64) (int, string) {
		t.Helper()
		req, _ := http.NewRequest("POST", "http://"+ln.Addr().String()+path, body)
		req.ContentLength = size // -1: chunked
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			// The server answered and closed before the client was done
			// writing: the client may only see the reset.
			return 0, err.Error()
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	if status, body := post("/echo", strings.NewReader("small"), 5); status != 200 || body != "small" {
		t.Fatalf("small body: %d %q", status, body)
	}
	if status, body := post("/echo", strings.NewReader(strings.Repeat("x", 17)), -1); status != 413 {
		t.Fatalf("chunked body over the limit: %d %q", status, body)
	}
	// Chunked and far over the read limit: refused without being read
	// whole (the client may see the 413 or, still writing, a reset).
	for _, size := range []int64{-1, 64 << 20} {
		sent := &countingReader{r: io.LimitReader(zeros{}, 64<<20)}
		if status, body := post("/echo", sent, size); status != 413 && status != 0 {
			t.Fatalf("large body (length %d): %d %q", size, status, body)
		}
		// Socket buffers hold a few MiB; had the server read on, the client
		// would have sent it all.
		if sent.n.Load() > 32<<20 {
			t.Fatalf("the server read %d bytes of a refused body", sent.n.Load())
		}
	}
	const big = 3 << 20
	if status, body := post("/stream", io.LimitReader(zeros{}, big), big); status != 200 || body != strconv.Itoa(big) {
		t.Fatalf("streamed body: %d %q", status, body)
	}
	if status, body := post("/stream", io.LimitReader(zeros{}, big), -1); status != 200 || body != strconv.Itoa(big) {
		t.Fatalf("streamed chunked body: %d %q", status, body)
	}
}

type countingReader struct {
	r io.Reader
	n atomic.Int64
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n.Add(int64(n))
	return n, err
}

type zeros struct{}

func (zeros) Read(p []byte) (int, error) {
	clear(p)
	return len(p), nil
}
