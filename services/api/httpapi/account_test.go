package httpapi_test

import (
	"encoding/json"
	"net/url"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"relay/services/api/httpapi"
)

type tokensResp struct {
	User struct {
		ID          string `json:"id"`
		DisplayName string `json:"displayName"`
		AvatarURL   string `json:"avatarUrl"`
	} `json:"user"`
	Token            string    `json:"token"`
	ExpiresAt        time.Time `json:"expiresAt"`
	RefreshToken     string    `json:"refreshToken"`
	RefreshExpiresAt time.Time `json:"refreshExpiresAt"`
}

// Refresh tokens rotate on every use; a spent one presented again revokes
// its whole family, and sign-out revokes the family too.
func TestRefreshTokens(t *testing.T) {
	e := newAPI(t, envOptions{config: func(c *httpapi.Config) { c.JWT.TTL = 0; c.RefreshTTL = 0 }})
	var reg tokensResp
	e.do("POST", "/api/auth/register", "", map[string]string{"username": "rita", "email": "rita@example.com", "password": "correct horse"}).expect(t, 201, &reg)
	if reg.RefreshToken == "" || reg.Token == "" {
		t.Fatalf("register gave no tokens: %+v", reg)
	}
	// The defaults: a 15 minute access token, a 30 day refresh token.
	if d := time.Until(reg.ExpiresAt); d > 15*time.Minute || d < 14*time.Minute {
		t.Errorf("access token lives %v, want 15 min", d)
	}
	if d := time.Until(reg.RefreshExpiresAt); d > 30*24*time.Hour || d < 30*24*time.Hour-time.Minute {
		t.Errorf("refresh token lives %v, want 30 days", d)
	}

	var next tokensResp
	e.do("POST", "/api/auth/refresh", "", map[string]string{"refreshToken": reg.RefreshToken}).expect(t, 200, &next)
	if next.RefreshToken == reg.RefreshToken || next.Token == "" || next.User.ID != reg.User.ID {
		t.Fatalf("refresh: %+v", next)
	}
	e.do("GET", "/api/me", next.Token, nil).expect(t, 200, nil)

	// Concurrent uses of one token: exactly one wins.
	var third tokensResp
	var mu sync.Mutex
	wins := 0
	var wg sync.WaitGroup
	for range 5 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := e.doUndocumented("POST", "/api/auth/refresh", "", map[string]string{"refreshToken": next.RefreshToken})
			if r.status == 200 {
				mu.Lock()
				wins++
				if err := json.Unmarshal(r.body, &third); err != nil {
					t.Errorf("decode: %v", err)
				}
				mu.Unlock()
			} else if r.status != 401 {
				t.Errorf("concurrent refresh: %d %s", r.status, r.body)
			}
		}()
	}
	wg.Wait()
	if wins != 1 {
		t.Fatalf("%d concurrent refreshes of one token succeeded, want 1", wins)
	}
	// The first, spent token comes back: the family is revoked, so even the
	// newest token of it (third) is refused from now on.
	e.do("POST", "/api/auth/refresh", "", map[string]string{"refreshToken": reg.RefreshToken}).expectError(t, 401, "UNAUTHORIZED")
	e.do("POST", "/api/auth/refresh", "", map[string]string{"refreshToken": third.RefreshToken}).expectError(t, 401, "UNAUTHORIZED")

	// Another sign-in is another family, untouched by that revocation.
	var login tokensResp
	e.do("POST", "/api/auth/login", "", map[string]string{"login": "rita", "password": "correct horse"}).expect(t, 200, &login)
	e.do("POST", "/api/auth/refresh", "", map[string]string{"refreshToken": login.RefreshToken}).expect(t, 200, &next)

	// Sign-out revokes it; signing out again is fine.
	e.do("POST", "/api/auth/logout", next.Token, map[string]string{"refreshToken": next.RefreshToken}).expect(t, 204, nil)
	e.do("POST", "/api/auth/logout", next.Token, map[string]string{"refreshToken": next.RefreshToken}).expect(t, 204, nil)
	e.do("POST", "/api/auth/refresh", "", map[string]string{"refreshToken": next.RefreshToken}).expectError(t, 401, "UNAUTHORIZED")
	e.do("POST", "/api/auth/logout", "", map[string]string{"refreshToken": next.RefreshToken}).expectError(t, 401, "UNAUTHORIZED")

	// Someone else's refresh token cannot be revoked by another user.
	var other tokensResp
	e.do("POST", "/api/auth/register", "", map[string]string{"username": "otto", "email": "otto@example.com", "password": "correct horse"}).expect(t, 201, &other)
	e.do("POST", "/api/auth/logout", login.Token, map[string]string{"refreshToken": other.RefreshToken}).expect(t, 204, nil)
	e.do("POST", "/api/auth/refresh", "", map[string]string{"refreshToken": other.RefreshToken}).expect(t, 200, nil)

	// Garbage.
	e.do("POST", "/api/auth/refresh", "", map[string]string{}).expectError(t, 400, "BAD_REQUEST")
	e.do("POST", "/api/auth/refresh", "", map[string]string{"refreshToken": "nope"}).expectError(t, 401, "UNAUTHORIZED")
	e.do("POST", "/api/auth/refresh", "", map[string]string{"refreshToken": reg.RefreshToken[:42] + "A"}).expectError(t, 401, "UNAUTHORIZED")
	e.do("POST", "/api/auth/refresh", "", raw(`{"refreshToken": 5}`)).expectError(t, 400, "BAD_REQUEST")
	var stored int64
	if err := e.db.Raw(`SELECT count(*) FROM refresh_tokens WHERE token_hash = convert_to(?, 'UTF8')`, next.RefreshToken).Scan(&stored).Error; err != nil || stored != 0 {
		t.Fatalf("a refresh token is stored in the clear (%d rows, %v)", stored, err)
	}
}

// An expired refresh token is refused.
func TestRefreshTokenExpiry(t *testing.T) {
	e := newAPI(t, envOptions{config: func(c *httpapi.Config) { c.RefreshTTL = 2 * time.Second }})
	var reg tokensResp
	e.do("POST", "/api/auth/register", "", map[string]string{"username": "eve", "email": "eve@example.com", "password": "correct horse"}).expect(t, 201, &reg)
	time.Sleep(2500 * time.Millisecond)
	msg := e.do("POST", "/api/auth/refresh", "", map[string]string{"refreshToken": reg.RefreshToken}).expectError(t, 401, "UNAUTHORIZED")
	if msg != "refresh token expired" {
		t.Fatalf("message %q", msg)
	}
}

func TestUpdateMe(t *testing.T) {
	e := newAPI(t, envOptions{})
	u := e.user("petra")
	var me tokensResp
	e.do("PATCH", "/api/me", u.token, map[string]any{"displayName": "  Petra P. ", "avatarUrl": "https://img.example.com/p.png"}).expect(t, 200, &me.User)
	if me.User.DisplayName != "Petra P." || me.User.AvatarURL != "https://img.example.com/p.png" {
		t.Fatalf("profile %+v", me.User)
	}
	// Absent fields stay; blank display name falls back to the username.
	e.do("PATCH", "/api/me", u.token, map[string]any{"displayName": ""}).expect(t, 200, &me.User)
	if me.User.DisplayName != "petra" || me.User.AvatarURL != "https://img.example.com/p.png" {
		t.Fatalf("profile %+v", me.User)
	}
	for _, bad := range []map[string]any{
		{"avatarUrl": "javascript:alert(1)"},
		{"avatarUrl": "/relative.png"},
		{"avatarUrl": "https://x.example/a\r\nb"},
		{"displayName": "two\nlines"},
		{"displayName": string(make([]rune, 65))},
		{"displayName": 7},
	} {
		e.do("PATCH", "/api/me", u.token, bad).expectError(t, 400, "BAD_REQUEST")
	}
	e.do("PATCH", "/api/me", "", map[string]any{"displayName": "x"}).expectError(t, 401, "UNAUTHORIZED")
}

func TestUserSearch(t *testing.T) {
	e := newAPI(t, envOptions{})
	alice := e.user("alice")
	e.user("alfred")
	e.user("bob")
	e.user("a_b")
	e.user("axb")
	type users struct {
		Users []map[string]any `json:"users"`
	}
	names := func(q string, extra ...string) []string {
		t.Helper()
		var out users
		path := "/api/users?q=" + url.QueryEscape(q)
		for _, x := range extra {
			path += "&" + x
		}
		e.do("GET", path, alice.token, nil).expect(t, 200, &out)
		var got []string
		for _, u := range out.Users {
			if _, ok := u["email"]; ok {
				t.Fatalf("search leaks emails: %v", u)
			}
			got = append(got, u["username"].(string))
		}
		return got
	}
	if got := names("AL"); !slices.Equal(got, []string{"alfred", "alice"}) {
		t.Fatalf("q=AL: %v", got)
	}
	// LIKE's wildcards match literally.
	if got := names("a_"); !slices.Equal(got, []string{"a_b"}) {
		t.Fatalf("q=a_: %v", got)
	}
	if got := names("%"); len(got) != 0 {
		t.Fatalf("q=%%: %v", got)
	}
	if got := names("a", "limit=2"); len(got) != 2 {
		t.Fatalf("limit=2: %v", got)
	}
	e.do("GET", "/api/users", alice.token, nil).expectError(t, 400, "BAD_REQUEST")
	e.do("GET", "/api/users?q=a&limit=51", alice.token, nil).expectError(t, 400, "BAD_REQUEST")
	e.do("GET", "/api/users?q="+strings.Repeat("a", 40), alice.token, nil).expectError(t, 400, "BAD_REQUEST")
	e.do("GET", "/api/users?q=a", "", nil).expectError(t, 401, "UNAUTHORIZED")
}
