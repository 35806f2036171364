// Package telemetry sets up what every service needs to be observed: slog
// logs carrying trace ids, OpenTelemetry tracing (exported over OTLP when
// configured) and a Prometheus registry.
package telemetry

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"runtime/debug"
	"strings"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracegrpc"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"

	"relay/pkg/config"
)

// Telemetry holds a service's logger, tracer provider and metrics registry.
type Telemetry struct {
	// Log is the service logger; records carry trace_id/span_id when the
	// context passed to the *Context methods holds a span.
	Log *slog.Logger
	// Tracer creates the service's own spans.
	Tracer trace.Tracer
	// TracerProvider is handed to instrumentation (fiber, gorm, redis).
	TracerProvider trace.TracerProvider
	// Propagator injects and extracts W3C trace context and baggage.
	Propagator propagation.TextMapPropagator
	// Registry collects the service's Prometheus metrics.
	Registry *prometheus.Registry

	shutdown func(context.Context) error
}

// Setup builds telemetry for the named service. Traces are exported over
// OTLP only when cfg.OTLPEndpoint is set; otherwise spans are not recorded
// (but trace context still propagates).
func Setup(ctx context.Context, service string, cfg config.Telemetry) (*Telemetry, error) {
	return setup(ctx, service, cfg, os.Stderr)
}

func setup(ctx context.Context, service string, cfg config.Telemetry, w io.Writer) (*Telemetry, error) {
	log, err := NewLogger(w, cfg.LogLevel, cfg.LogFormat)
	if err != nil {
		return nil, err
	}
	log = log.With("service", service)
	prop := propagation.NewCompositeTextMapPropagator(propagation.TraceContext{}, propagation.Baggage{})

	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		collectors.NewBuildInfoCollector())

	t := &Telemetry{Log: log, Propagator: prop, Registry: reg, shutdown: func(context.Context) error { return nil }}
	var tp trace.TracerProvider = noop.NewTracerProvider()
	if cfg.OTLPEndpoint != "" {
		exp, err := newExporter(ctx, cfg)
		if err != nil {
			return nil, err
		}
		res, err := newResource(ctx, service, cfg.InstanceID)
		if err != nil {
			return nil, err
		}
		// No WithSampler: the SDK then honours OTEL_TRACES_SAMPLER and
		// OTEL_TRACES_SAMPLER_ARG (e.g. parentbased_traceidratio and 0.1),
		// and defaults to parentbased_always_on.
		sdk := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(redactor{}), sdktrace.WithBatcher(exp), sdktrace.WithResource(res))
		tp = sdk
		t.shutdown = sdk.Shutdown
		log.Info("tracing enabled", "endpoint", cfg.OTLPEndpoint, "protocol", cfg.OTLPProtocol)
	}
	// Instrumentation libraries default to the globals; set them so spans
	// from fiber, gorm and go-redis join ours.
	otel.SetTracerProvider(tp)
	otel.SetTextMapPropagator(prop)
	t.TracerProvider = tp
	t.Tracer = tp.Tracer("relay/" + service)
	return t, nil
}

// newResource describes the process. Every part is detected by the SDK
// itself or carries no schema URL, so a semconv version of ours can never
// conflict with the SDK's (merging resource.Default() with a resource of an
// older semconv schema failed at startup). OTEL_SERVICE_NAME and
// OTEL_RESOURCE_ATTRIBUTES override what is set here.
func newResource(ctx context.Context, service, instance string) (*resource.Resource, error) {
	attrs := []attribute.KeyValue{semconv.ServiceName(service)}
	if id := instance; id != "" {
		attrs = append(attrs, semconv.ServiceInstanceID(id))
	}
	if v := buildVersion(); v != "" {
		attrs = append(attrs, semconv.ServiceVersion(v))
	}
	res, err := resource.New(ctx,
		resource.WithTelemetrySDK(),
		resource.WithHost(),
		resource.WithProcessPID(),
		resource.WithAttributes(attrs...),
		resource.WithFromEnv(),
	)
	if err != nil {
		return nil, fmt.Errorf("telemetry: resource: %w", err)
	}
	return res, nil
}

// buildVersion is the VCS revision the binary was built from ("" when the
// build has none, as under go test).
func buildVersion() string {
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return ""
	}
	for _, s := range bi.Settings {
		if s.Key == "vcs.revision" {
			return s.Value
		}
	}
	return ""
}

func newExporter(ctx context.Context, cfg config.Telemetry) (sdktrace.SpanExporter, error) {
	// The exporters read OTEL_EXPORTER_OTLP_ENDPOINT themselves.
	var (
		exp sdktrace.SpanExporter
		err error
	)
	switch cfg.OTLPProtocol {
	case "grpc":
		exp, err = otlptracegrpc.New(ctx)
	case "http/protobuf", "":
		exp, err = otlptracehttp.New(ctx)
	default:
		return nil, fmt.Errorf("telemetry: unknown OTEL_EXPORTER_OTLP_PROTOCOL %q", cfg.OTLPProtocol)
	}
	if err != nil {
		return nil, fmt.Errorf("telemetry: exporter: %w", err)
	}
	return exp, nil
}

// Shutdown flushes pending spans.
func (t *Telemetry) Shutdown(ctx context.Context) error {
	return t.shutdown(ctx)
}

// NewLogger returns a slog logger writing to w whose records include the
// trace and span ids of the context they are logged with.
func NewLogger(w io.Writer, level, format string) (*slog.Logger, error) {
	var lv slog.Level
	if err := lv.UnmarshalText([]byte(level)); err != nil {
		return nil, fmt.Errorf("telemetry: LOG_LEVEL: %w", err)
	}
	opts := &slog.HandlerOptions{Level: lv, ReplaceAttr: redactLogAttr}
	var h slog.Handler
	switch strings.ToLower(format) {
	case "json", "":
		h = slog.NewJSONHandler(w, opts)
	case "text":
		h = slog.NewTextHandler(w, opts)
	default:
		return nil, errors.New("telemetry: LOG_FORMAT must be json or text")
	}
	return slog.New(traceHandler{h}), nil
}

// traceHandler adds trace_id and span_id from the record's context.
type traceHandler struct{ slog.Handler }

func (h traceHandler) Handle(ctx context.Context, r slog.Record) error {
	if sc := trace.SpanContextFromContext(ctx); sc.IsValid() {
		r.AddAttrs(slog.String("trace_id", sc.TraceID().String()), slog.String("span_id", sc.SpanID().String()))
	}
	return h.Handler.Handle(ctx, r)
}

func (h traceHandler) WithAttrs(as []slog.Attr) slog.Handler {
	return traceHandler{h.Handler.WithAttrs(as)}
}

func (h traceHandler) WithGroup(name string) slog.Handler {
	return traceHandler{h.Handler.WithGroup(name)}
}
