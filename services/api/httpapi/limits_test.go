package httpapi_test

import (
	"fmt"
	"net/http"
	"strings"
	"testing"

	"relay/pkg/chat"
	"relay/pkg/testenv"
	"relay/services/api/httpapi"
)

// Per-user limits: writes, room creation and search are refused with 429
// RATE_LIMITED and a Retry-After once the user's budget is spent, and
// another user's budget is untouched.
func TestPerUserLimits(t *testing.T) {
	e := newAPI(t, envOptions{config: func(c *httpapi.Config) {
		c.Limits = httpapi.Limits{WritesPerMin: 5, RoomsPerHour: 3, SearchesPerMin: 2, RoomCreateMaxMembers: 2}
	}})
	a, b, c, d := e.user("ada"), e.user("bob"), e.user("cy"), e.user("dee")

	// Room creation: 3 an hour, and at most 2 members besides the creator.
	msg := e.do("POST", "/api/rooms", a.token, map[string]any{"type": "group", "name": "big", "memberIds": []string{b.sid, c.sid, d.sid}}).
		expectError(t, 400, chat.CodeBadRequest)
	if !strings.Contains(msg, "at most 2 members") {
		t.Fatalf("member cap message %q", msg)
	}
	var rooms []roomResp
	for i := range 2 {
		var r roomResp
		e.do("POST", "/api/rooms", a.token, map[string]any{"type": "channel", "name": fmt.Sprint("r", i), "memberIds": []string{b.sid}}).expect(t, 201, &r)
		rooms = append(rooms, r)
	}
	res := e.do("POST", "/api/rooms", a.token, map[string]any{"type": "channel", "name": "too many"})
	res.expectError(t, 429, chat.CodeRateLimited)
	if res.header.Get("Retry-After") == "" {
		t.Fatal("429 without Retry-After")
	}
	// Writes: 5 a minute, the 4 room creations above included.
	e.do("POST", "/api/rooms/"+rooms[0].ID+"/members", a.token, map[string]string{"userId": c.sid}).expect(t, 201, nil)
	e.do("POST", "/api/rooms/"+rooms[0].ID+"/members", a.token, map[string]string{"userId": d.sid}).expectError(t, 429, chat.CodeRateLimited)
	// Someone else's budget is their own.
	e.do("POST", "/api/rooms/"+rooms[1].ID+"/join", c.token, nil).expect(t, 200, nil)

	// Search: 2 a minute.
	for range 2 {
		e.do("GET", "/api/search?q=hello", a.token, nil).expect(t, 200, nil)
	}
	e.do("GET", "/api/search?q=hello", a.token, nil).expectError(t, 429, chat.CodeRateLimited)
	e.do("GET", "/api/search?q=hello", b.token, nil).expect(t, 200, nil)
}

// A compressed body is refused before it is inflated: this one is 1 MiB
// of JSON gzipped twice.
func TestCompressedBodyRefused(t *testing.T) {
	e := newAPI(t, envOptions{})
	inner := `{"username":"ada","password":"` + strings.Repeat("a", 1<<20) + `"}`
	body := testenv.Gzip(t, testenv.Gzip(t, []byte(inner)))
	res := e.do("POST", "/api/auth/login", "", raw(body), "Content-Type", "application/json", "Content-Encoding", "gzip, gzip")
	res.expectError(t, http.StatusUnsupportedMediaType, chat.CodeUnsupportedMediaType)
	if res.header.Get("X-Content-Type-Options") != "nosniff" {
		t.Fatal("no nosniff header")
	}
}
