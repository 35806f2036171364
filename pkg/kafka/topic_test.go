package kafka_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/IBM/sarama"

	"relay/pkg/config"
	"relay/pkg/kafka"
	"relay/pkg/testenv"
)

// The replication factor and min.insync.replicas of a created topic come
// from the configuration (KAFKA_REPLICATION_FACTOR, KAFKA_MIN_INSYNC_REPLICAS),
// never from a constant: the dev broker has one node, so a factor of 1 is
// created as asked and a factor of 3 is refused by the broker rather than
// silently lowered.
func TestEnsureTopicReplicationFromConfig(t *testing.T) {
	_, _, kc := testenv.Env(t)
	t.Setenv("KAFKA_REPLICATION_FACTOR", "1")
	t.Setenv("KAFKA_MIN_INSYNC_REPLICAS", "1")
	cfg, err := config.Load[config.Kafka]()
	if err != nil {
		t.Fatal(err)
	}
	if cfg.ReplicationFactor != 1 || cfg.MinInsyncReplicas != 1 {
		t.Fatalf("loaded %+v", cfg)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	admin := newAdmin(t, kc.Brokers)

	topic := testenv.RandomName("test.repl.")
	t.Cleanup(func() { _ = admin.DeleteTopic(topic) })
	if err := kafka.EnsureTopic(ctx, kc.Brokers, topic, 2, kafka.Replication(cfg.ReplicationFactor, cfg.MinInsyncReplicas)); err != nil {
		t.Fatal(err)
	}
	md, err := admin.DescribeTopics([]string{topic})
	if err != nil || len(md) != 1 || len(md[0].Partitions) != 2 {
		t.Fatalf("describe: %v %+v", err, md)
	}
	for _, p := range md[0].Partitions {
		if len(p.Replicas) != 1 {
			t.Fatalf("partition %d has replicas %v, want 1", p.ID, p.Replicas)
		}
	}
	entries, err := admin.DescribeConfig(sarama.ConfigResource{Type: sarama.TopicResource, Name: topic, ConfigNames: []string{"min.insync.replicas"}})
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != 1 || entries[0].Value != "1" || entries[0].Default {
		t.Fatalf("min.insync.replicas: %+v, want an explicit 1", entries)
	}

	// A factor the cluster cannot hold is an error, not a quiet factor 1.
	big := testenv.RandomName("test.repl.")
	err = kafka.EnsureTopic(ctx, kc.Brokers, big, 1, kafka.Replication(3, 2))
	if !errors.Is(err, sarama.ErrInvalidReplicationFactor) {
		_ = admin.DeleteTopic(big)
		t.Fatalf("factor 3 on one broker: %v, want INVALID_REPLICATION_FACTOR", err)
	}
}

func TestKafkaReplicationValidated(t *testing.T) {
	for _, k := range []config.Kafka{
		{ReplicationFactor: -1},
		{ReplicationFactor: 2, MinInsyncReplicas: 3},
		{MinInsyncReplicas: -2},
	} {
		if k.ValidateReplication() == nil {
			t.Errorf("%+v accepted", k)
		}
	}
	if err := (config.Kafka{ReplicationFactor: 3, MinInsyncReplicas: 2}).ValidateReplication(); err != nil {
		t.Error(err)
	}
}

func newAdmin(t *testing.T, brokers []string) sarama.ClusterAdmin {
	t.Helper()
	cfg := sarama.NewConfig()
	cfg.Version = sarama.V3_6_0_0
	admin, err := sarama.NewClusterAdmin(brokers, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = admin.Close() })
	return admin
}
