// Environment variables (besides the shared ones of relay/pkg/config:
// REDIS_URL, REDIS_PREFIX, KAFKA_BROKERS, KAFKA_TOPIC, KAFKA_PARTITIONS,
// OTEL_EXPORTER_OTLP_ENDPOINT, OTEL_EXPORTER_OTLP_PROTOCOL, LOG_LEVEL,
// LOG_FORMAT, SHUTDOWN_TIMEOUT):
//
//	HTTP_ADDR                  listen address of /health, /ready, /metrics (default 127.0.0.1:8100)
//	DELIVERY_GROUP             Kafka consumer group id (default delivery)
//	DELIVERY_DLQ_TOPIC         dead-letter topic for undecodable records (default <KAFKA_TOPIC>.dlq)
//	DELIVERY_HISTORY_CAP       approximate length of each room's recent-history stream (default 1000)
//	DEDUPE_TTL                 how long a clientMsgId's ack recorded by the worker is kept (default 24h;
//	                           shared with the gateways: config.Dedupe)
//	DELIVERY_SEQ_CACHE_ROOMS   rooms per partition whose last seq is cached in memory (default 10000)
//	DELIVERY_BATCH             records of a partition published with one Redis round trip, at most (default 64)
//	DELIVERY_RETRY_MIN         first wait after a failed Redis or Kafka call (default 50ms)
//	DELIVERY_RETRY_MAX         longest wait between retries (default 5s)
//	DELIVERY_FETCH_WAIT        how long the broker may hold a fetch to gather a batch (default 0: answer at once)

package worker

import (
	"errors"
	"fmt"
	"time"

	"relay/pkg/config"
)

// Defaults applied by New to zero fields.
const (
	DefaultAddr          = "127.0.0.1:8100"
	DefaultGroup         = "delivery"
	DefaultHistoryCap    = 1000
	DefaultSeqCacheRooms = 10000
	DefaultBatch         = 64
	DefaultRetryMin      = 50 * time.Millisecond
	DefaultRetryMax      = 5 * time.Second
)

// Config configures the delivery worker. Zero values mean the defaults above.
type Config struct {
	// HTTP is the probe and metrics listener.
	HTTP config.HTTP
	// Redis is where rooms' seqs, histories and channels live.
	Redis config.Redis
	// Kafka names the brokers and the room event topic.
	Kafka config.Kafka
	// Telemetry configures logs and trace export (used by main).
	Telemetry config.Telemetry

	// Consumer holds the group, the dead-letter topic (for records that
	// cannot be decoded) and the retry backoff of failed Redis and Kafka
	// calls.
	config.Consumer `envPrefix:"DELIVERY_"`
	// HistoryCap is the approximate number of publications kept per room.
	HistoryCap int `env:"DELIVERY_HISTORY_CAP"`
	// Dedupe holds DEDUPE_TTL, how long a clientMsgId's ack is kept when
	// the worker records it for a sender whose gateway could not; shared
	// with the gateways, zero means its default.
	config.Dedupe
	// SeqCacheRooms bounds the per-partition cache of rooms' last seqs.
	SeqCacheRooms int `env:"DELIVERY_SEQ_CACHE_ROOMS"`
	// Batch bounds how many of a partition's waiting records go to Redis
	// in one pipeline; 1 publishes record by record.
	Batch int `env:"DELIVERY_BATCH"`
}

// withDefaults fills zero fields.
func (c Config) withDefaults() Config {
	c.HTTP = c.HTTP.WithDefaults(DefaultAddr)
	c.Consumer = c.Consumer.WithDefaults(DefaultGroup, c.Kafka.Topic, DefaultRetryMin, DefaultRetryMax)
	c.Dedupe = c.Dedupe.WithDefaults()
	if c.HistoryCap == 0 {
		c.HistoryCap = DefaultHistoryCap
	}
	if c.SeqCacheRooms == 0 {
		c.SeqCacheRooms = DefaultSeqCacheRooms
	}
	if c.Batch == 0 {
		c.Batch = DefaultBatch
	}
	return c
}

// validate checks a config after defaults were applied.
func (c Config) validate() error {
	if err := c.Consumer.Validate("DELIVERY_", c.Kafka); err != nil {
		return fmt.Errorf("delivery: %w", err)
	}
	switch {
	case c.Redis.URL == "":
		return errors.New("delivery: REDIS_URL required")
	case c.Dedupe.Validate() != nil:
		return fmt.Errorf("delivery: %w", c.Dedupe.Validate())
	case c.HistoryCap < 1:
		return errors.New("delivery: DELIVERY_HISTORY_CAP must be positive")
	case c.SeqCacheRooms < 1:
		return errors.New("delivery: DELIVERY_SEQ_CACHE_ROOMS must be positive")
	case c.Batch < 1:
		return errors.New("delivery: DELIVERY_BATCH must be positive")
	case c.HTTP.ShutdownTimeout < 0:
		return errors.New("delivery: SHUTDOWN_TIMEOUT must not be negative")
	}
	return nil
}
