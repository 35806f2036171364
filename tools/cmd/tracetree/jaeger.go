package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"time"
)

// Trace is a trace as Jaeger's query API (/api/traces) returns it.
type Trace struct {
	TraceID   string             `json:"traceID"`
	Spans     []Span             `json:"spans"`
	Processes map[string]Process `json:"processes"`
}

// Span is a span of a Trace; times are in microseconds.
type Span struct {
	TraceID       string      `json:"traceID"`
	SpanID        string      `json:"spanID"`
	OperationName string      `json:"operationName"`
	References    []Reference `json:"references"`
	StartTime     int64       `json:"startTime"`
	Duration      int64       `json:"duration"`
	Tags          []KeyValue  `json:"tags"`
	Logs          []Log       `json:"logs"`
	ProcessID     string      `json:"processID"`
}

// Reference is CHILD_OF (the parent) or FOLLOWS_FROM (a link).
type Reference struct {
	RefType string `json:"refType"`
	TraceID string `json:"traceID"`
	SpanID  string `json:"spanID"`
}

// KeyValue is a tag; Value is a string, number or bool.
type KeyValue struct {
	Key   string `json:"key"`
	Value any    `json:"value"`
}

// Log is a span event.
type Log struct {
	Timestamp int64      `json:"timestamp"`
	Fields    []KeyValue `json:"fields"`
}

// Process is the resource of a span.
type Process struct {
	ServiceName string     `json:"serviceName"`
	Tags        []KeyValue `json:"tags"`
}

type client struct {
	base string
	hc   http.Client
}

// messageTrace finds the trace whose producer span carries id, and waits
// (up to wait) until its span count stops growing: the services export in
// batches, so a trace fetched at once may still be filling in.
func (c *client) messageTrace(ctx context.Context, service, id string, lookback, wait time.Duration) (*Trace, error) {
	tags, err := json.Marshal(map[string]string{"messaging.message.id": id})
	if err != nil {
		return nil, err
	}
	q := url.Values{
		"service": {service}, "tags": {string(tags)}, "limit": {"5"},
		"lookback": {lookback.String()},
		"start":    {strconv.FormatInt(time.Now().Add(-lookback).UnixMicro(), 10)},
		"end":      {strconv.FormatInt(time.Now().UnixMicro(), 10)},
	}
	var found []Trace
	if err := c.get(ctx, "/api/traces?"+q.Encode(), &found); err != nil {
		return nil, err
	}
	if len(found) == 0 {
		return nil, fmt.Errorf("no trace in %s with messaging.message.id=%s (service %s, last %v): is tracing on (OTEL_EXPORTER_OTLP_ENDPOINT) and the id a message's?", c.base, id, service, lookback)
	}
	traceID := found[0].TraceID
	var tr *Trace
	deadline := time.Now().Add(wait)
	last := -1
	for {
		var got []Trace
		if err := c.get(ctx, "/api/traces/"+traceID, &got); err != nil {
			return nil, err
		}
		if len(got) != 1 {
			return nil, fmt.Errorf("trace %s: %d traces returned", traceID, len(got))
		}
		tr = &got[0]
		if len(tr.Spans) == last || time.Now().After(deadline) {
			return tr, nil
		}
		last = len(tr.Spans)
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(time.Second):
		}
	}
}

func (c *client) get(ctx context.Context, path string, data any) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.base+path, nil)
	if err != nil {
		return err
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return fmt.Errorf("jaeger: %w", err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return fmt.Errorf("jaeger: %w", err)
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("jaeger: GET %s: %s: %.300s", path, resp.Status, body)
	}
	var env struct {
		Data   json.RawMessage `json:"data"`
		Errors []struct {
			Msg string `json:"msg"`
		} `json:"errors"`
	}
	if err := json.Unmarshal(body, &env); err != nil {
		return fmt.Errorf("jaeger: GET %s: %w", path, err)
	}
	if len(env.Errors) > 0 {
		return errors.New("jaeger: " + env.Errors[0].Msg)
	}
	return json.Unmarshal(env.Data, data)
}
