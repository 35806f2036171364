package httpapi_test

import (
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"relay/pkg/chat"
)

type authResp struct {
	User struct {
		ID          string `json:"id"`
		Username    string `json:"username"`
		Email       string `json:"email"`
		DisplayName string `json:"displayName"`
	} `json:"user"`
	Token     string    `json:"token"`
	ExpiresAt time.Time `json:"expiresAt"`
}

func TestRegisterAndLogin(t *testing.T) {
	e := newAPI(t, envOptions{})
	var reg authResp
	e.do("POST", "/api/auth/register", "", map[string]string{
		"username": "  Alice.W ", "email": "Alice@Example.COM", "password": "correct horse",
	}).expect(t, 201, &reg)
	if reg.User.Username != "alice.w" || reg.User.Email != "alice@example.com" || reg.User.DisplayName != "Alice.W" {
		t.Fatalf("not normalized: %+v", reg.User)
	}
	if reg.Token == "" || reg.User.ID == "" || time.Until(reg.ExpiresAt) < 50*time.Minute {
		t.Fatalf("register response %+v", reg)
	}
	var me map[string]any
	e.do("GET", "/api/me", reg.Token, nil).expect(t, 200, &me)
	if me["id"] != reg.User.ID || me["email"] != "alice@example.com" {
		t.Fatalf("/me = %v", me)
	}
	if _, leaked := me["passwordHash"]; leaked {
		t.Fatalf("/me leaks the hash: %v", me)
	}

	for _, login := range []string{"alice.w", "ALICE.W", "alice@example.com", " Alice@example.com"} {
		var got authResp
		e.do("POST", "/api/auth/login", "", map[string]string{"login": login, "password": "correct horse"}).expect(t, 200, &got)
		if got.User.ID != reg.User.ID || got.Token == "" {
			t.Fatalf("login %q: %+v", login, got)
		}
		e.do("GET", "/api/me", got.Token, nil).expect(t, 200, nil)
	}

	for _, bad := range []map[string]string{
		{"login": "alice.w", "password": "wrong horse"},
		{"login": "nobody", "password": "correct horse"},
		{"login": "alice.w", "password": strings.Repeat("x", 100)},
	} {
		e.do("POST", "/api/auth/login", "", bad).expectError(t, 401, chat.CodeUnauthorized)
	}
	for _, bad := range []any{
		map[string]string{"login": "alice.w"},
		map[string]string{"password": "correct horse"},
		map[string]string{"login": "   ", "password": "x"},
		map[string]string{"login": "ali\x00ce", "password": "correct horse"},
		raw(`[1,2]`), raw(`"alice"`), raw(`{"login":`), raw(``), raw(`{"login": 5, "password": "x"}`),
	} {
		e.do("POST", "/api/auth/login", "", bad).expectError(t, 400, chat.CodeBadRequest)
	}
}

func TestRegisterValidation(t *testing.T) {
	e := newAPI(t, envOptions{})
	ok := map[string]string{"username": "bob", "email": "bob@example.com", "password": "12345678"}
	with := func(k, v string) map[string]string {
		m := map[string]string{}
		for kk, vv := range ok {
			m[kk] = vv
		}
		m[k] = v
		return m
	}
	cases := map[string]any{
		"short username":    with("username", "ab"),
		"long username":     with("username", strings.Repeat("a", 33)),
		"username with @":   with("username", "bob@home"),
		"username unicode":  with("username", "böb"),
		"username space":    with("username", "bo b"),
		"missing username":  map[string]string{"email": "x@example.com", "password": "12345678"},
		"bad email":         with("email", "not-an-email"),
		"missing email":     with("email", ""),
		"long email":        with("email", strings.Repeat("a", 250)+"@example.com"),
		"short password":    with("password", "1234567"),
		"long password":     with("password", strings.Repeat("p", 73)),
		"long display name": map[string]string{"username": "bob", "email": "b@example.com", "password": "12345678", "displayName": strings.Repeat("é", 65)},
		"NUL display name":  map[string]string{"username": "bob", "email": "b@example.com", "password": "12345678", "displayName": "a\x00b"},
		"array body":        raw(`[]`),
		"number body":       raw(`42`),
		"null body":         raw(`null`),
		"malformed":         raw(`{"username": "bob",`),
		"two objects":       raw(`{} {}`),
		"wrong type":        raw(`{"username": ["bob"], "email": "b@example.com", "password": "12345678"}`),
	}
	for name, body := range cases {
		t.Run(name, func(t *testing.T) {
			e.do("POST", "/api/auth/register", "", body).expectError(t, 400, chat.CodeBadRequest)
		})
	}
	// Boundaries that are allowed; unknown fields are ignored.
	e.do("POST", "/api/auth/register", "", map[string]any{
		"username": "b.o_b-1", "email": "b@example.com", "password": strings.Repeat("p", 72), "extra": true,
	}).expect(t, 201, nil)
}

func TestRegisterConflicts(t *testing.T) {
	e := newAPI(t, envOptions{})
	e.do("POST", "/api/auth/register", "", map[string]string{"username": "carol", "email": "carol@example.com", "password": "12345678"}).expect(t, 201, nil)
	msg := e.do("POST", "/api/auth/register", "", map[string]string{"username": "CAROL", "email": "other@example.com", "password": "12345678"}).
		expectError(t, 409, chat.CodeConflict)
	if !strings.Contains(msg, "username") {
		t.Errorf("message %q does not say what conflicts", msg)
	}
	msg = e.do("POST", "/api/auth/register", "", map[string]string{"username": "carol2", "email": "Carol@Example.com", "password": "12345678"}).
		expectError(t, 409, chat.CodeConflict)
	if !strings.Contains(msg, "email") {
		t.Errorf("message %q does not say what conflicts", msg)
	}

	// Concurrent registrations of one name: exactly one wins.
	const n = 8
	statuses := make([]int, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			statuses[i] = e.do("POST", "/api/auth/register", "", map[string]string{
				"username": "dave", "email": fmt.Sprintf("dave%d@example.com", i), "password": "12345678",
			}).status
		}()
	}
	wg.Wait()
	won := 0
	for _, s := range statuses {
		switch s {
		case 201:
			won++
		case 409:
		default:
			t.Errorf("unexpected status %d", s)
		}
	}
	if won != 1 {
		t.Fatalf("%d registrations won (%v), want exactly 1", won, statuses)
	}
}

func TestAuthRateLimit(t *testing.T) {
	e := newAPI(t, envOptions{rateLimit: 3})
	login := map[string]string{"login": "nobody", "password": "whatever1"}
	for range 3 {
		e.do("POST", "/api/auth/login", "", login).expectError(t, 401, chat.CodeUnauthorized)
	}
	r := e.do("POST", "/api/auth/login", "", login)
	r.expectError(t, 429, chat.CodeRateLimited)
	if r.header.Get("Retry-After") == "" {
		t.Errorf("no Retry-After header")
	}
	e.do("POST", "/api/auth/register", "", map[string]string{}).expectError(t, 429, chat.CodeRateLimited)
	// Another client behind the trusted proxy has its own budget.
	e.do("POST", "/api/auth/login", "", login, "X-Forwarded-For", "203.0.113.9").expectError(t, 401, chat.CodeUnauthorized)
	// Only auth endpoints are limited.
	u := e.user("ratey")
	for range 5 {
		e.do("GET", "/api/me", u.token, nil).expect(t, 200, nil)
	}
}

func TestTokenRejected(t *testing.T) {
	e := newAPI(t, envOptions{})
	u := e.user("erin")
	sign := func(method jwt.SigningMethod, key any, claims jwt.MapClaims) string {
		s, err := jwt.NewWithClaims(method, claims).SignedString(key)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	now := time.Now()
	valid := jwt.MapClaims{"iss": "relay", "sub": u.sid, "exp": now.Add(time.Hour).Unix(), "iat": now.Unix()}
	expired := jwt.MapClaims{"iss": "relay", "sub": u.sid, "exp": now.Add(-time.Minute).Unix(), "iat": now.Add(-time.Hour).Unix()}
	noExp := jwt.MapClaims{"iss": "relay", "sub": u.sid}
	ghost := jwt.MapClaims{"iss": "relay", "sub": "987654321", "exp": now.Add(time.Hour).Unix()}

	// Sanity: the hand-made valid token is accepted, so the rejections below
	// are about what was changed.
	e.do("GET", "/api/me", sign(jwt.SigningMethodHS256, []byte(testSecret), valid), nil).expect(t, 200, nil)

	none := sign(jwt.SigningMethodNone, jwt.UnsafeAllowNoneSignatureType, valid)
	cases := map[string]string{
		"missing":      "",
		"garbage":      "Bearer not.a.jwt",
		"basic scheme": "Basic ZXJpbjpwYXNz",
		"empty bearer": "Bearer ",
		"expired":      "Bearer " + sign(jwt.SigningMethodHS256, []byte(testSecret), expired),
		"no expiry":    "Bearer " + sign(jwt.SigningMethodHS256, []byte(testSecret), noExp),
		"wrong secret": "Bearer " + sign(jwt.SigningMethodHS256, []byte("another-secret-0123456789"), valid),
		"alg none":     "Bearer " + none,
		"alg HS512":    "Bearer " + sign(jwt.SigningMethodHS512, []byte(testSecret), valid),
		"tampered":     "Bearer " + u.token[:len(u.token)-3] + "abc",
		"ghost user":   "Bearer " + sign(jwt.SigningMethodHS256, []byte(testSecret), ghost),
	}
	for name, header := range cases {
		t.Run(name, func(t *testing.T) {
			for _, path := range []string{"/api/me", "/api/rooms", "/api/search?q=x"} {
				r := e.do("GET", path, "", nil, "Authorization", header)
				r.expectError(t, 401, chat.CodeUnauthorized)
				if r.header.Get("WWW-Authenticate") == "" {
					t.Errorf("%s: no WWW-Authenticate header", path)
				}
			}
		})
	}
}
