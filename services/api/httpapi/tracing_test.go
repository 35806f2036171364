package httpapi_test

import (
	"context"
	"io"
	"log/slog"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/propagation"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"relay/pkg/kafka"
	"relay/pkg/telemetry"
)

// TestTracing follows one request: the caller's trace context continues in
// the request span, every SQL statement is a child span, and the member
// event carries the trace to Kafka. It sets OpenTelemetry's globals (the
// SQL plugin uses them), so it does not run in parallel.
func TestTracing(t *testing.T) {
	rec := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec))
	t.Cleanup(func() { _ = tp.Shutdown(context.Background()) })
	prop := propagation.NewCompositeTextMapPropagator(propagation.TraceContext{}, propagation.Baggage{})
	prevTP, prevProp := otel.GetTracerProvider(), otel.GetTextMapPropagator()
	otel.SetTracerProvider(tp)
	otel.SetTextMapPropagator(prop)
	t.Cleanup(func() { otel.SetTracerProvider(prevTP); otel.SetTextMapPropagator(prevProp) })
	tel := &telemetry.Telemetry{
		Log: slog.New(slog.NewTextHandler(io.Discard, nil)), Tracer: tp.Tracer("test"),
		TracerProvider: tp, Propagator: prop, Registry: prometheus.NewRegistry(),
	}
	e := newAPI(t, envOptions{tel: tel, serial: true})
	a := e.user("tracy")
	ch := e.room(a, "channel", "traced")
	b := e.user("trent")

	const traceID = "4bf92f3577b34da6a3ce929d0e0e4736"
	parent := "00-" + traceID + "-00f067aa0ba902b7-01"
	e.do("POST", "/api/rooms/"+ch.ID+"/join", b.token, nil, "traceparent", parent).expect(t, 200, nil)

	var server trace.SpanContext
	sql := 0
	for _, s := range rec.Ended() {
		if s.SpanContext().TraceID().String() != traceID {
			continue
		}
		switch {
		case s.SpanKind() == trace.SpanKindServer:
			server = s.SpanContext()
		case s.SpanKind() == trace.SpanKindClient && s.InstrumentationScope().Name == "gorm.io/plugin/opentelemetry":
			sql++
		}
	}
	if !server.IsValid() {
		t.Fatalf("no server span continues the caller's trace; spans: %d", len(rec.Ended()))
	}
	if sql < 3 { // auth lookup, join transaction, room read
		t.Fatalf("%d SQL spans in the request's trace, want at least 3", sql)
	}
	var carried bool
	for _, m := range e.records() {
		headers := kafka.ConsumerHeaders(m.Headers)
		ctx := prop.Extract(context.Background(), kafka.HeaderCarrier{Headers: &headers})
		if sc := trace.SpanContextFromContext(ctx); sc.TraceID().String() == traceID {
			carried = true
		}
	}
	if !carried {
		t.Fatal("the member_joined record does not carry the request's trace")
	}
}
