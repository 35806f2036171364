// Package config loads service configuration from environment variables with
// working local defaults (see .env.example) and validates it. The defaults
// include public development credentials, which are refused unless
// RELAY_ENV=development (see Mode).
package config

import (
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"os"
	"reflect"
	"time"

	"github.com/caarlos0/env/v11"
)

// DevJWTSecret is the development default for JWT_SECRET. It is public, so
// Load refuses it outside development mode (see Mode).
const DevJWTSecret = "relay-dev-secret-change-me"

// DevDatabasePassword is the password of the development database URL
// (DATABASE_URL's default); Load refuses it outside development mode.
const DevDatabasePassword = "relay"

// EnvVar is the variable that selects the mode; see Mode.
const EnvVar = "RELAY_ENV"

// Mode is how much the configuration is trusted to be a real deployment's.
type Mode string

// Modes. Production is the default: a deployment that forgets RELAY_ENV
// gets the strict checks.
const (
	// Production refuses the public development credentials.
	Production Mode = "production"
	// Development allows them; `make run`, scripts/env.sh and the tests
	// (pkg/testenv, the e2e stack) set it explicitly.
	Development Mode = "development"
)

// CurrentMode reads RELAY_ENV: "" and "production" are Production,
// "development" is Development, anything else is an error.
func CurrentMode() (Mode, error) {
	switch v := os.Getenv(EnvVar); v {
	case "", string(Production):
		return Production, nil
	case string(Development):
		return Development, nil
	default:
		return "", fmt.Errorf("%s must be %q or %q, not %q", EnvVar, Development, Production, v)
	}
}

// ErrDevCredential is returned (wrapped) by Load when a public development
// credential is configured outside development mode.
var ErrDevCredential = errors.New("development credential outside development mode")

// CheckCredentials refuses the public development credentials found in
// cfg (any JWT or Postgres value in it, at any depth) unless mode is
// Development: with the development JWT secret anyone can sign a token for
// any user, and the development database password is in this repository.
func CheckCredentials(cfg any, mode Mode) error {
	if mode == Development {
		return nil
	}
	var errs []error
	walkConfig(reflect.ValueOf(cfg), func(v any) {
		switch c := v.(type) {
		case JWT:
			if c.Secret == DevJWTSecret {
				errs = append(errs, fmt.Errorf("%w: JWT_SECRET is the public development secret; set a random secret of at least 32 bytes (or %s=development on a developer machine)", ErrDevCredential, EnvVar))
			}
		case Postgres:
			if u, err := url.Parse(c.URL); err == nil && u.User != nil {
				if pw, ok := u.User.Password(); ok && pw == DevDatabasePassword {
					errs = append(errs, fmt.Errorf("%w: DATABASE_URL uses the development database password; set a password of your own (or %s=development on a developer machine)", ErrDevCredential, EnvVar))
				}
			}
		}
	})
	return errors.Join(errs...)
}

// walkConfig calls f with every struct value in v, v included.
func walkConfig(v reflect.Value, f func(any)) {
	for v.Kind() == reflect.Pointer || v.Kind() == reflect.Interface {
		if v.IsNil() {
			return
		}
		v = v.Elem()
	}
	if v.Kind() != reflect.Struct {
		return
	}
	if v.CanInterface() {
		f(v.Interface())
	}
	for i := range v.NumField() {
		if v.Type().Field(i).IsExported() {
			walkConfig(v.Field(i), f)
		}
	}
}

// Postgres configures the PostgreSQL connection.
type Postgres struct {
	// URL is a libpq-style connection URL.
	URL string `env:"DATABASE_URL" envDefault:"postgres://relay:relay@127.0.0.1:5432/relay?sslmode=disable"`
	// MaxConns bounds the pool; zero means the default of 20.
	MaxConns int `env:"DATABASE_MAX_CONNS" envDefault:"20"`
}

// Replica configures an optional streaming (hot-standby) replica that
// read-only queries may use; services that read history and search read it.
type Replica struct {
	// URL is the replica's libpq-style URL; empty means every read goes to
	// the primary.
	URL string `env:"DATABASE_REPLICA_URL"`
	// MaxConns bounds the replica pool; zero means the default of 20.
	MaxConns int `env:"DATABASE_REPLICA_MAX_CONNS" envDefault:"20"`
}

// Redis configures the Redis connection and key namespace.
type Redis struct {
	// URL is a redis:// (or rediss://) URL: one server, or with Cluster
	// the seed nodes of a Redis Cluster, the first as the URL's host and
	// the others as addr parameters:
	// redis://:password@10.0.0.1:7001?addr=10.0.0.2:7001&addr=10.0.0.3:7001
	// (any node is enough to discover the others; more seeds survive one
	// being down at start).
	URL string `env:"REDIS_URL" envDefault:"redis://127.0.0.1:6379/0"`
	// Cluster says URL names a Redis Cluster: the services then route each
	// key to its shard and fan room events out with sharded pub/sub
	// (docs/deployment.md#scaling-out-tier-by-tier).
	Cluster bool `env:"REDIS_CLUSTER" envDefault:"false"`
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
	// ReplicationFactor is the copies of each partition when the topic must
	// be created; 0 leaves it to the brokers' default.replication.factor.
	ReplicationFactor int16 `env:"KAFKA_REPLICATION_FACTOR"`
	// MinInsyncReplicas is the topic's min.insync.replicas when it must be
	// created (with acks=all a write needs that many copies); 0 leaves it to
	// the brokers' default.
	MinInsyncReplicas int `env:"KAFKA_MIN_INSYNC_REPLICAS"`
	// GroupInstanceID, when set, makes a consumer a static group member:
	// restarted with the same id it resumes at once (see kafka.ConsumerConfig).
	// Empty means a dynamic member. Each instance needs its own stable id.
	GroupInstanceID string `env:"KAFKA_GROUP_INSTANCE_ID"`
}

// ValidateReplication checks KAFKA_REPLICATION_FACTOR and
// KAFKA_MIN_INSYNC_REPLICAS: a min ISR above the factor would refuse every
// acks=all write.
func (k Kafka) ValidateReplication() error {
	switch {
	case k.ReplicationFactor < 0 || k.MinInsyncReplicas < 0:
		return errors.New("KAFKA_REPLICATION_FACTOR and KAFKA_MIN_INSYNC_REPLICAS must not be negative")
	case k.ReplicationFactor > 0 && k.MinInsyncReplicas > int(k.ReplicationFactor):
		return errors.New("KAFKA_MIN_INSYNC_REPLICAS must not exceed KAFKA_REPLICATION_FACTOR")
	}
	return nil
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
	// InstanceID names this process among its service's instances in traces
	// (service.instance.id); "" leaves it out.
	InstanceID string `env:"INSTANCE_ID"`
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
	// AllowedOrigins are browser origins (https://chat.example.com) other
	// than the service's own that may use it: CORS on REST, the Origin
	// check on WebSocket and Socket.IO upgrades. Empty means same-origin only.
	AllowedOrigins []string `env:"CORS_ALLOWED_ORIGINS" envSeparator:","`
}

// JWT configures token signing and verification (HS256).
type JWT struct {
	// Secret signs tokens; the development default is refused outside
	// development mode (CheckCredentials).
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

// WarnIfDev logs a warning when the development secret is in use (which
// Load allows only in development mode).
func (j JWT) WarnIfDev(log *slog.Logger) {
	if j.Secret == DevJWTSecret {
		log.Warn("JWT_SECRET is the development default: anyone can forge tokens; development mode only")
	}
}

// Validator is implemented by configs that check themselves after loading.
type Validator interface{ Validate() error }

// Load parses the environment into a T, validates it when T implements
// Validator, and refuses the development credentials in it unless
// RELAY_ENV=development (CheckCredentials).
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
	mode, err := CurrentMode()
	if err != nil {
		return cfg, fmt.Errorf("config: %w", err)
	}
	if err := CheckCredentials(cfg, mode); err != nil {
		return cfg, fmt.Errorf("config: %w", err)
	}
	return cfg, nil
}

// Var is one environment variable a configuration reads.
type Var struct {
	// Name is the variable, e.g. DATABASE_URL.
	Name string `json:"name"`
	// Default is the value used when it is unset ("" when none).
	Default string `json:"default,omitempty"`
}

// Vars lists every environment variable Load[T] reads, with its default,
// in field order. Deployment tests compare it with what a deployment sets.
func Vars[T any]() ([]Var, error) {
	var zero T
	params, err := env.GetFieldParams(&zero)
	if err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	out := make([]Var, 0, len(params))
	for _, p := range params {
		out = append(out, Var{Name: p.Key, Default: p.DefaultValue})
	}
	return out, nil
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
	case k.ValidateReplication() != nil:
		return k.ValidateReplication()
	case c.DLQTopic == k.Topic:
		return fmt.Errorf("%sDLQ_TOPIC must differ from KAFKA_TOPIC", prefix)
	case c.RetryMin < 0 || c.RetryMax < c.RetryMin:
		return fmt.Errorf("need 0 <= %sRETRY_MIN <= %sRETRY_MAX", prefix, prefix)
	case c.FetchWait < 0 || c.FetchWait > 10*time.Second:
		return fmt.Errorf("%sFETCH_WAIT must be between 0 and 10s", prefix)
	}
	return nil
}
