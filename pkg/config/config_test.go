package config

import (
	"testing"
	"time"
)

type testConfig struct {
	JWT   JWT
	Kafka Kafka
}

func (c testConfig) Validate() error { return c.JWT.Validate() }

func TestLoadDefaultsAndOverrides(t *testing.T) {
	t.Setenv("KAFKA_BROKERS", "a:1,b:2")
	t.Setenv("JWT_TTL", "90m")
	c, err := Load[testConfig]()
	if err != nil {
		t.Fatal(err)
	}
	if len(c.Kafka.Brokers) != 2 || c.Kafka.Topic != "chat.messages" || c.JWT.TTL != 90*time.Minute || c.JWT.Secret != DevJWTSecret {
		t.Fatalf("loaded %+v", c)
	}
}

func TestLoadRefusesBadValues(t *testing.T) {
	for name, env := range map[string][2]string{
		"short secret": {"JWT_SECRET", "short"},
		"bad duration": {"JWT_TTL", "soon"},
		"negative ttl": {"JWT_TTL", "-1h"},
	} {
		t.Run(name, func(t *testing.T) {
			t.Setenv(env[0], env[1])
			if _, err := Load[testConfig](); err == nil {
				t.Fatal("accepted")
			}
		})
	}
}
