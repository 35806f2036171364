// Command persister runs the persister: it writes the room event log to
// PostgreSQL in batches (see package persister).
package main

import (
	"context"

	"relay/pkg/config"
	"relay/pkg/daemon"
	"relay/pkg/telemetry"
	"relay/services/persister/internal/writer"
)

func main() {
	daemon.Main("persister", func(c writer.Config) config.Telemetry { return c.Telemetry },
		func(ctx context.Context, cfg writer.Config, tel *telemetry.Telemetry) (daemon.Service, error) {
			return writer.New(ctx, cfg, tel)
		})
}
