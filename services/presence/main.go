// Command presence runs the presence service: online state, last seen and
// typing, fed by the gateways' commands stream (see package presence).
package main

import (
	"context"

	"relay/pkg/config"
	"relay/pkg/daemon"
	"relay/pkg/telemetry"
	"relay/services/presence/presence"
)

func main() {
	daemon.Main("presence", func(c presence.Config) config.Telemetry { return c.Telemetry },
		func(ctx context.Context, cfg presence.Config, tel *telemetry.Telemetry) (daemon.Service, error) {
			return presence.New(ctx, cfg, tel)
		})
}
