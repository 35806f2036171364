// Environment variables (besides the shared ones of relay/pkg/config:
// DATABASE_URL, DATABASE_MAX_CONNS, KAFKA_BROKERS, KAFKA_TOPIC,
// KAFKA_PARTITIONS, OTEL_EXPORTER_OTLP_ENDPOINT, OTEL_EXPORTER_OTLP_PROTOCOL,
// LOG_LEVEL, LOG_FORMAT, SHUTDOWN_TIMEOUT):
//
//	HTTP_ADDR                      listen address of /health, /ready, /metrics, /lag (default 127.0.0.1:8110)
//	PERSIST_GROUP                  Kafka consumer group id (default persister)
//	PERSIST_DLQ_TOPIC              dead-letter topic for unusable records (default <KAFKA_TOPIC>.dlq)
//	PERSIST_BATCH_SIZE             flush when this many records are pending (default 500)
//	PERSIST_FLUSH_INTERVAL         flush when the oldest pending record waited this long (default 20ms)
//	PERSIST_WRITE_TIMEOUT          bound on one batch transaction (default 10s)
//	PERSIST_BREAKER_FAILURES       consecutive failed batches that open the breaker (default 3)
//	PERSIST_BREAKER_OPEN_TIMEOUT   how long the breaker stays open before a trial batch (default 5s)
//	PERSIST_RETRY_MIN              first wait after a failed batch (default 100ms)
//	PERSIST_RETRY_MAX              longest wait between retries (default 5s)
//	PERSIST_FETCH_WAIT             how long the broker may hold a fetch to gather a batch (default 10ms)

package writer

import (
	"errors"
	"fmt"
	"time"

	"relay/pkg/config"
)

// Defaults applied by New to zero fields.
const (
	DefaultAddr               = "127.0.0.1:8110"
	DefaultGroup              = "persister"
	DefaultBatchSize          = 500
	DefaultFlushInterval      = 20 * time.Millisecond
	DefaultWriteTimeout       = 10 * time.Second
	DefaultBreakerFailures    = 3
	DefaultBreakerOpenTimeout = 5 * time.Second
	DefaultRetryMin           = 100 * time.Millisecond
	DefaultRetryMax           = 5 * time.Second
	// DefaultFetchWait is half the flush interval, which a batch waits
	// anyway: fetches of many records cost the broker and the persister
	// far less CPU than one fetch per few records.
	DefaultFetchWait = 10 * time.Millisecond
)

// Config configures the persister. Zero values mean the defaults above.
type Config struct {
	// HTTP is the probe, metrics and /lag listener.
	HTTP config.HTTP
	// Postgres is the database written to.
	Postgres config.Postgres
	// Kafka names the brokers and the room event topic.
	Kafka config.Kafka
	// Telemetry configures logs and trace export (used by main).
	Telemetry config.Telemetry

	// Consumer holds the group, the dead-letter topic (for records that
	// can never be written) and the retry backoff of failed batches and
	// Kafka calls.
	config.Consumer `envPrefix:"PERSIST_"`
	// BatchSize flushes a batch once it holds this many records.
	BatchSize int `env:"PERSIST_BATCH_SIZE"`
	// FlushInterval flushes a batch this long after its first record.
	FlushInterval time.Duration `env:"PERSIST_FLUSH_INTERVAL"`
	// WriteTimeout bounds one batch transaction.
	WriteTimeout time.Duration `env:"PERSIST_WRITE_TIMEOUT"`
	// BreakerFailures consecutive failures open the breaker.
	BreakerFailures uint32 `env:"PERSIST_BREAKER_FAILURES"`
	// BreakerOpenTimeout is how long the open breaker refuses writes before
	// it lets one trial batch through.
	BreakerOpenTimeout time.Duration `env:"PERSIST_BREAKER_OPEN_TIMEOUT"`
}

// withDefaults fills zero fields.
func (c Config) withDefaults() Config {
	c.HTTP = c.HTTP.WithDefaults(DefaultAddr)
	c.Consumer = c.Consumer.WithDefaults(DefaultGroup, c.Kafka.Topic, DefaultRetryMin, DefaultRetryMax)
	if c.FetchWait == 0 {
		c.FetchWait = DefaultFetchWait
	}
	if c.BatchSize == 0 {
		c.BatchSize = DefaultBatchSize
	}
	if c.FlushInterval == 0 {
		c.FlushInterval = DefaultFlushInterval
	}
	if c.WriteTimeout == 0 {
		c.WriteTimeout = DefaultWriteTimeout
	}
	if c.BreakerFailures == 0 {
		c.BreakerFailures = DefaultBreakerFailures
	}
	if c.BreakerOpenTimeout == 0 {
		c.BreakerOpenTimeout = DefaultBreakerOpenTimeout
	}
	return c
}

// validate checks a config after defaults were applied.
func (c Config) validate() error {
	if err := c.Consumer.Validate("PERSIST_", c.Kafka); err != nil {
		return fmt.Errorf("persister: %w", err)
	}
	switch {
	case c.Postgres.URL == "":
		return errors.New("persister: DATABASE_URL required")
	case c.BatchSize < 1:
		return errors.New("persister: PERSIST_BATCH_SIZE must be positive")
	case c.FlushInterval < 0 || c.WriteTimeout < 0 || c.BreakerOpenTimeout < 0:
		return errors.New("persister: durations must not be negative")
	case c.HTTP.ShutdownTimeout < 0:
		return errors.New("persister: SHUTDOWN_TIMEOUT must not be negative")
	}
	return nil
}
