package httpapi_test

import (
	"bytes"
	"context"
	"encoding/json"
	"regexp"
	"strings"
	"testing"
	"time"

	"relay/pkg/chat"
	"relay/pkg/config"
	"relay/pkg/telemetry"
	"relay/services/api/httpapi"
)

// TestOpenAPIMatchesRoutes holds openapi.json and the Fiber routes together:
// every registered route is documented and every documented one exists.
func TestOpenAPIMatchesRoutes(t *testing.T) {
	e := newAPI(t, envOptions{})
	var doc struct {
		OpenAPI string                    `json:"openapi"`
		Paths   map[string]map[string]any `json:"paths"`
	}
	if err := json.Unmarshal(httpapi.OpenAPIDocument(), &doc); err != nil {
		t.Fatalf("openapi.json: %v", err)
	}
	if !strings.HasPrefix(doc.OpenAPI, "3.1") {
		t.Fatalf("openapi version %q, want 3.1.x", doc.OpenAPI)
	}
	param := regexp.MustCompile(`:(\w+)`)
	registered := map[string]bool{}
	for _, r := range e.svc.App().GetRoutes(true) {
		if r.Method == "HEAD" { // Fiber adds HEAD to every GET
			continue
		}
		registered[strings.ToLower(r.Method)+" "+param.ReplaceAllString(r.Path, "{$1}")] = true
	}
	documented := map[string]bool{}
	for path, ops := range doc.Paths {
		for method := range ops {
			if method != "parameters" {
				documented[method+" "+path] = true
			}
		}
	}
	for r := range registered {
		if !documented[r] {
			t.Errorf("route %s is not in openapi.json", r)
		}
	}
	for d := range documented {
		if !registered[d] {
			t.Errorf("openapi.json documents %s, which is not a route", d)
		}
	}
	if len(registered) < 15 {
		t.Fatalf("only %d routes registered: %v", len(registered), registered)
	}

	// The document is valid OpenAPI and is what the api serves.
	lv, err := openAPI()
	if err != nil {
		t.Fatal(err)
	}
	if ok, errs := lv.v.ValidateDocument(); !ok {
		for _, err := range errs {
			t.Errorf("openapi.json is invalid: %s", err)
		}
	}
	r := e.do("GET", "/api/openapi.json", "", nil)
	r.expect(t, 200, nil)
	if !bytes.Equal(r.body, httpapi.OpenAPIDocument()) || !strings.HasPrefix(r.header.Get("Content-Type"), "application/json") {
		t.Fatalf("served document differs (content type %q)", r.header.Get("Content-Type"))
	}
}

func TestProbes(t *testing.T) {
	e := newAPI(t, envOptions{})
	var health map[string]string
	e.do("GET", "/health", "", nil).expect(t, 200, &health)
	if health["status"] != "ok" || health["service"] != "api" {
		t.Fatalf("health %v", health)
	}
	var ready struct {
		Status string            `json:"status"`
		Checks map[string]string `json:"checks"`
	}
	e.do("GET", "/ready", "", nil).expect(t, 200, &ready)
	want := map[string]string{"postgres": "ok", "redis": "ok", "kafka": "ok", "database_breaker": "ok"}
	if ready.Status != "ready" || len(ready.Checks) != len(want) {
		t.Fatalf("ready %+v", ready)
	}
	for k, v := range want {
		if ready.Checks[k] != v {
			t.Fatalf("check %s = %q", k, ready.Checks[k])
		}
	}
	e.do("GET", "/api/me", "", nil) // one counted request
	r := e.do("GET", "/metrics", "", nil)
	r.expect(t, 200, nil)
	if !bytes.Contains(r.body, []byte(`http_requests_total{method="GET",route="/api/me",status="401"}`)) {
		t.Fatalf("metrics lack the request counter:\n%s", truncateBody(r.body))
	}
}

func TestBadRequestsNeverFailTheServer(t *testing.T) {
	e := newAPI(t, envOptions{})
	u := e.user("kim")
	g := e.room(u, "group", "g")

	// Bodies over 64 KiB are refused before any handler.
	big := raw(`{"name": "` + strings.Repeat("x", 70<<10) + `", "type": "group"}`)
	e.do("POST", "/api/rooms", u.token, big).expectError(t, 413, chat.CodeTooLarge)
	e.do("POST", "/api/auth/register", "", big).expectError(t, 413, chat.CodeTooLarge)

	// Unknown routes and methods are NOT_FOUND in the JSON error shape.
	e.doUndocumented("GET", "/api/nope", u.token, nil).expectError(t, 404, chat.CodeNotFound)
	e.doUndocumented("DELETE", "/api/rooms/"+g.ID, u.token, nil).expectError(t, 404, chat.CodeNotFound)

	// A grab bag of hostile input: every answer is a 4xx with a code.
	hostile := []struct{ method, path, body string }{
		{"POST", "/api/rooms", `{"type": "group", "name": {"$gt": ""}}`},
		{"POST", "/api/rooms", `{"type": "group", "name": "x", "memberIds": "1,2"}`},
		{"POST", "/api/rooms", `{"type": "group", "name": "x", "memberIds": [null]}`},
		{"POST", "/api/rooms", `{"type": null}`},
		{"POST", "/api/rooms", `{"type": "group", "name": "x"` + strings.Repeat(" ", 10)},
		{"POST", "/api/rooms", "\xff\xfe"},
		{"POST", "/api/rooms/" + g.ID + "/members", `{"userId": "18446744073709551616"}`},
		{"POST", "/api/rooms/" + g.ID + "/members", `{"userId": ""}`},
		{"POST", "/api/rooms/9223372036854775807/join", ``},
		{"GET", "/api/rooms/9223372036854775807/messages", ``},
		{"GET", "/api/rooms/" + g.ID + "/messages?before=9223372036854775807", ``},
		{"GET", "/api/search?q=" + strings.Repeat("%27%22", 100), ``},
		{"GET", "/api/search?q=%21%21%21%20%26%20%7C", ``},
	}
	for _, h := range hostile {
		r := e.do(h.method, h.path, u.token, raw(h.body))
		if r.status >= 500 {
			t.Errorf("%s %s %q: status %d %s", h.method, h.path, truncateBody([]byte(h.body)), r.status, r.body)
		}
		if r.status >= 400 {
			var body struct {
				Error struct{ Code string } `json:"error"`
			}
			if json.Unmarshal(r.body, &body) != nil || body.Error.Code == "" {
				t.Errorf("%s %s: error without a code: %s", h.method, h.path, r.body)
			}
		}
	}
}

func TestServiceLifecycle(t *testing.T) {
	e := newAPI(t, envOptions{})
	u := e.user("lee")
	e.do("GET", "/api/me", u.token, nil).expect(t, 200, nil)
	// Close is idempotent (the harness closes again at the end).
	if err := e.svc.Close(); err != nil {
		t.Fatal(err)
	}
	if err := e.svc.Close(); err != nil {
		t.Fatal(err)
	}
	// With its connections closed the api reports itself unready and fails
	// requests cleanly instead of crashing.
	var ready struct {
		Status string `json:"status"`
	}
	e.do("GET", "/ready", "", nil).expect(t, 503, &ready)
	if ready.Status != "unavailable" {
		t.Fatalf("ready %+v", ready)
	}
	e.do("GET", "/api/me", u.token, nil).expectError(t, 500, chat.CodeInternal)
}

func TestNewRejectsBadConfig(t *testing.T) {
	tel, err := telemetry.Setup(context.Background(), "api-test", config.Telemetry{LogLevel: "error"})
	if err != nil {
		t.Fatal(err)
	}
	good := config.JWT{Secret: testSecret}
	cases := map[string]httpapi.Config{
		"no secret":      {},
		"short secret":   {JWT: config.JWT{Secret: "short"}},
		"negative ttl":   {JWT: config.JWT{Secret: testSecret, TTL: -time.Second}},
		"negative limit": {JWT: good, AuthRateLimit: -1},
		"bad proxy":      {JWT: good, TrustedProxies: []string{"not-an-ip"}},
		"unreachable db": {JWT: good, Postgres: config.Postgres{URL: "postgres://relay:relay@127.0.0.1:1/relay?sslmode=disable&connect_timeout=2"}},
		"unparsable db":  {JWT: good, Postgres: config.Postgres{URL: "::not a url::"}},
	}
	for name, cfg := range cases {
		t.Run(name, func(t *testing.T) {
			svc, err := httpapi.New(context.Background(), cfg, tel)
			if err == nil {
				_ = svc.Close()
				t.Fatal("New accepted a bad config")
			}
		})
	}
	if _, err := httpapi.New(context.Background(), httpapi.Config{JWT: good}, nil); err == nil {
		t.Fatal("New accepted nil telemetry")
	}
}
