// Command tracetree prints the trace of one chat message as an indented
// tree, from Jaeger's query API:
//
//	go run ./tools/cmd/tracetree [--jaeger http://127.0.0.1:16686] <message id>
//
// The message id is the one in the send ack (and in messaging.message.id
// on the Kafka spans). Each line is a span: its offset from the trace's
// start, duration, service (and instance), kind and name, and the
// attributes that locate it; links (the persister's batch) are listed
// under the span that has them.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"time"
)

func main() {
	if err := run(os.Args[1:], os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "tracetree:", err)
		os.Exit(1)
	}
}

func run(args []string, out io.Writer) error {
	fs := flag.NewFlagSet("tracetree", flag.ContinueOnError)
	base := fs.String("jaeger", envOr("JAEGER_QUERY_URL", "http://127.0.0.1:16686"), "Jaeger query base URL (env JAEGER_QUERY_URL)")
	service := fs.String("service", "gateway", "service whose spans carry the message id (the producer)")
	lookback := fs.Duration("lookback", 24*time.Hour, "how far back to search")
	wait := fs.Duration("wait", 10*time.Second, "how long to wait for the trace to be complete in Jaeger")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() != 1 {
		return errors.New("usage: tracetree [flags] <message id>")
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	c := &client{base: *base}
	tr, err := c.messageTrace(ctx, *service, fs.Arg(0), *lookback, *wait)
	if err != nil {
		return err
	}
	render(out, tr)
	return nil
}

func envOr(key, def string) string {
	if v := os.Getenv(key); v != "" {
		return v
	}
	return def
}
