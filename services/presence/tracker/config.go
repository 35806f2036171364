// Environment variables (besides the shared ones of relay/pkg/config:
// REDIS_URL, REDIS_PREFIX, DATABASE_URL, DATABASE_MAX_CONNS,
// OTEL_EXPORTER_OTLP_ENDPOINT, OTEL_EXPORTER_OTLP_PROTOCOL, LOG_LEVEL,
// LOG_FORMAT, SHUTDOWN_TIMEOUT):
//
//	HTTP_ADDR                    listen address of /health, /ready, /metrics (default 127.0.0.1:8120)
//	PRESENCE_HEARTBEAT_INTERVAL, PRESENCE_TIMEOUT, TYPING_TTL  shared with the gateways (config.Presence):
//	                             a connection without heartbeat for PRESENCE_TIMEOUT is gone; typing
//	                             lasts TYPING_TTL unless renewed
//	PRESENCE_SWEEP_INTERVAL      how often expired connections and typists are swept (default 1s)
//	PRESENCE_DB_FLUSH_INTERVAL   how often changed users.is_online / last_seen are written (default 2s)
//	PRESENCE_CONSUMER            consumer name in the group "presence" (default <hostname>-<random>); a
//	                             stable name lets a restarted instance finish its own pending commands at once
//	PRESENCE_CLAIM_IDLE          pending commands idle this long (a dead instance's) are taken over (default 10s)
//	PRESENCE_READ_COUNT          commands read per XREADGROUP (default 200)

package tracker

import (
	"errors"
	"fmt"
	"time"

	"relay/pkg/config"
)

// Defaults applied by New to zero fields.
const (
	DefaultAddr          = "127.0.0.1:8120"
	DefaultSweepInterval = time.Second
	DefaultFlushInterval = 2 * time.Second
	DefaultClaimIdle     = 10 * time.Second
	DefaultReadCount     = 200
)

// Config configures the presence service. Zero values mean the defaults.
type Config struct {
	// HTTP is the probe and metrics listener.
	HTTP config.HTTP
	// Redis holds the presence state, the commands stream and the channels.
	Redis config.Redis
	// Postgres receives users.is_online and users.last_seen.
	Postgres config.Postgres
	// Telemetry configures logs and trace export (used by main).
	Telemetry config.Telemetry

	// Presence holds the timings shared with the gateways: the heartbeat
	// interval (only checked against PresenceTimeout here), how long a
	// connection lives without a heartbeat, and how long typing lasts.
	config.Presence
	// SweepInterval is the period of the expiry sweeper.
	SweepInterval time.Duration `env:"PRESENCE_SWEEP_INTERVAL"`
	// FlushInterval is the period of the PostgreSQL writer.
	FlushInterval time.Duration `env:"PRESENCE_DB_FLUSH_INTERVAL"`
	// Consumer is this instance's name in the consumer group; "" means
	// host name plus a random suffix.
	Consumer string `env:"PRESENCE_CONSUMER"`
	// ClaimIdle is how long a pending command waits before another
	// instance takes it over.
	ClaimIdle time.Duration `env:"PRESENCE_CLAIM_IDLE"`
	// ReadCount is the number of commands read per call.
	ReadCount int64 `env:"PRESENCE_READ_COUNT"`
}

// withDefaults fills zero fields.
func (c Config) withDefaults() Config {
	c.HTTP = c.HTTP.WithDefaults(DefaultAddr)
	c.Presence = c.Presence.WithDefaults()
	if c.SweepInterval == 0 {
		c.SweepInterval = DefaultSweepInterval
	}
	if c.FlushInterval == 0 {
		c.FlushInterval = DefaultFlushInterval
	}
	if c.ClaimIdle == 0 {
		c.ClaimIdle = DefaultClaimIdle
	}
	if c.ReadCount == 0 {
		c.ReadCount = DefaultReadCount
	}
	return c
}

// validate checks a config after defaults were applied.
func (c Config) validate() error {
	switch {
	case c.Redis.URL == "":
		return errors.New("presence: REDIS_URL required")
	case c.Postgres.URL == "":
		return errors.New("presence: DATABASE_URL required")
	case c.SweepInterval < 0 || c.FlushInterval < 0 || c.ClaimIdle < 0 || c.ReadCount < 0:
		return errors.New("presence: durations and counts must be positive")
	case c.Presence.Validate() != nil:
		return fmt.Errorf("presence: %w", c.Presence.Validate())
	case c.TypingTTL < 100*time.Millisecond || c.PresenceTimeout < 100*time.Millisecond:
		return errors.New("presence: TYPING_TTL and PRESENCE_TIMEOUT must be at least 100ms")
	case c.HTTP.ShutdownTimeout < 0:
		return errors.New("presence: SHUTDOWN_TIMEOUT must not be negative")
	case len(c.Consumer) > 200:
		return errors.New("presence: PRESENCE_CONSUMER too long")
	}
	return nil
}
