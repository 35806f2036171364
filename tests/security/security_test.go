// Package security runs the attacks of docs/security.md's threat model
// against the real services (package tests/e2e/stack: each service a
// process, on the real PostgreSQL, Redis and Kafka) and asserts the exact
// defence: the status or close code, the bound, or that nothing leaked.
package security

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"relay/pkg/chat"
	"relay/pkg/config"
	"relay/pkg/protocol"
	"relay/pkg/testenv"
	"relay/tests/e2e/stack"
)

var binaries stack.Binaries

func TestMain(m *testing.M) {
	flag.Parse()
	os.Exit(run(m))
}

func run(m *testing.M) int {
	if testenv.Short() {
		return m.Run()
	}
	dir, err := stack.BinDir()
	if err != nil {
		fmt.Fprintln(os.Stderr, "security:", err)
		return 1
	}
	// Building five services can take minutes on a loaded machine.
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
	defer cancel()
	if binaries, err = stack.Build(ctx, dir); err != nil {
		fmt.Fprintln(os.Stderr, "security:", err)
		return 1
	}
	return m.Run()
}

func newStack(t *testing.T, opts stack.Options) *stack.Stack {
	t.Helper()
	if testenv.Short() {
		t.Skip("security suite: needs the servers (make deps)")
	}
	opts.Binaries = binaries
	return stack.NewStack(t, opts)
}

func post(t *testing.T, url string, body []byte, headers ...string) (*http.Response, []byte, time.Duration) {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i+1 < len(headers); i += 2 {
		req.Header.Set(headers[i], headers[i+1])
	}
	start := time.Now()
	res, err := (&http.Client{Timeout: 30 * time.Second}).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	return res, b, time.Since(start)
}

func errorCode(t *testing.T, b []byte) chat.Code {
	t.Helper()
	var eb struct {
		Error struct {
			Code chat.Code `json:"code"`
		} `json:"error"`
	}
	_ = json.Unmarshal(b, &eb)
	return eb.Error.Code
}

// The services refuse to start with the public development JWT secret (or
// the development database password) unless RELAY_ENV=development: each
// exits at once, naming the variable, instead of serving forgeable tokens.
func TestDevelopmentCredentialsRefused(t *testing.T) {
	if testenv.Short() {
		t.Skip("security suite: needs the built services")
	}
	// The delivery worker holds neither credential (Redis and Kafka only).
	for _, svc := range []string{"api", "gateway", "persister", "presence"} {
		t.Run(svc, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			cmd := exec.CommandContext(ctx, binaries.Path(svc))
			cmd.Env = []string{
				"PATH=" + os.Getenv("PATH"),
				"JWT_SECRET=" + config.DevJWTSecret,
				"DATABASE_URL=postgres://relay:" + config.DevDatabasePassword + "@127.0.0.1:1/relay?sslmode=disable",
				"REDIS_URL=redis://127.0.0.1:1/0", "KAFKA_BROKERS=127.0.0.1:1", "HTTP_ADDR=127.0.0.1:0",
			}
			out, err := cmd.CombinedOutput()
			if err == nil || ctx.Err() != nil {
				t.Fatalf("%s started (or hung) with the development credentials: %v\n%s", svc, err, out)
			}
			if !strings.Contains(string(out), "development") {
				t.Fatalf("%s exited (%v) without saying why:\n%s", svc, err, out)
			}
		})
	}
}

// One stack for the HTTP and replay attacks, with low per-user limits.
func TestAttacks(t *testing.T) {
	s := newStack(t, stack.Options{ServiceEnv: map[string]map[string]string{"api": {
		"RATE_WRITES_PER_MIN": "20", "RATE_ROOMS_PER_HOUR": "5", "RATE_SEARCHES_PER_MIN": "5", "ROOM_CREATE_MAX_MEMBERS": "50",
	}}})
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	api := s.API()

	// A 553-byte body that inflates to 200 MB: refused unread with 415.
	t.Run("compressed bodies", func(t *testing.T) {
		bomb := testenv.Gzip(t, testenv.Gzip(t, make([]byte, 200<<20)))
		for _, url := range []string{
			s.APIURL() + "/api/auth/login",
			s.HTTPURL(stack.GatewayName(0)) + "/socket.io/?EIO=4&transport=polling&sid=x",
		} {
			res, b, took := post(t, url, bomb, "Content-Type", "application/json", "Content-Encoding", "gzip, gzip")
			if res.StatusCode != http.StatusUnsupportedMediaType || errorCode(t, b) != chat.CodeUnsupportedMediaType {
				t.Fatalf("%s: %d %s, want 415 UNSUPPORTED_MEDIA_TYPE", url, res.StatusCode, b)
			}
			if took > 2*time.Second {
				t.Fatalf("%s: refusing took %v (was it inflated?)", url, took)
			}
		}
		t.Logf("bomb of %d bytes (200 MiB inflated) refused", len(bomb))
	})

	ada, err := api.Register(ctx, "ada", "correct horse battery")
	if err != nil {
		t.Fatal(err)
	}
	bob, err := api.Register(ctx, "bob", "correct horse battery")
	if err != nil {
		t.Fatal(err)
	}
	cy, err := api.Register(ctx, "cyd", "correct horse battery")
	if err != nil {
		t.Fatal(err)
	}

	t.Run("browser defaults", func(t *testing.T) {
		req, _ := http.NewRequest(http.MethodOptions, s.APIURL()+"/api/rooms", nil)
		req.Header.Set("Origin", "https://evil.example")
		req.Header.Set("Access-Control-Request-Method", "POST")
		req.Header.Set("Access-Control-Request-Headers", "authorization")
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		res.Body.Close()
		if got := res.Header.Get("Access-Control-Allow-Origin"); got != "" {
			t.Fatalf("a foreign origin got Access-Control-Allow-Origin %q", got)
		}
		if res.Header.Get("X-Content-Type-Options") != "nosniff" || !strings.Contains(res.Header.Get("Content-Security-Policy"), "default-src 'none'") {
			t.Fatalf("headers %v", res.Header)
		}
	})

	// Deleted means gone; edited shows the current text: in the replay a
	// member who joined after the delete gets, in room_events, in REST
	// history and in search.
	t.Run("deleted and edited text", func(t *testing.T) {
		room, err := api.CreateRoom(ctx, ada, "secrets", "group", bob)
		if err != nil {
			t.Fatal(err)
		}
		c, err := stack.Dial(ctx, s.GatewayURL(0), ada.Token)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if _, err := c.Join(ctx, room.ID, nil); err != nil {
			t.Fatal(err)
		}
		secret, err := c.Send(ctx, room.ID, "launch code hunter2", "")
		if err != nil {
			t.Fatal(err)
		}
		draft, err := c.Send(ctx, room.ID, "first draft words", "")
		if err != nil {
			t.Fatal(err)
		}
		if _, err := c.Delete(ctx, room.ID, secret.ID); err != nil {
			t.Fatal(err)
		}
		if _, err := c.Edit(ctx, room.ID, draft.ID, "final wording"); err != nil {
			t.Fatal(err)
		}
		// cy joins after the delete and asks for everything.
		if err := api.Do(ctx, http.MethodPost, "/api/rooms/"+room.ID+"/members", ada.Token, map[string]string{"userId": cy.ID}, nil); err != nil {
			t.Fatal(err)
		}
		late, err := stack.Dial(ctx, s.GatewayURL(0), cy.Token)
		if err != nil {
			t.Fatal(err)
		}
		defer late.Close()
		all := int64(-1)
		for deadline := time.Now().Add(15 * time.Second); ; {
			if _, err = late.Join(ctx, room.ID, &all); err == nil || time.Now().After(deadline) {
				break
			}
			time.Sleep(200 * time.Millisecond)
		}
		if err != nil {
			t.Fatal(err)
		}
		pushes, err := late.WaitPushes(ctx, func(fs []protocol.Frame) bool {
			for _, f := range fs {
				if f.Event == protocol.EventMessageEdited {
					return true
				}
			}
			return false
		})
		if err != nil {
			t.Fatal(err)
		}
		var replay strings.Builder
		for _, f := range pushes {
			replay.Write(f.Data)
		}
		for _, old := range []string{"hunter2", "first draft"} {
			if strings.Contains(replay.String(), old) {
				t.Fatalf("the replay shows %q: %s", old, replay.String())
			}
		}
		if !strings.Contains(replay.String(), `"deleted":true`) || !strings.Contains(replay.String(), "final wording") {
			t.Fatalf("the replay does not mark the delete or show the edit: %s", replay.String())
		}

		// PostgreSQL: once the persister has the edit, no path has the old text.
		var leaked int
		for deadline := time.Now().Add(20 * time.Second); ; {
			h, err := api.AllHistory(ctx, cy, room.ID)
			if err != nil {
				t.Fatal(err)
			}
			done := 0
			for _, m := range h {
				if m.ID == secret.ID && m.IsDeleted {
					done++
				}
				if m.ID == draft.ID && m.IsEdited {
					done++
				}
				if m.Content != nil && (strings.Contains(*m.Content, "hunter2") || strings.Contains(*m.Content, "first draft")) && done == 2 {
					t.Fatalf("REST history shows %q", *m.Content)
				}
			}
			if done == 2 {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("the persister did not apply the delete and the edit: %+v", h)
			}
			time.Sleep(200 * time.Millisecond)
		}
		if err := s.SQL().QueryRowContext(ctx, `SELECT count(*) FROM room_events WHERE event::text LIKE '%hunter2%' OR event::text LIKE '%first draft%'`).Scan(&leaked); err != nil {
			t.Fatal(err)
		}
		if leaked != 0 {
			t.Fatalf("room_events keeps the old text in %d rows", leaked)
		}
		for _, q := range []string{"hunter2", "draft"} {
			var res struct {
				Results []json.RawMessage `json:"results"`
			}
			if err := api.Do(ctx, http.MethodGet, "/api/search?q="+q, ada.Token, nil, &res); err != nil {
				t.Fatal(err)
			}
			if len(res.Results) != 0 {
				t.Fatalf("search %q finds %s", q, res.Results)
			}
		}
	})

	// Per-user limits, shared by every api instance (Redis): room creation
	// adds at most 50 others, and too many writes, rooms or searches are
	// RATE_LIMITED with a Retry-After.
	t.Run("per-user limits", func(t *testing.T) {
		many := make([]string, 51)
		for i := range many {
			many[i] = cy.ID
		}
		err := api.Do(ctx, http.MethodPost, "/api/rooms", bob.Token, map[string]any{"type": "group", "name": "all", "memberIds": many}, nil)
		if stack.ErrorCode(err) != chat.CodeBadRequest {
			t.Fatalf("room with 51 members: %v, want BAD_REQUEST", err)
		}
		var last error
		for i := range 10 {
			if last = api.Do(ctx, http.MethodPost, "/api/rooms", bob.Token, map[string]any{"type": "channel", "name": fmt.Sprint("c", i)}, nil); last != nil {
				break
			}
		}
		if stack.ErrorCode(last) != chat.CodeRateLimited {
			t.Fatalf("10 rooms in a row: %v, want RATE_LIMITED", last)
		}
		for i := range 10 {
			if last = api.Do(ctx, http.MethodGet, "/api/search?q=x", bob.Token, nil, nil); last != nil {
				t.Logf("search refused after %d", i)
				break
			}
		}
		if stack.ErrorCode(last) != chat.CodeRateLimited {
			t.Fatalf("10 searches in a row: %v, want RATE_LIMITED", last)
		}
		req, _ := http.NewRequest(http.MethodGet, s.APIURL()+"/api/search?q=x", nil)
		req.Header.Set("Authorization", "Bearer "+bob.Token)
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		res.Body.Close()
		if res.StatusCode != http.StatusTooManyRequests || res.Header.Get("Retry-After") == "" {
			t.Fatalf("limited search: %d Retry-After %q", res.StatusCode, res.Header.Get("Retry-After"))
		}
	})
}
