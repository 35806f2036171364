package e2e

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"relay/pkg/telemetry/spansink"
	"relay/tests/e2e/stack"
)

// tracedStack starts a stack of two gateways exporting every span to a
// receiver of the test's own, as compose exports to Jaeger.
func tracedStack(t *testing.T) (*stack.Stack, *spansink.Sink) {
	t.Helper()
	sink, err := spansink.Start()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sink.Close() })
	s := newStack(t, stack.Options{Gateways: 2, Env: map[string]string{
		"OTEL_EXPORTER_OTLP_ENDPOINT": sink.Endpoint(),
		"OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
		"OTEL_TRACES_SAMPLER":         "parentbased_always_on",
		// Export within a fraction of a second instead of every 5 s.
		"OTEL_BSP_SCHEDULE_DELAY": "100",
	}})
	return s, sink
}

// messageTrace is the spans one message is expected to produce.
type messageTrace struct {
	receive, send, process, publish spansink.Span
	// fanout is each gateway's span writing the message to its sockets,
	// by gateway instance.
	fanout         map[string]spansink.Span
	persist, batch spansink.Span
}

// TestMessageTrace sends a message between two members on two gateways
// with every service exporting spans, and checks that its trace arrives
// whole: the gateway's receive, the Kafka producer span, the delivery
// worker's process span and its Redis publish, a fan-out span per gateway
// that ends once the frames are written, and the persister's span in the
// message's trace linked to its batch span (which links back). Along the
// way a register, a login and two /ws?token= upgrades are traced too, and
// no span carries a token, password, password hash or e-mail.
func TestMessageTrace(t *testing.T) {
	s, sink := tracedStack(t)
	ctx := testCtx(t, 90*time.Second)
	api := s.API()
	alice := register(t, ctx, api, "alice")
	bob := register(t, ctx, api, "bob")
	if _, err := api.Login(ctx, bob.Username+"@example.test", password); err != nil {
		t.Fatalf("login: %v", err)
	}
	room, err := api.CreateRoom(ctx, alice, "traced", "group", bob)
	if err != nil {
		t.Fatal(err)
	}
	ca := dial(t, ctx, s, 0, alice)
	cb := dial(t, ctx, s, 1, bob)
	for _, c := range []*stack.Conn{ca, cb} {
		if _, err := c.Join(ctx, room.ID, nil); err != nil {
			t.Fatal(err)
		}
	}
	ack, err := ca.Send(ctx, room.ID, "traced hello", "")
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []*stack.Conn{ca, cb} {
		if _, err := c.WaitMessages(ctx, room.ID, 1); err != nil {
			t.Fatal(err)
		}
	}

	var mt messageTrace
	err = stack.WaitFor(ctx, 30*time.Second, func(context.Context) (bool, error) {
		var err error
		mt, err = findMessageTrace(sink.Spans(), s.Topic, ack.ID)
		return err == nil, err
	})
	if err != nil {
		dumpTraces(t, sink.Spans(), ack.ID)
		t.Fatal(err)
	}
	if n := mt.fanout; len(n) != 2 {
		t.Fatalf("fan-out spans on %d gateways, want 2", len(n))
	}
	for gw, f := range mt.fanout {
		if f.Attrs["relay.recipients"] != "1" {
			t.Errorf("%s fan-out span: relay.recipients = %q, want 1", gw, f.Attrs["relay.recipients"])
		}
		if f.End.Before(f.Start) || f.End.After(time.Now()) {
			t.Errorf("%s fan-out span times %v..%v", gw, f.Start, f.End)
		}
	}
	if got := mt.send.Attrs["messaging.destination.name"]; got != s.Topic {
		t.Errorf("producer span destination %q, want %s", got, s.Topic)
	}
	if mt.send.Attrs["messaging.kafka.offset"] != fmt.Sprint(ack.Seq) {
		t.Errorf("producer span offset %q, want the ack's seq %d", mt.send.Attrs["messaging.kafka.offset"], ack.Seq)
	}
	if mt.process.Attrs["messaging.consumer.group.name"] == "" || mt.publish.Attrs["db.system.name"] != "redis" {
		t.Errorf("process span %v / publish span %v lack their semantic attributes", mt.process.Attrs, mt.publish.Attrs)
	}
	checkNoSecrets(t, ctx, s, sink, alice, bob)
}

// findMessageTrace picks the spans of message id out of spans, or says
// which is missing.
func findMessageTrace(spans []spansink.Span, topic, id string) (messageTrace, error) {
	var mt messageTrace
	one := func(what string, match func(spansink.Span) bool) (spansink.Span, error) {
		var found []spansink.Span
		for _, sp := range spans {
			if match(sp) {
				found = append(found, sp)
			}
		}
		if len(found) != 1 {
			return spansink.Span{}, fmt.Errorf("%d spans for %s, want 1", len(found), what)
		}
		return found[0], nil
	}
	var err error
	if mt.send, err = one("the Kafka send (gateway, PRODUCER, send <topic>, messaging.message.id)", func(sp spansink.Span) bool {
		return sp.Service == "gateway" && sp.Kind == "PRODUCER" && sp.Name == "send "+topic && sp.Attrs["messaging.message.id"] == id
	}); err != nil {
		return mt, err
	}
	childOf := func(p spansink.Span) func(spansink.Span) bool {
		return func(sp spansink.Span) bool { return sp.TraceID == p.TraceID && sp.ParentID == p.SpanID }
	}
	if mt.receive, err = one("the gateway's receive (SERVER, parent of the send)", func(sp spansink.Span) bool {
		return sp.Service == "gateway" && sp.Kind == "SERVER" && sp.TraceID == mt.send.TraceID && sp.SpanID == mt.send.ParentID
	}); err != nil {
		return mt, err
	}
	if mt.process, err = one("the delivery worker's process <topic> (CONSUMER, child of the send)", func(sp spansink.Span) bool {
		return sp.Service == "delivery" && sp.Kind == "CONSUMER" && sp.Name == "process "+topic && childOf(mt.send)(sp)
	}); err != nil {
		return mt, err
	}
	if mt.publish, err = one("the Redis publish (delivery, CLIENT, child of process)", func(sp spansink.Span) bool {
		return sp.Service == "delivery" && sp.Kind == "CLIENT" && strings.HasPrefix(sp.Name, "publish ") && childOf(mt.process)(sp)
	}); err != nil {
		return mt, err
	}
	mt.fanout = map[string]spansink.Span{}
	for _, sp := range spans {
		if sp.Service == "gateway" && sp.Kind == "CONSUMER" && childOf(mt.publish)(sp) {
			if _, dup := mt.fanout[sp.Instance]; dup {
				return mt, fmt.Errorf("two fan-out spans on gateway %s", sp.Instance)
			}
			mt.fanout[sp.Instance] = sp
		}
	}
	if len(mt.fanout) < 2 {
		return mt, fmt.Errorf("fan-out spans (gateway, CONSUMER, child of the publish) on %d gateways, want 2", len(mt.fanout))
	}
	if mt.persist, err = one("the persister's persist <topic> (CONSUMER, child of the send)", func(sp spansink.Span) bool {
		return sp.Service == "persister" && sp.Kind == "CONSUMER" && sp.Name == "persist "+topic && childOf(mt.send)(sp)
	}); err != nil {
		return mt, err
	}
	if len(mt.persist.Links) != 1 {
		return mt, fmt.Errorf("persist span has %d links, want 1 (its batch)", len(mt.persist.Links))
	}
	l := mt.persist.Links[0]
	if mt.batch, err = one("the persister's batch span the persist span links to", func(sp spansink.Span) bool {
		return sp.Service == "persister" && sp.TraceID == l.TraceID && sp.SpanID == l.SpanID
	}); err != nil {
		return mt, err
	}
	if mt.batch.Name != "process "+topic || mt.batch.Attrs["messaging.batch.message_count"] == "" {
		return mt, fmt.Errorf("batch span %q %v: want process %s with messaging.batch.message_count", mt.batch.Name, mt.batch.Attrs, topic)
	}
	if !slices.ContainsFunc(mt.batch.Links, func(l spansink.Link) bool { return l.TraceID == mt.send.TraceID && l.SpanID == mt.send.SpanID }) {
		return mt, fmt.Errorf("batch span does not link back to the message's producer span")
	}
	if !slices.ContainsFunc(mt.persist.Events, func(e spansink.Event) bool { return e.Name == "committed" }) {
		return mt, fmt.Errorf("persist span has no committed event")
	}
	return mt, nil
}

// checkNoSecrets fails if any exported span (name, attributes, events,
// links) holds a token, a password, a password hash or an e-mail of the
// users. It also checks the requests that carry them were traced, so the
// check is not vacuous.
func checkNoSecrets(t *testing.T, ctx context.Context, s *stack.Stack, sink *spansink.Sink, users ...*stack.User) {
	t.Helper()
	secrets := map[string]string{password: "password"}
	for _, u := range users {
		secrets[u.Token] = u.Username + "'s token"
		secrets[u.Username+"@example.test"] = u.Username + "'s e-mail"
		var hash string
		if err := s.SQL().QueryRowContext(ctx, `SELECT password_hash FROM users WHERE id = $1`, u.ID).Scan(&hash); err != nil {
			t.Fatal(err)
		}
		secrets[hash] = u.Username + "'s password hash"
	}
	// Spans are exported in batches: wait until the sign-ins and upgrades
	// are in (the message's trace came after them, but another process
	// may flush later).
	var seen map[string]bool
	err := stack.WaitFor(ctx, 20*time.Second, func(context.Context) (bool, error) {
		seen = map[string]bool{}
		for _, sp := range sink.Spans() {
			for _, v := range sp.Attrs {
				switch {
				case strings.Contains(v, "/api/auth/register"):
					seen["register"] = true
				case strings.Contains(v, "/api/auth/login"):
					seen["login"] = true
				case strings.HasPrefix(v, "/ws?") || strings.Contains(v, "/ws?token="):
					seen["upgrade"] = true
				case strings.Contains(strings.ToUpper(v), `INSERT INTO "USERS"`):
					seen["users insert"] = true
				}
			}
		}
		if len(seen) < 4 {
			return false, fmt.Errorf("traced so far: %v; want register, login, upgrade and users insert", seen)
		}
		return true, nil
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, sp := range sink.Spans() {
		texts := []string{sp.Name}
		for k, v := range sp.Attrs {
			texts = append(texts, k+"="+v)
		}
		for _, e := range sp.Events {
			texts = append(texts, e.Name)
			for k, v := range e.Attrs {
				texts = append(texts, k+"="+v)
			}
		}
		for _, l := range sp.Links {
			for k, v := range l.Attrs {
				texts = append(texts, k+"="+v)
			}
		}
		for _, text := range texts {
			for secret, what := range secrets {
				if strings.Contains(text, secret) {
					t.Errorf("span %q of %s carries %s: %.200s", sp.Name, sp.Service, what, text)
				}
			}
		}
	}
}

// dumpTraces logs every span of the traces that mention id, to show what
// did arrive when the expected trace is incomplete.
func dumpTraces(t *testing.T, spans []spansink.Span, id string) {
	t.Helper()
	traces := map[string]bool{}
	for _, sp := range spans {
		if sp.Attrs["messaging.message.id"] == id {
			traces[sp.TraceID] = true
		}
	}
	for _, sp := range spans {
		if traces[sp.TraceID] {
			t.Logf("%s %s/%s %s %q parent=%s links=%v attrs=%v", sp.TraceID[:8], sp.Service, sp.Instance, sp.Kind, sp.Name, sp.ParentID, sp.Links, sp.Attrs)
		}
	}
}
