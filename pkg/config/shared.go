package config

import (
	"errors"
	"fmt"
	"reflect"
	"time"

	"github.com/caarlos0/env/v11"
)

// Settings that must agree across services are declared here once, with
// their one default, and embedded by every service that reads them: a
// gateway that heartbeats slower than the presence service expects, or a
// delivery worker that keeps acks shorter than the gateway, breaks
// silently. Each default is written once, in the envDefault tag; WithDefaults
// reads it back for configs built in code (tests, embedding programs).

// Presence is what the gateways (which heartbeat and time typing out) and
// the presence service (which expires connections and typists) must agree
// on.
type Presence struct {
	// HeartbeatInterval is how often a gateway sends the heartbeat batch
	// of its live connections.
	HeartbeatInterval time.Duration `env:"PRESENCE_HEARTBEAT_INTERVAL" envDefault:"15s"`
	// PresenceTimeout is how long a connection lives without a heartbeat;
	// it must exceed HeartbeatInterval, so one late batch does not take
	// everyone offline.
	PresenceTimeout time.Duration `env:"PRESENCE_TIMEOUT" envDefault:"30s"`
	// TypingTTL is how long typing lasts unless renewed.
	TypingTTL time.Duration `env:"TYPING_TTL" envDefault:"5s"`
}

// WithDefaults fills zero fields with their defaults.
func (p Presence) WithDefaults() Presence { return fillZero(p, defaults[Presence]()) }

// Validate checks p after defaults were applied.
func (p Presence) Validate() error {
	switch {
	case p.HeartbeatInterval <= 0 || p.PresenceTimeout <= 0 || p.TypingTTL <= 0:
		return errors.New("PRESENCE_HEARTBEAT_INTERVAL, PRESENCE_TIMEOUT and TYPING_TTL must be positive")
	case p.PresenceTimeout <= p.HeartbeatInterval:
		// One late heartbeat must not take everyone offline.
		return errors.New("PRESENCE_TIMEOUT must exceed PRESENCE_HEARTBEAT_INTERVAL")
	}
	return nil
}

// Dedupe is what the gateways (which record a clientMsgId's first ack)
// and the delivery worker (which records it for a gateway that died
// first) must agree on (relay/pkg/dedupe).
type Dedupe struct {
	// DedupeTTL is how long a clientMsgId's first ack is kept: a retry
	// within it gets that ack back instead of sending a second message.
	DedupeTTL time.Duration `env:"DEDUPE_TTL" envDefault:"24h"`
}

// WithDefaults fills zero fields with their defaults.
func (d Dedupe) WithDefaults() Dedupe { return fillZero(d, defaults[Dedupe]()) }

// Validate checks d after defaults were applied.
func (d Dedupe) Validate() error {
	if d.DedupeTTL <= 0 {
		return errors.New("DEDUPE_TTL must be positive")
	}
	return nil
}

// defaults returns a T holding the envDefault of each of its fields, as
// Load would with none of its variables set.
func defaults[T any]() T {
	v, err := env.ParseAsWithOptions[T](env.Options{Environment: map[string]string{}})
	if err != nil {
		// Only a malformed envDefault tag gets here: a programming error
		// the package's tests catch.
		panic(fmt.Sprintf("config: defaults of %T: %v", v, err))
	}
	return v
}

// fillZero returns v with each zero field (at any depth) taken from def.
func fillZero[T any](v, def T) T {
	fill(reflect.ValueOf(&v).Elem(), reflect.ValueOf(def))
	return v
}

func fill(v, def reflect.Value) {
	if v.Kind() == reflect.Struct {
		for i := range v.NumField() {
			if v.Type().Field(i).IsExported() {
				fill(v.Field(i), def.Field(i))
			}
		}
		return
	}
	if v.IsZero() {
		v.Set(def)
	}
}

// The connection settings every service has: WithDefaults fills zero
// fields from the same envDefault tags Load applies, so a config built in
// code (tests, embedding programs) gets the defaults without each service
// writing them out again.

// WithDefaults fills the zero URL and MaxConns.
func (p Postgres) WithDefaults() Postgres { return fillZero(p, defaults[Postgres]()) }

// WithDefaults fills a zero URL. The prefix is kept as given: an empty
// prefix is a namespace too.
func (r Redis) WithDefaults() Redis {
	if r.URL == "" {
		r.URL = defaults[Redis]().URL
	}
	return r
}

// WithDefaults fills the zero brokers, topic and partition count.
func (k Kafka) WithDefaults() Kafka { return fillZero(k, defaults[Kafka]()) }

// WithDefaults fills a zero Addr with addr (each service has its own port)
// and a zero ShutdownTimeout.
func (h HTTP) WithDefaults(addr string) HTTP {
	def := defaults[HTTP]()
	def.Addr = addr
	return fillZero(h, def)
}
