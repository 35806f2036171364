package main

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"log/slog"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"sort"
	"strings"
	"sync"
	"time"
)

// StickyCookie names the cookie that pins a browser to one gateway, so a
// reconnecting WebSocket (or socket.io polling sequence) lands on the
// instance that holds its session.
const StickyCookie = "relay_gw"

// UpstreamHeader is added to every proxied response to show which upstream
// served it; handy when debugging cross-gateway delivery.
const UpstreamHeader = "X-Relay-Upstream"

// Options configures the proxy handler.
type Options struct {
	API      *url.URL
	Gateways []*url.URL
	Logger   *slog.Logger
	// DialTimeout bounds the TCP probe used to skip dead gateways.
	DialTimeout time.Duration
	// ProbeTTL caches probe results so socket.io long-polling does not pay
	// a TCP handshake per request.
	ProbeTTL time.Duration
	// WebDir is the built web app (web/dist), served at every path that is
	// not the api's or a gateway's. Empty, or a directory without
	// index.html, sends those paths to the api.
	WebDir string
}

// Proxy routes the single dev origin to the api and gateway upstreams.
type Proxy struct {
	opts     Options
	api      *httputil.ReverseProxy
	gateways []*httputil.ReverseProxy
	probes   probeCache
	logger   *slog.Logger
	web      *webApp
}

// NewProxy validates opts and builds the handler.
func NewProxy(opts Options) (*Proxy, error) {
	if opts.API == nil {
		return nil, errors.New("api upstream is required")
	}
	if len(opts.Gateways) == 0 {
		return nil, errors.New("at least one gateway upstream is required")
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if opts.DialTimeout <= 0 {
		opts.DialTimeout = 300 * time.Millisecond
	}
	if opts.ProbeTTL <= 0 {
		opts.ProbeTTL = time.Second
	}
	p := &Proxy{opts: opts, logger: opts.Logger, probes: probeCache{entries: map[string]probeEntry{}}}
	web, err := newWebApp(opts.WebDir)
	if err != nil {
		return nil, fmt.Errorf("web app in %s: %w", opts.WebDir, err)
	}
	p.web = web
	p.api = p.reverseProxy(opts.API)
	for _, g := range opts.Gateways {
		p.gateways = append(p.gateways, p.reverseProxy(g))
	}
	return p, nil
}

func (p *Proxy) reverseProxy(target *url.URL) *httputil.ReverseProxy {
	return &httputil.ReverseProxy{
		Rewrite: func(r *httputil.ProxyRequest) {
			r.SetURL(target)
			r.SetXForwarded()
			// Keep the browser-facing Host (localhost:3000) so upstream
			// WebSocket origin checks and absolute URLs see the one origin
			// the browser actually uses.
			r.Out.Host = r.In.Host
		},
		// Flush immediately: socket.io long-polling and SSE must not sit in
		// a buffer.
		FlushInterval: -1,
		ModifyResponse: func(res *http.Response) error {
			res.Header.Set(UpstreamHeader, target.Host)
			return nil
		},
		ErrorHandler: func(w http.ResponseWriter, r *http.Request, err error) {
			p.logger.Warn("upstream error", "upstream", target.Host, "method", r.Method, "path", r.URL.Path, "err", err)
			writeJSON(w, http.StatusBadGateway, map[string]string{"error": "upstream unavailable", "upstream": target.Host})
		},
	}
}

// ServeHTTP implements http.Handler.
func (p *Proxy) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	path := r.URL.Path
	if path == "/health" {
		writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
		return
	}

	if isGatewayPath(path) {
		p.serveGateway(w, r)
		return
	}

	if p.web != nil && !isAPIPath(path) {
		p.web.ServeHTTP(w, r)
		return
	}

	// /api, /api/... (and everything else when no web app is built).
	if _, err := r.Cookie(StickyCookie); err != nil {
		setStickyCookie(w, newToken())
	}
	p.api.ServeHTTP(w, r)
}

// isAPIPath is what the api serves: /api/... and its operational endpoints.
func isAPIPath(path string) bool {
	return path == "/api" || strings.HasPrefix(path, "/api/") ||
		path == "/ready" || path == "/metrics"
}

func isGatewayPath(path string) bool {
	return path == "/ws" || strings.HasPrefix(path, "/ws/") ||
		path == "/socket.io" || strings.HasPrefix(path, "/socket.io/")
}

func (p *Proxy) serveGateway(w http.ResponseWriter, r *http.Request) {
	key, hasCookie := stickyKey(r)
	order := rank(key, p.opts.Gateways)
	chosen := -1
	for _, i := range order {
		if p.probes.alive(p.opts.Gateways[i].Host, p.opts.DialTimeout, p.opts.ProbeTTL) {
			chosen = i
			break
		}
	}
	if chosen < 0 {
		p.logger.Warn("no gateway upstream reachable", "path", r.URL.Path, "upstreams", len(p.opts.Gateways))
		writeJSON(w, http.StatusBadGateway, map[string]string{"error": "no gateway upstream reachable"})
		return
	}
	if !hasCookie {
		// Pick a cookie value that ranks this same gateway first, so the
		// client stays where its address hash put it once it starts
		// sending the cookie (e.g. on reconnect).
		setStickyCookie(w, tokenFor(order[0], p.opts.Gateways))
	}
	if chosen != order[0] {
		p.logger.Info("sticky gateway down, failing over", "preferred", p.opts.Gateways[order[0]].Host, "chosen", p.opts.Gateways[chosen].Host)
	}
	p.gateways[chosen].ServeHTTP(w, r)
}

// stickyKey returns the routing key: the cookie when present, else the
// client IP (without port, which changes per connection).
func stickyKey(r *http.Request) (key string, fromCookie bool) {
	if c, err := r.Cookie(StickyCookie); err == nil && c.Value != "" {
		return "c:" + c.Value, true
	}
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		host = r.RemoteAddr
	}
	return "a:" + host, false
}

// rank orders upstream indexes by rendezvous (highest random weight)
// hashing: when an upstream is added or goes down only the clients pinned to
// it move, unlike hash-mod-n where most clients would reshuffle.
func rank(key string, ups []*url.URL) []int {
	type scored struct {
		idx   int
		score uint64
	}
	s := make([]scored, len(ups))
	for i, u := range ups {
		h := fnv.New64a()
		_, _ = h.Write([]byte(key))
		_, _ = h.Write([]byte{0})
		_, _ = h.Write([]byte(u.Host))
		s[i] = scored{i, mix(h.Sum64())}
	}
	sort.Slice(s, func(a, b int) bool {
		if s[a].score != s[b].score {
			return s[a].score > s[b].score
		}
		return s[a].idx < s[b].idx
	})
	out := make([]int, len(s))
	for i, v := range s {
		out[i] = v.idx
	}
	return out
}

// mix is a 64-bit finalizer (splitmix64); FNV alone has weak high bits for
// short keys differing only at the end, which skews rendezvous hashing.
func mix(x uint64) uint64 {
	x ^= x >> 30
	x *= 0xbf58476d1ce4e5b9
	x ^= x >> 27
	x *= 0x94d049bb133111eb
	x ^= x >> 31
	return x
}

// tokenFor returns a random cookie value whose rank puts upstream idx first.
// With n upstreams this takes about n tries; the bound only guards against a
// pathological hash and then any token is acceptable.
func tokenFor(idx int, ups []*url.URL) string {
	var t string
	for range 64 * len(ups) {
		t = newToken()
		if rank("c:"+t, ups)[0] == idx {
			return t
		}
	}
	return t
}

func newToken() string {
	var b [12]byte
	// crypto/rand.Read never returns an error on supported platforms (it
	// crashes the program instead), so there is nothing to handle here.
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

func setStickyCookie(w http.ResponseWriter, value string) {
	http.SetCookie(w, &http.Cookie{
		Name:     StickyCookie,
		Value:    value,
		Path:     "/",
		MaxAge:   30 * 24 * 3600,
		HttpOnly: true,
		SameSite: http.SameSiteLaxMode,
	})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	if err := json.NewEncoder(w).Encode(v); err != nil {
		// The client went away; nothing useful to do beyond noting it.
		slog.Debug("writing json response", "err", err)
	}
}

// probeCache remembers recent TCP dial results per upstream host.
type probeCache struct {
	mu      sync.Mutex
	entries map[string]probeEntry
}

type probeEntry struct {
	ok bool
	at time.Time
}

func (c *probeCache) alive(host string, timeout, ttl time.Duration) bool {
	c.mu.Lock()
	e, found := c.entries[host]
	c.mu.Unlock()
	if found && time.Since(e.at) < ttl {
		return e.ok
	}
	conn, err := net.DialTimeout("tcp", host, timeout)
	ok := err == nil
	if ok {
		_ = conn.Close() // probe only; a close error changes nothing
	}
	c.mu.Lock()
	c.entries[host] = probeEntry{ok: ok, at: time.Now()}
	c.mu.Unlock()
	return ok
}

// parseUpstreams parses a comma-separated list of http(s) base URLs.
func parseUpstreams(list string) ([]*url.URL, error) {
	var out []*url.URL
	for _, s := range strings.Split(list, ",") {
		s = strings.TrimSpace(s)
		if s == "" {
			continue
		}
		u, err := parseUpstream(s)
		if err != nil {
			return nil, err
		}
		out = append(out, u)
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("no upstreams in %q", list)
	}
	return out, nil
}

func parseUpstream(s string) (*url.URL, error) {
	u, err := url.Parse(strings.TrimSpace(s))
	if err != nil {
		return nil, fmt.Errorf("upstream %q: %w", s, err)
	}
	if (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("upstream %q: want http(s)://host:port", s)
	}
	if u.Port() == "" {
		// The probe dials host:port, so make the default port explicit.
		port := "80"
		if u.Scheme == "https" {
			port = "443"
		}
		u.Host = net.JoinHostPort(u.Hostname(), port)
	}
	return u, nil
}
