// Package config loads service configuration from environment variables with
// working local defaults (see .env.example) and validates it.
package config

import (
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/caarlos0/env/v11"
)

// DevJWTSecret is the development default for JWT_SECRET. Services warn
// loudly when they run with it.
const DevJWTSecret = "relay-dev-secret-change-me"

// Postgres configures the PostgreSQL connection.
type Postgres struct {
	// URL is a libpq-style connection URL.
	URL string `env:"DATABASE_URL" envDefault:"postgres://relay:relay@127.0.0.1:5432/relay?sslmode=disable"`
	// MaxConns bounds the pool; zero means the default of 20.
	MaxConns int `env:"DATABASE_MAX_CONNS" envDefault:"20"`
}

// Redis configures the Redis connection and key namespace.
type Redis struct {
	// URL is a redis:// URL.
	URL string `env:"REDIS_URL" envDefault:"redis://127.0.0.1:6379/0"`
	// Prefix is put before every key and channel name, so several
	// deployments (or tests) can share one server.
	Prefix string `env:"REDIS_PREFIX" envDefault:"relay:"`
}

// Kafka configures the brokers and the room event topic.
type Kafka struct {
	// Brokers are host:port seed addresses.
	Brokers []string `env:"KAFKA_BROKERS" envDefault:"127.0.0.1:9092" envSeparator:","`
	// Topic is the room event log, keyed by room id (docs/architecture.md).
	Topic string `env:"KAFKA_TOPIC" envDefault:"chat.messages"`
	// Partitions is used only when the topic must be created; an existing
	// topic keeps its partition count (changing it re-homes rooms).
	Partitions int32 `env:"KAFKA_PARTITIONS" envDefault:"12"`
	// GroupInstanceID, when set, makes a consumer a static group member:
	// restarted with the same id it resumes at once (see kafka.ConsumerConfig).
	// Empty means a dynamic member. Each instance needs its own stable id.
	GroupInstanceID string `env:"KAFKA_GROUP_INSTANCE_ID"`
}

// Telemetry configures logs, traces and metrics.
type Telemetry struct {
	// OTLPEndpoint enables OTLP trace export when set (e.g. http://127.0.0.1:4318).
	OTLPEndpoint string `env:"OTEL_EXPORTER_OTLP_ENDPOINT"`
	// OTLPProtocol is "http/protobuf" (default) or "grpc".
	OTLPProtocol string `env:"OTEL_EXPORTER_OTLP_PROTOCOL" envDefault:"http/protobuf"`
	// LogLevel is debug, info, warn or error.
	LogLevel string `env:"LOG_LEVEL" envDefault:"info"`
	// LogFormat is json or text.
	LogFormat string `env:"LOG_FORMAT" envDefault:"json"`
}

// HTTP configures a service's HTTP listener.
type HTTP struct {
	// Addr is the listen address; each service sets its own default.
	Addr string `env:"HTTP_ADDR"`
	// ShutdownTimeout bounds graceful shutdown after SIGTERM.
	ShutdownTimeout time.Duration `env:"SHUTDOWN_TIMEOUT" envDefault:"15s"`
	// Pprof serves net/http/pprof under /debug/pprof/ when true (profiling
	// under load; keep it off on a public listener).
	Pprof bool `env:"PPROF" envDefault:"false"`
}

// JWT configures token signing and verification (HS256).
type JWT struct {
	// Secret signs tokens; the dev default triggers a warning.
	Secret string `env:"JWT_SECRET" envDefault:"relay-dev-secret-change-me"`
	// TTL is how long an issued access token is valid; short, since a
	// refresh token renews it (services/api).
	TTL time.Duration `env:"JWT_TTL" envDefault:"15m"`
}

// Validate checks the JWT settings.
func (j JWT) Validate() error {
	if len(j.Secret) < 16 {
		return errors.New("JWT_SECRET must be at least 16 bytes")
	}
	if j.TTL <= 0 {
		return errors.New("JWT_TTL must be positive")
	}
	return nil
}

// WarnIfDev logs a loud warning when the development secret is in use.
func (j JWT) WarnIfDev(log *slog.Logger) {
	if j.Secret == DevJWTSecret {
		log.Warn("JWT_SECRET is the development default: anyone can forge tokens; set JWT_SECRET in production")
	}
}

// Validator is implemented by configs that check themselves after loading.
type Validator interface{ Validate() error }

// Load parses the environment into a T and validates it when T implements
// Validator.
func Load[T any]() (T, error) {
	cfg, err := env.ParseAs[T]()
	if err != nil {
		return cfg, fmt.Errorf("config: %w", err)
	}
	if v, ok := any(&cfg).(Validator); ok {
		if err := v.Validate(); err != nil {
			return cfg, fmt.Errorf("config: %w", err)
		}
	}
	return cfg, nil
}

// Consumer is the configuration every service consuming the room event log
// has; each embeds it under its own prefix (`envPrefix:"DELIVERY_"` reads
// DELIVERY_GROUP, DELIVERY_DLQ_TOPIC, DELIVERY_RETRY_MIN, DELIVERY_RETRY_MAX,
// DELIVERY_FETCH_WAIT).
type Consumer struct {
	// Group is the consumer group id.
	Group string `env:"GROUP"`
	// DLQTopic receives records that can never be handled; "" means <topic>.dlq.
	DLQTopic string `env:"DLQ_TOPIC"`
	// RetryMin is the first backoff after a failed call to a dependency.
	RetryMin time.Duration `env:"RETRY_MIN"`
	// RetryMax caps the backoff.
	RetryMax time.Duration `env:"RETRY_MAX"`
	// FetchWait lets the broker hold a fetch this long to gather a batch
	// (kafka.ConsumerOptions.FetchWait); each service sets its default.
	FetchWait time.Duration `env:"FETCH_WAIT"`
}

// WithDefaults fills zero fields: the group, <topic>.dlq and the backoff
// bounds.
func (c Consumer) WithDefaults(group, topic string, retryMin, retryMax time.Duration) Consumer {
	if c.Group == "" {
		c.Group = group
	}
	if c.DLQTopic == "" {
		c.DLQTopic = topic + ".dlq"
	}
	if c.RetryMin == 0 {
		c.RetryMin = retryMin
	}
	if c.RetryMax == 0 {
		c.RetryMax = retryMax
	}
	return c
}

// Validate checks c and the topic it consumes after defaults were applied;
// prefix names the variables in the errors (e.g. "DELIVERY_").
func (c Consumer) Validate(prefix string, k Kafka) error {
	switch {
	case len(k.Brokers) == 0:
		return errors.New("KAFKA_BROKERS required")
	case k.Topic == "":
		return errors.New("KAFKA_TOPIC required")
	case k.Partitions <= 0:
		return errors.New("KAFKA_PARTITIONS must be positive")
	case c.DLQTopic == k.Topic:
		return fmt.Errorf("%sDLQ_TOPIC must differ from KAFKA_TOPIC", prefix)
	case c.RetryMin < 0 || c.RetryMax < c.RetryMin:
		return fmt.Errorf("need 0 <= %sRETRY_MIN <= %sRETRY_MAX", prefix, prefix)
	case c.FetchWait < 0 || c.FetchWait > 10*time.Second:
		return fmt.Errorf("%sFETCH_WAIT must be between 0 and 10s", prefix)
	}
	return nil
}
