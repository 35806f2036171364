package socketio

import (
	"encoding/json"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gofiber/fiber/v2"

	"relay/pkg/ratelimit"
)

// Sessions that have not connected a socket are capped per client
// address; a connected one no longer counts, and an expired one gives its
// place back. The address cap counts every session of the address until
// it is gone.
func TestPendingSessionsPerAddress(t *testing.T) {
	t.Parallel()
	caps := &ratelimit.ConnCaps{PerAddr: 4}
	srv, base := testServer(t, Options{
		MaxPendingPerAddr: 2, ConnectTimeout: 300 * time.Millisecond, AcquireAddr: caps.AcquireAddr,
		ClientAddr: func(c *fiber.Ctx) string { return "198.51.100.7" },
	})
	a := handshake(t, base)
	handshake(t, base)
	code, body := httpDo(t, http.MethodGet, base+"?EIO=4&transport=polling", "")
	// (The gateway's error handler renders the RATE_LIMITED as a 429.)
	if code < 400 || !strings.Contains(body, "without CONNECT") {
		t.Fatalf("third pending session: %d %s, want refused", code, body)
	}
	// Connecting one frees its pending place (not its address place).
	if code, body := httpDo(t, http.MethodPost, pollURL(base, a), `40{"token":"good"}`); code != 200 || body != "ok" {
		t.Fatalf("CONNECT: %d %q", code, body)
	}
	eventually(t, "pending place given back", func() bool {
		code, _ := httpDo(t, http.MethodGet, base+"?EIO=4&transport=polling", "")
		return code == http.StatusOK
	})
	if _, n := caps.Counts(0, "198.51.100.7"); n != 3 {
		t.Fatalf("address holds %d sessions, want 3", n)
	}
	// The two unconnected ones expire and give both places back.
	eventually(t, "unconnected sessions expired", func() bool { return srv.Sessions() == 1 })
	eventually(t, "address places given back", func() bool { _, n := caps.Counts(0, "198.51.100.7"); return n == 1 })
}

// panicky panics in ServeSocket after connecting the socket when the
// client sends an event named "boom".
type panicky struct{ served atomic.Int32 }

func (h *panicky) ServeSocket(s *Session, _ json.RawMessage) error {
	h.served.Add(1)
	if err := s.Accept(); err != nil {
		return err
	}
	for {
		ev, err := s.Next()
		if err != nil {
			return nil
		}
		if ev.Name == "boom" {
			panic("handler bug")
		}
	}
}

// A panic in one session's handler ends that session (the client gets the
// close packet) and leaves the server serving the others.
func TestPanicInASessionEndsOnlyThatSession(t *testing.T) {
	t.Parallel()
	h := &panicky{}
	srv, base := testServer(t, Options{Handler: h})
	sid := connectPolling(t, base)
	other := connectPolling(t, base)
	if code, body := httpDo(t, http.MethodPost, pollURL(base, sid), `42["boom"]`); code != 200 || body != "ok" {
		t.Fatalf("post: %d %q", code, body)
	}
	if got := pollUntilClose(t, base, sid); len(got) == 0 {
		t.Fatal("no close packet after the panic")
	}
	eventually(t, "the panicked session is gone", func() bool { return srv.Sessions() == 1 })
	// The other session and new ones still work.
	if code, body := httpDo(t, http.MethodPost, pollURL(base, other), `42["fine"]`); code != 200 || body != "ok" {
		t.Fatalf("other session: %d %q", code, body)
	}
	connectPolling(t, base)
	if h.served.Load() != 3 {
		t.Fatalf("served %d sockets, want 3", h.served.Load())
	}
}
