package bench

import (
	"context"
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"time"
)

// progress shows the live line: on a terminal it is rewritten in place
// every second; elsewhere (make output piped to a file, CI) a line is
// printed every 5 s so logs stay readable.
type progress struct {
	w     io.Writer
	r     *runner
	tty   bool
	every time.Duration

	mu       sync.Mutex
	lastLen  int
	prevAt   time.Time
	prevSent int64
	prevAck  int64
	prevDel  int64
	prevStep *Step
}

func newProgress(w io.Writer, r *runner) *progress {
	pr := &progress{w: w, r: r, every: 5 * time.Second}
	if f, ok := w.(*os.File); ok {
		if st, err := f.Stat(); err == nil && st.Mode()&os.ModeCharDevice != 0 {
			pr.tty, pr.every = true, time.Second
		}
	}
	return pr
}

// Run updates the line until ctx ends.
func (pr *progress) Run(ctx context.Context) {
	t := time.NewTicker(pr.every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			pr.show(pr.line())
		}
	}
}

// Println prints a permanent line above the live one.
func (pr *progress) Println(s string) {
	pr.mu.Lock()
	defer pr.mu.Unlock()
	pr.clear()
	fmt.Fprintln(pr.w, s)
}

// Finish clears the live line.
func (pr *progress) Finish() {
	pr.mu.Lock()
	defer pr.mu.Unlock()
	pr.clear()
}

func (pr *progress) clear() {
	if pr.tty && pr.lastLen > 0 {
		fmt.Fprintf(pr.w, "\r%s\r", strings.Repeat(" ", pr.lastLen))
		pr.lastLen = 0
	}
}

func (pr *progress) show(s string) {
	pr.mu.Lock()
	defer pr.mu.Unlock()
	if !pr.tty {
		fmt.Fprintln(pr.w, s)
		return
	}
	pad := ""
	if n := pr.lastLen - len(s); n > 0 {
		pad = strings.Repeat(" ", n)
	}
	fmt.Fprintf(pr.w, "\r%s%s", s, pad)
	pr.lastLen = len(s)
}

// line renders the current state: phase (with time left), connections,
// rates since the previous line and the window's p99s.
func (pr *progress) line() string {
	r := pr.r
	now := time.Now()
	phase, _ := r.phase.Load().(string)
	var b strings.Builder
	fmt.Fprintf(&b, "[%s", phase)
	if end := r.phaseEnd.Load(); end > 0 {
		if left := time.Until(time.Unix(0, end)); left > 0 {
			fmt.Fprintf(&b, " %ds left", int(left.Seconds()+0.5))
		}
	}
	b.WriteString("]")
	switch phase {
	case "users":
		fmt.Fprintf(&b, " users %d/%d", r.usersDone.Load(), r.p.Users)
		return b.String()
	case "rooms":
		fmt.Fprintf(&b, " rooms %d/%d", r.roomsDone.Load(), r.p.Rooms)
		return b.String()
	}
	fmt.Fprintf(&b, " conns %d", r.open.Load())
	if r.p.Scenario != ScenarioArtillery {
		fmt.Fprintf(&b, "/%d", r.p.Conns)
	}
	if f := r.connFail.Total(); f > 0 {
		fmt.Fprintf(&b, " (%d failed)", f)
	}
	if js := r.joinsSent.Load(); js > 0 && (phase == "connect" || phase == "join") {
		fmt.Fprintf(&b, " joins %d/%d", r.joinsOK.Load()+r.joinsFailed.Load(), js)
	}
	st := r.cur.Load()
	if st == nil {
		return b.String()
	}
	sent, acked, del := st.sent.Load(), st.acked.Load(), st.delivered.Load()
	if st != pr.prevStep {
		pr.prevStep, pr.prevSent, pr.prevAck, pr.prevDel, pr.prevAt = st, 0, 0, 0, st.started
	}
	if dt := now.Sub(pr.prevAt).Seconds(); dt > 0 && r.p.Scenario != ScenarioIdle {
		fmt.Fprintf(&b, " | sent %.0f/s acked %.0f/s delivered %.0f/s",
			float64(sent-pr.prevSent)/dt, float64(acked-pr.prevAck)/dt, float64(del-pr.prevDel)/dt)
	}
	pr.prevSent, pr.prevAck, pr.prevDel, pr.prevAt = sent, acked, del, now
	if w := st.deliver.TakeWindow(); w.Count > 0 {
		fmt.Fprintf(&b, " | p99 deliver %.1fms", w.P99)
	}
	if w := st.ack.TakeWindow(); w.Count > 0 {
		fmt.Fprintf(&b, " ack %.1fms", w.P99)
	}
	if w := st.ping.TakeWindow(); w.Count > 0 {
		fmt.Fprintf(&b, " ping %.1fms", w.P99)
	}
	if e := st.errors.Total(); e > 0 {
		fmt.Fprintf(&b, " | errors %d", e)
	}
	if c := r.closes.Total(); c > 0 {
		fmt.Fprintf(&b, " | closed by server %d", c)
	}
	if r.lag != nil && r.lag.reads.Load() > 0 {
		fmt.Fprintf(&b, " | persister lag %d", r.lag.last.Load())
	}
	return b.String()
}
