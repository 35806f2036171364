package bench

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"math"
	"net/http"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"
)

// Per-hop latency in compare mode: relay's services export Prometheus
// histograms of their own hops; compare scrapes them before and after each
// run and reports the quantiles of the difference, so the hops are
// measured in the same loaded run as the end-to-end latency.

// hopMetrics are the histograms read, in path order, with what each covers.
var hopMetrics = []struct{ Name, Hop string }{
	{"gateway_send_ack_seconds", "gateway: frame read → produce acked (broker stored)"},
	{"delivery_event_age_seconds", "delivery: produce accepted → fetched, rendered, published to Redis"},
	{"delivery_publish_duration_seconds", "delivery: one Redis publish script call"},
	{"gateway_fanout_seconds", "gateway: Redis message → queued to every local member"},
}

// promHist is one cumulative Prometheus histogram (summed over instances).
type promHist struct {
	// Buckets maps each upper bound (le, +Inf included) to its cumulative
	// count.
	Buckets map[float64]float64
	Count   float64
}

// parseProm reads the _bucket and _count series of the named histograms
// from Prometheus text exposition, adding them into into (several
// instances' scrapes sum).
func parseProm(r io.Reader, names []string, into map[string]promHist) error {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || line[0] == '#' {
			continue
		}
		series, value, ok := strings.Cut(line, " ")
		if !ok {
			continue
		}
		// A timestamp may follow the value.
		value, _, _ = strings.Cut(strings.TrimSpace(value), " ")
		name, labels, _ := strings.Cut(series, "{")
		base, kind := "", ""
		for _, suffix := range []string{"_bucket", "_count"} {
			if strings.HasSuffix(name, suffix) && slices.Contains(names, strings.TrimSuffix(name, suffix)) {
				base, kind = strings.TrimSuffix(name, suffix), suffix
			}
		}
		if base == "" {
			continue
		}
		v, err := strconv.ParseFloat(value, 64)
		if err != nil {
			return fmt.Errorf("metrics: %s: value %q: %w", series, value, err)
		}
		h := into[base]
		if h.Buckets == nil {
			h.Buckets = map[float64]float64{}
		}
		if kind == "_count" {
			h.Count += v
		} else {
			le, ok := labelValue(labels, "le")
			if !ok {
				return fmt.Errorf("metrics: %s without le", series)
			}
			bound, err := strconv.ParseFloat(le, 64) // "+Inf" parses as +Inf
			if err != nil {
				return fmt.Errorf("metrics: %s: le %q: %w", series, le, err)
			}
			h.Buckets[bound] += v
		}
		into[base] = h
	}
	if err := sc.Err(); err != nil {
		return fmt.Errorf("metrics: %w", err)
	}
	return nil
}

// labelValue finds name="value" in a label set `a="x",b="y"}`.
func labelValue(labels, name string) (string, bool) {
	for _, kv := range strings.Split(strings.TrimSuffix(labels, "}"), ",") {
		k, v, ok := strings.Cut(kv, "=")
		if ok && strings.TrimSpace(k) == name {
			return strings.Trim(v, `"`), true
		}
	}
	return "", false
}

// since is h minus an earlier scrape of the same histogram.
func (h promHist) since(prev promHist) promHist {
	out := promHist{Buckets: map[float64]float64{}, Count: h.Count - prev.Count}
	for le, n := range h.Buckets {
		out.Buckets[le] = n - prev.Buckets[le]
	}
	return out
}

// quantile estimates the q-quantile (0..1) the way PromQL's
// histogram_quantile does: linear within the bucket it falls in; a value
// in the +Inf bucket is reported as the highest finite bound. NaN when
// the histogram is empty.
func (h promHist) quantile(q float64) float64 {
	bounds := make([]float64, 0, len(h.Buckets))
	for le := range h.Buckets {
		bounds = append(bounds, le)
	}
	sort.Float64s(bounds)
	if len(bounds) == 0 {
		return math.NaN()
	}
	total := h.Buckets[bounds[len(bounds)-1]]
	if total <= 0 {
		return math.NaN()
	}
	rank := q * total
	lower, below := 0.0, 0.0
	for _, le := range bounds {
		n := h.Buckets[le]
		if n >= rank {
			if math.IsInf(le, 1) {
				return lower
			}
			if n == below {
				return le
			}
			return lower + (le-lower)*(rank-below)/(n-below)
		}
		lower, below = le, n
	}
	return lower
}

// HopStat is one hop's latency over a run, in milliseconds.
type HopStat struct {
	Name  string  `json:"name"`
	Hop   string  `json:"hop"`
	Count float64 `json:"count"`
	P50   float64 `json:"p50Ms"`
	P99   float64 `json:"p99Ms"`
}

// hopStats turns two scrapes into per-hop quantiles (hops with no
// observation in between are left out).
func hopStats(before, after map[string]promHist) []HopStat {
	var out []HopStat
	for _, m := range hopMetrics {
		d := after[m.Name].since(before[m.Name])
		if d.Count <= 0 {
			continue
		}
		out = append(out, HopStat{Name: m.Name, Hop: m.Hop, Count: d.Count, P50: d.quantile(0.5) * 1000, P99: d.quantile(0.99) * 1000})
	}
	return out
}

// scrapeHops reads the hop histograms from every URL, summed.
func scrapeHops(ctx context.Context, urls []string) (map[string]promHist, error) {
	names := make([]string, len(hopMetrics))
	for i, m := range hopMetrics {
		names[i] = m.Name
	}
	out := map[string]promHist{}
	cl := &http.Client{Timeout: 5 * time.Second}
	for _, u := range urls {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
		if err != nil {
			return nil, fmt.Errorf("metrics %s: %w", u, err)
		}
		resp, err := cl.Do(req)
		if err != nil {
			return nil, fmt.Errorf("metrics %s: %w", u, err)
		}
		err = parseProm(resp.Body, names, out)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return nil, fmt.Errorf("metrics %s: HTTP %d", u, resp.StatusCode)
		}
		if err != nil {
			return nil, fmt.Errorf("metrics %s: %w", u, err)
		}
	}
	return out, nil
}
