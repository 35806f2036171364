package telemetry

import (
	"context"
	"log/slog"
	"net/url"
	"strings"

	"go.opentelemetry.io/otel/attribute"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
)

// Redacted replaces a secret in spans and logs.
const Redacted = "REDACTED"

// secretParams are query parameter names whose values are credentials: the
// WebSocket handshake carries the JWT as ?token= (browsers cannot set an
// Authorization header on an upgrade).
var secretParams = map[string]bool{"token": true, "access_token": true, "jwt": true, "password": true, "auth": true}

// secretKeys are attribute and log keys whose values are never recorded.
var secretKeys = map[string]bool{
	"authorization": true, "cookie": true, "set-cookie": true, "password": true, "token": true,
	"http.request.header.authorization": true, "http.request.header.cookie": true,
	"http.response.header.set-cookie": true,
}

// urlKeys are span attributes holding a URL or its query.
var urlKeys = map[attribute.Key]bool{
	"http.target": true, "http.url": true, "url.full": true, "url.query": true, "url.original": true,
}

// RedactURL returns s (a URL, a request target or a bare query) with the
// values of credential query parameters replaced by REDACTED.
func RedactURL(s string) string {
	q := s
	prefix := ""
	if i := strings.IndexByte(s, '?'); i >= 0 {
		prefix, q = s[:i+1], s[i+1:]
	} else if !strings.Contains(s, "=") {
		return s
	}
	fragment := ""
	if i := strings.IndexByte(q, '#'); i >= 0 {
		q, fragment = q[:i], q[i:]
	}
	parts := strings.Split(q, "&")
	changed := false
	for i, p := range parts {
		name, _, ok := strings.Cut(p, "=")
		if ok && secretParams[strings.ToLower(name)] {
			parts[i] = name + "=" + Redacted
			changed = true
		}
	}
	if !changed {
		return s
	}
	return prefix + strings.Join(parts, "&") + fragment
}

// redactUserinfo drops the password of a URL's userinfo (the Redis
// instrumentation records the connection URL).
func redactUserinfo(s string) string {
	u, err := url.Parse(s)
	if err != nil || u.User == nil {
		return s
	}
	if _, has := u.User.Password(); !has {
		return s
	}
	u.User = url.UserPassword(u.User.Username(), Redacted)
	return u.String()
}

// redactor is a span processor that rewrites secrets in a span's start
// attributes (where HTTP instrumentation records the URL and headers)
// before anything can export them.
type redactor struct{}

var _ sdktrace.SpanProcessor = redactor{}

func (redactor) OnStart(_ context.Context, s sdktrace.ReadWriteSpan) {
	var fixed []attribute.KeyValue
	for _, kv := range s.Attributes() {
		switch {
		case secretKeys[string(kv.Key)]:
			fixed = append(fixed, attribute.String(string(kv.Key), Redacted))
		case kv.Key == "db.connection_string" && kv.Value.Type() == attribute.STRING:
			if v := redactUserinfo(kv.Value.AsString()); v != kv.Value.AsString() {
				fixed = append(fixed, attribute.String(string(kv.Key), v))
			}
		case urlKeys[kv.Key] && kv.Value.Type() == attribute.STRING:
			if v := kv.Value.AsString(); RedactURL(v) != v {
				fixed = append(fixed, attribute.String(string(kv.Key), RedactURL(v)))
			}
		}
	}
	if len(fixed) > 0 {
		s.SetAttributes(fixed...) // a key set again replaces its value
	}
}

func (redactor) OnEnd(sdktrace.ReadOnlySpan)      {}
func (redactor) Shutdown(context.Context) error   { return nil }
func (redactor) ForceFlush(context.Context) error { return nil }

// redactLogAttr is the loggers' ReplaceAttr: credential keys lose their
// value, and string values lose credential query parameters.
func redactLogAttr(_ []string, a slog.Attr) slog.Attr {
	if secretKeys[strings.ToLower(a.Key)] {
		return slog.String(a.Key, Redacted)
	}
	if a.Value.Kind() == slog.KindString {
		if v := a.Value.String(); strings.Contains(v, "=") {
			if r := RedactURL(v); r != v {
				return slog.String(a.Key, r)
			}
		}
	}
	return a
}
