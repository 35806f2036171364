package bench

import (
	"math"
	"strings"
	"testing"
)

const promA = `# HELP gateway_send_ack_seconds From a send_message frame to its ack (Kafka stored it).
# TYPE gateway_send_ack_seconds histogram
gateway_send_ack_seconds_bucket{le="0.01"} 10
gateway_send_ack_seconds_bucket{le="0.05"} 90
gateway_send_ack_seconds_bucket{le="0.1"} 100
gateway_send_ack_seconds_bucket{le="+Inf"} 100
gateway_send_ack_seconds_sum 2.5
gateway_send_ack_seconds_count 100
gateway_frames_in_total{event="send_message"} 100
http_request_duration_seconds_bucket{route="/ws",le="0.1"} 3
`

func TestParsePromAndQuantile(t *testing.T) {
	t.Parallel()
	names := []string{"gateway_send_ack_seconds", "delivery_event_age_seconds"}
	before, after := map[string]promHist{}, map[string]promHist{}
	if err := parseProm(strings.NewReader(promA), names, before); err != nil {
		t.Fatal(err)
	}
	// Two instances: the second scrape adds into the same histogram.
	for range 2 {
		if err := parseProm(strings.NewReader(promA), names, after); err != nil {
			t.Fatal(err)
		}
	}
	if len(before) != 1 || before["gateway_send_ack_seconds"].Count != 100 || after["gateway_send_ack_seconds"].Buckets[0.05] != 180 {
		t.Fatalf("parsed %+v / %+v", before, after)
	}
	d := after["gateway_send_ack_seconds"].since(before["gateway_send_ack_seconds"])
	if d.Count != 100 || d.Buckets[math.Inf(1)] != 100 {
		t.Fatalf("since: %+v", d)
	}
	// 100 values: 10 ≤ 10 ms, 80 in (10, 50], 10 in (50, 100].
	for q, want := range map[float64]float64{0.05: 0.005, 0.5: 0.03, 0.9: 0.05, 0.99: 0.095} {
		if got := d.quantile(q); math.Abs(got-want) > 1e-9 {
			t.Errorf("q%.2f = %g, want %g", q, got, want)
		}
	}
	if got := (promHist{}).quantile(0.5); !math.IsNaN(got) {
		t.Errorf("empty histogram: %g, want NaN", got)
	}
	inf := promHist{Buckets: map[float64]float64{0.1: 1, math.Inf(1): 10}, Count: 10}
	if got := inf.quantile(0.99); got != 0.1 {
		t.Errorf("a quantile in +Inf is the top finite bound: got %g", got)
	}
	hs := hopStats(before, after)
	if len(hs) != 1 || hs[0].Name != "gateway_send_ack_seconds" || hs[0].Count != 100 || math.Abs(hs[0].P50-30) > 1e-6 {
		t.Fatalf("hop stats %+v", hs)
	}
	for _, bad := range []string{
		"gateway_send_ack_seconds_bucket{le=\"x\"} 1\n",
		"gateway_send_ack_seconds_bucket{} 1\n",
		"gateway_send_ack_seconds_count abc\n",
	} {
		if err := parseProm(strings.NewReader(bad), names, map[string]promHist{}); err == nil {
			t.Errorf("%q was accepted", bad)
		}
	}
}
