package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sync/errgroup"

	"relay/pkg/chat"
)

// benchPassword is every bench account's password: the accounts are
// throwaway load-test users on a development stack.
const benchPassword = "chatbench-password"

// apiError is a non-2xx answer of the api.
type apiError struct {
	Status  int
	Code    chat.Code
	Message string
}

func (e *apiError) Error() string {
	return fmt.Sprintf("api: HTTP %d %s: %s", e.Status, e.Code, e.Message)
}

// apiClient is the REST client chatbench needs: auth, rooms, members.
type apiClient struct {
	base string
	http *http.Client
}

func newAPIClient(base string) *apiClient {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.MaxIdleConnsPerHost = 64
	return &apiClient{base: base, http: &http.Client{Timeout: 30 * time.Second, Transport: tr}}
}

// do sends a JSON request and decodes a 2xx JSON answer into out (when not
// nil); other answers become *apiError.
func (a *apiClient) do(ctx context.Context, method, path, token string, in, out any) (int, error) {
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return 0, fmt.Errorf("encode %s %s: %w", method, path, err)
		}
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, a.base+path, body)
	if err != nil {
		return 0, fmt.Errorf("%s %s: %w", method, path, err)
	}
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := a.http.Do(req)
	if err != nil {
		return 0, fmt.Errorf("%s %s: %w", method, path, err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(io.LimitReader(resp.Body, 4<<20))
	if err != nil {
		return resp.StatusCode, fmt.Errorf("%s %s: read body: %w", method, path, err)
	}
	if resp.StatusCode/100 != 2 {
		ae := &apiError{Status: resp.StatusCode, Message: string(raw)}
		var eb struct {
			Error struct {
				Code    chat.Code `json:"code"`
				Message string    `json:"message"`
			} `json:"error"`
		}
		if json.Unmarshal(raw, &eb) == nil && eb.Error.Code != "" {
			ae.Code, ae.Message = eb.Error.Code, eb.Error.Message
		}
		return resp.StatusCode, ae
	}
	if out != nil {
		if err := json.Unmarshal(raw, out); err != nil {
			return resp.StatusCode, fmt.Errorf("%s %s: decode answer: %w", method, path, err)
		}
	}
	return resp.StatusCode, nil
}

// account is a bench user with a token.
type account struct {
	ID        string    `json:"id"`
	Username  string    `json:"username"`
	Token     string    `json:"token"`
	ExpiresAt time.Time `json:"expiresAt"`
}

type authAnswer struct {
	User struct {
		ID       string `json:"id"`
		Username string `json:"username"`
	} `json:"user"`
	Token     string    `json:"token"`
	ExpiresAt time.Time `json:"expiresAt"`
}

func (a authAnswer) account() account {
	return account{ID: a.User.ID, Username: a.User.Username, Token: a.Token, ExpiresAt: a.ExpiresAt}
}

// errRateLimited explains what to do when /api/auth/* answers 429.
var errRateLimited = errors.New("the api rate-limits /api/auth/* per client IP (AUTH_RATE_LIMIT, default 30/min), " +
	"too low to sign in the bench users. Restart the stack with a higher limit: " +
	"`scripts/run.sh stop && AUTH_RATE_LIMIT=100000 scripts/run.sh --detach` (make bench does this when it starts the stack), " +
	"or wait a minute and run again: accounts signed in so far are cached and not asked again")

// authenticate registers username, or logs in when it already exists.
func (a *apiClient) authenticate(ctx context.Context, username string) (account, error) {
	var ans authAnswer
	_, err := a.do(ctx, http.MethodPost, "/api/auth/register", "", map[string]string{
		"username": username, "email": username + "@bench.relay.test", "password": benchPassword,
	}, &ans)
	var ae *apiError
	if errors.As(err, &ae) && ae.Code == chat.CodeConflict {
		_, err = a.do(ctx, http.MethodPost, "/api/auth/login", "", map[string]string{
			"login": username, "password": benchPassword,
		}, &ans)
	}
	if errors.As(err, &ae) && ae.Status == http.StatusTooManyRequests {
		return account{}, fmt.Errorf("%w (api said: %s)", errRateLimited, ae.Message)
	}
	if err != nil {
		return account{}, fmt.Errorf("sign in %s: %w", username, err)
	}
	return ans.account(), nil
}

// valid reports whether a cached token still works for that user id.
func (a *apiClient) valid(ctx context.Context, acc account) bool {
	if acc.Token == "" || time.Until(acc.ExpiresAt) < time.Hour {
		return false
	}
	var me struct {
		ID       string `json:"id"`
		Username string `json:"username"`
	}
	if _, err := a.do(ctx, http.MethodGet, "/api/me", acc.Token, nil, &me); err != nil {
		return false
	}
	return me.ID == acc.ID && me.Username == acc.Username
}

// tokenCache is <DataDir>/bench/tokens.json: per api URL, username →
// account, so later runs skip bcrypt-bound register/login.
type tokenCache struct {
	path string
	mu   sync.Mutex
	data map[string]map[string]account
}

func loadTokenCache(dataDir string) *tokenCache {
	c := &tokenCache{path: filepath.Join(dataDir, "bench", "tokens.json"), data: map[string]map[string]account{}}
	if raw, err := os.ReadFile(c.path); err == nil {
		// A corrupt cache is only a slower run: start empty.
		_ = json.Unmarshal(raw, &c.data)
	}
	return c
}

func (c *tokenCache) get(api, username string) (account, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	acc, ok := c.data[api][username]
	return acc, ok
}

func (c *tokenCache) put(api string, acc account) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.data[api] == nil {
		c.data[api] = map[string]account{}
	}
	c.data[api][acc.Username] = acc
}

func (c *tokenCache) save() error {
	c.mu.Lock()
	raw, err := json.Marshal(c.data)
	c.mu.Unlock()
	if err != nil {
		return fmt.Errorf("encode token cache: %w", err)
	}
	if err := os.MkdirAll(filepath.Dir(c.path), 0o700); err != nil {
		return fmt.Errorf("token cache: %w", err)
	}
	tmp := c.path + ".tmp"
	if err := os.WriteFile(tmp, raw, 0o600); err != nil {
		return fmt.Errorf("token cache: %w", err)
	}
	if err := os.Rename(tmp, c.path); err != nil {
		return fmt.Errorf("token cache: %w", err)
	}
	return nil
}

// UserStats says where the run's accounts came from.
type UserStats struct {
	Cached     int     `json:"cached"`
	SignedIn   int     `json:"signedIn"`
	DurationS  float64 `json:"durationS"`
	CacheFile  string  `json:"cacheFile"`
	CacheError string  `json:"cacheError,omitempty"`
}

// ensureUsers returns n accounts <prefix>_<i>, from the cache when their
// token still works, else by register-or-login (a few at a time: the api
// spends ~50-100 ms of CPU on each bcrypt). progress is bumped per account.
func ensureUsers(ctx context.Context, a *apiClient, cache *tokenCache, prefix string, n int, progress *atomic.Int64) ([]account, UserStats, error) {
	start := time.Now()
	accs := make([]account, n)
	var cached, signed atomic.Int64
	need := make([]bool, n)

	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(32)
	for i := range n {
		g.Go(func() error {
			name := prefix + "_" + strconv.Itoa(i)
			if acc, ok := cache.get(a.base, name); ok && a.valid(gctx, acc) {
				accs[i] = acc
				cached.Add(1)
				progress.Add(1)
			} else {
				need[i] = true
			}
			return nil
		})
	}
	_ = g.Wait()

	g, gctx = errgroup.WithContext(ctx)
	g.SetLimit(4)
	for i := range n {
		if !need[i] {
			continue
		}
		g.Go(func() error {
			acc, err := a.authenticate(gctx, prefix+"_"+strconv.Itoa(i))
			if err != nil {
				return err
			}
			accs[i] = acc
			cache.put(a.base, acc)
			signed.Add(1)
			progress.Add(1)
			return nil
		})
	}
	err := g.Wait()
	st := UserStats{Cached: int(cached.Load()), SignedIn: int(signed.Load()), DurationS: time.Since(start).Seconds(), CacheFile: cache.path}
	// Save even after a failure: what was signed in is not asked again.
	if serr := cache.save(); serr != nil {
		st.CacheError = serr.Error()
	}
	if err != nil {
		return nil, st, err
	}
	return accs, st, nil
}

// createRoom creates a group room of members (indexes into accs; the first
// is the creator and admin) and returns its id. Members beyond what one
// request may carry are added one by one by the creator.
func createRoom(ctx context.Context, a *apiClient, accs []account, name string, members []int) (string, error) {
	creator := accs[members[0]]
	first := members[1:min(len(members), chat.MaxRoomMembers+1)]
	ids := make([]string, len(first))
	for i, m := range first {
		ids[i] = accs[m].ID
	}
	var room struct {
		ID string `json:"id"`
	}
	if _, err := a.do(ctx, http.MethodPost, "/api/rooms", creator.Token, map[string]any{
		"type": "group", "name": name, "memberIds": ids,
	}, &room); err != nil {
		return "", fmt.Errorf("create room %q: %w", name, err)
	}
	for _, m := range members[1+len(first):] {
		if _, err := a.do(ctx, http.MethodPost, "/api/rooms/"+room.ID+"/members", creator.Token, map[string]string{
			"userId": accs[m].ID,
		}, nil); err != nil {
			return "", fmt.Errorf("add member to room %s: %w", room.ID, err)
		}
	}
	return room.ID, nil
}
