package server

import (
	"bufio"
	"encoding/json"
	"os"
	"strings"
	"testing"
	"time"

	"relay/pkg/chat"
	"relay/pkg/protocol"
	"relay/pkg/store"
	"relay/services/gateway/internal/metrics"
)

const protocolDoc = "../../../../docs/protocol.md"

// docExamples returns the fenced json blocks of docs/protocol.md that follow
// the given marker comment, in document order.
func docExamples(t *testing.T, marker string) []string {
	t.Helper()
	f, err := os.Open(protocolDoc)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out []string
	var block strings.Builder
	armed, in := false, false
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Text()
		switch {
		case in && line == "```":
			out = append(out, block.String())
			block.Reset()
			in = false
		case in:
			block.WriteString(line + "\n")
		case strings.TrimSpace(line) == "<!-- "+marker+" -->":
			armed = true
		case armed && line == "```json":
			in, armed = true, false
		case armed && strings.TrimSpace(line) != "":
			t.Fatalf("%s marker not followed by a json block: %q", marker, line)
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

// TestProtocolDocExamples sends every client example of docs/protocol.md to
// a gateway, in document order, in the world the examples describe (user 7
// alice, admin of group room 42, author of message 0190a7d2-...a01), and
// requires an ack for each.
func TestProtocolDocExamples(t *testing.T) {
	t.Parallel()
	examples := docExamples(t, "client-example")
	if len(examples) < 10 {
		t.Fatalf("found %d client examples; the markers are broken", len(examples))
	}
	e := newEnv(t)
	g := e.start(nil)
	now := time.Now()
	alice := store.User{ID: 7, Username: "alice", Email: "alice@example.test", PasswordHash: "x", CreatedAt: now, UpdatedAt: now}
	room := store.Room{ID: 42, Name: "general", Type: string(chat.RoomGroup), CreatedBy: 7, CreatedAt: now, UpdatedAt: now}
	msg := store.Message{ID: "0190a7d2-5c1e-7b3a-9f00-4d2c8e6b1a01", RoomID: 42, UserID: 7, Content: "Hello, world!", Type: "text", CreatedAt: now}
	for _, row := range []any{&alice, &room, &store.RoomMember{RoomID: 42, UserID: 7, Role: "admin", LastReadSeq: -1, JoinedAt: now}, &msg} {
		if err := e.db.Create(row).Error; err != nil {
			t.Fatal(err)
		}
	}
	tok, _, err := e.tokens.Issue(7, "alice")
	if err != nil {
		t.Fatal(err)
	}
	c := e.dial(g, tok)
	for _, ex := range examples {
		var f protocol.Frame
		if err := json.Unmarshal([]byte(ex), &f); err != nil || f.Ref == "" {
			t.Fatalf("example %s: not a frame with a ref (%v)", ex, err)
		}
		c.sendRaw(ex)
		reply := c.reply(f.Ref)
		if reply.Event != protocol.EventAck {
			t.Errorf("example %s: got %s %s, want ack", strings.TrimSpace(ex), reply.Event, reply.Data)
		}
	}
}

// TestProtocolDocServerExamples checks the server examples are frames of
// events the protocol defines.
func TestProtocolDocServerExamples(t *testing.T) {
	t.Parallel()
	examples := docExamples(t, "server-example")
	if len(examples) < 10 {
		t.Fatalf("found %d server examples; the markers are broken", len(examples))
	}
	for _, ex := range examples {
		var f protocol.Frame
		dec := json.NewDecoder(strings.NewReader(ex))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&f); err != nil {
			t.Fatalf("example %s: %v", ex, err)
		}
		if !metrics.IsServerEvent(f.Event) {
			t.Errorf("example %s: unknown server event %q", ex, f.Event)
		}
		if !json.Valid(f.Data) || f.Data[0] != '{' {
			t.Errorf("example %s: data is not an object", ex)
		}
	}
}
