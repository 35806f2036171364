package bench

import (
	"math"
	"math/rand/v2"
	"slices"
	"sync"
	"testing"
	"time"
)

// exactPercentile is the nearest-rank percentile of sorted values, with
// the rank rounded as HdrHistogram rounds it (ceil would turn 99.9% of
// 100,000 into 99,901 through floating-point error).
func exactPercentile(sorted []time.Duration, p float64) time.Duration {
	rank := int(p/100*float64(len(sorted)) + 0.5)
	return sorted[max(rank-1, 0)]
}

func TestLatencyPercentilesMatchSortedSamples(t *testing.T) {
	t.Parallel()
	rng := rand.New(rand.NewPCG(1, 2))
	l := NewLatency(8)
	var samples []time.Duration
	for i := range 100000 {
		// Log-normal-ish: mostly a few ms, a long tail to seconds.
		d := time.Duration(math.Exp(rng.NormFloat64()*1.2+8) * float64(time.Microsecond))
		samples = append(samples, d)
		l.Record(i, d)
	}
	slices.Sort(samples)
	s := l.Total()
	if s.Count != int64(len(samples)) {
		t.Fatalf("count %d, want %d", s.Count, len(samples))
	}
	check := func(name string, got float64, p float64) {
		want := ms(exactPercentile(samples, p))
		// 3 significant digits plus microsecond rounding.
		if math.Abs(got-want) > want*0.002+0.002 {
			t.Errorf("%s: got %.4f ms, exact %.4f ms", name, got, want)
		}
	}
	check("p50", s.P50, 50)
	check("p90", s.P90, 90)
	check("p99", s.P99, 99)
	check("p99.9", s.P999, 99.9)
	if want := ms(samples[len(samples)-1]); s.Max != want {
		t.Errorf("max %.4f, want the exact %.4f", s.Max, want)
	}
	if s.P50 > s.P90 || s.P90 > s.P99 || s.P99 > s.P999 || s.P999 > s.Max {
		t.Errorf("percentiles not monotonic: %+v", s)
	}
}

func TestLatencyWindowResets(t *testing.T) {
	t.Parallel()
	l := NewLatency(2)
	for range 99 {
		l.Record(0, time.Millisecond)
	}
	l.Record(1, 100*time.Millisecond)
	w := l.TakeWindow()
	if w.Count != 100 || w.P50 < 0.99 || w.P50 > 1.01 || w.Max < 99 {
		t.Errorf("first window %+v", w)
	}
	if w := l.TakeWindow(); w.Count != 0 {
		t.Errorf("window after take has %d values", w.Count)
	}
	l.Record(0, 5*time.Millisecond)
	if w := l.TakeWindow(); w.Count != 1 || w.P99 < 4.99 || w.P99 > 5.01 {
		t.Errorf("second window %+v", w)
	}
	if tot := l.Total(); tot.Count != 101 {
		t.Errorf("total count %d, want 101", tot.Count)
	}
}

func TestLatencyEdgeValues(t *testing.T) {
	t.Parallel()
	l := NewLatency(1)
	l.Record(0, -time.Second)    // clock step: counted as 0
	l.Record(0, time.Nanosecond) // below the 1 µs floor
	l.Record(0, time.Hour)       // above the 10 min top: clamped, max exact
	s := l.Total()
	if s.Count != 3 {
		t.Fatalf("count %d, want 3", s.Count)
	}
	if s.Max != ms(time.Hour) {
		t.Errorf("max %.1f, want the exact hour", s.Max)
	}
	if s.P50 > 0.01 {
		t.Errorf("p50 %.4f, want ~0", s.P50)
	}
	if empty := NewLatency(1).Total(); empty != (Summary{}) {
		t.Errorf("empty summary %+v", empty)
	}
}

func TestLatencyConcurrentRecord(t *testing.T) {
	t.Parallel()
	l := NewLatency(4)
	var wg sync.WaitGroup
	for g := range 16 {
		wg.Go(func() {
			for range 1000 {
				l.Record(g, time.Millisecond)
			}
		})
	}
	wg.Go(func() {
		for range 50 {
			l.TakeWindow()
		}
	})
	wg.Wait()
	if s := l.Total(); s.Count != 16000 {
		t.Errorf("count %d, want 16000", s.Count)
	}
}
