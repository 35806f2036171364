// Command api serves the REST api: accounts, users, rooms, members, history
// and search. Configuration comes from the environment (httpapi/config.go).
package main

import (
	"context"

	"relay/pkg/config"
	"relay/pkg/daemon"
	"relay/pkg/kafka"
	"relay/pkg/telemetry"
	"relay/services/api/httpapi"
)

func main() {
	daemon.Main("api", func(c httpapi.Config) config.Telemetry { return c.Telemetry },
		func(ctx context.Context, cfg httpapi.Config, tel *telemetry.Telemetry) (daemon.Service, error) {
			cfg = cfg.WithDefaults()
			cfg.JWT.WarnIfDev(tel.Log)
			// The api is the first producer of a room's log (member_joined
			// at creation): make sure the topic exists with its partitions.
			if err := kafka.EnsureTopic(ctx, cfg.Kafka.Brokers, cfg.Kafka.Topic, cfg.Kafka.Partitions,
				kafka.Replication(cfg.Kafka.ReplicationFactor, cfg.Kafka.MinInsyncReplicas)); err != nil {
				return nil, err
			}
			return httpapi.New(ctx, cfg, tel)
		})
}
