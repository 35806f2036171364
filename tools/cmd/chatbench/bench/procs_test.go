package bench

import (
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

func TestParseStatTicks(t *testing.T) {
	t.Parallel()
	// The command name may hold spaces and parentheses: fields are counted
	// from the last ')'.
	line := []byte("1234 (my (odd) proc) S 1 1234 1234 0 -1 4194560 100 0 0 0 250 75 0 0 20 0 5 0 100 1000000 300 18446744073709551615")
	got, err := parseStatTicks(line)
	if err != nil || got != 325 {
		t.Fatalf("got %d, %v; want 325", got, err)
	}
	for _, bad := range []string{"", "1234 no paren", "1 (x) S 1 2"} {
		if _, err := parseStatTicks([]byte(bad)); err == nil {
			t.Errorf("%q: accepted", bad)
		}
	}
}

func TestReadProcSelf(t *testing.T) {
	t.Parallel()
	// Burn a little CPU so the tick count is not trivially zero.
	end := time.Now().Add(30 * time.Millisecond)
	for time.Now().Before(end) {
	}
	ticks, rss, err := readProc(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	if ticks < 0 || rss < 1<<20 {
		t.Errorf("ticks %d rss %d: want ticks >= 0 and RSS of at least 1 MiB", ticks, rss)
	}
	if _, _, err := readProc(1 << 30); err == nil {
		t.Error("a pid that does not exist was read")
	}
}

func TestDiscoverFromPidFiles(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	if err := os.MkdirAll(filepath.Join(dir, "pids"), 0o755); err != nil {
		t.Fatal(err)
	}
	self := strconv.Itoa(os.Getpid())
	write := func(name, body string) {
		if err := os.WriteFile(filepath.Join(dir, "pids", name), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("gateway.pid", self+"\n")
	write("postgres.pid", self+"\n/var/lib/pg\n1700000000\n") // postmaster.pid layout
	write("dead.pid", "999999999\n")
	write("junk.pid", "not a pid\n")
	groups := discoverProcs(dir, nil, nil, false)
	labels := map[string]bool{}
	for _, g := range groups {
		labels[g.Label] = true
		if len(g.find()) == 0 {
			t.Errorf("%s: no pids", g.Label)
		}
	}
	if !labels["gateway"] || !labels["postgres"] || !labels["chatbench"] || labels["dead"] || labels["junk"] || len(groups) != 3 {
		t.Errorf("labels %v", labels)
	}

	// Compare mode: a peer without "stack" gets no pid-file rows; with
	// it, the pid files plus a named process, and a pid labelled by its
	// command name.
	if g := discoverProcs(dir, nil, nil, true); len(g) != 1 || g[0].Label != "chatbench" {
		t.Errorf("noStack: %v", g)
	}
	comm, err := os.ReadFile("/proc/self/comm")
	if err != nil {
		t.Fatal(err)
	}
	mixed := discoverProcs(dir, []string{"stack", "gateway", "no-such-program"}, []int{os.Getpid()}, true)
	var got []string
	for _, g := range mixed {
		got = append(got, g.Label)
	}
	want := []string{"gateway", "postgres", "no-such-program", strings.TrimSpace(string(comm)) + " " + self, "chatbench"}
	if !slices.Equal(got, want) {
		t.Errorf("stack + names + pids: %v, want %v", got, want)
	}

	s := newSampler(groups)
	s.Mark(markBaseline)
	s.Mark(markLoadStart)
	s.Mark(markLoadEnd)
	for _, ps := range s.Stats(markLoadStart, markLoadEnd) {
		if ps.RSSBaseline <= 0 || ps.CPUAvg < 0 {
			t.Errorf("%s: %+v", ps.Label, ps)
		}
	}
}

func TestMachineTicks(t *testing.T) {
	t.Parallel()
	busy, total, err := readMachineTicks()
	if err != nil || busy <= 0 || total <= busy {
		t.Fatalf("busy %d total %d err %v", busy, total, err)
	}
	s := newSampler(nil)
	if got := s.machineBusy("a", "b"); got != -1 {
		t.Errorf("unknown marks: got %f, want -1", got)
	}
	s.Mark("a")
	time.Sleep(200 * time.Millisecond) // /proc/stat counts in 10 ms ticks
	s.Mark("b")
	if got := s.machineBusy("a", "b"); got < 0 || got > 100*float64(runtime.NumCPU())+1 {
		t.Errorf("machine busy %f out of range", got)
	}
}
