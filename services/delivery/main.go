// Command delivery runs the delivery worker: it publishes the room event
// log to the rooms' Redis channels and recent histories (see package
// delivery).
package main

import (
	"context"

	"relay/pkg/config"
	"relay/pkg/daemon"
	"relay/pkg/telemetry"
	"relay/services/delivery/internal/worker"
)

func main() {
	daemon.Main("delivery", func(c worker.Config) config.Telemetry { return c.Telemetry },
		func(ctx context.Context, cfg worker.Config, tel *telemetry.Telemetry) (daemon.Service, error) {
			return worker.New(ctx, cfg, tel)
		})
}
