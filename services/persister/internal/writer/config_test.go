package writer

import (
	"testing"
	"time"

	"relay/pkg/config"
)

func TestConfigFromEnv(t *testing.T) {
	t.Setenv("HTTP_ADDR", "127.0.0.1:9998")
	t.Setenv("KAFKA_TOPIC", "events")
	t.Setenv("PERSIST_BATCH_SIZE", "42")
	t.Setenv("PERSIST_FLUSH_INTERVAL", "7ms")
	t.Setenv("PERSIST_BREAKER_FAILURES", "9")
	cfg, err := config.Load[Config]()
	if err != nil {
		t.Fatal(err)
	}
	cfg = cfg.withDefaults()
	if err := cfg.validate(); err != nil {
		t.Fatal(err)
	}
	if cfg.HTTP.Addr != "127.0.0.1:9998" || cfg.BatchSize != 42 || cfg.FlushInterval != 7*time.Millisecond ||
		cfg.BreakerFailures != 9 || cfg.DLQTopic != "events.dlq" || cfg.Group != DefaultGroup || cfg.Postgres.URL == "" {
		t.Fatalf("config = %+v", cfg)
	}
}

func TestConfigDefaults(t *testing.T) {
	cfg := Config{Postgres: config.Postgres{URL: "postgres://x"}, Kafka: config.Kafka{Brokers: []string{"b"}, Topic: "t", Partitions: 1}}.withDefaults()
	if err := cfg.validate(); err != nil {
		t.Fatal(err)
	}
	if cfg.HTTP.Addr != DefaultAddr || cfg.BatchSize != DefaultBatchSize || cfg.FlushInterval != DefaultFlushInterval ||
		cfg.BreakerOpenTimeout != DefaultBreakerOpenTimeout || cfg.HTTP.ShutdownTimeout <= 0 {
		t.Fatalf("defaults = %+v", cfg)
	}
}
