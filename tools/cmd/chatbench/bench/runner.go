package bench

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/fasthttp/websocket"
)

// Phase timeouts: every phase but sending is bounded on its own, so a run
// ends by itself even when the stack misbehaves.
const (
	joinTimeout    = 60 * time.Second
	connectSlack   = 60 * time.Second // on top of conns/ramp
	closeTimeout   = 15 * time.Second
	vuJoinTimeout  = 10 * time.Second
	vuLinger       = 500 * time.Millisecond
	preflightLimit = 5 * time.Second
	// dialParallel bounds handshakes in flight while ramping.
	dialParallel = 256
	// deliverShards spreads the hot delivery histogram's lock.
	deliverShards = 16
	// autoLocalAddrsAbove: more loopback connections than this are spread
	// over 127.0.0.1-8, so one source address never runs out of ports.
	autoLocalAddrsAbove = 5000
)

// runner is one run's state, shared by the connections.
type runner struct {
	p          Params
	plan       *Plan
	runID      string
	api        *apiClient
	accs       []account
	roomIDs    []string
	joined     []atomic.Int32 // connections joined per room
	content    string
	dialer     *websocket.Dialer
	tr         transport
	localAddrs []net.IP

	steps []atomic.Pointer[Step]
	cur   atomic.Pointer[Step]

	open        atomic.Int64
	gwConns     []atomic.Int64
	connectLat  *Latency
	connFail    codeCounts
	closes      codeCounts
	undecodable atomic.Int64
	dialed      atomic.Int64

	joinsSent, joinsOK, joinsFailed atomic.Int64
	joinFail                        codeCounts

	usersDone atomic.Int64
	roomsDone atomic.Int64
	vusDone   atomic.Int64

	phase    atomic.Value // string
	phaseEnd atomic.Int64 // unix nanos the current phase is expected to end; 0 unknown

	pg      *persistPoller
	lag     *lagPoller
	sampler *sampler
	pr      *progress
}

func (r *runner) step(i int) *Step {
	if i < 0 || i >= len(r.steps) {
		return nil
	}
	return r.steps[i].Load()
}

func (r *runner) setPhase(name string, expectedEnd time.Time) {
	r.phase.Store(name)
	if expectedEnd.IsZero() {
		r.phaseEnd.Store(0)
	} else {
		r.phaseEnd.Store(expectedEnd.UnixNano())
	}
}

// Run executes the scenario p against a running stack, showing a live
// progress line on progress, and returns the results. A *UsageError means
// the parameters cannot be run (exit 2); other errors mean the run failed.
// When ctx is cancelled mid-run, what was measured so far is returned with
// ctx's error.
func Run(ctx context.Context, p Params, progress io.Writer) (*Result, error) {
	plan, err := NewPlan(p)
	if err != nil {
		return nil, err
	}
	if p.DataDir == "" {
		p.DataDir = defaultDataDir()
	}
	r := &runner{
		p: p, plan: plan, runID: newRunID(), api: newAPIClient(p.API),
		content:    makeContent(p.Size),
		connectLat: NewLatency(4),
		gwConns:    make([]atomic.Int64, len(p.Gateways)),
		tr:         newTransport(p.Protocol),
	}
	r.phase.Store("start")
	rates := []float64{p.Rate}
	if p.Scenario == ScenarioMax {
		rates = p.Steps
	}
	r.steps = make([]atomic.Pointer[Step], len(rates))

	res := &Result{
		Tool: "chatbench", RunID: r.runID, Scenario: p.Scenario, Started: time.Now().UTC(),
		Machine: readMachine(), Params: p,
	}
	if p.GatewaysDefaulted {
		res.Note = "connected directly to the gateway instance " + p.Gateways[0] + ", bypassing devproxy"
		if len(p.Gateways) > 1 {
			res.Note = "connected directly to the gateway instances " + strings.Join(p.Gateways, ", ") +
				" (round robin), bypassing devproxy"
		}
	}

	fds := p.Conns
	if p.Scenario == ScenarioArtillery {
		// Virtual users overlap for their lifetime at the highest arrival rate.
		life := (p.ThinkBefore + p.ThinkAfter + vuLinger + vuJoinTimeout).Seconds()
		fds = int(slices.Max(p.Arrivals) * life)
	}
	if err := raiseFileLimit(fds + 512); err != nil {
		return nil, err
	}
	if err := r.setupDialer(); err != nil {
		return nil, err
	}
	if err := r.preflight(ctx); err != nil {
		return nil, err
	}

	runCtx, stopBackground := context.WithCancel(ctx)
	defer stopBackground()
	var bg sync.WaitGroup
	r.sampler = newSampler(discoverProcs(p.DataDir, p.Procs, p.Pids, p.NoStack))
	bg.Go(func() { r.sampler.Run(runCtx) })
	if p.Persister != "" {
		r.lag = newLagPoller(p.Persister)
		bg.Go(func() { r.lag.Run(runCtx) })
	}
	if p.PG != "" {
		if r.pg, err = newPersistPoller(ctx, p.PG); err != nil {
			res.Warnings = append(res.Warnings, "send→persisted not measured: "+err.Error())
			r.pg = nil
		} else {
			defer r.pg.Close()
			bg.Go(func() { r.pg.Run(runCtx) })
		}
	}
	r.pr = newProgress(progress, r)
	bg.Go(func() { r.pr.Run(runCtx) })
	defer func() {
		stopBackground()
		bg.Wait()
		r.pr.Finish()
	}()

	runErr := r.run(ctx, res)
	r.sampler.Mark(markEnd)
	r.finish(res)
	return res, runErr
}

func (r *runner) run(ctx context.Context, res *Result) error {
	p := r.p
	// Setup: accounts and rooms, bounded together.
	setupCtx, cancel := context.WithTimeout(ctx, p.SetupTimeout)
	defer cancel()
	r.setPhase("users", time.Time{})
	accs, us, err := ensureUsers(setupCtx, r.api, loadTokenCache(p.DataDir), p.UserPrefix, p.Users, &r.usersDone)
	res.Users = us
	if err != nil {
		return fmt.Errorf("users: %w", setupErr(err, setupCtx, p.SetupTimeout))
	}
	r.accs = accs
	r.setPhase("rooms", time.Time{})
	if err := r.createRooms(setupCtx, res); err != nil {
		return fmt.Errorf("rooms: %w", setupErr(err, setupCtx, p.SetupTimeout))
	}
	cancel()

	r.sampler.Mark(markBaseline)
	if p.Scenario == ScenarioArtillery {
		return r.runArtillery(ctx, res)
	}
	conns, err := r.connectAll(ctx, res)
	defer r.closeAll(conns)
	if err != nil {
		return err
	}
	hbCtx, stopHB := context.WithCancel(ctx)
	defer stopHB()
	go r.heartbeats(hbCtx, conns)

	if p.Scenario == ScenarioIdle {
		st := newStep(0, 0, p.Duration, nil, 1)
		r.steps[0].Store(st)
		r.cur.Store(st)
		r.sampler.Mark(markLoadStart)
		st.started = time.Now()
		r.setPhase("hold", st.started.Add(p.Duration))
		sleepCtx(ctx, p.Duration)
		st.sendEnd, st.drained = time.Now(), time.Now()
		r.sampler.Mark(markLoadEnd)
		res.Steps = append(res.Steps, r.stepResult(st))
		return ctx.Err()
	}

	rates := []float64{p.Rate}
	if p.Scenario == ScenarioMax {
		rates = p.Steps
		res.Max = &MaxResult{ThresholdMs: ms(p.MaxP99)}
	}
	for i, rate := range rates {
		st := r.sendStep(ctx, i, rate, conns)
		sr := r.stepResult(st)
		if res.Max != nil {
			held := sr.Deliver.P99 < res.Max.ThresholdMs && sr.Lost == 0 && sr.Failed == 0 && sr.Unacked == 0
			sr.Held = &held
			switch {
			case held:
				res.Max.HeldRate = rate
			case sr.Deliver.P99 >= res.Max.ThresholdMs:
				res.Max.Reason = fmt.Sprintf("p99 send→delivery %.1f ms ≥ %.0f ms at %g msgs/s", sr.Deliver.P99, res.Max.ThresholdMs, rate)
			default:
				res.Max.Reason = fmt.Sprintf("at %g msgs/s: %d lost, %d failed, %d unacked", rate, sr.Lost, sr.Failed, sr.Unacked)
			}
		}
		res.Steps = append(res.Steps, sr)
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if res.Max != nil {
			r.pr.Println(stepLine(sr))
		}
		if sr.Held != nil && !*sr.Held {
			break
		}
	}
	if res.Max != nil && res.Max.Reason == "" {
		res.Max.Reason = "every step held; try higher --steps"
	}
	return nil
}

func setupErr(err error, ctx context.Context, d time.Duration) error {
	if errors.Is(ctx.Err(), context.DeadlineExceeded) {
		return fmt.Errorf("not done within --setup-timeout %s: %w", d, err)
	}
	return err
}

// createRooms makes the plan's rooms ready: reused from an earlier run of
// the same accounts and rooms when still intact, made otherwise (rooms.go).
func (r *runner) createRooms(ctx context.Context, res *Result) error {
	start := time.Now()
	r.joined = make([]atomic.Int32, len(r.plan.RoomMembers))
	var st roomSetup
	ids, err := ensureRooms(ctx, r.api, loadRoomCache(r.p.DataDir), r.accs, r.plan.RoomMembers,
		func(i int) string { return roomName(r.p.Scenario, r.runID, i) }, &r.roomsDone, &st)
	r.roomIDs = ids
	res.Rooms = RoomStats{Count: int(r.roomsDone.Load()), Reused: int(st.reused.Load()), Created: int(st.created.Load()),
		Left: int(st.left.Load()), DurationS: time.Since(start).Seconds()}
	for i, m := range r.plan.RoomMembers {
		if i == 0 || len(m) < res.Rooms.SizeMin {
			res.Rooms.SizeMin = len(m)
		}
		res.Rooms.SizeMax = max(res.Rooms.SizeMax, len(m))
		res.Rooms.Members += len(m)
	}
	return err
}

// connectAll opens p.Conns connections at p.Ramp per second (connection i
// is user i mod Users on gateway i mod len(Gateways)), each joining its
// user's rooms, and waits for the join answers. Failed connects are counted
// and the run goes on with the others.
func (r *runner) connectAll(ctx context.Context, res *Result) ([]*conn, error) {
	p := r.p
	conns := make([]*conn, p.Conns)
	rampDur := time.Duration(float64(p.Conns) / p.Ramp * float64(time.Second))
	cctx, cancel := context.WithTimeout(ctx, rampDur+connectSlack)
	defer cancel()
	start := time.Now()
	r.setPhase("connect", start.Add(rampDur))
	sem := make(chan struct{}, dialParallel)
	var wg sync.WaitGroup
	for i := range p.Conns {
		at := start.Add(time.Duration(float64(i) / p.Ramp * float64(time.Second)))
		if !sleepUntil(cctx, at) {
			break
		}
		select {
		case sem <- struct{}{}:
		case <-cctx.Done():
		}
		if cctx.Err() != nil {
			break
		}
		r.dialed.Add(1)
		wg.Go(func() {
			defer func() { <-sem }()
			user := i % p.Users
			c, err := r.dial(cctx, i, user, i%len(p.Gateways))
			if err != nil {
				return
			}
			conns[i] = c
			for _, room := range r.plan.UserRooms[user] {
				if c.join(room) != nil {
					break
				}
			}
		})
	}
	wg.Wait()
	res.Connect.DurationS = time.Since(start).Seconds()

	r.setPhase("join", time.Time{})
	deadline := time.Now().Add(joinTimeout)
	for r.joinsOK.Load()+r.joinsFailed.Load() < r.joinsSent.Load() && time.Now().Before(deadline) {
		if !sleepCtx(ctx, 20*time.Millisecond) {
			break
		}
	}
	r.sampler.Mark(markConnected)
	res.Connect.PerGateway = make([]int64, len(r.gwConns))
	for i := range r.gwConns {
		res.Connect.PerGateway[i] = r.gwConns[i].Load()
	}
	if ctx.Err() != nil {
		return conns, ctx.Err()
	}
	if r.open.Load() == 0 {
		return conns, fmt.Errorf("no connection could be opened (%v): is the gateway running at %s?", r.connFail.Snapshot(), strings.Join(p.Gateways, ", "))
	}
	return conns, nil
}

// closeAll closes every connection, in parallel, within closeTimeout.
func (r *runner) closeAll(conns []*conn) {
	r.setPhase("close", time.Time{})
	var wg sync.WaitGroup
	sem := make(chan struct{}, 512)
	done := make(chan struct{})
	go func() {
		for _, c := range conns {
			if c == nil {
				continue
			}
			sem <- struct{}{}
			wg.Go(func() {
				defer func() { <-sem }()
				c.close()
			})
		}
		wg.Wait()
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(closeTimeout):
	}
}

// heartbeats sends each connection an application ping every Heartbeat,
// staggered so they do not all come at once.
func (r *runner) heartbeats(ctx context.Context, conns []*conn) {
	if r.p.Heartbeat <= 0 || len(conns) == 0 {
		return
	}
	per := r.p.Heartbeat / time.Duration(len(conns))
	if per <= 0 {
		per = 1
	}
	start := time.Now()
	t := time.NewTicker(10 * time.Millisecond)
	defer t.Stop()
	next := 0
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		due := int(time.Since(start) / per)
		for ; next < due; next++ {
			if c := conns[next%len(conns)]; c != nil && !c.bye.Load() {
				c.ping()
			}
		}
	}
}

// sendStep runs one send phase at rate, then drains it.
func (r *runner) sendStep(ctx context.Context, index int, rate float64, conns []*conn) *Step {
	p := r.p
	senders := r.plan.Senders
	interval := SenderInterval(rate, len(senders))
	perSender := make([]int, len(senders))
	offsets := make([]time.Duration, len(senders))
	for k := range senders {
		offsets[k] = interval * time.Duration(k) / time.Duration(len(senders))
		perSender[k] = SendsPerSender(p.Duration, interval, offsets[k])
	}
	st := newStep(index, rate, p.Duration, perSender, deliverShards)
	r.steps[index].Store(st)
	r.cur.Store(st)

	start := time.Now().Add(50 * time.Millisecond)
	st.started = start
	r.sampler.Mark(markLoadStart + "#" + strconv.Itoa(index))
	if index == 0 {
		r.sampler.Mark(markLoadStart)
	}
	r.setPhase(fmt.Sprintf("send %g/s", rate), start.Add(p.Duration))
	var wg sync.WaitGroup
	for k, user := range senders {
		c := conns[user] // a user's first connection has the user's index
		if c == nil {
			st.errors.Add("SENDER_NOT_CONNECTED")
			continue
		}
		rooms := r.plan.UserRooms[user]
		wg.Go(func() {
			t := time.NewTimer(0)
			defer t.Stop()
			<-t.C
			for n := range perSender[k] {
				at := start.Add(offsets[k] + time.Duration(n)*interval)
				if d := time.Until(at); d > 0 {
					t.Reset(d)
					select {
					case <-ctx.Done():
						return
					case <-t.C:
					}
				}
				if c.bye.Load() {
					return
				}
				c.send(st, k, n, rooms[(n+k)%len(rooms)], r.content)
			}
		})
	}
	wg.Wait()
	st.sendEnd = time.Now()
	r.sampler.Mark(markLoadEnd + "#" + strconv.Itoa(index))
	r.sampler.Mark(markLoadEnd)
	r.drain(ctx, st)
	return st
}

// drain waits until the step is settled or p.Drain passed.
func (r *runner) drain(ctx context.Context, st *Step) {
	r.setPhase("drain", time.Now().Add(r.p.Drain))
	deadline := time.Now().Add(r.p.Drain)
	for time.Now().Before(deadline) {
		pending := 0
		if r.pg != nil {
			pending = r.pg.Pending()
		}
		if st.settled(pending) || !sleepCtx(ctx, 20*time.Millisecond) {
			break
		}
	}
	st.drained = time.Now()
}

// runArtillery replays the seed's Artillery scenario: virtual users arrive
// at each phase's rate; each connects, joins one of its rooms, thinks,
// sends one message, thinks, and leaves.
func (r *runner) runArtillery(ctx context.Context, res *Result) error {
	p := r.p
	total := 0
	for _, a := range p.Arrivals {
		total += int(a * p.Duration.Seconds())
	}
	ones := make([]int, total)
	for i := range ones {
		ones[i] = 1
	}
	st := newStep(0, 0, p.Duration*time.Duration(len(p.Arrivals)), ones, deliverShards)
	r.steps[0].Store(st)
	r.cur.Store(st)
	r.sampler.Mark(markLoadStart)
	st.started = time.Now()
	var wg sync.WaitGroup
	vu := 0
	phaseStart := st.started
	for ph, rate := range p.Arrivals {
		n := int(rate * p.Duration.Seconds())
		r.setPhase(fmt.Sprintf("arrivals %g/s (phase %d/%d)", rate, ph+1, len(p.Arrivals)), phaseStart.Add(p.Duration))
		for j := range n {
			if !sleepUntil(ctx, phaseStart.Add(time.Duration(float64(j)/rate*float64(time.Second)))) {
				break
			}
			id := vu
			wg.Go(func() { r.virtualUser(ctx, st, id) })
			vu++
		}
		phaseStart = phaseStart.Add(p.Duration)
		if ctx.Err() != nil {
			break
		}
	}
	r.setPhase("finishing virtual users", time.Now().Add(p.ThinkBefore+p.ThinkAfter+vuLinger))
	wg.Wait()
	res.Connect.DurationS = time.Since(st.started).Seconds()
	st.sendEnd = time.Now()
	r.sampler.Mark(markLoadEnd)
	r.drain(ctx, st)
	res.Steps = append(res.Steps, r.stepResult(st))
	return ctx.Err()
}

// virtualUser is one artillery user: connect, join, think, send, think, leave.
func (r *runner) virtualUser(ctx context.Context, st *Step, vu int) {
	defer r.vusDone.Add(1)
	user := vu % r.p.Users
	rooms := r.plan.UserRooms[user]
	room := rooms[(vu/r.p.Users)%len(rooms)]
	r.dialed.Add(1)
	c, err := r.dialWithJoins(ctx, vu, user, vu%len(r.p.Gateways))
	if err != nil {
		return
	}
	defer c.close()
	// Leave the room's expected recipients before closing, whichever way
	// the user ends (a join acked after its timeout counts too).
	defer func() {
		if c.joinedN.Load() > 0 {
			r.joined[room].Add(-1)
		}
	}()
	if c.join(room) != nil {
		return
	}
	select {
	case jr := <-c.joins:
		if !jr.ok {
			return
		}
	case <-time.After(vuJoinTimeout):
		r.joinFail.Add("timeout")
		return
	case <-ctx.Done():
		return
	}
	if !sleepCtx(ctx, r.p.ThinkBefore) {
		return
	}
	c.send(st, vu, 0, room, r.content)
	if !sleepCtx(ctx, r.p.ThinkAfter) {
		return
	}
	// Stop being owed messages, then keep reading a moment so the ones
	// already on their way still arrive.
	r.joined[room].Add(-1)
	c.joinedN.Add(-1)
	sleepCtx(ctx, vuLinger)
}

// dialWithJoins is dial for a caller that waits on its join answers.
func (r *runner) dialWithJoins(ctx context.Context, idx, user, gw int) (*conn, error) {
	dctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	return r.dialOpts(dctx, idx, user, gw, true)
}

func (r *runner) setupDialer() error {
	p := r.p
	r.dialer = &websocket.Dialer{
		HandshakeTimeout: 10 * time.Second,
		// Frames are a few hundred bytes; small buffers keep 10,000
		// connections cheap for the tool, and write buffers are shared.
		ReadBufferSize:  1024,
		WriteBufferSize: 1024,
		WriteBufferPool: &sync.Pool{},
		NetDialContext:  (&net.Dialer{Timeout: 10 * time.Second}).DialContext,
	}
	for _, a := range p.LocalAddrs {
		r.localAddrs = append(r.localAddrs, net.ParseIP(a))
	}
	if len(r.localAddrs) == 0 && p.Conns/len(p.Gateways) > autoLocalAddrsAbove && allLoopback(p.Gateways) {
		for i := 1; i <= 8; i++ {
			r.localAddrs = append(r.localAddrs, net.IPv4(127, 0, 0, byte(i)))
		}
	}
	return nil
}

func allLoopback(urls []string) bool {
	for _, s := range urls {
		u, err := url.Parse(s)
		if err != nil {
			return false
		}
		ip := net.ParseIP(u.Hostname())
		if u.Hostname() != "localhost" && (ip == nil || !ip.IsLoopback()) {
			return false
		}
	}
	return true
}

// preflight checks that the api and every gateway answer /health, so a
// stack that is not running fails in a second with a clear message.
func (r *runner) preflight(ctx context.Context) error {
	cl := &http.Client{Timeout: preflightLimit}
	check := func(name, base string) error {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, base+"/health", nil)
		if err != nil {
			return fmt.Errorf("%s: %w", name, err)
		}
		resp, err := cl.Do(req)
		if err != nil {
			return fmt.Errorf("%s at %s is not reachable (%v): is the stack running? `make bench` starts it, or `scripts/run.sh --detach`", name, base, err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("%s at %s: GET /health answered %d", name, base, resp.StatusCode)
		}
		return nil
	}
	if err := check("api", r.p.API); err != nil {
		return err
	}
	for _, g := range r.p.Gateways {
		u, err := url.Parse(g)
		if err != nil {
			return fmt.Errorf("gateway %q: %w", g, err)
		}
		scheme := "http"
		if u.Scheme == "wss" {
			scheme = "https"
		}
		if err := check("gateway", scheme+"://"+u.Host); err != nil {
			return err
		}
	}
	return nil
}

// raiseFileLimit lifts RLIMIT_NOFILE to at least need (one descriptor per
// connection plus slack), raising the hard limit too when allowed.
func raiseFileLimit(need int) error {
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		return fmt.Errorf("read the open-files limit: %w", err)
	}
	if lim.Cur >= uint64(need) {
		return nil
	}
	want := lim
	want.Cur = max(uint64(need), min(lim.Max, uint64(need)*2))
	if want.Cur > lim.Max {
		want.Max = want.Cur
	}
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &want); err != nil {
		want = lim
		want.Cur = lim.Max
		if lim.Max < uint64(need) || syscall.Setrlimit(syscall.RLIMIT_NOFILE, &want) != nil {
			return fmt.Errorf("need %d open files but the limit is %d (hard %d) and cannot be raised: %w (run `ulimit -n %d` first)", need, lim.Cur, lim.Max, err, need)
		}
	}
	return nil
}

func newRunID() string {
	b := make([]byte, 4)
	_, _ = rand.Read(b) // crypto/rand does not fail on Linux
	return hex.EncodeToString(b)
}

// makeContent is size bytes of readable text (never only whitespace).
func makeContent(size int) string {
	const text = "chatbench load message: the quick brown fox jumps over the lazy dog. "
	var b strings.Builder
	b.Grow(size)
	for b.Len() < size {
		b.WriteString(text[:min(len(text), size-b.Len())])
	}
	return b.String()
}

// defaultDataDir is <repo>/.data: the directory holding go.work, found
// from RELAY_ROOT or by walking up from the working directory.
func defaultDataDir() string {
	if root := os.Getenv("RELAY_ROOT"); root != "" {
		return filepath.Join(root, ".data")
	}
	dir, err := os.Getwd()
	if err != nil {
		return ".data"
	}
	for d := dir; ; d = filepath.Dir(d) {
		if _, err := os.Stat(filepath.Join(d, "go.work")); err == nil {
			return filepath.Join(d, ".data")
		}
		if filepath.Dir(d) == d {
			return filepath.Join(dir, ".data")
		}
	}
}

// sleepCtx sleeps d; false when ctx ended first.
func sleepCtx(ctx context.Context, d time.Duration) bool {
	if d <= 0 {
		return ctx.Err() == nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

// sleepUntil sleeps until at; false when ctx ended first.
func sleepUntil(ctx context.Context, at time.Time) bool {
	return sleepCtx(ctx, time.Until(at))
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
