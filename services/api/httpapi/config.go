package httpapi

// Environment variables of the api service (defaults in brackets):
//
//	DATABASE_URL        PostgreSQL URL [postgres://relay:relay@127.0.0.1:5432/relay?sslmode=disable]
//	DATABASE_MAX_CONNS  connection pool size [20]; the outbox relay holds one
//	                    more connection of its own (outbox.go)
//	DATABASE_REPLICA_URL  a hot-standby replica for history and search reads; a
//	                    read that must see a seq the replica has not replayed, and
//	                    every read while the replica fails, go to the primary [unset]
//	DATABASE_REPLICA_MAX_CONNS  replica pool size [20]
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
//	CORS_ALLOWED_ORIGINS  comma-separated browser origins besides the api's own
//	                    that may call it (CORS) [none: same-origin only]
//	RATE_WRITES_PER_MIN   REST writes (POST) per user per minute, across
//	                    every api instance [120]
//	RATE_ROOMS_PER_HOUR   rooms one user may create per hour [30]
//	RATE_SEARCHES_PER_MIN searches per user per minute [60]
//	ROOM_CREATE_MAX_MEMBERS  members a new room may be created with besides
//	                    its creator; the rest join themselves or are added
//	                    one by one [50]
//	RELAY_ENV           development allows the development JWT secret and
//	                    database password; anything else refuses them
//	LOG_LEVEL, LOG_FORMAT, OTEL_EXPORTER_OTLP_ENDPOINT, OTEL_EXPORTER_OTLP_PROTOCOL: see pkg/config.

import (
	"errors"
	"fmt"
	"path/filepath"
	"time"

	"relay/pkg/chat"
	"relay/pkg/config"
	"relay/pkg/web"
	"relay/services/api/internal/uploads"
)

// DefaultAddr is where the api listens unless HTTP_ADDR says otherwise.
const DefaultAddr = "127.0.0.1:8080"

// Config is the api's configuration, loaded from the environment by
// config.Load[Config]; zero fields get the defaults listed above from New.
type Config struct {
	// Postgres is the database holding users, rooms, members and messages.
	Postgres config.Postgres
	// Replica, when its URL is set, serves history and search (store.Reads).
	Replica config.Replica
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
	// Limits are the per-user rate limits and the room-creation cap.
	Limits Limits
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
	c.Postgres = c.Postgres.WithDefaults()
	c.Redis = c.Redis.WithDefaults()
	c.Kafka = c.Kafka.WithDefaults()
	c.HTTP = c.HTTP.WithDefaults(DefaultAddr)
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
	c.Limits = c.Limits.withDefaults()
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
	if d.Replica.MaxConns < 0 {
		return errors.New("DATABASE_REPLICA_MAX_CONNS must not be negative")
	}
	if d.Kafka.Partitions < 0 {
		return errors.New("KAFKA_PARTITIONS must not be negative")
	}
	if err := d.Kafka.ValidateReplication(); err != nil {
		return err
	}
	if d.RefreshTTL < 0 {
		return errors.New("REFRESH_TTL must not be negative")
	}
	if d.UploadMaxBytes < 0 || d.UploadMaxBytes > uploads.MaxUploadBytes {
		return fmt.Errorf("UPLOAD_MAX_BYTES must be from 1 to %d", int64(uploads.MaxUploadBytes))
	}
	if d.UploadRateLimit < 0 {
		return errors.New("UPLOAD_RATE_LIMIT must not be negative")
	}
	if d.DBBreakerOpenTimeout < 0 {
		return errors.New("DATABASE_BREAKER_OPEN_TIMEOUT must not be negative")
	}
	if _, err := web.ParsePrefixes(d.TrustedProxies); err != nil {
		return err
	}
	if _, err := web.ParseOrigins(d.HTTP.AllowedOrigins); err != nil {
		return err
	}
	return d.Limits.Validate()
}

// Limits are the api's per-user limits. Each is counted in Redis, so the
// budget is one per user whatever the number of api instances.
type Limits struct {
	// WritesPerMin bounds POST requests (create room, join, leave, add a
	// member) per user per minute; zero means 120.
	WritesPerMin int `env:"RATE_WRITES_PER_MIN" envDefault:"120"`
	// RoomsPerHour bounds the rooms one user creates per hour (direct rooms
	// included); zero means 30.
	RoomsPerHour int `env:"RATE_ROOMS_PER_HOUR" envDefault:"30"`
	// SearchesPerMin bounds searches per user per minute; zero means 60.
	SearchesPerMin int `env:"RATE_SEARCHES_PER_MIN" envDefault:"60"`
	// RoomCreateMaxMembers bounds the members a room is created with
	// (besides its creator); zero means 50. Nobody can be put in a large
	// room in one request: members beyond it join themselves (channels) or
	// are added one by one, which WritesPerMin bounds.
	RoomCreateMaxMembers int `env:"ROOM_CREATE_MAX_MEMBERS" envDefault:"50"`
}

func (l Limits) withDefaults() Limits {
	if l.WritesPerMin == 0 {
		l.WritesPerMin = 120
	}
	if l.RoomsPerHour == 0 {
		l.RoomsPerHour = 30
	}
	if l.SearchesPerMin == 0 {
		l.SearchesPerMin = 60
	}
	if l.RoomCreateMaxMembers == 0 {
		l.RoomCreateMaxMembers = 50
	}
	return l
}

// Validate checks the limits after defaults are applied.
func (l Limits) Validate() error {
	if l.WritesPerMin < 0 || l.RoomsPerHour < 0 || l.SearchesPerMin < 0 {
		return errors.New("RATE_WRITES_PER_MIN, RATE_ROOMS_PER_HOUR and RATE_SEARCHES_PER_MIN must not be negative")
	}
	if l.RoomCreateMaxMembers < 0 || l.RoomCreateMaxMembers > chat.MaxRoomMembers {
		return fmt.Errorf("ROOM_CREATE_MAX_MEMBERS must be between 1 and %d", chat.MaxRoomMembers)
	}
	return nil
}
