// Command presence runs the presence service: online state, last seen and
// typing, fed by the gateways' commands stream (see package tracker).
package main

import (
	"context"

	"relay/pkg/config"
	"relay/pkg/daemon"
	"relay/pkg/telemetry"
	"relay/services/presence/tracker"
)

func main() {
	daemon.Main("presence", func(c tracker.Config) config.Telemetry { return c.Telemetry },
		func(ctx context.Context, cfg tracker.Config, tel *telemetry.Telemetry) (daemon.Service, error) {
			return tracker.New(ctx, cfg, tel)
		})
}
