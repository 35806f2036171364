// Command delivery runs the delivery worker: it publishes the room event
// log to the rooms' Redis channels and recent histories (see package
// delivery).
package main

import (
	"context"

	"relay/pkg/config"
	"relay/pkg/daemon"
	"relay/pkg/telemetry"
	"relay/services/delivery/delivery"
)

func main() {
	daemon.Main("delivery", func(c delivery.Config) config.Telemetry { return c.Telemetry },
		func(ctx context.Context, cfg delivery.Config, tel *telemetry.Telemetry) (daemon.Service, error) {
			return delivery.New(ctx, cfg, tel)
		})
}
