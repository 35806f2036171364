package writer

import (
	"testing"

	"github.com/IBM/sarama"
)

// fakeSession stands for a consumer-group session; only its identity matters here.
type fakeSession struct {
	sarama.ConsumerGroupSession
	id int
}

func TestDropPartition(t *testing.T) {
	s1, s2 := &fakeSession{id: 1}, &fakeSession{id: 2}
	mk := func(s sarama.ConsumerGroupSession, p int32, off int64) item {
		return item{sess: s, msg: &sarama.ConsumerMessage{Partition: p, Offset: off}}
	}
	pending := []item{mk(s1, 0, 1), mk(s1, 1, 1), mk(s1, 0, 2), mk(s2, 0, 3), mk(s1, 2, 1)}
	kept := dropPartition(pending, releaseReq{sess: s1, partition: 0})
	if len(kept) != 3 {
		t.Fatalf("kept %d items, want 3", len(kept))
	}
	for _, it := range kept {
		if it.sess == sarama.ConsumerGroupSession(s1) && it.msg.Partition == 0 {
			t.Fatalf("kept a dropped item: %+v", it.msg)
		}
	}
	if kept[1].sess != sarama.ConsumerGroupSession(s2) || kept[1].msg.Offset != 3 {
		t.Fatalf("order changed: %+v", kept[1].msg)
	}
}
