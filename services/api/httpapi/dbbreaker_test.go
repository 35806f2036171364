package httpapi_test

import (
	"bufio"
	"bytes"
	"strings"
	"testing"
	"time"

	"relay/pkg/chat"
	"relay/services/api/httpapi"
)

// metric returns the value of the exposition line that starts with series.
func (e *apiEnv) metric(series string) string {
	e.t.Helper()
	r := e.doUndocumented("GET", "/metrics", "", nil)
	sc := bufio.NewScanner(bytes.NewReader(r.body))
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), series+" "); ok {
			return v
		}
	}
	return ""
}

func eventuallyAPI(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(25 * time.Millisecond)
	}
}

// While PostgreSQL is unreachable, requests fail with 503 UNAVAILABLE;
// once the breaker opens they fail without trying the database at all
// (transactions included) and /ready says so; when the database is back,
// the breaker's trial closes it again.
func TestDatabaseOutageOpensTheBreakerAndRecovers(t *testing.T) {
	e := newAPI(t, envOptions{proxyDB: true, config: func(c *httpapi.Config) {
		c.DBBreakerFailures = 2
		c.DBBreakerOpenTimeout = 3 * time.Second
	}})
	u := e.user("ann")
	other := e.user("bob")
	e.do("GET", "/api/me", u.token, nil).expect(t, 200, nil)
	state := func(s string) string {
		return e.metric(`api_breaker_state{breaker="postgres",state="` + s + `"}`)
	}
	if state("closed") != "1" {
		t.Fatalf("closed gauge %q at start", state("closed"))
	}

	e.proxy.SetDown(true)
	// The first failures reach the database and fail cleanly as 503.
	e.do("GET", "/api/me", u.token, nil).expectError(t, 503, chat.CodeUnavailable)
	e.do("GET", "/api/rooms", u.token, nil).expectError(t, 503, chat.CodeUnavailable)
	if state("open") != "1" {
		t.Fatalf("open gauge %q after two failures", state("open"))
	}
	var ready struct {
		Status string            `json:"status"`
		Checks map[string]string `json:"checks"`
	}
	e.do("GET", "/ready", "", nil).expect(t, 503, &ready)
	if ready.Checks["database_breaker"] != "open" {
		t.Fatalf("ready checks %v", ready.Checks)
	}
	// Open: nothing tries the database, including a request whose work
	// is a transaction.
	before := e.proxy.Accepted()
	for range 5 {
		e.do("GET", "/api/me", u.token, nil).expectError(t, 503, chat.CodeUnavailable)
		e.do("GET", "/api/rooms/1/messages", u.token, nil).expectError(t, 503, chat.CodeUnavailable)
		e.do("POST", "/api/rooms", u.token, map[string]any{"name": "x", "type": "group", "memberIds": []string{other.sid}}).
			expectError(t, 503, chat.CodeUnavailable)
	}
	if n := e.proxy.Accepted() - before; n != 0 && state("open") == "1" {
		t.Fatalf("%d connection attempts to the database while the breaker was open", n)
	}

	e.proxy.SetDown(false)
	eventuallyAPI(t, "requests served again", func() bool {
		return e.do("GET", "/api/me", u.token, nil).status == 200
	})
	if state("closed") != "1" || state("open") != "0" {
		t.Fatalf("gauges closed %q open %q after recovery", state("closed"), state("open"))
	}
	e.do("GET", "/ready", "", nil).expect(t, 200, &ready)
	e.do("POST", "/api/rooms", u.token, map[string]any{"name": "x", "type": "group", "memberIds": []string{other.sid}}).expect(t, 201, nil)
}

// A database that answers with an error (no such row, a conflict) is up:
// those never open the breaker.
func TestDatabaseErrorsThatAreAnswersKeepTheBreakerClosed(t *testing.T) {
	e := newAPI(t, envOptions{config: func(c *httpapi.Config) { c.DBBreakerFailures = 1 }})
	u := e.user("ann")
	for range 3 {
		e.do("GET", "/api/users/999999", u.token, nil).expectError(t, 404, chat.CodeNotFound)
		e.do("POST", "/api/auth/register", "", map[string]string{"username": "ann", "email": "x@example.com", "password": "long enough password"}).
			expectError(t, 409, chat.CodeConflict)
	}
	if v := e.metric(`api_breaker_state{breaker="postgres",state="closed"}`); v != "1" {
		t.Fatalf("closed gauge %q", v)
	}
	e.do("GET", "/api/me", u.token, nil).expect(t, 200, nil)
}
