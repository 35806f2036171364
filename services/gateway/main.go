// Command gateway serves the WebSocket protocol at /ws (docs/protocol.md).
package main

import (
	"context"

	"relay/pkg/config"
	"relay/pkg/daemon"
	"relay/pkg/telemetry"
	"relay/services/gateway/gateway"
)

func main() {
	daemon.Main("gateway", func(c gateway.Config) config.Telemetry { return c.Telemetry },
		func(ctx context.Context, cfg gateway.Config, tel *telemetry.Telemetry) (daemon.Service, error) {
			return gateway.New(ctx, cfg, tel)
		})
}
