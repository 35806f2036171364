// Package spansink is an OTLP/HTTP trace receiver for tests: services under
// test export to it as they would to a collector or Jaeger, and the test
// reads back the spans, flattened to plain values.
package spansink

import (
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	collectorpb "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	commonpb "go.opentelemetry.io/proto/otlp/common/v1"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
	"google.golang.org/protobuf/proto"
)

// maxBody bounds one export request; the SDK's batches are far smaller.
const maxBody = 32 << 20

// Span is one received span.
type Span struct {
	TraceID, SpanID, ParentID string
	Name                      string
	// Kind is the OTLP kind without its prefix: INTERNAL, SERVER, CLIENT,
	// PRODUCER or CONSUMER.
	Kind string
	// Service and Instance are the resource's service.name and
	// service.instance.id.
	Service, Instance string
	// Attrs holds every attribute as text (arrays as their JSON-like form).
	Attrs      map[string]string
	Events     []Event
	Links      []Link
	Start, End time.Time
	// StatusError is true when the span's status is Error.
	StatusError bool
}

// Event is a span event.
type Event struct {
	Name  string
	Attrs map[string]string
}

// Link is a span link.
type Link struct {
	TraceID, SpanID string
	Attrs           map[string]string
}

// Sink receives OTLP/HTTP protobuf trace exports on /v1/traces.
type Sink struct {
	srv *http.Server
	ln  net.Listener
	wg  sync.WaitGroup

	mu    sync.Mutex
	spans []Span
}

// Start listens on a free loopback port.
func Start() (*Sink, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("spansink: listen: %w", err)
	}
	s := &Sink{ln: ln}
	mux := http.NewServeMux()
	mux.HandleFunc("POST /v1/traces", s.export)
	s.srv = &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		_ = s.srv.Serve(ln)
	}()
	return s, nil
}

// Endpoint is the value for OTEL_EXPORTER_OTLP_ENDPOINT.
func (s *Sink) Endpoint() string { return "http://" + s.ln.Addr().String() }

// Close stops the server.
func (s *Sink) Close() error {
	err := s.srv.Close()
	s.wg.Wait()
	return err
}

// Spans returns a copy of every span received so far.
func (s *Sink) Spans() []Span {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.spans)
}

// Trace returns the received spans of one trace.
func (s *Sink) Trace(traceID string) []Span {
	var out []Span
	for _, sp := range s.Spans() {
		if sp.TraceID == traceID {
			out = append(out, sp)
		}
	}
	return out
}

func (s *Sink) export(w http.ResponseWriter, r *http.Request) {
	if ct := r.Header.Get("Content-Type"); ct != "application/x-protobuf" {
		http.Error(w, "only application/x-protobuf", http.StatusUnsupportedMediaType)
		return
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxBody))
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	var req collectorpb.ExportTraceServiceRequest
	if err := proto.Unmarshal(body, &req); err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	spans := Flatten(&req)
	s.mu.Lock()
	s.spans = append(s.spans, spans...)
	s.mu.Unlock()
	out, _ := proto.Marshal(&collectorpb.ExportTraceServiceResponse{})
	w.Header().Set("Content-Type", "application/x-protobuf")
	_, _ = w.Write(out)
}

// Flatten turns an export request into Spans.
func Flatten(req *collectorpb.ExportTraceServiceRequest) []Span {
	var out []Span
	for _, rs := range req.GetResourceSpans() {
		res := attrs(rs.GetResource().GetAttributes())
		for _, ss := range rs.GetScopeSpans() {
			for _, sp := range ss.GetSpans() {
				out = append(out, flatten(sp, res["service.name"], res["service.instance.id"]))
			}
		}
	}
	return out
}

func flatten(sp *tracepb.Span, service, instance string) Span {
	s := Span{
		TraceID: hex.EncodeToString(sp.GetTraceId()), SpanID: hex.EncodeToString(sp.GetSpanId()),
		Name: sp.GetName(), Kind: kind(sp.GetKind()), Service: service, Instance: instance,
		Attrs:       attrs(sp.GetAttributes()),
		Start:       time.Unix(0, int64(sp.GetStartTimeUnixNano())),
		End:         time.Unix(0, int64(sp.GetEndTimeUnixNano())),
		StatusError: sp.GetStatus().GetCode() == tracepb.Status_STATUS_CODE_ERROR,
	}
	if p := sp.GetParentSpanId(); len(p) > 0 {
		s.ParentID = hex.EncodeToString(p)
	}
	for _, e := range sp.GetEvents() {
		s.Events = append(s.Events, Event{Name: e.GetName(), Attrs: attrs(e.GetAttributes())})
	}
	for _, l := range sp.GetLinks() {
		s.Links = append(s.Links, Link{TraceID: hex.EncodeToString(l.GetTraceId()), SpanID: hex.EncodeToString(l.GetSpanId()), Attrs: attrs(l.GetAttributes())})
	}
	return s
}

func kind(k tracepb.Span_SpanKind) string {
	switch k {
	case tracepb.Span_SPAN_KIND_SERVER:
		return "SERVER"
	case tracepb.Span_SPAN_KIND_CLIENT:
		return "CLIENT"
	case tracepb.Span_SPAN_KIND_PRODUCER:
		return "PRODUCER"
	case tracepb.Span_SPAN_KIND_CONSUMER:
		return "CONSUMER"
	default:
		return "INTERNAL"
	}
}

func attrs(kvs []*commonpb.KeyValue) map[string]string {
	m := make(map[string]string, len(kvs))
	for _, kv := range kvs {
		m[kv.GetKey()] = value(kv.GetValue())
	}
	return m
}

func value(v *commonpb.AnyValue) string {
	switch x := v.GetValue().(type) {
	case *commonpb.AnyValue_StringValue:
		return x.StringValue
	case *commonpb.AnyValue_IntValue:
		return strconv.FormatInt(x.IntValue, 10)
	case *commonpb.AnyValue_DoubleValue:
		return strconv.FormatFloat(x.DoubleValue, 'g', -1, 64)
	case *commonpb.AnyValue_BoolValue:
		return strconv.FormatBool(x.BoolValue)
	case *commonpb.AnyValue_BytesValue:
		return hex.EncodeToString(x.BytesValue)
	case *commonpb.AnyValue_ArrayValue:
		parts := make([]string, 0, len(x.ArrayValue.GetValues()))
		for _, e := range x.ArrayValue.GetValues() {
			parts = append(parts, strconv.Quote(value(e)))
		}
		return "[" + strings.Join(parts, ",") + "]"
	default:
		return ""
	}
}
