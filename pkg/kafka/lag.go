package kafka

import (
	"strconv"
	"sync"

	"github.com/IBM/sarama"
	"github.com/prometheus/client_golang/prometheus"
)

// LagTracker knows, per claimed partition, the next offset its consumer has
// not finished with, and computes lag against the claim's high water mark
// when asked, so the figure keeps growing while the consumer is stuck. It is
// a Prometheus collector of one gauge labelled by partition.
type LagTracker struct {
	desc  *prometheus.Desc
	mu    sync.Mutex
	parts map[int32]*partitionLag
}

type partitionLag struct {
	claim sarama.ConsumerGroupClaim
	// next is the first offset not handled; -1 until known.
	next int64
}

// NewLagTracker returns a tracker exported as the gauge name with help.
func NewLagTracker(name, help string) *LagTracker {
	return &LagTracker{
		desc:  prometheus.NewDesc(name, help, []string{"partition"}, nil),
		parts: map[int32]*partitionLag{},
	}
}

// Claimed starts tracking a claim's partition.
func (l *LagTracker) Claimed(c sarama.ConsumerGroupClaim) {
	next := c.InitialOffset()
	if next < 0 { // OffsetOldest/OffsetNewest: resolved by the first record
		next = -1
	}
	l.mu.Lock()
	l.parts[c.Partition()] = &partitionLag{claim: c, next: next}
	l.mu.Unlock()
}

// Released stops tracking a partition.
func (l *LagTracker) Released(partition int32) {
	l.mu.Lock()
	delete(l.parts, partition)
	l.mu.Unlock()
}

// Seen notes a received record: nothing before it can be pending.
func (l *LagTracker) Seen(partition int32, offset int64) {
	l.mu.Lock()
	if p := l.parts[partition]; p != nil && p.next < 0 {
		p.next = offset
	}
	l.mu.Unlock()
}

// Done moves the partition's next offset after records were handled.
func (l *LagTracker) Done(partition int32, next int64) {
	l.mu.Lock()
	if p := l.parts[partition]; p != nil && next > p.next {
		p.next = next
	}
	l.mu.Unlock()
}

// Snapshot returns the lag of every claimed partition.
func (l *LagTracker) Snapshot() map[int32]int64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := make(map[int32]int64, len(l.parts))
	for id, p := range l.parts {
		out[id] = max(p.claim.HighWaterMarkOffset()-max(p.next, 0), 0)
	}
	return out
}

// Describe implements prometheus.Collector.
func (l *LagTracker) Describe(ch chan<- *prometheus.Desc) { ch <- l.desc }

// Collect implements prometheus.Collector.
func (l *LagTracker) Collect(ch chan<- prometheus.Metric) {
	for p, lag := range l.Snapshot() {
		ch <- prometheus.MustNewConstMetric(l.desc, prometheus.GaugeValue, float64(lag), strconv.FormatInt(int64(p), 10))
	}
}
