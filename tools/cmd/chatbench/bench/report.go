package bench

import (
	"encoding/json"
	"fmt"
	"io"
	"net/url"
	"os"
	"runtime"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"
)

// Result is everything a run measured; --json writes it as is, so runs
// can be compared.
type Result struct {
	Tool     string    `json:"tool"`
	RunID    string    `json:"runId"`
	Scenario string    `json:"scenario"`
	Started  time.Time `json:"started"`
	Finished time.Time `json:"finished"`
	Machine  Machine   `json:"machine"`
	Params   Params    `json:"params"`
	// Note says how the gateways were reached.
	Note     string   `json:"note,omitempty"`
	Warnings []string `json:"warnings,omitempty"`
	// Error is why the run stopped early ("" when it completed).
	Error string `json:"error,omitempty"`

	Users   UserStats    `json:"users"`
	Rooms   RoomStats    `json:"rooms"`
	Connect ConnectStats `json:"connect"`
	Join    JoinStats    `json:"join"`
	Steps   []StepResult `json:"steps"`
	Max     *MaxResult   `json:"max,omitempty"`
	// Closes are connections the server ended, by close code or reason.
	Closes      map[string]int64 `json:"closes,omitempty"`
	Undecodable int64            `json:"undecodableFrames"`
	Lag         *LagStats        `json:"persisterLag,omitempty"`
	PG          *PGStats         `json:"pg,omitempty"`
	Procs       []ProcStats      `json:"procs"`
	// MachineCPU is the whole machine's average CPU over the load phase, in
	// % of one core (100 × CPUs = saturated); OtherCPU is the part of it
	// not used by the processes in Procs (other work on the machine).
	MachineCPU float64 `json:"machineCpuPct"`
	OtherCPU   float64 `json:"otherCpuPct"`
}

// Machine describes where the run happened.
type Machine struct {
	Hostname  string     `json:"hostname"`
	CPUs      int        `json:"cpus"`
	GoVersion string     `json:"goVersion"`
	Kernel    string     `json:"kernel"`
	LoadStart [3]float64 `json:"loadAvgStart"`
	LoadEnd   [3]float64 `json:"loadAvgEnd"`
}

// RoomStats describes the rooms created.
type RoomStats struct {
	Count   int `json:"count"`
	SizeMin int `json:"sizeMin"`
	SizeMax int `json:"sizeMax"`
	Members int `json:"members"`
	// Reused rooms came from an earlier run; Left counts the memberships of
	// old bench rooms outside the plan that its users left (rooms.go).
	Reused    int     `json:"reused"`
	Created   int     `json:"created"`
	Left      int     `json:"left"`
	DurationS float64 `json:"durationS"`
}

// ConnectStats describes the connect phase (artillery: every arrival).
type ConnectStats struct {
	Attempted int64            `json:"attempted"`
	OK        int64            `json:"ok"`
	Failed    int64            `json:"failed"`
	Failures  map[string]int64 `json:"failures,omitempty"`
	DurationS float64          `json:"durationS"`
	Latency   Summary          `json:"latency"`
	// PerGateway is how many connections each gateway held once connected.
	PerGateway []int64 `json:"perGateway,omitempty"`
}

// JoinStats counts join_room answers.
type JoinStats struct {
	Sent     int64            `json:"sent"`
	OK       int64            `json:"ok"`
	Failed   int64            `json:"failed"`
	Failures map[string]int64 `json:"failures,omitempty"`
}

// StepResult is one send phase's outcome.
type StepResult struct {
	Index      int     `json:"index"`
	TargetRate float64 `json:"targetRate"`
	// SendS is how long sending took; DrainS how long the drain waited.
	SendS  float64 `json:"sendS"`
	DrainS float64 `json:"drainS"`
	Accounting
	Errors map[string]int64 `json:"errors,omitempty"`

	SentPerSec      float64 `json:"sentPerSec"`
	AckedPerSec     float64 `json:"ackedPerSec"`
	DeliveredPerSec float64 `json:"deliveredPerSec"`

	Ack     Summary `json:"sendToAck"`
	Deliver Summary `json:"sendToDeliver"`
	Persist Summary `json:"sendToPersist"`
	Ping    Summary `json:"pingToAck"`
	// NotPersisted are acked messages not found in PostgreSQL by the end
	// of the drain (-1 when not measured).
	NotPersisted int64 `json:"notPersisted"`
	// CPU is each process's average CPU % of one core during this step.
	CPU map[string]float64 `json:"cpuPct,omitempty"`
	// Held is the max scenario's verdict for this step.
	Held *bool `json:"held,omitempty"`
}

// MaxResult is the max scenario's verdict.
type MaxResult struct {
	ThresholdMs float64 `json:"thresholdP99Ms"`
	// HeldRate is the highest rate whose step held (0: none did).
	HeldRate float64 `json:"heldRate"`
	Reason   string  `json:"reason"`
}

// PGStats is the send→persisted poller's end state.
type PGStats struct {
	Errors    int64  `json:"errors"`
	LastError string `json:"lastError,omitempty"`
}

// stepResult summarises a finished step.
func (r *runner) stepResult(st *Step) StepResult {
	a := st.account()
	sendS := st.sendEnd.Sub(st.started).Seconds()
	sr := StepResult{
		Index: st.Index, TargetRate: st.Rate, SendS: sendS, DrainS: st.drained.Sub(st.sendEnd).Seconds(),
		Accounting: a, Errors: st.errors.Snapshot(),
		Ack: st.ack.Total(), Deliver: st.deliver.Total(), Persist: st.persist.Total(), Ping: st.ping.Total(),
		NotPersisted: -1,
	}
	if sendS > 0 {
		sr.SentPerSec = float64(a.Sent) / sendS
		sr.AckedPerSec = float64(a.Acked) / sendS
		sr.DeliveredPerSec = float64(a.Delivered) / sendS
	}
	if r.pg != nil {
		sr.NotPersisted = max(a.Acked-st.persisted.Load(), 0)
	}
	if r.p.Scenario == ScenarioMax {
		i := strconv.Itoa(st.Index)
		cpu := r.sampler.cpuBetween(markLoadStart+"#"+i, markLoadEnd+"#"+i)
		sr.CPU = map[string]float64{}
		for j, g := range r.sampler.groups {
			sr.CPU[g.Label] = cpu[j]
		}
	}
	return sr
}

// finish fills the run-wide parts of res.
func (r *runner) finish(res *Result) {
	res.Finished = time.Now().UTC()
	res.Machine.LoadEnd = loadAvg()
	failed := r.connFail.Total()
	res.Connect.Attempted = r.dialed.Load()
	res.Connect.Failed = failed
	res.Connect.OK = res.Connect.Attempted - failed
	res.Connect.Failures = r.connFail.Snapshot()
	res.Connect.Latency = r.connectLat.Total()
	res.Join = JoinStats{Sent: r.joinsSent.Load(), OK: r.joinsOK.Load(), Failed: r.joinsFailed.Load(), Failures: r.joinFail.Snapshot()}
	res.Closes = r.closes.Snapshot()
	res.Undecodable = r.undecodable.Load()
	if r.lag != nil {
		res.Lag = &LagStats{Max: r.lag.max.Load(), Final: r.lag.last.Load(), Reads: r.lag.reads.Load(), Errors: r.lag.errors.Load()}
	}
	if r.pg != nil {
		res.PG = &PGStats{Errors: r.pg.errs.Load()}
		if s, ok := r.pg.lastErr.Load().(string); ok {
			res.PG.LastError = s
		}
	}
	res.Procs = r.sampler.Stats(markLoadStart, markLoadEnd)
	res.MachineCPU = r.sampler.machineBusy(markLoadStart, markLoadEnd)
	res.OtherCPU = res.MachineCPU
	for _, ps := range res.Procs {
		res.OtherCPU -= ps.CPUAvg
	}
	res.OtherCPU = max(res.OtherCPU, 0)
	for i := range res.Procs {
		ps := &res.Procs[i]
		switch {
		case ps.Label == "chatbench":
			ps.Conns = int(res.Connect.OK)
		case ps.Addr != "":
			for gi, g := range r.p.Gateways {
				if u, err := url.Parse(g); err == nil && u.Host == ps.Addr && gi < len(res.Connect.PerGateway) {
					ps.Conns += int(res.Connect.PerGateway[gi])
				}
			}
		}
		if ps.Conns > 0 && ps.RSSConnected > 0 && ps.RSSBaseline > 0 && r.p.Scenario != ScenarioArtillery {
			ps.PerConn = float64(ps.RSSConnected-ps.RSSBaseline) / float64(ps.Conns)
		}
	}
}

func readMachine() Machine {
	m := Machine{CPUs: runtime.NumCPU(), GoVersion: runtime.Version(), LoadStart: loadAvg()}
	m.Hostname, _ = os.Hostname()
	if raw, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		m.Kernel = strings.TrimSpace(string(raw))
	}
	return m
}

func loadAvg() [3]float64 {
	var out [3]float64
	raw, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return out
	}
	for i, f := range strings.Fields(string(raw)) {
		if i >= 3 {
			break
		}
		out[i], _ = strconv.ParseFloat(f, 64)
	}
	return out
}

// WriteJSON writes res to path.
func WriteJSON(path string, res *Result) error {
	raw, err := json.MarshalIndent(res, "", "  ")
	if err != nil {
		return fmt.Errorf("encode results: %w", err)
	}
	if err := os.WriteFile(path, append(raw, '\n'), 0o644); err != nil {
		return fmt.Errorf("write results: %w", err)
	}
	return nil
}

// PrintTable writes the human-readable report.
func PrintTable(w io.Writer, res *Result) {
	p := res.Params
	fmt.Fprintf(w, "chatbench %s  run %s  %s  (%d CPUs, load %.2f %.2f %.2f → %.2f %.2f %.2f)\n",
		res.Scenario, res.RunID, res.Started.Format(time.RFC3339), res.Machine.CPUs,
		res.Machine.LoadStart[0], res.Machine.LoadStart[1], res.Machine.LoadStart[2],
		res.Machine.LoadEnd[0], res.Machine.LoadEnd[1], res.Machine.LoadEnd[2])
	switch p.Protocol {
	case ProtocolSocketIO, ProtocolSeedNode:
		fmt.Fprintf(w, "protocol: %s, Socket.IO v4 over WebSocket (connect = upgrade + Engine.IO open + CONNECT)\n", p.Protocol)
	case ProtocolCentrifugo:
		fmt.Fprintf(w, "protocol: Centrifugo JSON over WebSocket (connect = upgrade + connect command; send→ack = publish reply)\n")
	}
	if res.Note != "" {
		fmt.Fprintf(w, "note: %s\n", res.Note)
	} else {
		fmt.Fprintf(w, "gateways: %s\n", strings.Join(p.Gateways, ", "))
	}
	for _, wmsg := range res.Warnings {
		fmt.Fprintf(w, "warning: %s\n", wmsg)
	}
	if res.Error != "" {
		fmt.Fprintf(w, "RUN STOPPED EARLY: %s\n", res.Error)
	}

	fmt.Fprintf(w, "\nsetup\n")
	fmt.Fprintf(w, "  users     %d (%d cached, %d signed in) in %.1fs\n", p.Users, res.Users.Cached, res.Users.SignedIn, res.Users.DurationS)
	fmt.Fprintf(w, "  rooms     %d (members %s, %d memberships; %d reused, %d made, %d old bench memberships left) in %.1fs\n",
		res.Rooms.Count, sizeRange(res.Rooms), res.Rooms.Members, res.Rooms.Reused, res.Rooms.Created, res.Rooms.Left, res.Rooms.DurationS)
	fmt.Fprintf(w, "  connect   %d ok, %d failed%s in %.1fs", res.Connect.OK, res.Connect.Failed, counts(res.Connect.Failures), res.Connect.DurationS)
	if res.Scenario != ScenarioArtillery {
		fmt.Fprintf(w, " (ramp %g/s)", p.Ramp)
	}
	if len(res.Connect.PerGateway) > 1 {
		fmt.Fprintf(w, "; per gateway %v", res.Connect.PerGateway)
	}
	fmt.Fprintln(w)
	fmt.Fprintf(w, "  join      %d ok, %d failed%s\n", res.Join.OK, res.Join.Failed, counts(res.Join.Failures))
	if len(res.Closes) > 0 || res.Undecodable > 0 {
		fmt.Fprintf(w, "  server-closed connections%s; undecodable frames %d\n", counts(res.Closes), res.Undecodable)
	}

	for _, sr := range res.Steps {
		printStep(w, res, sr)
	}
	if res.Max != nil {
		fmt.Fprintf(w, "\nmax: highest rate that held (p99 send→delivery < %.0f ms, nothing lost, failed or unacked): %g msgs/s\n", res.Max.ThresholdMs, res.Max.HeldRate)
		fmt.Fprintf(w, "     stopped: %s\n", res.Max.Reason)
		tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
		fmt.Fprintf(tw, "     rate\tsent/s\tdelivered/s\tp50 ms\tp99 ms\tp99.9 ms\tlost\tfailed\theld\t\n")
		for _, sr := range res.Steps {
			held := "-"
			if sr.Held != nil {
				held = strconv.FormatBool(*sr.Held)
			}
			fmt.Fprintf(tw, "     %g\t%.0f\t%.0f\t%.2f\t%.2f\t%.2f\t%d\t%d\t%s\t\n", sr.TargetRate, sr.SentPerSec, sr.DeliveredPerSec,
				sr.Deliver.P50, sr.Deliver.P99, sr.Deliver.P999, sr.Lost, sr.Failed, held)
		}
		tw.Flush()
	}

	if res.Lag != nil {
		fmt.Fprintf(w, "\npersister lag (GET /lag total): max %d, at end %d (%d reads, %d errors)\n", res.Lag.Max, res.Lag.Final, res.Lag.Reads, res.Lag.Errors)
	}
	if res.PG != nil && res.PG.Errors > 0 {
		fmt.Fprintf(w, "send→persisted poll errors: %d (last: %s)\n", res.PG.Errors, res.PG.LastError)
	}

	load := "the send phase"
	switch res.Scenario {
	case ScenarioIdle:
		load = "the idle hold"
	case ScenarioMax:
		load = "all steps"
	case ScenarioArtillery:
		load = "the arrival phases"
	}
	fmt.Fprintf(w, "\nprocesses (CPU %% of one core, average over %s / highest 1 s sample; RSS)\n", load)
	lw := len("process")
	for _, ps := range res.Procs {
		lw = max(lw, len(ps.Label))
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintf(tw, "  %-*s\tprocs\tCPU avg\tCPU max\tRSS before\tRSS connected\tRSS max\tRSS end\tper conn\t\n", lw, "process")
	for _, ps := range res.Procs {
		per := "-"
		switch {
		case ps.PerConn > 0:
			per = fmt.Sprintf("%s (%d)", bytesStr(int64(ps.PerConn)), ps.Conns)
		case ps.PerConn < 0: // the heap shrank (GC) while connecting
			per = fmt.Sprintf("%.0f B (%d)", ps.PerConn, ps.Conns)
		}
		fmt.Fprintf(tw, "  %-*s\t%d\t%.1f%%\t%.1f%%\t%s\t%s\t%s\t%s\t%s\t\n", lw, ps.Label, ps.Procs, ps.CPUAvg, ps.CPUMax,
			bytesStr(ps.RSSBaseline), bytesStr(ps.RSSConnected), bytesStr(ps.RSSMax), bytesStr(ps.RSSEnd), per)
	}
	tw.Flush()
	if res.MachineCPU >= 0 {
		fmt.Fprintf(w, "  machine: %.0f%% busy of %d%% (%d CPUs); processes above %.0f%%, everything else %.0f%%\n",
			res.MachineCPU, 100*res.Machine.CPUs, res.Machine.CPUs, res.MachineCPU-res.OtherCPU, res.OtherCPU)
	}
	if res.Scenario != ScenarioArtillery {
		fmt.Fprintf(w, "  per conn = (RSS connected − RSS before) / connections held by that process\n")
	}
}

func printStep(w io.Writer, res *Result, sr StepResult) {
	p := res.Params
	title := "load"
	if res.Scenario == ScenarioMax {
		title = fmt.Sprintf("step %d", sr.Index+1)
	}
	fmt.Fprintln(w)
	switch res.Scenario {
	case ScenarioIdle:
		fmt.Fprintf(w, "hold      %d connections for %.1fs, heartbeat every %s\n", res.Connect.OK, sr.SendS, p.Heartbeat)
	case ScenarioArtillery:
		fmt.Fprintf(w, "%-9s arrivals %v/s for %s each; join, think %s, send %d B, think %s, leave\n", title, p.Arrivals, p.Duration, p.ThinkBefore, p.Size, p.ThinkAfter)
	default:
		fmt.Fprintf(w, "%-9s target %g msgs/s for %.1fs by %d senders, %d B content\n", title, sr.TargetRate, sr.SendS, p.Senders, p.Size)
	}
	if res.Scenario != ScenarioIdle {
		fmt.Fprintf(w, "  sent      %d (%.1f/s)  acked %d (%.1f/s)  failed %d%s  unacked %d\n", sr.Sent, sr.SentPerSec, sr.Acked, sr.AckedPerSec, sr.Failed, counts(sr.Errors), sr.Unacked)
		lostPct := 0.0
		if sr.Expected > 0 {
			lostPct = float64(sr.Lost) / float64(sr.Expected) * 100
		}
		fmt.Fprintf(w, "  delivered %d of %d expected (%.1f/s)  lost %d (%.3f%%)  duplicates %d  out-of-order %d  gaps %d  resync %d\n",
			sr.Delivered, sr.Expected, sr.DeliveredPerSec, sr.Lost, lostPct, sr.Duplicates, sr.OutOfOrder, sr.Gaps, sr.Resyncs)
		if sr.DeliveredUnacked > 0 {
			fmt.Fprintf(w, "  delivered but never acked: %d\n", sr.DeliveredUnacked)
		}
		if sr.NotPersisted > 0 {
			fmt.Fprintf(w, "  acked but not in PostgreSQL by the end of the drain (%.1fs): %d\n", sr.DrainS, sr.NotPersisted)
		}
	} else if len(sr.Errors) > 0 {
		fmt.Fprintf(w, "  errors%s\n", counts(sr.Errors))
	}
	const lw = len("connect (upgrade)")
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintf(tw, "  %-*s\tcount\tp50\tp90\tp99\tp99.9\tmax\tmean\t\n", lw, "latency (ms)")
	row := func(name string, s Summary) {
		if s.Count == 0 {
			fmt.Fprintf(tw, "  %-*s\t0\t-\t-\t-\t-\t-\t-\t\n", lw, name)
			return
		}
		fmt.Fprintf(tw, "  %-*s\t%d\t%.2f\t%.2f\t%.2f\t%.2f\t%.2f\t%.2f\t\n", lw, name, s.Count, s.P50, s.P90, s.P99, s.P999, s.Max, s.Mean)
	}
	if sr.Index == 0 {
		row("connect (upgrade)", res.Connect.Latency)
	}
	if res.Scenario != ScenarioIdle {
		row("send→ack", sr.Ack)
		row("send→deliver", sr.Deliver)
		if sr.NotPersisted >= 0 {
			row("send→persisted", sr.Persist)
		}
	}
	if sr.Ping.Count > 0 || (p.Heartbeat > 0 && res.Scenario != ScenarioArtillery) {
		row("ping→ack", sr.Ping)
	}
	tw.Flush()
	if sr.NotPersisted >= 0 && res.Scenario != ScenarioIdle {
		fmt.Fprintf(w, "  (send→persisted is found by polling PostgreSQL every %s: up to that much coarser)\n", pgPollInterval)
	}
}

// stepLine is the one-line summary printed as each max step ends.
func stepLine(sr StepResult) string {
	held := ""
	if sr.Held != nil {
		held = " held=" + strconv.FormatBool(*sr.Held)
	}
	return fmt.Sprintf("step %d: %g msgs/s → sent %.0f/s, delivered %.0f/s, p99 deliver %.2f ms, lost %d, failed %d, unacked %d%s",
		sr.Index+1, sr.TargetRate, sr.SentPerSec, sr.DeliveredPerSec, sr.Deliver.P99, sr.Lost, sr.Failed, sr.Unacked, held)
}

func sizeRange(r RoomStats) string {
	if r.SizeMin == r.SizeMax {
		return strconv.Itoa(r.SizeMin)
	}
	return fmt.Sprintf("%d-%d", r.SizeMin, r.SizeMax)
}

func counts(m map[string]int64) string {
	if len(m) == 0 {
		return ""
	}
	parts := make([]string, 0, len(m))
	for _, k := range sortedKeys(m) {
		parts = append(parts, fmt.Sprintf("%s×%d", k, m[k]))
	}
	return " (" + strings.Join(parts, ", ") + ")"
}

func bytesStr(n int64) string {
	switch {
	case n <= 0:
		return "-"
	case n < 10<<10:
		return fmt.Sprintf("%d B", n)
	case n < 10<<20:
		return fmt.Sprintf("%.1f KiB", float64(n)/(1<<10))
	case n < 10<<30:
		return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
	default:
		return fmt.Sprintf("%.2f GiB", float64(n)/(1<<30))
	}
}
