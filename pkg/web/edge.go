package web

import (
	"fmt"
	"math"
	"net/netip"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/gofiber/fiber/v2"
	"github.com/gofiber/fiber/v2/middleware/cors"

	"relay/pkg/chat"
)

// refuseContentEncoding refuses a request that declares a Content-Encoding
// (other than identity) with 415 UNSUPPORTED_MEDIA_TYPE before any handler
// can read its body: fasthttp's c.Body() inflates gzip, deflate and brotli
// without a bound, so a few hundred bytes of nested gzip become hundreds of
// megabytes. No client of ours compresses request bodies.
func refuseContentEncoding(c *fiber.Ctx) error {
	enc := c.Request().Header.Peek(fiber.HeaderContentEncoding)
	if len(enc) == 0 || strings.EqualFold(strings.TrimSpace(string(enc)), "identity") {
		return c.Next()
	}
	return chat.Errorf(chat.CodeUnsupportedMediaType, "compressed request bodies are not accepted (Content-Encoding %q); send the body uncompressed", truncate(string(enc), 32))
}

func truncate(s string, n int) string {
	if len(s) > n {
		return s[:n] + "…"
	}
	return s
}

// ContentSecurityPolicy is sent with every response: the services serve
// JSON and nothing that a browser should run, frame or load from.
const ContentSecurityPolicy = "default-src 'none'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"

// securityHeaders sets headers that stop a browser from sniffing a JSON
// body into HTML, framing a response, or leaking the URL (which carries the
// token on /ws) in a Referer.
func securityHeaders(c *fiber.Ctx) error {
	h := &c.Response().Header
	h.Set(fiber.HeaderXContentTypeOptions, "nosniff")
	h.Set(fiber.HeaderContentSecurityPolicy, ContentSecurityPolicy)
	h.Set(fiber.HeaderXFrameOptions, "DENY")
	h.Set(fiber.HeaderReferrerPolicy, "no-referrer")
	h.Set("Cross-Origin-Resource-Policy", "same-origin")
	return c.Next()
}

// corsMiddleware answers CORS for the listed origins only. With none, no
// CORS header is ever sent, so browsers keep the same-origin policy: a page
// on another origin can neither read a response nor send a preflighted
// request (any JSON body or Authorization header).
func corsMiddleware(origins []string) fiber.Handler {
	if len(origins) == 0 {
		return func(c *fiber.Ctx) error { return c.Next() }
	}
	return cors.New(cors.Config{
		AllowOrigins:  strings.Join(origins, ","),
		AllowMethods:  "GET,POST,PUT,PATCH,DELETE,OPTIONS",
		AllowHeaders:  "Authorization,Content-Type",
		ExposeHeaders: "Retry-After",
		MaxAge:        600,
	})
}

// ParseOrigins checks a CORS_ALLOWED_ORIGINS list: each entry is a
// scheme://host[:port] origin (no path, no wildcard), returned in the
// lower-case form browsers send.
func ParseOrigins(list []string) ([]string, error) {
	out := make([]string, 0, len(list))
	for _, s := range list {
		s = strings.TrimSpace(s)
		if s == "" {
			continue
		}
		u, err := url.Parse(s)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" ||
			(u.Path != "" && u.Path != "/") || u.RawQuery != "" || u.Fragment != "" || u.User != nil || strings.Contains(u.Host, "*") {
			return nil, fmt.Errorf("CORS_ALLOWED_ORIGINS: %q is not an origin like https://chat.example.com", s)
		}
		out = append(out, strings.ToLower(u.Scheme+"://"+u.Host))
	}
	return out, nil
}

// OriginAllowed is the Origin check for WebSocket and Socket.IO upgrades:
// a request without Origin is not from a browser and is allowed (it must
// still authenticate); otherwise the Origin's host must be the request's
// own Host (same origin) or the origin must be in allowed (ParseOrigins
// form). A page on another site therefore cannot open a socket with a
// token it got hold of through the user's browser.
func OriginAllowed(origin, host string, allowed []string) bool {
	if origin == "" {
		return true
	}
	u, err := url.Parse(origin)
	if err != nil || u.Host == "" {
		return false
	}
	if strings.EqualFold(u.Host, host) {
		return true
	}
	o := strings.ToLower(u.Scheme + "://" + u.Host)
	for _, a := range allowed {
		if a == o {
			return true
		}
	}
	return false
}

// ParsePrefixes parses a TRUSTED_PROXIES list of IPs and CIDRs; a bare IP
// is a single-address prefix.
func ParsePrefixes(list []string) ([]netip.Prefix, error) {
	out := make([]netip.Prefix, 0, len(list))
	for _, s := range list {
		s = strings.TrimSpace(s)
		if s == "" {
			continue
		}
		if p, err := netip.ParsePrefix(s); err == nil {
			out = append(out, p.Masked())
			continue
		}
		a, err := netip.ParseAddr(s)
		if err != nil {
			return nil, fmt.Errorf("TRUSTED_PROXIES: %q is neither an IP nor a CIDR", s)
		}
		out = append(out, netip.PrefixFrom(a.Unmap(), a.Unmap().BitLen()))
	}
	return out, nil
}

// ClientAddr is the address of the client behind peer: peer itself unless
// peer is a trusted proxy, else the nearest X-Forwarded-For entry (read
// from the right) that is not a trusted proxy. A malformed entry ends what
// can be believed, so a client cannot inject an address by sending its own
// X-Forwarded-For through a proxy that appends to it.
func ClientAddr(peer netip.Addr, xff string, trusted []netip.Prefix) netip.Addr {
	peer = peer.Unmap()
	if !isTrusted(peer, trusted) || xff == "" {
		return peer
	}
	addr := peer
	hops := strings.Split(xff, ",")
	for i := len(hops) - 1; i >= 0; i-- {
		hop, err := netip.ParseAddr(strings.TrimSpace(hops[i]))
		if err != nil {
			break
		}
		addr = hop.Unmap()
		if !isTrusted(addr, trusted) {
			break
		}
	}
	return addr
}

// ClientIP is ClientAddr for a Fiber request, as a string.
func ClientIP(c *fiber.Ctx, trusted []netip.Prefix) string {
	peer, ok := netip.AddrFromSlice(c.Context().RemoteIP())
	if !ok {
		return c.IP()
	}
	return ClientAddr(peer, c.Get(fiber.HeaderXForwardedFor), trusted).String()
}

func isTrusted(a netip.Addr, trusted []netip.Prefix) bool {
	for _, p := range trusted {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// retryAfterSeconds is the Retry-After header value for d: whole seconds,
// rounded up, at least 1.
func retryAfterSeconds(d time.Duration) string {
	return strconv.Itoa(max(1, int(math.Ceil(d.Seconds()))))
}
