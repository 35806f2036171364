package bench

import (
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

func TestSpreadOf(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		in   []float64
		want Spread
	}{
		{nil, Spread{}},
		{[]float64{5}, Spread{5, 5, 5, 1}},
		{[]float64{30, 10, 20}, Spread{20, 10, 30, 3}},
		{[]float64{4, 1, 3, 2}, Spread{2.5, 1, 4, 4}},
	} {
		if got := spreadOf(tc.in); got != tc.want {
			t.Errorf("spreadOf(%v) = %+v, want %+v", tc.in, got, tc.want)
		}
	}
}

func TestRoundOrder(t *testing.T) {
	t.Parallel()
	for round, want := range [][]int{{0, 1, 2}, {1, 2, 0}, {2, 0, 1}, {0, 1, 2}} {
		if got := roundOrder(3, round); !slices.Equal(got, want) {
			t.Errorf("round %d: %v, want %v", round, got, want)
		}
	}
}

func run1(round int, rate float64, sys string, p50, p99 float64, sent float64, cpu ...float64) CompareRun {
	r := CompareRun{Round: round, Rate: rate, System: sys, SentPerSec: sent}
	r.Deliver = Summary{Count: 100, P50: p50, P99: p99, Max: p99 * 2}
	r.Ack = Summary{Count: 10, P99: p99 / 2}
	for i, c := range cpu {
		r.CPU = append(r.CPU, ProcCPU{Label: string(rune('a' + i)), Pct: c})
	}
	r.CPU = append(r.CPU, ProcCPU{Label: "chatbench", Pct: 999}) // never the system's
	return r
}

func TestSummarize(t *testing.T) {
	t.Parallel()
	runs := []CompareRun{
		run1(1, 1000, "relay", 5, 40, 1000, 60, 40),
		run1(1, 1000, "cf", 2, 10, 1000, 30),
		run1(2, 1000, "cf", 2, 20, 1000, 50),
		run1(2, 1000, "relay", 6, 20, 1000, 80, 40),
		run1(3, 1000, "relay", 4, 90, 500, 50, 50),
		run1(3, 1000, "cf", 3, 30, 1000, 40),
		run1(1, 300, "relay", 3, 9, 300, 30),
	}
	runs[5].Lost, runs[5].Unacked = 2, 1
	// A round whose peer run measured nothing gives no ratio.
	nothing := CompareRun{Round: 4, Rate: 1000, System: "cf", Error: "connect failed"}
	runs = append(runs, nothing, run1(4, 1000, "relay", 5, 50, 1000, 10))
	rows := Summarize(runs, "relay")
	if len(rows) != 3 || rows[0].Rate != 300 || rows[1].System != "relay" || rows[2].System != "cf" {
		t.Fatalf("rows %+v: want 300 relay, then 1000 relay, cf", rows)
	}
	relay, cf := rows[1], rows[2]
	if relay.P99 != (Spread{45, 20, 90, 4}) {
		t.Errorf("relay p99 %+v", relay.P99)
	}
	if relay.Ratio.N != 0 {
		t.Errorf("the baseline has a ratio: %+v", relay.Ratio)
	}
	// Per round: 40/10, 20/20, 90/30; round 4 has no cf latency.
	if cf.Ratio != (Spread{3, 1, 4, 3}) {
		t.Errorf("cf ratio %+v, want median 3 of 4, 1, 3", cf.Ratio)
	}
	if cf.P99 != (Spread{20, 10, 30, 3}) || cf.Lost != 2 || cf.Unacked != 1 {
		t.Errorf("cf %+v", cf)
	}
	// CPU: the system's rows summed, chatbench left out; per 1k msgs/s
	// divides by the rate sent (round 3 sent 500/s: 100% → 200%).
	if relay.CPU != (Spread{100, 10, 120, 4}) {
		t.Errorf("relay CPU %+v", relay.CPU)
	}
	if relay.CPUPer1k != (Spread{110, 10, 200, 4}) {
		t.Errorf("relay CPU per 1k %+v", relay.CPUPer1k)
	}
	var out bytes.Buffer
	PrintCompare(&out, &CompareResult{Params: CompareParams{Baseline: "relay", Rounds: 4}, Rows: rows})
	if !strings.Contains(out.String(), "3.00 [1.00–4.00]") {
		t.Errorf("the table lacks cf's ratio:\n%s", out.String())
	}
	// Results are written as JSON: nothing unencodable in an empty row.
	if _, err := json.Marshal(Summarize([]CompareRun{nothing}, "relay")); err != nil {
		t.Errorf("summary of a failed run does not encode: %v", err)
	}
}

func TestParseSystem(t *testing.T) {
	t.Parallel()
	s, err := ParseSystem("relay=native@ws://127.0.0.1:8090/ws,127.0.0.1:8091;procs=stack,redis-server")
	if err != nil || s.Name != "relay" || !slices.Equal(s.Gateways, []string{"ws://127.0.0.1:8090/ws", "ws://127.0.0.1:8091/ws"}) ||
		!slices.Equal(s.Procs, []string{"stack", "redis-server"}) {
		t.Fatalf("relay: %+v %v", s, err)
	}
	s, err = ParseSystem("relay=native@127.0.0.1:8090;metrics=http://127.0.0.1:8090/metrics,http://127.0.0.1:8100/metrics")
	if err != nil || len(s.Metrics) != 2 || s.Metrics[1] != "http://127.0.0.1:8100/metrics" {
		t.Fatalf("metrics: %+v %v", s, err)
	}
	s, err = ParseSystem("cf=centrifugo@127.0.0.1:8200;procs=centrifugo")
	if err != nil || s.Gateways[0] != "ws://127.0.0.1:8200/connection/websocket" {
		t.Fatalf("centrifugo: %+v %v", s, err)
	}
	s, err = ParseSystem("node=seednode@ws://127.0.0.1:3100;max-rate=1000")
	if err != nil || s.Gateways[0] != "ws://127.0.0.1:3100/socket.io/?EIO=4&transport=websocket" || s.MaxRate != 1000 {
		t.Fatalf("seednode: %+v %v", s, err)
	}
	for _, bad := range []string{
		"relay", "Relay=native@ws://h:1/ws", "x=mqtt@ws://h:1", "x=native", "x=native@http://h:1",
		"x=native@ws://h:1/ws;max-rate=-1", "x=native@ws://h:1/ws;colour=red", "x=native@ws://h:1/ws;metrics=h:1",
	} {
		if _, err := ParseSystem(bad); err == nil {
			t.Errorf("%q was accepted", bad)
		}
	}
}

func TestParseCompareArgs(t *testing.T) {
	t.Parallel()
	var out bytes.Buffer
	cp, err := ParseCompareArgs([]string{
		"--rates", "300,1000", "--rounds", "2",
		"--system", "relay=native@127.0.0.1:8090", "--system", "cf=centrifugo@127.0.0.1:8200",
		"--", "--scenario", "chat", "--duration", "15s",
	}, &out)
	if err != nil {
		t.Fatal(err)
	}
	if cp.Baseline != "relay" || cp.Rounds != 2 || !slices.Equal(cp.Rates, []float64{300, 1000}) || cp.Shape.Duration.Seconds() != 15 {
		t.Fatalf("%+v", cp)
	}
	p := cp.runParams(cp.Systems[1], 1000)
	if p.Rate != 1000 || p.Protocol != ProtocolCentrifugo || p.PG != "" || p.Persister != "" || p.Heartbeat != 0 {
		t.Fatalf("run params %+v", p)
	}
	dir := t.TempDir()
	for _, bad := range [][]string{
		{"--rates", "300"},
		{"--system", "a=native@h:1", "--system", "a=native@h:2"},
		{"--system", "a=native@h:1", "--baseline", "b"},
		{"--system", "a=native@h:1", "--rounds", "0"},
		{"--system", "a=native@h:1", "--", "--scenario", "idle"},
		{"--system", "a=native@h:1", "--rates", "1000000"},
		{"--system", "a=native@h:1", "stray"},
		{"--system", "a=native@h:1", "--json", filepath.Join(dir, "missing", "x.json"), "--", "--bogus"},
	} {
		_, err := ParseCompareArgs(bad, &out)
		var ue *UsageError
		if !errors.As(err, &ue) {
			t.Errorf("%q: got %v, want a usage error", bad, err)
		}
	}
	if _, err := ParseCompareArgs([]string{"-h"}, &out); !errors.Is(err, flag.ErrHelp) {
		t.Errorf("-h: %v", err)
	}
}
