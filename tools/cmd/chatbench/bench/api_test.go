package bench

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// fakeAuthAPI is an api double for the auth flow: users in existing are
// already registered; after limit auth requests it answers 429.
type fakeAuthAPI struct {
	mu        sync.Mutex
	existing  map[string]bool
	limit     int
	calls     map[string]int
	authCount int
}

func (f *fakeAuthAPI) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls[r.URL.Path]++
	w.Header().Set("Content-Type", "application/json")
	if strings.HasPrefix(r.URL.Path, "/api/auth/") {
		f.authCount++
		if f.limit > 0 && f.authCount > f.limit {
			w.WriteHeader(http.StatusTooManyRequests)
			_, _ = w.Write([]byte(`{"error":{"code":"RATE_LIMITED","message":"too many authentication requests; retry after 60 seconds"}}`))
			return
		}
	}
	var body map[string]string
	_ = json.NewDecoder(r.Body).Decode(&body)
	answer := func(status int, name string) {
		w.WriteHeader(status)
		_ = json.NewEncoder(w).Encode(map[string]any{
			"user": map[string]string{"id": "id-" + name, "username": name}, "token": "tok-" + name,
			"expiresAt": time.Now().Add(24 * time.Hour),
		})
	}
	switch r.URL.Path {
	case "/api/auth/register":
		if f.existing[body["username"]] {
			w.WriteHeader(http.StatusConflict)
			_, _ = w.Write([]byte(`{"error":{"code":"CONFLICT","message":"username taken"}}`))
			return
		}
		f.existing[body["username"]] = true
		answer(http.StatusCreated, body["username"])
	case "/api/auth/login":
		if body["password"] != benchPassword {
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		answer(http.StatusOK, body["login"])
	case "/api/me":
		name := strings.TrimPrefix(r.Header.Get("Authorization"), "Bearer tok-")
		_ = json.NewEncoder(w).Encode(map[string]string{"id": "id-" + name, "username": name})
	default:
		w.WriteHeader(http.StatusNotFound)
	}
}

func TestEnsureUsersRegistersLogsInAndCaches(t *testing.T) {
	t.Parallel()
	fake := &fakeAuthAPI{existing: map[string]bool{"b_1": true}, calls: map[string]int{}}
	srv := httptest.NewServer(fake)
	defer srv.Close()
	dir := t.TempDir()
	api := newAPIClient(srv.URL)
	var progress atomic.Int64

	accs, st, err := ensureUsers(context.Background(), api, loadTokenCache(dir), "b", 3, &progress)
	if err != nil {
		t.Fatal(err)
	}
	if st.SignedIn != 3 || st.Cached != 0 || progress.Load() != 3 {
		t.Errorf("first run: %+v, progress %d", st, progress.Load())
	}
	for i, a := range accs {
		if want := "b_" + string(rune('0'+i)); a.Username != want || a.Token != "tok-"+want {
			t.Errorf("account %d: %+v", i, a)
		}
	}
	// b_1 existed: register said CONFLICT, then login.
	if fake.calls["/api/auth/register"] != 3 || fake.calls["/api/auth/login"] != 1 {
		t.Errorf("calls %v", fake.calls)
	}

	// A second run takes every account from the cache file.
	_, st, err = ensureUsers(context.Background(), api, loadTokenCache(dir), "b", 3, &progress)
	if err != nil {
		t.Fatal(err)
	}
	if st.Cached != 3 || st.SignedIn != 0 || fake.calls["/api/auth/register"] != 3 {
		t.Errorf("second run: %+v, calls %v", st, fake.calls)
	}
}

func TestEnsureUsersExplainsTheRateLimit(t *testing.T) {
	t.Parallel()
	fake := &fakeAuthAPI{existing: map[string]bool{}, calls: map[string]int{}, limit: 2}
	srv := httptest.NewServer(fake)
	defer srv.Close()
	dir := t.TempDir()
	var progress atomic.Int64
	_, st, err := ensureUsers(context.Background(), newAPIClient(srv.URL), loadTokenCache(dir), "b", 5, &progress)
	if !errors.Is(err, errRateLimited) || !strings.Contains(err.Error(), "AUTH_RATE_LIMIT") {
		t.Fatalf("got %v, want the rate-limit explanation", err)
	}
	// Sign-ins run 4 at a time and the first 429 cancels the others, so
	// fewer than the 2 the server allowed may have completed.
	if st.SignedIn > 2 {
		t.Errorf("signed in %d, but the server allowed only 2", st.SignedIn)
	}
	// What was signed in before the 429 is cached for the next run.
	c := loadTokenCache(dir)
	n := 0
	for range c.data[srv.URL] {
		n++
	}
	if n != st.SignedIn {
		t.Errorf("cache holds %d accounts, want the %d signed in", n, st.SignedIn)
	}
}
