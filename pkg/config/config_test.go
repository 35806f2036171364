package config

import (
	"errors"
	"strings"
	"testing"
	"time"
)

type testConfig struct {
	JWT   JWT
	Kafka Kafka
}

func (c testConfig) Validate() error { return c.JWT.Validate() }

func TestLoadDefaultsAndOverrides(t *testing.T) {
	t.Setenv(EnvVar, "development")
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

type credentialConfig struct {
	Nested struct {
		Postgres Postgres
	}
	JWT JWT
}

// The development credentials are refused unless RELAY_ENV=development;
// an unknown mode is an error too, not a silent production.
func TestLoadRefusesDevCredentialsOutsideDevelopment(t *testing.T) {
	for _, mode := range []string{"", "production"} {
		t.Run("mode="+mode, func(t *testing.T) {
			t.Setenv(EnvVar, mode)
			_, err := Load[credentialConfig]()
			if !errors.Is(err, ErrDevCredential) || !strings.Contains(err.Error(), "JWT_SECRET") || !strings.Contains(err.Error(), "DATABASE_URL") {
				t.Fatalf("Load with the defaults in mode %q: %v, want both credentials refused", mode, err)
			}
			t.Setenv("JWT_SECRET", "a-real-secret-of-32-bytes-or-more!")
			t.Setenv("DATABASE_URL", "postgres://relay:s3cret@db:5432/relay")
			if _, err := Load[credentialConfig](); err != nil {
				t.Fatalf("Load with real credentials: %v", err)
			}
		})
	}
	t.Setenv(EnvVar, "development")
	if _, err := Load[credentialConfig](); err != nil {
		t.Fatalf("development mode: %v", err)
	}
	t.Setenv(EnvVar, "staging")
	if _, err := Load[credentialConfig](); err == nil || !strings.Contains(err.Error(), EnvVar) {
		t.Fatalf("unknown mode: %v", err)
	}
}
