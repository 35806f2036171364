package bench

import (
	"sync"
	"sync/atomic"
	"time"

	"github.com/HdrHistogram/hdrhistogram-go"
)

// Histogram range: values are recorded in microseconds from 1 µs to 10 min
// with 3 significant digits (0.1% relative error); larger values are
// clamped to the top and still counted, and the exact maximum is kept
// aside so the report never understates it.
const (
	histLowest  = 1
	histHighest = int64(10 * time.Minute / time.Microsecond)
	histDigits  = 3
)

// Latency is a concurrency-safe latency recorder: sharded HDR histograms
// (the recording goroutines pick a shard, usually by connection) holding the
// whole run and the window since the last TakeWindow, for the live p99.
type Latency struct {
	shards []latencyShard
	max    atomic.Int64 // exact maximum in nanoseconds
}

type latencyShard struct {
	mu     sync.Mutex
	total  *hdrhistogram.Histogram
	window *hdrhistogram.Histogram
	_      [40]byte // keep shards' locks on separate cache lines
}

// NewLatency returns a recorder with n shards (at least 1).
func NewLatency(n int) *Latency {
	l := &Latency{shards: make([]latencyShard, max(n, 1))}
	for i := range l.shards {
		l.shards[i].total = hdrhistogram.New(histLowest, histHighest, histDigits)
		l.shards[i].window = hdrhistogram.New(histLowest, histHighest, histDigits)
	}
	return l
}

// Record adds one latency; shard is any non-negative number (taken modulo
// the shard count). A negative d (clock step) is recorded as 0.
func (l *Latency) Record(shard int, d time.Duration) {
	if d < 0 {
		d = 0
	}
	for {
		m := l.max.Load()
		if int64(d) <= m || l.max.CompareAndSwap(m, int64(d)) {
			break
		}
	}
	us := int64(d / time.Microsecond)
	us = min(max(us, histLowest), histHighest)
	s := &l.shards[shard%len(l.shards)]
	s.mu.Lock()
	_ = s.total.RecordValue(us) // in range by construction
	_ = s.window.RecordValue(us)
	s.mu.Unlock()
}

// Total returns the merged histogram of everything recorded.
func (l *Latency) Total() Summary {
	h := hdrhistogram.New(histLowest, histHighest, histDigits)
	for i := range l.shards {
		s := &l.shards[i]
		s.mu.Lock()
		h.Merge(s.total)
		s.mu.Unlock()
	}
	return summarize(h, time.Duration(l.max.Load()))
}

// TakeWindow returns the summary of what was recorded since the previous
// call and starts a new window.
func (l *Latency) TakeWindow() Summary {
	h := hdrhistogram.New(histLowest, histHighest, histDigits)
	for i := range l.shards {
		s := &l.shards[i]
		s.mu.Lock()
		h.Merge(s.window)
		s.window.Reset()
		s.mu.Unlock()
	}
	return summarize(h, 0)
}

// Summary is a latency distribution in milliseconds.
type Summary struct {
	Count int64   `json:"count"`
	Mean  float64 `json:"meanMs"`
	P50   float64 `json:"p50Ms"`
	P90   float64 `json:"p90Ms"`
	P99   float64 `json:"p99Ms"`
	P999  float64 `json:"p999Ms"`
	Max   float64 `json:"maxMs"`
}

func summarize(h *hdrhistogram.Histogram, exactMax time.Duration) Summary {
	n := h.TotalCount()
	if n == 0 {
		return Summary{}
	}
	ms := func(us int64) float64 { return float64(us) / 1000 }
	s := Summary{
		Count: n,
		Mean:  h.Mean() / 1000,
		P50:   ms(h.ValueAtPercentile(50)),
		P90:   ms(h.ValueAtPercentile(90)),
		P99:   ms(h.ValueAtPercentile(99)),
		P999:  ms(h.ValueAtPercentile(99.9)),
		Max:   ms(h.Max()),
	}
	if exactMax > 0 {
		s.Max = float64(exactMax) / float64(time.Millisecond)
	}
	// The percentiles are bucket tops; never report one above the maximum.
	for _, p := range []*float64{&s.P50, &s.P90, &s.P99, &s.P999} {
		*p = min(*p, s.Max)
	}
	return s
}
