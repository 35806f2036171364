package worker

import (
	"context"

	"github.com/IBM/sarama"
	"github.com/hashicorp/golang-lru/v2/simplelru"
)

// PublishBatch runs one partition worker's publish over msgs, its cache of
// rooms' last seqs starting as cached, so a test can set up what a batch
// meets without depending on how sarama happens to group records.
func (s *Service) PublishBatch(ctx context.Context, cached map[int64]int64, msgs []*sarama.ConsumerMessage) error {
	cache, err := simplelru.NewLRU[int64, int64](s.cfg.SeqCacheRooms, nil)
	if err != nil {
		return err
	}
	for room, seq := range cached {
		cache.Add(room, seq)
	}
	w := &partitionWorker{s: s, cache: cache}
	return w.publish(ctx, msgs)
}
