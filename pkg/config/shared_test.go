package config

import (
	"testing"
	"time"
)

// The defaults come from the envDefault tags (their one declaration), and
// WithDefaults keeps what was set.
func TestSharedDefaults(t *testing.T) {
	p := Presence{}.WithDefaults()
	if p != (Presence{HeartbeatInterval: 15 * time.Second, PresenceTimeout: 30 * time.Second, TypingTTL: 5 * time.Second}) {
		t.Fatalf("presence defaults %+v", p)
	}
	if d := (Dedupe{}).WithDefaults(); d.DedupeTTL != 24*time.Hour {
		t.Fatalf("dedupe default %v", d.DedupeTTL)
	}
	p = Presence{TypingTTL: time.Second}.WithDefaults()
	if p.TypingTTL != time.Second || p.HeartbeatInterval != 15*time.Second {
		t.Fatalf("WithDefaults replaced a set field or missed a zero one: %+v", p)
	}
	for _, v := range []string{"PRESENCE_HEARTBEAT_INTERVAL", "PRESENCE_TIMEOUT", "TYPING_TTL", "DEDUPE_TTL"} {
		t.Setenv(v, "")
	}
	loaded, err := Load[struct {
		Presence
		Dedupe
	}]()
	if err != nil {
		t.Fatal(err)
	}
	if loaded.Presence != (Presence{}).WithDefaults() || loaded.Dedupe != (Dedupe{}).WithDefaults() {
		t.Fatalf("Load's defaults %+v differ from WithDefaults'", loaded)
	}
}

func TestSharedValidate(t *testing.T) {
	ok := Presence{}.WithDefaults()
	if err := ok.Validate(); err != nil {
		t.Fatal(err)
	}
	for name, p := range map[string]Presence{
		"timeout not above heartbeat": {HeartbeatInterval: time.Second, PresenceTimeout: time.Second, TypingTTL: time.Second},
		"negative typing":             {HeartbeatInterval: time.Second, PresenceTimeout: 2 * time.Second, TypingTTL: -1},
	} {
		if p.Validate() == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	if (Dedupe{DedupeTTL: -time.Second}).Validate() == nil {
		t.Error("negative DEDUPE_TTL accepted")
	}
}

func TestConnectionDefaults(t *testing.T) {
	if p := (Postgres{}).WithDefaults(); p.URL == "" || p.MaxConns != 20 {
		t.Fatalf("postgres %+v", p)
	}
	if r := (Redis{}).WithDefaults(); r.URL != "redis://127.0.0.1:6379/0" || r.Prefix != "" {
		t.Fatalf("redis %+v: the URL is filled, an empty prefix kept", r)
	}
	if k := (Kafka{Topic: "t"}).WithDefaults(); len(k.Brokers) != 1 || k.Topic != "t" || k.Partitions != 12 {
		t.Fatalf("kafka %+v", k)
	}
	if h := (HTTP{}).WithDefaults("127.0.0.1:1"); h.Addr != "127.0.0.1:1" || h.ShutdownTimeout != 15*time.Second {
		t.Fatalf("http %+v", h)
	}
}
