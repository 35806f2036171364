package telemetry

import (
	"bytes"
	"context"
	"testing"
	"time"

	"go.opentelemetry.io/otel/propagation"

	"relay/pkg/config"
	"relay/pkg/telemetry/spansink"
)

// TestSetupExportsOverOTLP starts telemetry as a service does with
// OTEL_EXPORTER_OTLP_ENDPOINT set (this used to fail on a resource schema
// conflict) and checks that a span arrives with the service's resource.
func TestSetupExportsOverOTLP(t *testing.T) {
	sink, err := spansink.Start()
	if err != nil {
		t.Fatal(err)
	}
	defer sink.Close()
	t.Setenv("OTEL_EXPORTER_OTLP_ENDPOINT", sink.Endpoint())
	t.Setenv("OTEL_TRACES_SAMPLER", "")
	ctx := context.Background()
	var logs bytes.Buffer
	tel, err := setup(ctx, "unit", config.Telemetry{OTLPEndpoint: sink.Endpoint(), LogLevel: "info", InstanceID: "unit-1"}, &logs)
	if err != nil {
		t.Fatalf("setup: %v", err)
	}
	_, span := tel.Tracer.Start(ctx, "work")
	span.End()
	sctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if err := tel.Shutdown(sctx); err != nil {
		t.Fatalf("shutdown: %v", err)
	}
	spans := sink.Spans()
	if len(spans) != 1 {
		t.Fatalf("got %d spans, want 1", len(spans))
	}
	if s := spans[0]; s.Name != "work" || s.Service != "unit" || s.Instance != "unit-1" {
		t.Fatalf("span %+v: want work from service unit, instance unit-1", s)
	}
}

// TestSamplerFromEnvironment checks that the standard sampler variables are
// honoured: a ratio of 0 records nothing a root span starts, while a
// sampled parent's children are still recorded (parent-based).
func TestSamplerFromEnvironment(t *testing.T) {
	sink, err := spansink.Start()
	if err != nil {
		t.Fatal(err)
	}
	defer sink.Close()
	t.Setenv("OTEL_EXPORTER_OTLP_ENDPOINT", sink.Endpoint())
	t.Setenv("OTEL_TRACES_SAMPLER", "parentbased_traceidratio")
	t.Setenv("OTEL_TRACES_SAMPLER_ARG", "0")
	ctx := context.Background()
	tel, err := setup(ctx, "unit", config.Telemetry{OTLPEndpoint: sink.Endpoint(), LogLevel: "info"}, &bytes.Buffer{})
	if err != nil {
		t.Fatalf("setup: %v", err)
	}
	_, root := tel.Tracer.Start(ctx, "root")
	if root.SpanContext().IsSampled() {
		t.Fatal("root span sampled at ratio 0")
	}
	root.End()
	// A parent sampled upstream (traceparent flag 01) keeps its children.
	carrier := map[string]string{"traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"}
	pctx := tel.Propagator.Extract(ctx, propagation.MapCarrier(carrier))
	_, child := tel.Tracer.Start(pctx, "child")
	child.End()
	sctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if err := tel.Shutdown(sctx); err != nil {
		t.Fatalf("shutdown: %v", err)
	}
	spans := sink.Spans()
	if len(spans) != 1 || spans[0].Name != "child" || spans[0].TraceID != "0af7651916cd43dd8448eb211c80319c" {
		t.Fatalf("spans %+v: want only the child of the sampled parent", spans)
	}
}
