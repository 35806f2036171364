package bench

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"net/url"
	"os"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"
)

// Compare mode runs one load shape against relay and its peers in turn,
// interleaved, for several rounds, so every system is measured on the same
// machine in the same hour with the same tool, and reports each system's
// latency, the ratio relay ÷ peer per round, and CPU per process.

// System is one server compare mode drives.
type System struct {
	// Name labels the system in the report ("relay", "centrifugo", ...).
	Name string `json:"name"`
	// Protocol is how chatbench speaks to it (--protocol values).
	Protocol string `json:"protocol"`
	// Gateways are its WebSocket URLs, connections spread round robin.
	Gateways []string `json:"gateways"`
	// Procs are the process names whose CPU is charged to it; "stack" is
	// every process with a pid file in <repo>/.data/pids (scripts/run.sh).
	Procs []string `json:"procs"`
	// Pids are more processes charged to it: shared dependencies (the
	// Redis, broker and PostgreSQL it uses) named by pid, because other
	// instances of the same program may run on the machine.
	Pids []int `json:"pids,omitempty"`
	// MaxRate skips the rates above it (0: none skipped), for a peer known
	// to fall over there: its runs would only cost the others time.
	MaxRate float64 `json:"maxRate,omitempty"`
	// Metrics are Prometheus /metrics URLs scraped around each run for
	// relay's per-hop histograms (hops.go); empty for peers.
	Metrics []string `json:"metrics,omitempty"`
}

// CompareParams is a comparison's configuration.
type CompareParams struct {
	// Shape is the load every system gets (a scenario and its flags); its
	// Rate is replaced by each of Rates.
	Shape   Params    `json:"shape"`
	Systems []System  `json:"systems"`
	Rates   []float64 `json:"rates"`
	Rounds  int       `json:"rounds"`
	// Pause is the wait between runs, so one run's drain and close are not
	// the next one's background.
	Pause time.Duration `json:"pause"`
	// Baseline is the system the ratios are taken against peers of
	// (relay ÷ peer); the first system by default.
	Baseline string `json:"baseline"`
	JSON     string `json:"-"`
}

// CompareRun is one system's run at one rate in one round.
type CompareRun struct {
	Round   int       `json:"round"`
	Rate    float64   `json:"rate"`
	System  string    `json:"system"`
	Order   int       `json:"order"` // position within the round's rate (interleaving)
	Started time.Time `json:"started"`
	Accounting
	Ack     Summary `json:"sendToAck"`
	Deliver Summary `json:"sendToDeliver"`
	// SentPerSec is the rate actually sent.
	SentPerSec float64 `json:"sentPerSec"`
	// CPU is the system's processes' average CPU % of one core over the
	// send phase; MachineCPU the whole machine's.
	CPU        []ProcCPU `json:"cpu"`
	MachineCPU float64   `json:"machineCpuPct"`
	// OtherCPU is the machine's CPU not used by the sampled processes:
	// other work on a shared machine (% of one core).
	OtherCPU float64 `json:"otherCpuPct"`
	// Hops are the system's own per-hop histograms over the run.
	Hops []HopStat `json:"hops,omitempty"`
	// Errors are error replies to sends by code; Closes connections the
	// server ended, by close code (relay closes a client that cannot keep
	// up with 4000, and its missed deliveries count as lost).
	Errors map[string]int64 `json:"errors,omitempty"`
	Closes map[string]int64 `json:"closes,omitempty"`
	Error  string           `json:"error,omitempty"`
}

// ProcCPU is one process row's average CPU over a run's send phase.
type ProcCPU struct {
	Label string  `json:"label"`
	Pct   float64 `json:"pct"`
}

// StackCPU is the CPU of a run's server processes (chatbench excluded), in
// % of one core.
func (r CompareRun) StackCPU() float64 {
	var t float64
	for _, p := range r.CPU {
		if p.Label != "chatbench" {
			t += p.Pct
		}
	}
	return t
}

// CompareResult is a whole comparison.
type CompareResult struct {
	Tool     string        `json:"tool"`
	Started  time.Time     `json:"started"`
	Finished time.Time     `json:"finished"`
	Machine  Machine       `json:"machine"`
	Params   CompareParams `json:"params"`
	Runs     []CompareRun  `json:"runs"`
	Rows     []CompareRow  `json:"summary"`
}

// Spread is a median with the lowest and highest value it was taken over.
type Spread struct {
	Median float64 `json:"median"`
	Min    float64 `json:"min"`
	Max    float64 `json:"max"`
	N      int     `json:"n"`
}

// spreadOf summarises vs (NaNs, from runs that measured nothing, are
// left out); N is 0, and the rest zero, when nothing is left.
func spreadOf(vs []float64) Spread {
	var xs []float64
	for _, v := range vs {
		if !math.IsNaN(v) && !math.IsInf(v, 0) {
			xs = append(xs, v)
		}
	}
	if len(xs) == 0 {
		return Spread{}
	}
	slices.Sort(xs)
	m := xs[len(xs)/2]
	if len(xs)%2 == 0 {
		m = (xs[len(xs)/2-1] + xs[len(xs)/2]) / 2
	}
	return Spread{Median: m, Min: xs[0], Max: xs[len(xs)-1], N: len(xs)}
}

// CompareRow is one system at one rate over all rounds.
type CompareRow struct {
	Rate   float64 `json:"rate"`
	System string  `json:"system"`
	P50    Spread  `json:"p50Ms"`
	P99    Spread  `json:"p99Ms"`
	Max    Spread  `json:"maxMs"`
	AckP99 Spread  `json:"ackP99Ms"`
	// Ratio is baseline p99 ÷ this system's p99, per round (the baseline's
	// own row has none).
	Ratio Spread `json:"ratioP99"`
	// Lost, Unacked and Failed are summed over the rounds.
	Lost    int64 `json:"lost"`
	Unacked int64 `json:"unacked"`
	Failed  int64 `json:"failed"`
	// CPU is the system's processes' CPU (% of one core) and CPUPer1k the
	// same per 1,000 msgs/s sent.
	CPU      Spread `json:"cpuPct"`
	CPUPer1k Spread `json:"cpuPctPer1kMsgs"`
	// Hops are the per-hop p50 and p99 over the rounds (systems with
	// metrics only).
	Hops []HopSpread `json:"hops,omitempty"`
}

// HopSpread is one hop's quantiles over the rounds.
type HopSpread struct {
	Name string `json:"name"`
	Hop  string `json:"hop"`
	P50  Spread `json:"p50Ms"`
	P99  Spread `json:"p99Ms"`
}

// Summarize builds the per-rate, per-system rows from runs: medians over
// rounds, and the ratio baseline ÷ system computed within each round.
func Summarize(runs []CompareRun, baseline string) []CompareRow {
	type key struct {
		rate   float64
		system string
	}
	var order []key
	byKey := map[key][]CompareRun{}
	for _, r := range runs {
		k := key{r.Rate, r.System}
		if _, ok := byKey[k]; !ok {
			order = append(order, k)
		}
		byKey[k] = append(byKey[k], r)
	}
	base := map[[2]float64]CompareRun{} // (rate, round) → baseline run
	for _, r := range runs {
		if r.System == baseline {
			base[[2]float64{r.Rate, float64(r.Round)}] = r
		}
	}
	slices.SortStableFunc(order, func(a, b key) int {
		if a.rate != b.rate {
			return cmpFloat(a.rate, b.rate)
		}
		return 0
	})
	var rows []CompareRow
	for _, k := range order {
		rs := byKey[k]
		row := CompareRow{Rate: k.rate, System: k.system}
		var p50, p99, mx, ack, ratio, cpu, per1k []float64
		for _, r := range rs {
			row.Lost += r.Lost
			row.Unacked += r.Unacked
			row.Failed += r.Failed
			if r.Deliver.Count == 0 {
				p50, p99, mx = append(p50, math.NaN()), append(p99, math.NaN()), append(mx, math.NaN())
			} else {
				p50, p99, mx = append(p50, r.Deliver.P50), append(p99, r.Deliver.P99), append(mx, r.Deliver.Max)
			}
			if r.Ack.Count > 0 {
				ack = append(ack, r.Ack.P99)
			}
			c := r.StackCPU()
			cpu = append(cpu, c)
			if r.SentPerSec > 0 {
				per1k = append(per1k, c/(r.SentPerSec/1000))
			}
			if k.system != baseline {
				if b, ok := base[[2]float64{r.Rate, float64(r.Round)}]; ok && b.Deliver.Count > 0 && r.Deliver.Count > 0 && r.Deliver.P99 > 0 {
					ratio = append(ratio, b.Deliver.P99/r.Deliver.P99)
				}
			}
		}
		row.P50, row.P99, row.Max, row.AckP99 = spreadOf(p50), spreadOf(p99), spreadOf(mx), spreadOf(ack)
		row.Ratio, row.CPU, row.CPUPer1k = spreadOf(ratio), spreadOf(cpu), spreadOf(per1k)
		row.Hops = hopSpreads(rs)
		rows = append(rows, row)
	}
	return rows
}

// hopSpreads gathers each hop's quantiles over runs, in path order.
func hopSpreads(rs []CompareRun) []HopSpread {
	var out []HopSpread
	for _, m := range hopMetrics {
		var p50, p99 []float64
		for _, r := range rs {
			for _, h := range r.Hops {
				if h.Name == m.Name {
					p50, p99 = append(p50, h.P50), append(p99, h.P99)
				}
			}
		}
		if len(p99) > 0 {
			out = append(out, HopSpread{Name: m.Name, Hop: m.Hop, P50: spreadOf(p50), P99: spreadOf(p99)})
		}
	}
	return out
}

func cmpFloat(a, b float64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// roundOrder is the order systems run in round r: rotated by one each
// round, so none is always first (on a warm or a cold machine).
func roundOrder(n, round int) []int {
	out := make([]int, n)
	for i := range out {
		out[i] = (i + round) % n
	}
	return out
}

// ParseSystem reads NAME=PROTOCOL@URL[,URL...][;procs=a,b][;pids=N,N][;metrics=URL,URL][;max-rate=R].
func ParseSystem(s string) (System, error) {
	name, rest, ok := strings.Cut(s, "=")
	if !ok || !validPrefix(name) {
		return System{}, fmt.Errorf("%q: want NAME=PROTOCOL@URL[,URL...][;procs=a,b][;max-rate=R] (NAME of a-z, 0-9, _ . -)", s)
	}
	parts := strings.Split(rest, ";")
	proto, urls, ok := strings.Cut(parts[0], "@")
	if !ok {
		return System{}, fmt.Errorf("%q: want PROTOCOL@URL after %s=", s, name)
	}
	sys := System{Name: name, Protocol: proto}
	switch proto {
	case ProtocolNative, ProtocolSocketIO, ProtocolSeedNode, ProtocolCentrifugo:
	default:
		return System{}, fmt.Errorf("%s: protocol %q: want native, socketio, seednode or centrifugo", name, proto)
	}
	gws, err := parseGateways(urls)
	if err != nil {
		return System{}, fmt.Errorf("%s: %w", name, err)
	}
	if proto == ProtocolCentrifugo {
		// parseGateways gives a bare host:port the relay path /ws.
		for i, g := range gws {
			if strings.HasSuffix(g, "/ws") && !strings.Contains(urls, "/ws") {
				gws[i] = strings.TrimSuffix(g, "/ws") + "/connection/websocket"
			}
		}
	}
	if socketIOFamily(proto) {
		for i, g := range gws {
			if gws[i], err = socketIOURL(g); err != nil {
				return System{}, fmt.Errorf("%s: %w", name, err)
			}
		}
	}
	sys.Gateways = gws
	for _, opt := range parts[1:] {
		k, v, _ := strings.Cut(opt, "=")
		switch strings.TrimSpace(k) {
		case "procs":
			sys.Procs = splitList(v)
		case "pids":
			if sys.Pids, err = parseInts(v); err != nil {
				return System{}, fmt.Errorf("%s: pids: %w", name, err)
			}
		case "metrics":
			for _, u := range splitList(v) {
				if pu, err := url.Parse(u); err != nil || (pu.Scheme != "http" && pu.Scheme != "https") || pu.Host == "" {
					return System{}, fmt.Errorf("%s: metrics URL %q: want http://host:port/metrics", name, u)
				}
				sys.Metrics = append(sys.Metrics, u)
			}
		case "max-rate":
			if sys.MaxRate, err = strconv.ParseFloat(v, 64); err != nil || sys.MaxRate <= 0 {
				return System{}, fmt.Errorf("%s: max-rate %q: want a positive number", name, v)
			}
		default:
			return System{}, fmt.Errorf("%s: unknown option %q (want procs=, pids=, metrics= or max-rate=)", name, k)
		}
	}
	return sys, nil
}

// ParseCompareArgs reads `chatbench compare` flags; the shape's flags
// (the ordinary chatbench flags) come after "--".
func ParseCompareArgs(args []string, out io.Writer) (CompareParams, error) {
	fs := flag.NewFlagSet("chatbench compare", flag.ContinueOnError)
	fs.SetOutput(out)
	var systems []System
	fs.Func("system", "a system to drive: NAME=PROTOCOL@URL[,URL...][;procs=comm,comm][;pids=N,N][;metrics=URL,URL][;max-rate=R] (repeat; the first is the baseline of the ratios; procs=stack is the pid files in .data/pids; metrics are relay's /metrics, scraped for per-hop latency)", func(s string) error {
		sys, err := ParseSystem(s)
		if err == nil {
			systems = append(systems, sys)
		}
		return err
	})
	var (
		rates    = fs.String("rates", "", "comma list of send rates (msgs/s); default the shape's --rate")
		rounds   = fs.Int("rounds", 3, "rounds; each runs every rate against every system, the order rotated per round")
		pause    = fs.Duration("pause", 5*time.Second, "wait between runs")
		baseline = fs.String("baseline", "", "the system ratios are taken against (default the first --system)")
		jsonOut  = fs.String("json", "", "write every run and the summary as JSON to this file")
	)
	fs.Usage = func() {
		fmt.Fprintf(out, "usage: chatbench compare --system NAME=PROTOCOL@URL ... [flags] [-- SHAPE FLAGS]\n\n"+
			"Runs the same load shape against each system in turn, interleaved, --rounds times,\n"+
			"and prints each one's send→delivery p50/p99/max, the ratio baseline ÷ system per\n"+
			"round and CPU per process. SHAPE FLAGS are chatbench's own (-h lists them); the\n"+
			"accounts and room ids come from relay's api, which must be running.\n\n"+
			"example:\n"+
			"  chatbench compare --rates 300,1000 \\\n"+
			"    --system 'relay=native@ws://127.0.0.1:8090/ws,ws://127.0.0.1:8091/ws;procs=stack' \\\n"+
			"    --system 'centrifugo=centrifugo@ws://127.0.0.1:8200/connection/websocket;procs=centrifugo' \\\n"+
			"    -- --scenario chat --duration 15s\n\nflags:\n")
		fs.PrintDefaults()
	}
	var shapeArgs []string
	if i := slices.Index(args, "--"); i >= 0 {
		args, shapeArgs = args[:i], args[i+1:]
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return CompareParams{}, err
		}
		return CompareParams{}, &UsageError{Msg: err.Error()}
	}
	if fs.NArg() > 0 {
		return CompareParams{}, usagef("unexpected argument %q (the shape's flags go after --)", fs.Arg(0))
	}
	if len(systems) == 0 {
		return CompareParams{}, usagef("--system: at least one is needed")
	}
	shape, err := ParseArgs(shapeArgs, out)
	if err != nil {
		return CompareParams{}, err
	}
	cp := CompareParams{Shape: shape, Systems: systems, Rounds: *rounds, Pause: *pause, Baseline: *baseline, JSON: *jsonOut}
	if cp.Baseline == "" {
		cp.Baseline = systems[0].Name
	}
	if *rates != "" {
		if cp.Rates, err = parseFloats(*rates); err != nil {
			return CompareParams{}, usagef("--rates: %v", err)
		}
	} else {
		cp.Rates = []float64{shape.Rate}
	}
	if err := cp.Validate(); err != nil {
		return CompareParams{}, err
	}
	return cp, nil
}

// Validate refuses a comparison that could not run.
func (cp *CompareParams) Validate() error {
	var errs []string
	if cp.Rounds < 1 || cp.Rounds > 100 {
		errs = append(errs, fmt.Sprintf("--rounds %d: want 1..100", cp.Rounds))
	}
	if cp.Pause < 0 || cp.Pause > 10*time.Minute {
		errs = append(errs, fmt.Sprintf("--pause %s: want 0..10m", cp.Pause))
	}
	switch cp.Shape.Scenario {
	case ScenarioChat, ScenarioFanout:
	default:
		errs = append(errs, fmt.Sprintf("--scenario %s: compare runs chat or fanout", cp.Shape.Scenario))
	}
	seen := map[string]bool{}
	for _, s := range cp.Systems {
		if seen[s.Name] {
			errs = append(errs, fmt.Sprintf("--system %s given twice", s.Name))
		}
		seen[s.Name] = true
	}
	if !seen[cp.Baseline] {
		errs = append(errs, fmt.Sprintf("--baseline %q is not a --system", cp.Baseline))
	}
	for _, r := range cp.Rates {
		p := cp.Shape
		p.Rate = r
		if err := p.Validate(); err != nil {
			errs = append(errs, fmt.Sprintf("rate %g: %v", r, err))
		}
	}
	if len(errs) > 0 {
		return &UsageError{Msg: strings.Join(errs, "\n")}
	}
	return nil
}

// runParams is the shape for one system at one rate: its protocol and
// URLs, its processes, and none of relay's own probes (the PostgreSQL and
// persister pollers would load one system only); no application pings
// (Centrifugo has none; the runs are shorter than any idle timeout).
func (cp *CompareParams) runParams(sys System, rate float64) Params {
	p := cp.Shape
	p.Rate = rate
	p.Protocol = sys.Protocol
	p.Gateways = slices.Clone(sys.Gateways)
	p.GatewaysDefaulted = false
	p.Procs = slices.Clone(sys.Procs)
	p.Pids = slices.Clone(sys.Pids)
	p.NoStack = true
	p.PG, p.Persister = "", ""
	p.Heartbeat = 0
	p.JSON = ""
	return p
}

// Compare runs the comparison, printing each run's line on out as it
// ends and progress on progress. When ctx ends, what ran so far is
// returned with ctx's error.
func Compare(ctx context.Context, cp CompareParams, out, progress io.Writer) (*CompareResult, error) {
	res := &CompareResult{Tool: "chatbench compare", Started: time.Now().UTC(), Machine: readMachine(), Params: cp}
	printRunHeader(out)
	var runErr error
rounds:
	for round := range cp.Rounds {
		for _, rate := range cp.Rates {
			for pos, i := range roundOrder(len(cp.Systems), round) {
				sys := cp.Systems[i]
				if sys.MaxRate > 0 && rate > sys.MaxRate {
					continue
				}
				if ctx.Err() != nil {
					runErr = ctx.Err()
					break rounds
				}
				fmt.Fprintf(progress, "chatbench compare: round %d/%d, %g msgs/s, %s\n", round+1, cp.Rounds, rate, sys.Name)
				r := CompareRun{Round: round + 1, Rate: rate, System: sys.Name, Order: pos + 1, Started: time.Now().UTC()}
				var before map[string]promHist
				var scrapeErr error
				if len(sys.Metrics) > 0 {
					before, scrapeErr = scrapeHops(ctx, sys.Metrics)
				}
				one, err := Run(ctx, cp.runParams(sys, rate), progress)
				if err != nil {
					r.Error = err.Error()
				}
				if one != nil {
					r.fill(one)
				}
				if len(sys.Metrics) > 0 && scrapeErr == nil {
					var after map[string]promHist
					if after, scrapeErr = scrapeHops(ctx, sys.Metrics); scrapeErr == nil {
						r.Hops = hopStats(before, after)
					}
				}
				if scrapeErr != nil {
					fmt.Fprintf(progress, "chatbench compare: %s: per-hop metrics not read: %v\n", sys.Name, scrapeErr)
				}
				res.Runs = append(res.Runs, r)
				printRun(out, r)
				if errors.As(err, new(*UsageError)) {
					runErr = err
					break rounds
				}
				sleepCtx(ctx, cp.Pause)
			}
		}
	}
	res.Finished = time.Now().UTC()
	res.Rows = Summarize(res.Runs, cp.Baseline)
	return res, runErr
}

// fill copies what compare reports from one run's result.
func (r *CompareRun) fill(one *Result) {
	r.MachineCPU, r.OtherCPU = one.MachineCPU, one.OtherCPU
	r.Closes = one.Closes
	if len(one.Steps) > 0 {
		st := one.Steps[0]
		r.Accounting, r.Ack, r.Deliver, r.SentPerSec = st.Accounting, st.Ack, st.Deliver, st.SentPerSec
		r.Errors = st.Errors
	}
	for _, p := range one.Procs {
		r.CPU = append(r.CPU, ProcCPU{Label: p.Label, Pct: p.CPUAvg})
	}
}

func printRunHeader(w io.Writer) {
	fmt.Fprintln(w, "round  rate  system        sent   acked  lost  unacked  ack p99  deliver p50    p99     max  stack CPU%  machine%  other%  per process")
}

func printRun(w io.Writer, r CompareRun) {
	var procs []string
	for _, p := range r.CPU {
		procs = append(procs, fmt.Sprintf("%s %.0f", p.Label, p.Pct))
	}
	fmt.Fprintf(w, "%5d %5g  %-12s %6d %7d %5d %8d %8.1f %12.1f %7.1f %7.1f %11.0f %9.0f %7.0f  %s",
		r.Round, r.Rate, r.System, r.Sent, r.Acked, r.Lost, r.Unacked, r.Ack.P99, r.Deliver.P50, r.Deliver.P99, r.Deliver.Max,
		r.StackCPU(), r.MachineCPU, r.OtherCPU, strings.Join(procs, ", "))
	if len(r.Errors) > 0 {
		fmt.Fprintf(w, "  errors: %v", r.Errors)
	}
	if len(r.Closes) > 0 {
		fmt.Fprintf(w, "  closed by server: %v", r.Closes)
	}
	if r.Error != "" {
		fmt.Fprintf(w, "  error: %s", truncate(r.Error, 80))
	}
	fmt.Fprintln(w)
}

// PrintCompare writes the summary table: per rate and system, the median
// over rounds with [min–max], and the per-round ratio baseline ÷ system.
func PrintCompare(w io.Writer, res *CompareResult) {
	cp := res.Params
	fmt.Fprintf(w, "\nchatbench compare  %s  %d CPUs  scenario %s  %d connections, %d rooms of %s, %s per run, %d rounds, order rotated per round\n",
		res.Started.Format(time.RFC3339), res.Machine.CPUs, cp.Shape.Scenario, cp.Shape.Conns, cp.Shape.Rooms, cp.Shape.RoomSize, cp.Shape.Duration, cp.Rounds)
	fmt.Fprintf(w, "send→delivery in ms, median of the rounds [min–max]; ratio = %s p99 ÷ system p99 in the same round; CPU = the system's processes, %% of one core\n", cp.Baseline)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "rate\tsystem\tp50\tp99\tmax\tack p99\tratio p99\tlost\tunacked\tCPU %\tCPU %/1k msgs/s\t")
	for _, r := range res.Rows {
		ratio := "-"
		if r.System != cp.Baseline {
			ratio = fmtSpread(r.Ratio, "%.2f")
		}
		fmt.Fprintf(tw, "%g\t%s\t%s\t%s\t%s\t%s\t%s\t%d\t%d\t%s\t%s\t\n", r.Rate, r.System,
			fmtSpread(r.P50, "%.1f"), fmtSpread(r.P99, "%.1f"), fmtSpread(r.Max, "%.0f"), fmtSpread(r.AckP99, "%.1f"),
			ratio, r.Lost, r.Unacked, fmtSpread(r.CPU, "%.0f"), fmtSpread(r.CPUPer1k, "%.0f"))
	}
	_ = tw.Flush()
	first := true
	for _, r := range res.Rows {
		if len(r.Hops) == 0 {
			continue
		}
		if first {
			fmt.Fprintf(w, "\nper hop (the system's own histograms over each run; bucket-interpolated), ms, median of the rounds [min–max]:\n")
			first = false
		}
		for _, h := range r.Hops {
			fmt.Fprintf(w, "  %g %s  %-34s p50 %-22s p99 %-22s %s\n", r.Rate, r.System, h.Name, fmtSpread(h.P50, "%.1f"), fmtSpread(h.P99, "%.1f"), h.Hop)
		}
	}
}

// fmtSpread renders "median [min–max]", or "-" when nothing was measured.
func fmtSpread(s Spread, f string) string {
	if s.N == 0 {
		return "-"
	}
	if s.N == 1 {
		return fmt.Sprintf(f, s.Median)
	}
	return fmt.Sprintf(f+" ["+f+"–"+f+"]", s.Median, s.Min, s.Max)
}

// WriteCompareJSON writes res to path.
func WriteCompareJSON(path string, res *CompareResult) error {
	b, err := json.MarshalIndent(res, "", "  ")
	if err != nil {
		return fmt.Errorf("encode results: %w", err)
	}
	if err := os.WriteFile(path, append(b, '\n'), 0o644); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}
