// Command persister runs the persister: it writes the room event log to
// PostgreSQL in batches (see package persister).
package main

import (
	"context"

	"relay/pkg/config"
	"relay/pkg/daemon"
	"relay/pkg/telemetry"
	"relay/services/persister/persister"
)

func main() {
	daemon.Main("persister", func(c persister.Config) config.Telemetry { return c.Telemetry },
		func(ctx context.Context, cfg persister.Config, tel *telemetry.Telemetry) (daemon.Service, error) {
			return persister.New(ctx, cfg, tel)
		})
}
