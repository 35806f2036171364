// Command chatbench load-tests a running relay stack: it registers (or
// reuses) users, creates rooms, connects them over WebSocket and sends
// messages at a set rate, measuring send→ack, send→delivery and
// send→persisted latency, loss, duplicates, order, and the CPU and memory
// of the stack's processes. `make bench` runs the chat scenario;
// docs/performance.md records the results. Run with -h for the flags.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime/pprof"
	"strings"
	"syscall"

	"relay/tools/cmd/chatbench/bench"
)

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

// run is main with its outputs as arguments: 0 done, 1 failed, 2 bad
// parameters.
func run(args []string, stdout, stderr io.Writer) int {
	if len(args) > 0 && args[0] == "compare" {
		return runCompare(args[1:], stdout, stderr)
	}
	p, err := bench.ParseArgs(args, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	var ue *bench.UsageError
	if errors.As(err, &ue) {
		fmt.Fprintf(stderr, "chatbench: %v\n(run chatbench -h for the flags)\n", err)
		return 2
	}
	if err != nil {
		fmt.Fprintf(stderr, "chatbench: %v\n", err)
		return 1
	}
	if p.GatewaysDefaulted {
		fmt.Fprintf(stderr, "chatbench: connecting directly to %s, bypassing devproxy (--gateways to change)\n", strings.Join(p.Gateways, ", "))
	}

	if p.CPUProfile != "" {
		f, err := os.Create(p.CPUProfile)
		if err != nil {
			fmt.Fprintf(stderr, "chatbench: --cpuprofile: %v\n", err)
			return 2
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			fmt.Fprintf(stderr, "chatbench: --cpuprofile: %v\n", err)
			return 1
		}
		defer pprof.StopCPUProfile()
	}

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	res, err := bench.Run(ctx, p, stderr)
	if errors.As(err, &ue) {
		fmt.Fprintf(stderr, "chatbench: %v\n(run chatbench -h for the flags)\n", err)
		return 2
	}
	code := 0
	if errors.Is(err, context.Canceled) && ctx.Err() != nil {
		err = errors.New("interrupted: the results cover the run until then")
	}
	if err != nil {
		code = 1
		if res != nil {
			res.Error = err.Error()
		}
	}
	if res != nil {
		bench.PrintTable(stdout, res)
		if p.JSON != "" {
			if jerr := bench.WriteJSON(p.JSON, res); jerr != nil {
				fmt.Fprintf(stderr, "chatbench: %v\n", jerr)
				code = 1
			} else {
				fmt.Fprintf(stderr, "chatbench: results written to %s\n", p.JSON)
			}
		}
	}
	if err != nil {
		fmt.Fprintf(stderr, "chatbench: %v\n", err)
	}
	return code
}

// runCompare is `chatbench compare`: the same shape against relay and its
// peers, interleaved, several rounds.
func runCompare(args []string, stdout, stderr io.Writer) int {
	cp, err := bench.ParseCompareArgs(args, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	var ue *bench.UsageError
	if errors.As(err, &ue) {
		fmt.Fprintf(stderr, "chatbench compare: %v\n(run chatbench compare -h for the flags)\n", err)
		return 2
	}
	if err != nil {
		fmt.Fprintf(stderr, "chatbench compare: %v\n", err)
		return 1
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	res, err := bench.Compare(ctx, cp, stdout, stderr)
	code := 0
	if err != nil {
		code = 1
		if errors.As(err, &ue) {
			code = 2
		}
		fmt.Fprintf(stderr, "chatbench compare: %v\n", err)
	}
	bench.PrintCompare(stdout, res)
	if cp.JSON != "" {
		if jerr := bench.WriteCompareJSON(cp.JSON, res); jerr != nil {
			fmt.Fprintf(stderr, "chatbench compare: %v\n", jerr)
			code = 1
		} else {
			fmt.Fprintf(stderr, "chatbench compare: results written to %s\n", cp.JSON)
		}
	}
	return code
}
