// Command devproxy serves the single local origin http://localhost:3000 and
// forwards to the services started by scripts/run.sh, so the browser, the
// API and the WebSocket gateways share one origin (no CORS, one cookie jar),
// as they will behind the production load balancer.
//
// Routes:
//
//	/health                 answered here: 200 {"status":"ok"}
//	/api, /api/...          API_UPSTREAM (default http://127.0.0.1:8080)
//	/ws, /ws/..., /socket.io/...
//	                        one of GATEWAY_UPSTREAMS (comma separated,
//	                        default http://127.0.0.1:8090), sticky per client
//	                        via the relay_gw cookie, else the client address;
//	                        gateways that refuse a TCP dial are skipped
//	/ready, /metrics        API_UPSTREAM
//	anything else           the web app built in WEB_DIR (web/dist: its files,
//	                        and index.html for app routes), with nosniff and a
//	                        restrictive Content-Security-Policy; API_UPSTREAM
//	                        when WEB_DIR has no index.html
//
// httputil.ReverseProxy handles the WebSocket Upgrade handshake and then
// pipes the hijacked connection in both directions.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"
)

func main() {
	logger := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
	slog.SetDefault(logger)
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Getenv, os.Stderr, logger); err != nil {
		logger.Error("devproxy failed", "err", err)
		os.Exit(1)
	}
}

type config struct {
	addr      string
	api       string
	gateways  string
	webDir    string
	dialProbe time.Duration
}

func envOr(getenv func(string) string, key, def string) string {
	if v := getenv(key); v != "" {
		return v
	}
	return def
}

func parseFlags(args []string, getenv func(string) string, out io.Writer) (config, error) {
	cfg := config{
		addr:      envOr(getenv, "DEVPROXY_ADDR", "127.0.0.1:3000"),
		api:       envOr(getenv, "API_UPSTREAM", "http://127.0.0.1:8080"),
		gateways:  envOr(getenv, "GATEWAY_UPSTREAMS", "http://127.0.0.1:8090"),
		webDir:    getenv("WEB_DIR"),
		dialProbe: 300 * time.Millisecond,
	}
	fs := flag.NewFlagSet("devproxy", flag.ContinueOnError)
	fs.SetOutput(out)
	fs.StringVar(&cfg.addr, "addr", cfg.addr, "listen address (env DEVPROXY_ADDR)")
	fs.StringVar(&cfg.api, "api", cfg.api, "api upstream base URL (env API_UPSTREAM)")
	fs.StringVar(&cfg.gateways, "gateways", cfg.gateways, "comma-separated gateway upstream base URLs (env GATEWAY_UPSTREAMS)")
	fs.StringVar(&cfg.webDir, "web", cfg.webDir, "directory of the built web app (web/dist), served at / (env WEB_DIR)")
	fs.DurationVar(&cfg.dialProbe, "dial-timeout", cfg.dialProbe, "TCP probe timeout used to skip dead gateways")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return cfg, err
		}
		return cfg, fmt.Errorf("parsing flags: %w", err)
	}
	if fs.NArg() > 0 {
		return cfg, fmt.Errorf("unexpected arguments: %v", fs.Args())
	}
	return cfg, nil
}

// run serves until ctx is cancelled, then drains in-flight requests.
func run(ctx context.Context, args []string, getenv func(string) string, out io.Writer, logger *slog.Logger) error {
	cfg, err := parseFlags(args, getenv, out)
	if errors.Is(err, flag.ErrHelp) {
		return nil
	}
	if err != nil {
		return err
	}
	api, err := parseUpstream(cfg.api)
	if err != nil {
		return fmt.Errorf("API_UPSTREAM: %w", err)
	}
	gws, err := parseUpstreams(cfg.gateways)
	if err != nil {
		return fmt.Errorf("GATEWAY_UPSTREAMS: %w", err)
	}
	proxy, err := NewProxy(Options{API: api, Gateways: gws, Logger: logger, DialTimeout: cfg.dialProbe, WebDir: cfg.webDir})
	if err != nil {
		return fmt.Errorf("building proxy: %w", err)
	}
	if proxy.web == nil && cfg.webDir != "" {
		logger.Warn("no web app to serve (run `make web`); / goes to the api", "dir", cfg.webDir)
	}

	ln, err := net.Listen("tcp", cfg.addr)
	if err != nil {
		return fmt.Errorf("listening on %s: %w", cfg.addr, err)
	}
	srv := &http.Server{
		Handler:           proxy,
		ReadHeaderTimeout: 10 * time.Second,
		// No Read/WriteTimeout: WebSocket and long-poll connections are
		// long-lived by design.
		ErrorLog: slog.NewLogLogger(logger.Handler(), slog.LevelWarn),
	}
	gwHosts := make([]string, len(gws))
	for i, g := range gws {
		gwHosts[i] = g.String()
	}
	logger.Info("devproxy listening", "addr", ln.Addr().String(), "api", api.String(), "gateways", gwHosts, "web", proxy.web != nil)

	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()

	select {
	case err := <-errc:
		return fmt.Errorf("serving: %w", err)
	case <-ctx.Done():
	}
	logger.Info("shutting down")
	// Shutdown does not wait for hijacked (WebSocket) connections; they are
	// closed when the process exits, which makes clients reconnect.
	shutdownCtx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := srv.Shutdown(shutdownCtx); err != nil {
		return fmt.Errorf("graceful shutdown: %w", err)
	}
	if err := <-errc; err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("serving: %w", err)
	}
	logger.Info("stopped")
	return nil
}
