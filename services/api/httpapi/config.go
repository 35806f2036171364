package httpapi

// Environment variables of the api service (defaults in brackets):
//
//	DATABASE_URL        PostgreSQL URL [postgres://relay:relay@127.0.0.1:5432/relay?sslmode=disable]
//	DATABASE_MAX_CONNS  connection pool size [20]; the outbox relay holds one
//	                    more connection of its own (outbox.go)
//	DATABASE_MIGRATE    apply the embedded SQL migrations at start [true]
//	DATABASE_BREAKER_FAILURES      consecutive statements that could not reach
//	                    PostgreSQL before the breaker opens (503 UNAVAILABLE at once,
//	                    /ready failing) [5]
//	DATABASE_BREAKER_OPEN_TIMEOUT  how long the open breaker refuses before
//	                    one trial statement [5s]
//	REDIS_URL           Redis URL: presence reads and /ready [redis://127.0.0.1:6379/0]
//	REDIS_PREFIX        key prefix, the presence service's [relay:]
//	KAFKA_BROKERS       comma-separated seed brokers [127.0.0.1:9092]
//	KAFKA_TOPIC         room event log, where the outbox relay produces
//	                    member_joined/member_left [chat.messages]
//	KAFKA_PARTITIONS    partitions when main creates the topic [12]
//	HTTP_ADDR           listen address [127.0.0.1:8080]
//	SHUTDOWN_TIMEOUT    graceful shutdown bound [15s]
//	JWT_SECRET          HS256 signing secret, at least 16 bytes [dev secret; logs a warning]
//	JWT_TTL             access token lifetime [15m]
//	REFRESH_TTL         refresh token lifetime; each use rotates it [720h]
//	AUTH_RATE_LIMIT     requests per minute per client IP on /api/auth/* [30]
//	TRUSTED_PROXIES     comma-separated IPs/CIDRs whose X-Forwarded-For is believed
//	                    when telling clients apart for the rate limit [127.0.0.1/8,::1/128]
//	RELAY_DATA          the service's data directory [.data]
//	UPLOAD_DIR          where uploaded files are stored [$RELAY_DATA/uploads]
//	UPLOAD_MAX_BYTES    largest uploaded file [10485760 (10 MiB)]
//	UPLOAD_RATE_LIMIT   uploads per minute per user [20]
//	LOG_LEVEL, LOG_FORMAT, OTEL_EXPORTER_OTLP_ENDPOINT, OTEL_EXPORTER_OTLP_PROTOCOL: see pkg/config.

import (
	"errors"
	"fmt"
	"net/netip"
	"path/filepath"
	"strings"
	"time"

	"relay/pkg/config"
)

// DefaultAddr is where the api listens unless HTTP_ADDR says otherwise.
const DefaultAddr = "127.0.0.1:8080"

// Config is the api's configuration, loaded from the environment by
// config.Load[Config]; zero fields get the defaults listed above from New.
type Config struct {
	// Postgres is the database holding users, rooms, members and messages.
	Postgres config.Postgres
	// Redis holds the presence state the api reads (under Redis.Prefix, the
	// presence service's) and is checked by /ready.
	Redis config.Redis
	// Kafka is where member events are produced.
	Kafka config.Kafka
	// Telemetry configures logs and traces (used by main).
	Telemetry config.Telemetry
	// HTTP is the listener; an empty Addr means DefaultAddr.
	HTTP config.HTTP
	// JWT signs and verifies tokens; the secret is required.
	JWT config.JWT
	// AuthRateLimit is the requests per minute one client IP may make to
	// /api/auth/*; zero means 30.
	AuthRateLimit int `env:"AUTH_RATE_LIMIT" envDefault:"30"`
	// TrustedProxies are the proxies whose X-Forwarded-For header names the
	// client; nil trusts none (the peer address is the client).
	TrustedProxies []string `env:"TRUSTED_PROXIES" envDefault:"127.0.0.1/8,::1/128" envSeparator:","`
	// Migrate applies pending database migrations in New; false leaves the
	// schema to someone else.
	Migrate bool `env:"DATABASE_MIGRATE" envDefault:"true"`
	// DBBreakerFailures consecutive statements that could not reach the
	// database open its breaker; zero means 5.
	DBBreakerFailures uint32 `env:"DATABASE_BREAKER_FAILURES" envDefault:"5"`
	// DBBreakerOpenTimeout is how long the open breaker refuses before a
	// trial statement; zero means 5 s.
	DBBreakerOpenTimeout time.Duration `env:"DATABASE_BREAKER_OPEN_TIMEOUT" envDefault:"5s"`
	// RefreshTTL is how long a refresh token is valid; zero means 30 days.
	RefreshTTL time.Duration `env:"REFRESH_TTL" envDefault:"720h"`
	// DataDir is the service's data directory; empty means ".data".
	DataDir string `env:"RELAY_DATA" envDefault:".data"`
	// UploadDir is where uploaded files are stored; empty means
	// DataDir/uploads.
	UploadDir string `env:"UPLOAD_DIR"`
	// UploadMaxBytes bounds an uploaded file; zero means 10 MiB.
	UploadMaxBytes int64 `env:"UPLOAD_MAX_BYTES" envDefault:"10485760"`
	// UploadRateLimit is the uploads per minute one user may make; zero
	// means 20.
	UploadRateLimit int `env:"UPLOAD_RATE_LIMIT" envDefault:"20"`
}

// WithDefaults returns c with every zero field that has a default set to it.
func (c Config) WithDefaults() Config {
	if c.Postgres.URL == "" {
		c.Postgres.URL = "postgres://relay:relay@127.0.0.1:5432/relay?sslmode=disable"
	}
	if c.Postgres.MaxConns == 0 {
		c.Postgres.MaxConns = 20
	}
	if c.Redis.URL == "" {
		c.Redis.URL = "redis://127.0.0.1:6379/0"
	}
	if len(c.Kafka.Brokers) == 0 {
		c.Kafka.Brokers = []string{"127.0.0.1:9092"}
	}
	if c.Kafka.Topic == "" {
		c.Kafka.Topic = "chat.messages"
	}
	if c.Kafka.Partitions == 0 {
		c.Kafka.Partitions = 12
	}
	if c.HTTP.Addr == "" {
		c.HTTP.Addr = DefaultAddr
	}
	if c.HTTP.ShutdownTimeout == 0 {
		c.HTTP.ShutdownTimeout = 15 * time.Second
	}
	if c.JWT.TTL == 0 {
		c.JWT.TTL = 15 * time.Minute
	}
	if c.RefreshTTL == 0 {
		c.RefreshTTL = 30 * 24 * time.Hour
	}
	if c.DataDir == "" {
		c.DataDir = ".data"
	}
	if c.UploadDir == "" {
		c.UploadDir = filepath.Join(c.DataDir, "uploads")
	}
	if c.UploadMaxBytes == 0 {
		c.UploadMaxBytes = 10 << 20
	}
	if c.UploadRateLimit == 0 {
		c.UploadRateLimit = 20
	}
	if c.AuthRateLimit == 0 {
		c.AuthRateLimit = 30
	}
	if c.DBBreakerFailures == 0 {
		c.DBBreakerFailures = 5
	}
	if c.DBBreakerOpenTimeout == 0 {
		c.DBBreakerOpenTimeout = 5 * time.Second
	}
	return c
}

// Validate checks c after defaults are applied.
func (c *Config) Validate() error {
	d := c.WithDefaults()
	if err := d.JWT.Validate(); err != nil {
		return err
	}
	if d.AuthRateLimit < 0 {
		return errors.New("AUTH_RATE_LIMIT must not be negative")
	}
	if d.Postgres.MaxConns < 0 {
		return errors.New("DATABASE_MAX_CONNS must not be negative")
	}
	if d.Kafka.Partitions < 0 {
		return errors.New("KAFKA_PARTITIONS must not be negative")
	}
	if d.RefreshTTL < 0 {
		return errors.New("REFRESH_TTL must not be negative")
	}
	if d.UploadMaxBytes < 0 || d.UploadMaxBytes > maxUploadBytes {
		return fmt.Errorf("UPLOAD_MAX_BYTES must be from 1 to %d", int64(maxUploadBytes))
	}
	if d.UploadRateLimit < 0 {
		return errors.New("UPLOAD_RATE_LIMIT must not be negative")
	}
	if d.DBBreakerOpenTimeout < 0 {
		return errors.New("DATABASE_BREAKER_OPEN_TIMEOUT must not be negative")
	}
	if _, err := parsePrefixes(d.TrustedProxies); err != nil {
		return err
	}
	return nil
}

// parsePrefixes parses IPs and CIDRs; a bare IP is a single-address prefix.
func parsePrefixes(list []string) ([]netip.Prefix, error) {
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
