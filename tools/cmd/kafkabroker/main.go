// Command kafkabroker runs a single-node, Kafka-protocol compatible broker
// for local development and tests, built on franz-go's kfake.
//
// We embed kfake instead of running Apache Kafka because the dev machines
// have no JVM, no container engine and no internet beyond package
// registries; kfake speaks the real wire protocol (idempotent producers,
// consumer groups, committed offsets), so the services use their normal
// Kafka client code paths against it.
//
// Usage:
//
//	kafkabroker -addr 127.0.0.1:9092 -data-dir .data/kafka -topic chat.messages:12
//
// Every flag can also be set through the environment (flags win):
//
//	KAFKABROKER_ADDR, KAFKABROKER_DATA_DIR, KAFKABROKER_TOPICS (comma
//	separated name[:partitions]), KAFKABROKER_SYNC, KAFKABROKER_AUTO_CREATE,
//	KAFKABROKER_LOG_LEVEL.
//
// Durability: -sync defaults to true. kfake's default (like Kafka's) is to
// leave produced batches in the OS page cache and fsync only on segment roll
// and shutdown, so a crash or power loss can drop records that producers
// already saw acknowledged. The chat platform treats an acked message as
// persisted, so with -sync the dev broker acknowledges a write only once the
// data directory's filesystem was synced after it: one syncfs shared by all
// requests waiting at that moment, run at the connection rather than inside
// kfake's request loop (groupsync.go). Pass -sync=false for throughput
// experiments where that guarantee is not needed.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"
)

func main() {
	logger := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
	if err := run(os.Args[1:], os.Stdout, logger); err != nil {
		logger.Error("kafkabroker failed", "err", err)
		os.Exit(1)
	}
}

// run parses args, starts the broker and blocks until SIGINT/SIGTERM.
func run(args []string, stdout io.Writer, logger *slog.Logger) error {
	cfg, err := parseConfig(args, os.Getenv, os.Stderr)
	if errors.Is(err, flag.ErrHelp) {
		return nil // -h printed usage; not a failure
	}
	if err != nil {
		return err
	}

	// A second signal while state is being persisted forces exit; that is
	// why we keep our own channel instead of signal.NotifyContext only.
	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM)
	defer signal.Stop(sigs)

	b, err := Start(cfg, logger)
	if err != nil {
		return err
	}
	// The scripts wait for this exact line, so it is printed only after
	// topics exist, not merely when the port accepts connections.
	if _, err := fmt.Fprintf(stdout, "kafkabroker listening on %s\n", b.Addr()); err != nil {
		logger.Warn("writing ready line", "err", err)
	}

	sig := <-sigs
	logger.Info("shutting down", "signal", sig.String(), "data_dir", cfg.DataDir)

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		select {
		case <-sigs:
			logger.Warn("second signal, aborting shutdown")
			cancel()
		case <-ctx.Done():
		}
	}()
	if err := b.Close(ctx); err != nil {
		return fmt.Errorf("closing broker: %w", err)
	}
	logger.Info("stopped")
	return nil
}

// topicSpec is one -topic flag value.
type topicSpec struct {
	Name       string
	Partitions int32 // <= 0 means the broker default
}

// topicFlag implements flag.Value for the repeatable -topic flag.
type topicFlag struct {
	specs *[]topicSpec
	set   bool
}

func (f *topicFlag) String() string {
	if f == nil || f.specs == nil {
		return ""
	}
	parts := make([]string, 0, len(*f.specs))
	for _, s := range *f.specs {
		parts = append(parts, fmt.Sprintf("%s:%d", s.Name, s.Partitions))
	}
	return strings.Join(parts, ",")
}

func (f *topicFlag) Set(v string) error {
	// The first explicit -topic replaces the env-provided list rather than
	// appending to it, so flags win over the environment as documented.
	if !f.set {
		*f.specs = nil
		f.set = true
	}
	specs, err := parseTopics(v)
	if err != nil {
		return err
	}
	*f.specs = append(*f.specs, specs...)
	return nil
}

// parseTopics parses "a:3,b,c:12".
func parseTopics(v string) ([]topicSpec, error) {
	var out []topicSpec
	for _, item := range strings.Split(v, ",") {
		item = strings.TrimSpace(item)
		if item == "" {
			continue
		}
		name, parts, hasParts := strings.Cut(item, ":")
		name = strings.TrimSpace(name)
		if name == "" {
			return nil, fmt.Errorf("topic %q: empty name", item)
		}
		spec := topicSpec{Name: name, Partitions: -1}
		if hasParts {
			n, err := strconv.ParseInt(strings.TrimSpace(parts), 10, 32)
			if err != nil || n < 1 {
				return nil, fmt.Errorf("topic %q: partitions must be a positive integer", item)
			}
			spec.Partitions = int32(n)
		}
		out = append(out, spec)
	}
	return out, nil
}

// parseConfig builds a Config from env defaults overridden by flags.
// Usage and flag errors go to out.
func parseConfig(args []string, getenv func(string) string, out io.Writer) (Config, error) {
	cfg := Config{
		Addr:       "127.0.0.1:9092",
		SyncWrites: true,
		AutoCreate: true,
		LogLevel:   slog.LevelWarn,
	}
	if v := getenv("KAFKABROKER_ADDR"); v != "" {
		cfg.Addr = v
	}
	cfg.DataDir = getenv("KAFKABROKER_DATA_DIR")
	if v := getenv("KAFKABROKER_TOPICS"); v != "" {
		specs, err := parseTopics(v)
		if err != nil {
			return cfg, fmt.Errorf("KAFKABROKER_TOPICS: %w", err)
		}
		cfg.Topics = specs
	}
	for name, dst := range map[string]*bool{"KAFKABROKER_SYNC": &cfg.SyncWrites, "KAFKABROKER_AUTO_CREATE": &cfg.AutoCreate} {
		if v := getenv(name); v != "" {
			b, err := strconv.ParseBool(v)
			if err != nil {
				return cfg, fmt.Errorf("%s=%q: %w", name, v, err)
			}
			*dst = b
		}
	}
	logLevel := getenv("KAFKABROKER_LOG_LEVEL")
	if logLevel == "" {
		logLevel = "warn"
	}

	fs := flag.NewFlagSet("kafkabroker", flag.ContinueOnError)
	fs.SetOutput(out)
	fs.StringVar(&cfg.Addr, "addr", cfg.Addr, "listen address; kfake always binds 127.0.0.1, so only the port is configurable (0 = random)")
	fs.StringVar(&cfg.DataDir, "data-dir", cfg.DataDir, "directory for topics, records, offsets; empty keeps everything in memory")
	fs.Var(&topicFlag{specs: &cfg.Topics}, "topic", "topic to ensure at start as name[:partitions] (repeatable, comma lists allowed)")
	fs.BoolVar(&cfg.SyncWrites, "sync", cfg.SyncWrites, "acknowledge writes only after the data dir's filesystem was synced (one shared syncfs per group of requests); on by default so acked messages survive a crash (-sync=false to trade that for speed)")
	fs.BoolVar(&cfg.AutoCreate, "auto-create-topics", cfg.AutoCreate, "create unknown topics on metadata requests, like Kafka's auto.create.topics.enable")
	fs.StringVar(&logLevel, "log-level", logLevel, "kfake log level: debug, info, warn, error")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return cfg, err
		}
		return cfg, fmt.Errorf("parsing flags: %w", err)
	}
	if fs.NArg() > 0 {
		return cfg, fmt.Errorf("unexpected arguments: %v", fs.Args())
	}
	if err := cfg.LogLevel.UnmarshalText([]byte(logLevel)); err != nil {
		return cfg, fmt.Errorf("log level %q: %w", logLevel, err)
	}
	return cfg, nil
}

// errShutdownAborted is returned by Close when the context ends before kfake
// finished persisting its state.
var errShutdownAborted = errors.New("shutdown aborted before state was persisted")

// closeTimeout bounds how long we wait for kfake to persist on shutdown; the
// scripts SIGKILL after 15 s, so finishing earlier keeps the log honest.
const closeTimeout = 12 * time.Second
