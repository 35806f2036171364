package telemetry

import (
	"bytes"
	"context"
	"strings"
	"testing"

	"go.opentelemetry.io/otel/attribute"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"
)

func TestRedactURL(t *testing.T) {
	for in, want := range map[string]string{
		"/ws?token=eyJ.abc.def":                      "/ws?token=REDACTED",
		"/ws?v=1&Token=x&room=2#f":                   "/ws?v=1&Token=REDACTED&room=2#f",
		"http://h:1/socket.io/?EIO=4&access_token=s": "http://h:1/socket.io/?EIO=4&access_token=REDACTED",
		"token=abc":          "token=REDACTED",
		"/api/rooms?limit=5": "/api/rooms?limit=5",
		"/ws":                "/ws",
		"tokens=1&x=2":       "tokens=1&x=2",
	} {
		if got := RedactURL(in); got != want {
			t.Errorf("RedactURL(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestRedactorRewritesStartAttributes(t *testing.T) {
	rec := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(redactor{}), sdktrace.WithSpanProcessor(rec))
	_, span := tp.Tracer("t").Start(context.Background(), "GET /ws", traceStartAttrs(
		attribute.String("http.target", "/ws?token=secret-jwt"),
		attribute.String("url.full", "http://x/ws?a=1&token=secret-jwt"),
		attribute.StringSlice("http.request.header.authorization", []string{"Bearer secret-jwt"}),
		attribute.String("http.route", "/ws"),
		attribute.String("db.connection_string", "redis://:secret-jwt@127.0.0.1:6379/0"),
	))
	span.End()
	for _, kv := range rec.Ended()[0].Attributes() {
		if strings.Contains(kv.Value.Emit(), "secret-jwt") {
			t.Errorf("%s = %s leaks the token", kv.Key, kv.Value.Emit())
		}
	}
}

func TestLogsRedactSecrets(t *testing.T) {
	var buf bytes.Buffer
	log, err := NewLogger(&buf, "info", "json")
	if err != nil {
		t.Fatal(err)
	}
	log.Info("upgrade", "uri", "/ws?token=secret-jwt", "Authorization", "Bearer secret-jwt", "room", "7")
	if out := buf.String(); strings.Contains(out, "secret-jwt") || !strings.Contains(out, `"room":"7"`) {
		t.Fatalf("log line %s: want the token redacted and the rest kept", out)
	}
}

func traceStartAttrs(kv ...attribute.KeyValue) trace.SpanStartOption {
	return trace.WithAttributes(kv...)
}
