// Command gateway serves the WebSocket protocol at /ws (docs/protocol.md).
package main

import (
	"context"

	"relay/pkg/config"
	"relay/pkg/daemon"
	"relay/pkg/telemetry"
	"relay/services/gateway/internal/server"
)

func main() {
	daemon.Main("gateway", func(c server.Config) config.Telemetry { return c.Telemetry },
		func(ctx context.Context, cfg server.Config, tel *telemetry.Telemetry) (daemon.Service, error) {
			return server.New(ctx, cfg, tel)
		})
}
