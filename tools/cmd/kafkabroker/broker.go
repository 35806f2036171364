package main

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"os"
	"strconv"

	"github.com/twmb/franz-go/pkg/kfake"
)

// Config configures the embedded broker.
type Config struct {
	Addr       string // host:port; host must be loopback (kfake binds 127.0.0.1)
	DataDir    string // empty = in-memory only
	Topics     []topicSpec
	SyncWrites bool
	AutoCreate bool
	LogLevel   slog.Level // minimum level forwarded from kfake
}

// Broker is a running single-node kfake cluster.
type Broker struct {
	cluster *kfake.Cluster
	addr    string
	logger  *slog.Logger
	// closeDir releases the data directory held for group syncs (nil
	// without -sync).
	closeDir func() error
}

// Start creates the cluster, reloading DataDir if it holds earlier state, and
// makes sure every configured topic exists.
func Start(cfg Config, logger *slog.Logger) (*Broker, error) {
	host, portStr, err := net.SplitHostPort(cfg.Addr)
	if err != nil {
		return nil, fmt.Errorf("parsing -addr %q: %w", cfg.Addr, err)
	}
	// kfake hardcodes 127.0.0.1 for its listeners and advertises the bound
	// address in metadata; accepting another host would silently listen
	// somewhere other than what the user asked for.
	switch host {
	case "127.0.0.1", "localhost", "":
	default:
		return nil, fmt.Errorf("-addr %q: only 127.0.0.1 is supported (kfake binds loopback)", cfg.Addr)
	}
	port, err := strconv.Atoi(portStr)
	if err != nil || port < 0 || port > 65535 {
		return nil, fmt.Errorf("-addr %q: invalid port", cfg.Addr)
	}

	opts := []kfake.Opt{
		kfake.Ports(port), // one port => one broker (node 0)
		kfake.WithLogger(slogAdapter{logger: logger.With("component", "kfake"), min: cfg.LogLevel}),
		kfake.ClusterID("relay-dev"),
	}
	if cfg.AutoCreate {
		opts = append(opts, kfake.AllowAutoTopicCreation())
	}
	if cfg.DataDir != "" {
		opts = append(opts, kfake.DataDir(cfg.DataDir))
	} else {
		logger.Warn("no -data-dir: topics and records are kept in memory and lost on exit")
	}
	var closeDir func() error
	if cfg.SyncWrites && cfg.DataDir != "" {
		// Not kfake.SyncWrites: acks wait for a shared syncfs at the
		// connection instead (groupsync.go).
		if err := os.MkdirAll(cfg.DataDir, 0o755); err != nil {
			return nil, fmt.Errorf("data dir: %w", err)
		}
		g, closeFn, err := newFSSyncer(cfg.DataDir)
		if err != nil {
			return nil, err
		}
		closeDir = closeFn
		opts = append(opts, kfake.ListenFn(func(network, address string) (net.Listener, error) {
			ln, err := net.Listen(network, address)
			if err != nil {
				return nil, err
			}
			return syncListener{Listener: ln, g: g}, nil
		}))
	}
	// SeedTopics only applies when the data dir is empty (kfake skips seeding
	// when it loads persisted state); ensureTopics below covers topics added
	// to the flags after the first start.
	for _, t := range cfg.Topics {
		opts = append(opts, kfake.SeedTopics(t.Partitions, t.Name))
	}

	c, err := kfake.NewCluster(opts...)
	if err != nil {
		if closeDir != nil {
			_ = closeDir()
		}
		return nil, fmt.Errorf("starting kfake cluster on %s (data dir %q): %w", cfg.Addr, cfg.DataDir, err)
	}
	b := &Broker{cluster: c, logger: logger, closeDir: closeDir}
	addrs := c.ListenAddrs()
	if len(addrs) != 1 {
		b.closeNow()
		return nil, fmt.Errorf("expected exactly one listener, got %v", addrs)
	}
	b.addr = addrs[0]
	if err := b.ensureTopics(cfg.Topics); err != nil {
		b.closeNow()
		return nil, err
	}
	logger.Info("broker started", "addr", b.addr, "data_dir", cfg.DataDir, "sync_writes", cfg.SyncWrites, "auto_create_topics", cfg.AutoCreate)
	return b, nil
}

// ensureTopics creates missing topics and deliberately leaves existing ones
// alone: changing the partition count of a topic with data would remap keys
// to partitions and break per-conversation ordering, so a mismatch only warns.
func (b *Broker) ensureTopics(topics []topicSpec) error {
	for _, t := range topics {
		if b.cluster.TopicInfo(t.Name) == nil {
			if err := b.cluster.CreateTopic(t.Name, t.Partitions, nil); err != nil {
				return fmt.Errorf("creating topic %s: %w", t.Name, err)
			}
			b.logger.Info("topic created", "topic", t.Name, "partitions", len(b.cluster.PartitionInfos(t.Name)))
			continue
		}
		have := len(b.cluster.PartitionInfos(t.Name))
		if t.Partitions > 0 && int32(have) != t.Partitions {
			b.logger.Warn("topic exists with a different partition count; keeping it", "topic", t.Name, "have", have, "want", t.Partitions)
			continue
		}
		b.logger.Info("topic exists", "topic", t.Name, "partitions", have)
	}
	return nil
}

// Addr is the host:port clients should bootstrap from.
func (b *Broker) Addr() string { return b.addr }

// Partitions returns the partition count of topic, 0 if it does not exist.
func (b *Broker) Partitions(topic string) int {
	if b.cluster.TopicInfo(topic) == nil {
		return 0
	}
	return len(b.cluster.PartitionInfos(topic))
}

// Close stops the listeners and persists state. kfake.Close blocks until the
// state is on disk; ctx (and closeTimeout) bound how long we wait for it.
func (b *Broker) Close(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, closeTimeout)
	defer cancel()
	done := make(chan struct{})
	go func() {
		b.closeNow()
		close(done)
	}()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("%w: %w", errShutdownAborted, ctx.Err())
	}
}

// closeNow closes the cluster (which persists its state), then the data
// directory it no longer syncs.
func (b *Broker) closeNow() {
	b.cluster.Close()
	if b.closeDir != nil {
		_ = b.closeDir()
	}
}

// slogAdapter forwards kfake's printf-style logs to slog.
type slogAdapter struct {
	logger *slog.Logger
	min    slog.Level
}

func (a slogAdapter) Logf(level kfake.LogLevel, msg string, args ...any) {
	var l slog.Level
	switch level {
	case kfake.LogLevelError:
		l = slog.LevelError
	case kfake.LogLevelWarn:
		l = slog.LevelWarn
	case kfake.LogLevelInfo:
		l = slog.LevelInfo
	case kfake.LogLevelDebug:
		l = slog.LevelDebug
	default:
		return
	}
	// Filter before formatting: kfake logs every request at info/debug and
	// Sprintf on the hot path would cost throughput for nothing.
	if l < a.min {
		return
	}
	a.logger.Log(context.Background(), l, fmt.Sprintf(msg, args...))
}

// ensure the adapter satisfies kfake.Logger at compile time.
var _ kfake.Logger = slogAdapter{}
