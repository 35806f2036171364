package worker

import (
	"testing"
	"time"

	"relay/pkg/config"
)

func TestConfigFromEnv(t *testing.T) {
	t.Setenv("HTTP_ADDR", "127.0.0.1:9999")
	t.Setenv("KAFKA_TOPIC", "events")
	t.Setenv("DELIVERY_GROUP", "g")
	t.Setenv("DELIVERY_HISTORY_CAP", "50")
	t.Setenv("DELIVERY_RETRY_MAX", "2s")
	t.Setenv("DELIVERY_FETCH_WAIT", "3ms")
	cfg, err := config.Load[Config]()
	if err != nil {
		t.Fatal(err)
	}
	cfg = cfg.withDefaults()
	if err := cfg.validate(); err != nil {
		t.Fatal(err)
	}
	if cfg.HTTP.Addr != "127.0.0.1:9999" || cfg.Group != "g" || cfg.HistoryCap != 50 || cfg.RetryMax != 2*time.Second || cfg.FetchWait != 3*time.Millisecond ||
		cfg.DLQTopic != "events.dlq" || cfg.SeqCacheRooms != DefaultSeqCacheRooms || cfg.Redis.URL == "" || len(cfg.Kafka.Brokers) == 0 {
		t.Fatalf("config = %+v", cfg)
	}
}

func TestConfigDefaults(t *testing.T) {
	cfg := Config{Redis: config.Redis{URL: "redis://x"}, Kafka: config.Kafka{Brokers: []string{"b"}, Topic: "t", Partitions: 1}}.withDefaults()
	if err := cfg.validate(); err != nil {
		t.Fatal(err)
	}
	if cfg.HTTP.Addr != DefaultAddr || cfg.Group != DefaultGroup || cfg.HistoryCap != DefaultHistoryCap || cfg.HTTP.ShutdownTimeout <= 0 {
		t.Fatalf("defaults = %+v", cfg)
	}
}
