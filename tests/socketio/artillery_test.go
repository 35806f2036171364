package socketio

import (
	"encoding/json"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"relay/tests/e2e/stack"
)

// artilleryReport is the part of `artillery run --output` this test reads.
type artilleryReport struct {
	Aggregate struct {
		Counters  map[string]float64 `json:"counters"`
		Summaries map[string]struct {
			Min    float64 `json:"min"`
			Max    float64 `json:"max"`
			Median float64 `json:"median"`
			P95    float64 `json:"p95"`
			P99    float64 `json:"p99"`
		} `json:"summaries"`
	} `json:"aggregate"`
}

// TestArtillery runs the seed's Artillery scenario (tests/artillery/
// scenario.yml: arrivals 10/s then 50/s, join_room, think 2, send_message,
// think 5; the phases shortened to 10 s + 20 s) against a gateway with the
// Socket.IO engine and requires zero errors: every virtual user connects
// with its token, and both acks name the room. ARTILLERY_ENVIRONMENT=seed
// runs the seed's full 60 s + 300 s.
func TestArtillery(t *testing.T) {
	requireIT(t, "RELAY_ARTILLERY_IT", "artillery")
	cwd, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(filepath.Dir(cwd), "artillery")
	node := requireNode(t, dir, "artillery")
	s := stacks.Start(t, stack.Options{Gateways: 1, Partitions: 4})

	tmp := t.TempDir()
	users := filepath.Join(tmp, "users.csv")
	runNode(t, node, dir, nil, 2*time.Minute, "setup.mjs", "--api", s.APIURL(), "--out", users, "--users", "50", "--room-size", "10")

	report := filepath.Join(tmp, "report.json")
	args := []string{filepath.Join("node_modules", "artillery", "bin", "run"), "run", "--quiet",
		"-t", s.HTTPURL(stack.GatewayName(0)), "-p", users, "-o", report}
	timeout := 3 * time.Minute
	if env := os.Getenv("ARTILLERY_ENVIRONMENT"); env != "" {
		args = append(args, "-e", env)
		timeout = 10 * time.Minute
	}
	// More flags for artillery run, e.g. "-s" (one virtual user).
	args = append(args, strings.Fields(os.Getenv("ARTILLERY_ARGS"))...)
	args = append(args, "scenario.yml")
	runNode(t, node, dir, map[string]string{"ARTILLERY_DISABLE_TELEMETRY": "true"}, timeout, args...)

	raw, err := os.ReadFile(report)
	if err != nil {
		t.Fatal(err)
	}
	var r artilleryReport
	if err := json.Unmarshal(raw, &r); err != nil {
		t.Fatalf("report: %v", err)
	}
	c := r.Aggregate.Counters
	var names []string
	for k := range c {
		names = append(names, k)
	}
	sort.Strings(names)
	for _, k := range names {
		t.Logf("%-40s %v", k, c[k])
	}
	for k, v := range r.Aggregate.Summaries {
		if strings.HasPrefix(k, "socketio.") || strings.HasPrefix(k, "vusers.session") {
			t.Logf("%-40s min %.1f median %.1f p95 %.1f p99 %.1f max %.1f (ms)", k, v.Min, v.Median, v.P95, v.P99, v.Max)
		}
	}
	created, completed := c["vusers.created"], c["vusers.completed"]
	if created == 0 || completed != created || c["vusers.failed"] != 0 {
		t.Errorf("virtual users: %v created, %v completed, %v failed", created, completed, c["vusers.failed"])
	}
	for _, k := range names {
		if strings.HasPrefix(k, "errors.") {
			t.Errorf("artillery error %s: %v", k, c[k])
		}
	}
	if c["socketio.emit"] != 2*created {
		t.Errorf("socketio.emit = %v, want %v (join and send per virtual user)", c["socketio.emit"], 2*created)
	}
}
