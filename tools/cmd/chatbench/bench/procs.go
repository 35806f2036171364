package bench

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"
)

// userHZ is the unit of utime/stime in /proc/<pid>/stat: USER_HZ, fixed
// at 100 by the Linux user-space ABI whatever the kernel's HZ.
const userHZ = 100

// procGroup is one row of the process table: a single process (a service
// instance found by its pid file, a --pids entry, chatbench itself) or all
// processes of one name (postgres and its backends).
type procGroup struct {
	Label string
	// find lists the group's pids now; groups are re-resolved every sample
	// because postgres backends come and go.
	find func() []int
	// Addr is the instance's HTTP_ADDR (from its environment), used to match
	// gateway URLs to their process; "" when unknown.
	Addr string
}

// procSample is a group's cumulative CPU ticks and current RSS.
type procSample struct {
	at    time.Time
	ticks int64
	rss   int64
	procs int
}

// ProcStats is one process row of the report. CPU is % of one core.
type ProcStats struct {
	Label string `json:"label"`
	// Procs is how many processes the row sums (postgres backends).
	Procs int `json:"procs"`
	// CPUAvg is the average over the load phase (send, or the idle hold).
	CPUAvg float64 `json:"cpuAvgPct"`
	// CPUMax is the highest one-second sample during the run.
	CPUMax float64 `json:"cpuMaxPct"`
	// RSS at the marks, and the highest sample, in bytes.
	RSSBaseline  int64 `json:"rssBaselineBytes"`
	RSSConnected int64 `json:"rssConnectedBytes"`
	RSSMax       int64 `json:"rssMaxBytes"`
	RSSEnd       int64 `json:"rssEndBytes"`
	// Conns is how many bench connections this process served (gateways,
	// chatbench itself); PerConn = (RSSConnected - RSSBaseline) / Conns.
	Conns   int     `json:"conns,omitempty"`
	PerConn float64 `json:"rssPerConnBytes,omitempty"`
	// Addr is the process's HTTP_ADDR when known.
	Addr string `json:"addr,omitempty"`
}

// sampler reads /proc once a second for every group and at named marks.
type sampler struct {
	groups []procGroup
	mu     sync.Mutex
	marks  map[string][]procSample // mark name → sample per group
	// machine is /proc/stat's busy and total ticks at each mark: what all
	// processes used, including the ones not in the table (other work on
	// a shared machine).
	machine map[string][2]int64
	cpuMax  []float64
	rssMax  []int64
	last    []procSample
}

func newSampler(groups []procGroup) *sampler {
	return &sampler{
		groups: groups, marks: map[string][]procSample{}, machine: map[string][2]int64{},
		cpuMax: make([]float64, len(groups)), rssMax: make([]int64, len(groups)),
	}
}

func (s *sampler) sampleAll() []procSample {
	out := make([]procSample, len(s.groups))
	for i, g := range s.groups {
		out[i] = readGroup(g.find())
	}
	return out
}

// Mark records a sample of every group under name, now.
func (s *sampler) Mark(name string) {
	smp := s.sampleAll()
	busy, total, _ := readMachineTicks()
	s.mu.Lock()
	s.marks[name] = smp
	s.machine[name] = [2]int64{busy, total}
	s.observe(smp)
	s.mu.Unlock()
}

// observe updates the maxima from a new sample; s.mu is held.
func (s *sampler) observe(smp []procSample) {
	for i, cur := range smp {
		s.rssMax[i] = max(s.rssMax[i], cur.rss)
		if s.last != nil {
			prev := s.last[i]
			if dt := cur.at.Sub(prev.at).Seconds(); dt > 0.5 && cur.ticks >= prev.ticks {
				s.cpuMax[i] = max(s.cpuMax[i], float64(cur.ticks-prev.ticks)/userHZ/dt*100)
			}
		}
	}
	s.last = smp
}

// Run samples every second until ctx ends.
func (s *sampler) Run(ctx context.Context) {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			smp := s.sampleAll()
			s.mu.Lock()
			s.observe(smp)
			s.mu.Unlock()
		}
	}
}

// CPUBetween is each group's average CPU % of one core between two marks.
func (s *sampler) cpuBetween(from, to string) []float64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	a, b := s.marks[from], s.marks[to]
	out := make([]float64, len(s.groups))
	if a == nil || b == nil {
		return out
	}
	for i := range out {
		if dt := b[i].at.Sub(a[i].at).Seconds(); dt > 0 && b[i].ticks >= a[i].ticks {
			out[i] = float64(b[i].ticks-a[i].ticks) / userHZ / dt * 100
		}
	}
	return out
}

// machineBusy is the whole machine's average CPU between two marks, in %
// of one core (so 200% is two busy cores); -1 when unknown.
func (s *sampler) machineBusy(from, to string) float64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	a, okA := s.machine[from]
	b, okB := s.machine[to]
	if !okA || !okB || b[1] <= a[1] {
		return -1
	}
	return float64(b[0]-a[0]) / float64(b[1]-a[1]) * 100 * float64(runtime.NumCPU())
}

// readMachineTicks sums /proc/stat's first line: busy (everything but idle
// and iowait) and total ticks over all CPUs.
func readMachineTicks() (busy, total int64, err error) {
	raw, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0, 0, fmt.Errorf("read /proc/stat: %w", err)
	}
	line, _, _ := bytes.Cut(raw, []byte{'\n'})
	f := strings.Fields(string(line))
	if len(f) < 5 || f[0] != "cpu" {
		return 0, 0, errors.New("malformed /proc/stat")
	}
	// user nice system idle iowait irq softirq steal (guest is in user).
	for i, v := range f[1:min(len(f), 9)] {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil {
			return 0, 0, errors.New("malformed /proc/stat")
		}
		total += n
		if i != 3 && i != 4 {
			busy += n
		}
	}
	return busy, total, nil
}

// Stats builds the report rows; load is the pair of marks averaged over.
func (s *sampler) Stats(loadFrom, loadTo string) []ProcStats {
	cpu := s.cpuBetween(loadFrom, loadTo)
	s.mu.Lock()
	defer s.mu.Unlock()
	rss := func(mark string, i int) int64 {
		if m := s.marks[mark]; m != nil {
			return m[i].rss
		}
		return 0
	}
	out := make([]ProcStats, len(s.groups))
	for i, g := range s.groups {
		procs := 0
		if s.last != nil {
			procs = s.last[i].procs
		}
		out[i] = ProcStats{
			Label: g.Label, Addr: g.Addr, Procs: procs, CPUAvg: cpu[i], CPUMax: s.cpuMax[i],
			RSSBaseline: rss(markBaseline, i), RSSConnected: rss(markConnected, i),
			RSSMax: s.rssMax[i], RSSEnd: rss(markEnd, i),
		}
	}
	return out
}

// Sampler marks.
const (
	markBaseline  = "baseline"
	markConnected = "connected"
	markLoadStart = "load-start"
	markLoadEnd   = "load-end"
	markEnd       = "end"
)

// readGroup sums CPU ticks and RSS over pids (vanished ones are skipped).
func readGroup(pids []int) procSample {
	smp := procSample{at: time.Now()}
	for _, pid := range pids {
		ticks, rss, err := readProc(pid)
		if err != nil {
			continue
		}
		smp.ticks += ticks
		smp.rss += rss
		smp.procs++
	}
	return smp
}

var pageSize = int64(os.Getpagesize())

// readProc returns utime+stime (ticks) and RSS (bytes) of pid.
func readProc(pid int) (int64, int64, error) {
	stat, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0, 0, fmt.Errorf("read stat: %w", err)
	}
	ticks, err := parseStatTicks(stat)
	if err != nil {
		return 0, 0, fmt.Errorf("pid %d: %w", pid, err)
	}
	statm, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/statm")
	if err != nil {
		return 0, 0, fmt.Errorf("read statm: %w", err)
	}
	f := strings.Fields(string(statm))
	if len(f) < 2 {
		return 0, 0, errors.New("short statm")
	}
	pages, err := strconv.ParseInt(f[1], 10, 64)
	if err != nil {
		return 0, 0, fmt.Errorf("statm: %w", err)
	}
	return ticks, pages * pageSize, nil
}

// parseStatTicks reads utime and stime (fields 14 and 15) from a
// /proc/<pid>/stat line; the command name (field 2) may contain spaces and
// parentheses, so fields are counted from the last ')'.
func parseStatTicks(stat []byte) (int64, error) {
	i := bytes.LastIndexByte(stat, ')')
	if i < 0 {
		return 0, errors.New("malformed stat")
	}
	f := strings.Fields(string(stat[i+1:]))
	// f[0] is field 3 (state); utime is field 14 → f[11], stime f[12].
	if len(f) < 13 {
		return 0, errors.New("short stat")
	}
	u, err1 := strconv.ParseInt(f[11], 10, 64)
	s, err2 := strconv.ParseInt(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return 0, errors.New("malformed stat times")
	}
	return u + s, nil
}

// procsStack is the --procs name of the processes with pid files.
const procsStack = "stack"

// procInfo is what discovery needs to know about a process.
type procInfo struct {
	pid, ppid int
	comm      string
}

func listProcs() []procInfo {
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	var out []procInfo
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		stat, err := os.ReadFile("/proc/" + e.Name() + "/stat")
		if err != nil {
			continue
		}
		open, close := bytes.IndexByte(stat, '('), bytes.LastIndexByte(stat, ')')
		if open < 0 || close < open {
			continue
		}
		f := strings.Fields(string(stat[close+1:]))
		if len(f) < 2 {
			continue
		}
		ppid, _ := strconv.Atoi(f[1])
		out = append(out, procInfo{pid: pid, ppid: ppid, comm: string(stat[open+1 : close])})
	}
	return out
}

func alive(pid int) bool {
	_, err := os.Stat("/proc/" + strconv.Itoa(pid))
	return err == nil
}

// procEnv reads one variable of pid's initial environment ("" if unknown).
func procEnv(pid int, key string) string {
	raw, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/environ")
	if err != nil {
		return ""
	}
	for _, kv := range bytes.Split(raw, []byte{0}) {
		if k, v, ok := bytes.Cut(kv, []byte{'='}); ok && string(k) == key {
			return string(v)
		}
	}
	return ""
}

func fixed(pids ...int) func() []int { return func() []int { return pids } }

// withChildren is pid and its live children (postgres: the postmaster and
// its backends and workers).
func withChildren(pid int) func() []int {
	return func() []int {
		out := []int{pid}
		for _, p := range listProcs() {
			if p.ppid == pid {
				out = append(out, p.pid)
			}
		}
		return out
	}
}

func byComm(comm string) func() []int {
	return func() []int {
		var out []int
		for _, p := range listProcs() {
			if p.comm == comm {
				out = append(out, p.pid)
			}
		}
		return out
	}
}

// discoverProcs builds the process table: by default every live process
// with a pid file in <dataDir>/pids (what scripts/run.sh and deps.sh
// started; postgres with its children); with names, every process whose
// command name matches (one row per INSTANCE_ID when set, so the two gateway
// instances stay apart); plus pids; plus chatbench itself.
//
// The name "stack" stands for the pid files, so names can add processes to
// them ("stack,redis-server"); a name whose row the pid files already gave
// is not added twice.
//
// noStack leaves the pid files out unless "stack" is named (compare mode:
// a peer's row must not carry relay's idle processes).
func discoverProcs(dataDir string, names []string, pids []int, noStack bool) []procGroup {
	var groups []procGroup
	stack := (len(names) == 0 && !noStack) || slices.Contains(names, procsStack)
	names = slices.DeleteFunc(slices.Clone(names), func(n string) bool { return n == procsStack })
	if stack {
		files, _ := filepath.Glob(filepath.Join(dataDir, "pids", "*.pid"))
		sort.Strings(files)
		for _, f := range files {
			raw, err := os.ReadFile(f)
			if err != nil {
				continue
			}
			// postgres.pid is postmaster.pid: the pid is its first line.
			first, _, _ := strings.Cut(string(raw), "\n")
			pid, err := strconv.Atoi(strings.TrimSpace(first))
			if err != nil || !alive(pid) {
				continue
			}
			label := strings.TrimSuffix(filepath.Base(f), ".pid")
			g := procGroup{Label: label, find: fixed(pid), Addr: procEnv(pid, "HTTP_ADDR")}
			if label == "postgres" {
				g.find = withChildren(pid)
			}
			groups = append(groups, g)
		}
	}
	for _, name := range names {
		if slices.ContainsFunc(groups, func(g procGroup) bool { return g.Label == name }) {
			continue
		}
		byInstance := map[string][]int{}
		for _, p := range listProcs() {
			if p.comm != name {
				continue
			}
			inst := procEnv(p.pid, "INSTANCE_ID")
			byInstance[inst] = append(byInstance[inst], p.pid)
		}
		if len(byInstance) <= 1 {
			var addr string
			for _, ps := range byInstance {
				if len(ps) == 1 {
					addr = procEnv(ps[0], "HTTP_ADDR")
				}
			}
			groups = append(groups, procGroup{Label: name, find: byComm(name), Addr: addr})
			continue
		}
		insts := make([]string, 0, len(byInstance))
		for k := range byInstance {
			insts = append(insts, k)
		}
		sort.Strings(insts)
		for _, inst := range insts {
			ps := byInstance[inst]
			label := name + "[" + inst + "]"
			if inst != "" {
				label = inst
			}
			var addr string
			if len(ps) == 1 {
				addr = procEnv(ps[0], "HTTP_ADDR")
			}
			groups = append(groups, procGroup{Label: label, find: fixed(ps...), Addr: addr})
		}
	}
	comms := map[int]string{}
	if len(pids) > 0 {
		for _, p := range listProcs() {
			comms[p.pid] = p.comm
		}
	}
	for _, pid := range pids {
		g := procGroup{Label: "pid " + strconv.Itoa(pid), find: fixed(pid), Addr: procEnv(pid, "HTTP_ADDR")}
		if comm := comms[pid]; comm != "" {
			g.Label = comm + " " + strconv.Itoa(pid)
			if comm == "postgres" {
				g.find = withChildren(pid) // the postmaster: its backends do the work
			}
		}
		groups = append(groups, g)
	}
	groups = append(groups, procGroup{Label: "chatbench", find: fixed(os.Getpid())})
	return groups
}
