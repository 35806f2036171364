package e2e

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"relay/tests/e2e/stack"
)

// The dashboard and the alert rules the operations guide documents.
const (
	dashboardFile = "../../deploy/grafana/dashboards/relay.json"
	alertsFile    = "../../deploy/prometheus/alerts.yml"
)

// prometheusOwn are series Prometheus makes itself rather than scrapes.
var prometheusOwn = map[string]bool{"up": true}

// TestDashboardAndAlertMetricsExist runs a stack with some traffic and
// fails if any metric a dashboard panel or an alert rule queries is absent
// from every service's /metrics: a renamed metric would otherwise leave a
// panel empty and an alert silent.
func TestDashboardAndAlertMetricsExist(t *testing.T) {
	exprs := append(dashboardExprs(t), alertExprs(t)...)
	wanted := map[string][]string{} // metric -> where used
	for _, e := range exprs {
		for _, m := range metricNames(e.expr) {
			wanted[m] = append(wanted[m], e.where)
		}
	}
	if len(wanted) < 20 {
		t.Fatalf("only %d metric names found in %d expressions: the extraction is broken", len(wanted), len(exprs))
	}

	s := newStack(t, stack.Options{Gateways: 2})
	ctx := testCtx(t, 60*time.Second)
	traffic(t, ctx, s)
	have := map[string]bool{}
	for _, name := range s.Names() {
		for m := range scrape(t, ctx, s.HTTPURL(name)+"/metrics") {
			have[m] = true
		}
	}
	var missing []string
	for m, where := range wanted {
		if !have[m] && !prometheusOwn[m] {
			missing = append(missing, fmt.Sprintf("%s (in %s)", m, strings.Join(slices.Compact(slices.Sorted(slices.Values(where))), ", ")))
		}
	}
	slices.Sort(missing)
	if len(missing) > 0 {
		t.Fatalf("%d metrics queried but exported by no service:\n  %s", len(missing), strings.Join(missing, "\n  "))
	}
	t.Logf("all %d metrics of %d expressions exist", len(wanted), len(exprs))
}

// traffic makes every kind of series appear: a message sent, delivered
// and persisted, a refused join, REST calls.
func traffic(t *testing.T, ctx context.Context, s *stack.Stack) {
	t.Helper()
	api := s.API()
	alice := register(t, ctx, api, "alice")
	bob := register(t, ctx, api, "bob")
	room, err := api.CreateRoom(ctx, alice, "metrics", "group", bob)
	if err != nil {
		t.Fatal(err)
	}
	ca, cb := dial(t, ctx, s, 0, alice), dial(t, ctx, s, 1, bob)
	join(t, ctx, ca, room.ID)
	join(t, ctx, cb, room.ID)
	ack, err := ca.Send(ctx, room.ID, "hello metrics", "")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cb.WaitMessages(ctx, room.ID, 1); err != nil {
		t.Fatal(err)
	}
	if _, err := ca.Join(ctx, "999999", nil); err == nil {
		t.Fatal("joined a room that does not exist")
	}
	waitRow(t, ctx, s, ack.ID, nil)
}

type queryExpr struct{ where, expr string }

func dashboardExprs(t *testing.T) []queryExpr {
	t.Helper()
	b, err := os.ReadFile(dashboardFile)
	if err != nil {
		t.Fatal(err)
	}
	var d struct {
		Panels []struct {
			Title   string `json:"title"`
			Targets []struct {
				Expr string `json:"expr"`
			} `json:"targets"`
		} `json:"panels"`
	}
	if err := json.Unmarshal(b, &d); err != nil {
		t.Fatalf("%s: %v", dashboardFile, err)
	}
	var out []queryExpr
	for _, p := range d.Panels {
		for _, tg := range p.Targets {
			out = append(out, queryExpr{"panel " + p.Title, tg.Expr})
		}
	}
	return out
}

// alertExprs reads the expr of every rule: "expr: <one line>" or a block
// scalar "expr: |" with the more indented lines after it.
func alertExprs(t *testing.T) []queryExpr {
	t.Helper()
	f, err := os.Open(alertsFile)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var (
		out    []queryExpr
		alert  string
		block  *strings.Builder
		indent int
	)
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Text()
		trimmed := strings.TrimSpace(line)
		ind := len(line) - len(strings.TrimLeft(line, " "))
		if block != nil {
			if trimmed == "" || ind > indent {
				block.WriteString(trimmed + " ")
				continue
			}
			out = append(out, queryExpr{"alert " + alert, block.String()})
			block = nil
		}
		if a, ok := strings.CutPrefix(trimmed, "- alert: "); ok {
			alert = a
		}
		if e, ok := strings.CutPrefix(trimmed, "expr: "); ok {
			if e == "|" || e == ">" {
				block, indent = &strings.Builder{}, ind
				continue
			}
			out = append(out, queryExpr{"alert " + alert, e})
		}
	}
	if block != nil {
		out = append(out, queryExpr{"alert " + alert, block.String()})
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

var (
	// Parts of PromQL that hold no metric name: strings, label matchers,
	// ranges, grouping clauses and numbers.
	promStrings  = regexp.MustCompile(`"(?:[^"\\]|\\.)*"`)
	promMatchers = regexp.MustCompile(`\{[^}]*\}`)
	promRanges   = regexp.MustCompile(`\[[^\]]*\]`)
	promGrouping = regexp.MustCompile(`\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)`)
	promIdent    = regexp.MustCompile(`[a-zA-Z_:][a-zA-Z0-9_:]*`)
	promWords    = map[string]bool{
		"sum": true, "min": true, "max": true, "avg": true, "count": true, "rate": true, "irate": true,
		"increase": true, "histogram_quantile": true, "topk": true, "bottomk": true, "abs": true,
		"and": true, "or": true, "unless": true, "bool": true, "offset": true, "group_left": true,
		"group_right": true, "on": true, "ignoring": true, "by": true, "without": true, "e": true,
		"Inf": true, "NaN": true, "absent": true, "delta": true, "deriv": true, "time": true,
		"clamp_min": true, "clamp_max": true, "label_replace": true, "vector": true, "scalar": true,
	}
)

// metricNames returns the metric names a PromQL expression selects.
func metricNames(expr string) []string {
	e := promStrings.ReplaceAllString(expr, " ")
	e = promMatchers.ReplaceAllString(e, " ")
	e = promRanges.ReplaceAllString(e, " ")
	e = promGrouping.ReplaceAllString(e, " ")
	var out []string
	for _, id := range promIdent.FindAllString(e, -1) {
		if !promWords[id] {
			out = append(out, id)
		}
	}
	return out
}

// scrape returns the names of the series url exposes.
func scrape(t *testing.T, ctx context.Context, url string) map[string]bool {
	t.Helper()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %s", url, resp.Status)
	}
	names := map[string]bool{}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || line[0] == '#' {
			continue
		}
		if i := strings.IndexAny(line, "{ "); i > 0 {
			names[line[:i]] = true
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return names
}

func TestMetricNames(t *testing.T) {
	for expr, want := range map[string][]string{
		`histogram_quantile(0.99, sum by (le) (rate(gateway_pubsub_latency_seconds_bucket[5m]))) > 0.01`:         {"gateway_pubsub_latency_seconds_bucket"},
		`max by (job, instance) (persister_breaker_state{state="open"}) == 1 or api_breaker_state{state=~"a|b"}`: {"persister_breaker_state", "api_breaker_state"},
		`sum by (code) (rate(x_total{code!~"A"}[5m])) / ignoring (code) group_left sum(rate(y_total[5m])) > 0.1`: {"x_total", "y_total"},
		`sum by (job) (rate(http_requests_total{status=~"5.."}[1m]))`:                                            {"http_requests_total"},
	} {
		if got := metricNames(expr); !slices.Equal(got, want) {
			t.Errorf("metricNames(%s) = %v, want %v", expr, got, want)
		}
	}
}
