// Package web is the HTTP plumbing every service shares: a Fiber app with the
// error model mapped to JSON bodies, recovery from panics, request tracing
// and metrics, /health, /ready and /metrics, and graceful shutdown.
package web

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/gofiber/contrib/otelfiber/v2"
	"github.com/gofiber/fiber/v2"
	"github.com/gofiber/fiber/v2/middleware/adaptor"
	"github.com/gofiber/fiber/v2/middleware/pprof"
	"github.com/gofiber/fiber/v2/middleware/recover"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"relay/pkg/chat"
	"relay/pkg/telemetry"
)

// ErrorBody is the JSON shape of every error response:
// {"error": {"code": "...", "message": "..."}}.
type ErrorBody struct {
	Error ErrorDetail `json:"error"`
}

// ErrorDetail is the inner object of ErrorBody.
type ErrorDetail struct {
	Code    chat.Code `json:"code"`
	Message string    `json:"message"`
	// RetryAfterMs is set on RATE_LIMITED: how long to wait before retrying
	// (also in the Retry-After header, in whole seconds).
	RetryAfterMs int64 `json:"retryAfterMs,omitempty"`
}

// Check reports whether one dependency is usable; used by /ready.
type Check func(ctx context.Context) error

// Options configure NewApp.
type Options struct {
	// Service names the service in logs and metrics.
	Service string
	// Telemetry provides the logger, tracer provider and registry.
	Telemetry *telemetry.Telemetry
	// BodyLimit bounds request bodies in bytes; zero means 64 KiB. A body
	// up to minReadLimit (or BodyLimit, if larger) is read and refused with
	// 413 TOO_LARGE on a connection that stays open; a larger one is refused
	// by fasthttp, which closes the connection at once, so a client still
	// writing the body may see a reset instead of the 413.
	BodyLimit int
	// Checks are run by /ready, each with ReadyTimeout; nil means always ready.
	Checks map[string]Check
	// ReadyTimeout bounds each check; zero means 2 s.
	ReadyTimeout time.Duration
	// Pprof serves the runtime profiles under /debug/pprof/ when true.
	Pprof bool
	// StreamBody, when set, picks the requests whose body is handed to the
	// handler unread, as c.Request().BodyStream(), for it to read and bound
	// itself (uploads); such a connection is closed after the response.
	// Every other body is still read in full and held to BodyLimit. Nil
	// streams nothing.
	StreamBody func(c *fiber.Ctx) bool
	// AllowedOrigins are the browser origins (ParseOrigins form) that may
	// read responses cross-origin (CORS); nil means same-origin only.
	AllowedOrigins []string
}

// NewApp returns a Fiber app with the shared middleware and the /health,
// /ready and /metrics routes installed.
func NewApp(o Options) *fiber.App {
	if o.BodyLimit == 0 {
		o.BodyLimit = 64 << 10
	}
	if o.ReadyTimeout == 0 {
		o.ReadyTimeout = 2 * time.Second
	}
	log := o.Telemetry.Log
	app := fiber.New(fiber.Config{
		AppName:               o.Service,
		BodyLimit:             max(o.BodyLimit, minReadLimit),
		DisableStartupMessage: true,
		ReadTimeout:           30 * time.Second,
		IdleTimeout:           120 * time.Second,
		ErrorHandler:          ErrorHandler(log),
		// With StreamBody, fasthttp hands every body over as a stream (only
		// its first 8 KiB read) and bodyLimit bounds it; it must not parse
		// multipart forms of any size on its own either.
		StreamRequestBody:            o.StreamBody != nil,
		DisablePreParseMultipartForm: true,
	})
	app.Use(recover.New(recover.Config{EnableStackTrace: true, StackTraceHandler: func(c *fiber.Ctx, e any) {
		log.ErrorContext(c.UserContext(), "panic in handler", "panic", fmt.Sprint(e), "path", c.Path())
	}}))
	app.Use(securityHeaders)
	app.Use(corsMiddleware(o.AllowedOrigins))
	app.Use(otelfiber.Middleware(
		otelfiber.WithTracerProvider(o.Telemetry.TracerProvider),
		otelfiber.WithPropagators(o.Telemetry.Propagator),
		otelfiber.WithNext(func(c *fiber.Ctx) bool { return isProbe(c.Path()) }),
	))
	app.Use(metricsMiddleware(o.Telemetry.Registry))
	// Before anything can call c.Body(), which would inflate the body.
	app.Use(refuseContentEncoding)
	o.Telemetry.Registry.MustRegister(readyGauge(o.Checks, o.ReadyTimeout, log))
	app.Use(bodyLimit(o.BodyLimit, o.StreamBody))
	if o.Pprof {
		app.Use(pprof.New())
	}

	app.Get("/health", func(c *fiber.Ctx) error {
		return c.JSON(fiber.Map{"status": "ok", "service": o.Service})
	})
	app.Get("/ready", readyHandler(o.Checks, o.ReadyTimeout, log))
	app.Get("/metrics", adaptor.HTTPHandler(promhttp.HandlerFor(o.Telemetry.Registry, promhttp.HandlerOpts{})))
	return app
}

// minReadLimit is the size up to which a body over Options.BodyLimit is
// still read (and refused) without closing the connection.
const minReadLimit = 1 << 20

// bodyLimit refuses bodies over limit bytes with 413 TOO_LARGE. A body up
// to minReadLimit is read in full first, so the answer reaches the client
// and the connection stays usable. With streaming on (Options.StreamBody),
// a body the handler does not stream is read here, never more than
// minReadLimit of it; a larger one is refused at once and its connection
// closed.
func bodyLimit(limit int, streamed func(*fiber.Ctx) bool) fiber.Handler {
	readLimit := max(limit, minReadLimit)
	return func(c *fiber.Ctx) error {
		req := c.Request()
		if !req.IsBodyStream() {
			// The raw body: c.Body() would decompress it first.
			if len(req.Body()) > limit {
				return chat.Errorf(chat.CodeTooLarge, "request body exceeds %d bytes", limit)
			}
			return c.Next()
		}
		if streamed != nil && streamed(c) {
			err := c.Next()
			// A chunked stream the handler read to its end must not be read
			// again: that would wait for the next request's bytes.
			finishStream(c, req.Header.ContentLength() >= 0)
			return err
		}
		if req.Header.ContentLength() > readLimit {
			finishStream(c, true)
			return chat.Errorf(chat.CodeTooLarge, "request body exceeds %d bytes", limit)
		}
		body, err := io.ReadAll(io.LimitReader(req.BodyStream(), int64(readLimit)+1))
		if err != nil || len(body) > readLimit {
			finishStream(c, err == nil)
			if err != nil {
				return chat.Wrap(chat.CodeBadRequest, err, "request body could not be read")
			}
			return chat.Errorf(chat.CodeTooLarge, "request body exceeds %d bytes", limit)
		}
		req.SetBodyRaw(body)
		if len(body) > limit {
			return chat.Errorf(chat.CodeTooLarge, "request body exceeds %d bytes", limit)
		}
		return c.Next()
	}
}

// finishStream ends a request whose body stream may be partly unread: with
// drain, it reads (and drops) up to minReadLimit more of the body, so a
// client still sending is more likely to see the response than a reset,
// closes the connection (what is left of the body would otherwise be read
// as the next request) and drops the stream, so nothing after this (the
// tracing middleware) reads the rest into memory.
func finishStream(c *fiber.Ctx, drain bool) {
	req := c.Request()
	if drain && req.IsBodyStream() {
		_, _ = io.CopyN(io.Discard, req.BodyStream(), minReadLimit)
	}
	c.Context().SetConnectionClose()
	req.SetBodyRaw([]byte{})
}

func isProbe(path string) bool {
	return path == "/health" || path == "/ready" || path == "/metrics" || strings.HasPrefix(path, "/debug/pprof")
}

// ErrorHandler maps errors to the JSON error body: *chat.Error by its code,
// Fiber's own errors (unknown route, body too large) by their status, and
// anything else to INTERNAL with the detail only in the log.
func ErrorHandler(log *slog.Logger) fiber.ErrorHandler {
	return func(c *fiber.Ctx, err error) error {
		code := chat.ErrorCode(err)
		msg := chat.ErrorMessage(err)
		var fe *fiber.Error
		if code == chat.CodeInternal && errors.As(err, &fe) {
			code, msg = fiberCode(fe.Code), fe.Message
		}
		if code == chat.CodeInternal {
			log.ErrorContext(c.UserContext(), "request failed", "err", err, "method", c.Method(), "path", c.Path())
		}
		detail := ErrorDetail{Code: code, Message: msg}
		if d := chat.RetryAfter(err); d > 0 {
			c.Set(fiber.HeaderRetryAfter, retryAfterSeconds(d))
			detail.RetryAfterMs = d.Milliseconds()
		}
		return c.Status(chat.HTTPStatus(code)).JSON(ErrorBody{Error: detail})
	}
}

func fiberCode(status int) chat.Code {
	switch status {
	case fiber.StatusNotFound, fiber.StatusMethodNotAllowed:
		return chat.CodeNotFound
	case fiber.StatusRequestEntityTooLarge:
		return chat.CodeTooLarge
	case fiber.StatusUnsupportedMediaType:
		return chat.CodeUnsupportedMediaType
	case fiber.StatusUnauthorized:
		return chat.CodeUnauthorized
	case fiber.StatusForbidden:
		return chat.CodeForbidden
	case fiber.StatusTooManyRequests:
		return chat.CodeRateLimited
	case fiber.StatusServiceUnavailable:
		return chat.CodeUnavailable
	}
	if status >= 400 && status < 500 {
		return chat.CodeBadRequest
	}
	return chat.CodeInternal
}

func readyHandler(checks map[string]Check, timeout time.Duration, log *slog.Logger) fiber.Handler {
	return func(c *fiber.Ctx) error {
		// UserContext lazily stores a context on the request: call it once,
		// not from the check goroutines (a data race otherwise).
		results, ok := runChecks(c.UserContext(), checks, timeout, log)
		status := fiber.StatusOK
		state := "ready"
		if !ok {
			status, state = fiber.StatusServiceUnavailable, "unavailable"
		}
		return c.Status(status).JSON(fiber.Map{"status": state, "checks": results})
	}
}

// runChecks runs every check at once, each bounded by timeout, and returns
// their results ("ok" or the error) and whether all passed.
func runChecks(base context.Context, checks map[string]Check, timeout time.Duration, log *slog.Logger) (map[string]string, bool) {
	results := make(map[string]string, len(checks))
	var mu sync.Mutex
	var wg sync.WaitGroup
	ok := true
	for name, check := range checks {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ctx, cancel := context.WithTimeout(base, timeout)
			defer cancel()
			err := check(ctx)
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				ok = false
				results[name] = err.Error()
				log.Warn("readiness check failed", "check", name, "err", err)
				return
			}
			results[name] = "ok"
		}()
	}
	wg.Wait()
	return results, ok
}

// readyGauge is relay_ready: the readiness checks run at each scrape, so
// an alert sees a process that is up but cannot serve (its /ready is not
// what Prometheus scrapes).
func readyGauge(checks map[string]Check, timeout time.Duration, log *slog.Logger) prometheus.Collector {
	return prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "relay_ready", Help: "1 when every readiness check of the service passes (as GET /ready answers 200), else 0.",
	}, func() float64 {
		if _, ok := runChecks(context.Background(), checks, timeout, log); ok {
			return 1
		}
		return 0
	})
}

func metricsMiddleware(reg *prometheus.Registry) fiber.Handler {
	requests := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "http_requests_total", Help: "HTTP requests by method, route and status.",
	}, []string{"method", "route", "status"})
	latency := prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name: "http_request_duration_seconds", Help: "HTTP request latency by method and route.",
		Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5},
	}, []string{"method", "route"})
	reg.MustRegister(requests, latency)
	return func(c *fiber.Ctx) error {
		if isProbe(c.Path()) {
			return c.Next()
		}
		start := time.Now()
		err := c.Next()
		status := c.Response().StatusCode()
		if err != nil {
			// The error handler runs after us; predict its status.
			status = chat.HTTPStatus(chat.ErrorCode(err))
			var fe *fiber.Error
			if errors.As(err, &fe) {
				status = fe.Code
			}
		}
		// Copies: Fiber's strings point into the connection's request
		// buffer, which the next request on it overwrites, and the
		// metric keeps its label values.
		method, route := strings.Clone(c.Method()), strings.Clone(c.Route().Path)
		requests.WithLabelValues(method, route, strconv.Itoa(status)).Inc()
		latency.WithLabelValues(method, route).Observe(time.Since(start).Seconds())
		return err
	}
}

// ErrShutdownTimeout reports that connections were still open when the
// graceful shutdown's deadline passed; they end with the process.
var ErrShutdownTimeout = errors.New("web: graceful shutdown exceeded its deadline")

// Serve runs app on addr until ctx is cancelled, then shuts it down within
// timeout. It returns once the listener is closed and handlers finished.
func Serve(ctx context.Context, app *fiber.App, addr string, timeout time.Duration) error {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("web: listen %s: %w", addr, err)
	}
	return ServeListener(ctx, app, ln, timeout)
}

// ServeListener is Serve on an existing listener (tests use port 0).
func ServeListener(ctx context.Context, app *fiber.App, ln net.Listener, timeout time.Duration) error {
	errc := make(chan error, 1)
	go func() { errc <- app.Listener(ln) }()
	select {
	case err := <-errc:
		if err != nil {
			return fmt.Errorf("web: serve: %w", err)
		}
		return nil
	case <-ctx.Done():
	}
	if err := app.ShutdownWithTimeout(timeout); err != nil {
		if errors.Is(err, context.DeadlineExceeded) {
			return ErrShutdownTimeout
		}
		return fmt.Errorf("web: shutdown: %w", err)
	}
	return <-errc
}
