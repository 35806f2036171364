package fault

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"net/url"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/fasthttp/websocket"

	"relay/pkg/chat"
	"relay/pkg/protocol"
	"relay/tests/e2e/stack"
)

// Shape of the traffic: every client is a member of two neighbouring rooms
// (so each room has 2*clients/rooms members) and sends to them in turn.
type trafficConfig struct {
	// Clients is the number of users, one connection each.
	Clients int
	// Rooms is the number of group rooms.
	Rooms int
	// Rate is the total sends per second over all clients.
	Rate float64
	// Gateways is how many gateways the clients are spread over.
	Gateways int
	// SendTimeout bounds the wait for one send's reply.
	SendTimeout time.Duration
	// GiveUp is how long after the traffic stopped a send still unacked
	// keeps being retried.
	GiveUp time.Duration
	// ChurnEvery is how often one client (at random) closes its connection
	// and stays away for ChurnAway (a random duration in [ChurnAway[0],
	// ChurnAway[1]]) before it reconnects and resumes; zero: no churn.
	ChurnEvery time.Duration
	ChurnAway  [2]time.Duration
}

// traffic drives the clients of one stack and records everything they
// see: the sends with their acks, and per client and room the events
// integrated into the client's view.
type traffic struct {
	t     *testing.T
	s     *stack.Stack
	api   *stack.API
	cfg   trafficConfig
	rooms []*room

	clients []*client
	began   time.Time

	stopSend chan struct{} // closed: senders start no new message
	// settled is closed once the traffic stopped and the persister
	// committed the whole topic: REST history is then complete.
	settled chan struct{}
	// giveUp ends GiveUp after stop: unacked sends are abandoned.
	giveUp       context.Context
	giveUpCancel context.CancelFunc
	sendWG       sync.WaitGroup
	churnWG      sync.WaitGroup
	cancel       context.CancelFunc // ends the clients' connection loops
	procWG       sync.WaitGroup
}

// room is one group room of the traffic.
type room struct {
	id      string
	members []*client
}

// sendRec is one message a client sent (one clientMsgId, maybe many
// attempts).
type sendRec struct {
	cmid     string
	room     string
	userID   string
	first    time.Time // when the client began it (it may wait for a connection)
	tried    time.Time // first attempt
	attempts int
	codes    map[string]int // error codes (or "conn", "timeout") of failed attempts
	ack      *protocol.SendAck
	ackedAt  time.Time
	gaveUp   bool
	hardErr  error // a refusal no retry can cure
	tries    []try // the failed attempts
}

// try is one failed attempt of a send.
type try struct {
	at   time.Time
	took time.Duration
	gw   int
	code string
	err  string
}

// client is one user with one connection at a time to some gateway.
type client struct {
	idx    int
	user   *stack.User
	rooms  []string
	prefer int // the gateway it connects to first
	tr     *traffic

	// gen numbers the connections; only the processor touches it.
	gen int

	connMu sync.Mutex    // guards conn, connCh, curGW
	conn   *stack.Conn   // nil while (re)connecting
	connCh chan struct{} // closed when conn is set
	curGW  int           // the gateway of the last connection

	qmu    sync.Mutex // guards the queue of pushes for the processor
	qcond  *sync.Cond
	queue  []qitem
	qclose bool

	// mu guards the rest. The views are written by the processor only.
	mu         sync.Mutex
	closedBy   []string // why each connection ended
	spans      []span   // when each connection was usable
	views      map[string]*view
	sends      []*sendRec
	reads      []readRec
	reconnects int
	churns     int       // connections it closed itself
	awayUntil  time.Time // after a churn close: reconnect no earlier
	misc       []string  // violations outside any joined room
}

// span is the life of one connection, from the end of its joins to its
// close (zero while open).
type span struct {
	gen      int
	from, to time.Time
}

// qitem is a push of connection gen, or (closed) the end of it.
type qitem struct {
	gen    int
	frame  protocol.Frame
	closed bool
	final  chan struct{} // a final-sync request
}

// view is what one client has of one room, in the order it integrated it.
type view struct {
	baseline int64 // last seq at the first join: events after it are expected
	last     int64 // the highest seq integrated
	connLast int64 // the last seq pushed on the current connection (order check)
	restHigh int64 // the highest seq learnt through REST history
	needFill bool  // resync_required told us to fetch what follows last
	events   []viewEvent
	// fills are the seq ranges (from, to) fetched over REST: other
	// events than messages in them are not to be had.
	fills [][2]int64

	pushes, restFilled, overlaps, resyncs, gaps int
	violations                                  []string
}

// viewEvent is one integrated room event.
type viewEvent struct {
	seq    int64
	event  string
	id     string // message id, for message events
	userID string
	cmid   string
	rest   bool      // came from REST history, not a push
	at     time.Time // when the client integrated it
}

const password = "correct-horse-battery"

// newTraffic registers the users, creates the rooms, waits until their
// member_joined events were delivered, and connects every client (joining
// its rooms); no message is sent yet.
func newTraffic(t *testing.T, ctx context.Context, s *stack.Stack, cfg trafficConfig) *traffic {
	t.Helper()
	tr := &traffic{t: t, s: s, api: s.API(), cfg: cfg, stopSend: make(chan struct{}), settled: make(chan struct{})}
	users := make([]*stack.User, cfg.Clients)
	var wg sync.WaitGroup
	errs := make([]error, cfg.Clients)
	// bcrypt makes a registration cost tens of ms of CPU: a few at a time.
	sem := make(chan struct{}, 4)
	for i := range cfg.Clients {
		wg.Go(func() {
			sem <- struct{}{}
			defer func() { <-sem }()
			users[i], errs[i] = tr.api.Register(ctx, fmt.Sprintf("u%02d", i), password)
		})
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		t.Fatalf("register: %v", err)
	}
	for i := range cfg.Clients {
		c := &client{idx: i, user: users[i], prefer: i % cfg.Gateways, tr: tr, views: map[string]*view{}}
		c.qcond = sync.NewCond(&c.qmu)
		c.connCh = make(chan struct{})
		tr.clients = append(tr.clients, c)
	}
	// Client i is in rooms i%R and (i+1)%R.
	for r := range cfg.Rooms {
		var members []*client
		for _, c := range tr.clients {
			if c.idx%cfg.Rooms == r || (c.idx+1)%cfg.Rooms == r {
				members = append(members, c)
			}
		}
		others := make([]*stack.User, 0, len(members)-1)
		for _, m := range members[1:] {
			others = append(others, m.user)
		}
		rm, err := tr.api.CreateRoom(ctx, members[0].user, fmt.Sprintf("room%d", r), "group", others...)
		if err != nil {
			t.Fatalf("create room %d: %v", r, err)
		}
		tr.rooms = append(tr.rooms, &room{id: rm.ID, members: members})
		for _, m := range members {
			m.rooms = append(m.rooms, rm.ID)
		}
	}
	// The join acks then carry the room's exact last seq, and every event
	// after it is traffic.
	waitCommitted(t, ctx, s, "delivery", 30*time.Second)

	pctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	tr.cancel = cancel
	for _, c := range tr.clients {
		tr.procWG.Go(func() { c.process(pctx) })
	}
	err := stack.WaitFor(ctx, 30*time.Second, func(context.Context) (bool, error) {
		for _, c := range tr.clients {
			if c.current() == nil {
				return false, fmt.Errorf("client %d not connected", c.idx)
			}
		}
		return true, nil
	})
	if err != nil {
		t.Fatalf("connecting the clients: %v", err)
	}
	return tr
}

// start begins sending: each client at Rate/Clients per second, one
// message at a time, each retried with its clientMsgId until acked.
func (tr *traffic) start(ctx context.Context) {
	tr.began = time.Now()
	tr.giveUp, tr.giveUpCancel = context.WithCancel(ctx)
	interval := time.Duration(float64(time.Second) * float64(len(tr.clients)) / tr.cfg.Rate)
	for _, c := range tr.clients {
		tr.sendWG.Go(func() { c.sendLoop(tr.giveUp, interval) })
	}
	if tr.cfg.ChurnEvery > 0 {
		tr.churnWG.Go(tr.churn)
	}
}

// churner says whether the churn may close c's connection: half the
// clients, on both gateways (the others are the steady clients whose
// recovery the suite measures).
func (c *client) churner() bool { return c.idx%4 >= 2 }

// steadySentSince reports whether every steady client had a send begun
// at or after t acked.
func (tr *traffic) steadySentSince(t time.Time) bool {
	for _, c := range tr.clients {
		if c.churner() {
			continue
		}
		ok := false
		c.mu.Lock()
		for i := len(c.sends) - 1; i >= 0 && !ok; i-- {
			rec := c.sends[i]
			if rec.first.Before(t) {
				break
			}
			ok = rec.ack != nil
		}
		c.mu.Unlock()
		if !ok {
			return false
		}
	}
	return true
}

// isSettled reports whether settled is closed.
func (tr *traffic) isSettled() bool {
	select {
	case <-tr.settled:
		return true
	default:
		return false
	}
}

// sender returns the client that sent rec.
func (tr *traffic) sender(rec *sendRec) *client {
	for _, c := range tr.clients {
		if c.user.ID == rec.userID {
			return c
		}
	}
	return nil
}

// churn closes one connected client's connection every ChurnEvery until
// the traffic stops; the client comes back after ChurnAway and resumes
// with the last seq of each room, like a phone losing its network.
func (tr *traffic) churn() {
	tick := time.NewTicker(tr.cfg.ChurnEvery)
	defer tick.Stop()
	for {
		select {
		case <-tr.stopSend:
			return
		case <-tick.C:
		}
		var churners []*client
		for _, c := range tr.clients {
			if c.churner() {
				churners = append(churners, c)
			}
		}
		c := churners[rand.IntN(len(churners))]
		conn := c.current()
		if conn == nil {
			continue // reconnecting already
		}
		lo, hi := tr.cfg.ChurnAway[0], tr.cfg.ChurnAway[1]
		c.mu.Lock()
		c.churns++
		c.awayUntil = time.Now().Add(lo + time.Duration(rand.Int64N(int64(hi-lo)+1)))
		c.mu.Unlock()
		_ = conn.Close()
	}
}

// stop ends the sending and waits until every send was acked or given up.
func (tr *traffic) stop() {
	close(tr.stopSend)
	tr.churnWG.Wait()
	t := time.AfterFunc(tr.cfg.GiveUp, tr.giveUpCancel)
	tr.sendWG.Wait()
	t.Stop()
	tr.giveUpCancel()
}

// close ends the clients' connections and processors.
func (tr *traffic) close() {
	tr.cancel()
	for _, c := range tr.clients {
		c.qmu.Lock()
		c.qclose = true
		c.qcond.Broadcast()
		c.qmu.Unlock()
		if conn := c.current(); conn != nil {
			_ = conn.Close()
		}
	}
	tr.procWG.Wait()
}

// ----------------------------------------------------------------- sending

func (c *client) sendLoop(ctx context.Context, interval time.Duration) {
	// Spread the clients over the interval so the total rate is steady.
	next := time.Now().Add(time.Duration(rand.Int64N(int64(interval))))
	for n := 0; ; n++ {
		select {
		case <-c.tr.stopSend:
			return
		case <-ctx.Done():
			return
		case <-time.After(time.Until(next)):
		}
		select {
		case <-c.tr.stopSend:
			return // both were ready: stopping wins
		default:
		}
		next = next.Add(interval)
		if now := time.Now(); next.Before(now) {
			next = now // behind after a stall: no burst to catch up
		}
		rec := &sendRec{
			cmid: fmt.Sprintf("c%02d-%05d", c.idx, n), room: c.rooms[n%len(c.rooms)],
			userID: c.user.ID, first: time.Now(), codes: map[string]int{},
		}
		c.mu.Lock()
		c.sends = append(c.sends, rec)
		c.mu.Unlock()
		c.sendUntilAcked(ctx, rec, n)
		if n%readEvery == readEvery-1 {
			c.markRead(ctx, rec.room)
		}
	}
}

// readEvery: a client marks a room read after every readEvery-th send, so
// the log holds read_marked events (message_read pushes) besides messages.
const readEvery = 10

// readRec is an acked mark_read: its event is at seq in room.
type readRec struct {
	room string
	seq  int64
}

// markRead marks room read up to the last seq the client has, once: a
// failed attempt is not retried (a later mark covers it).
func (c *client) markRead(ctx context.Context, room string) {
	conn := c.current()
	if conn == nil {
		return
	}
	c.mu.Lock()
	v := c.views[room]
	var upTo int64
	if v != nil {
		upTo = v.last
	}
	c.mu.Unlock()
	if v == nil {
		return
	}
	actx, cancel := context.WithTimeout(ctx, c.tr.cfg.SendTimeout)
	ack, err := conn.MarkRead(actx, room, upTo)
	cancel()
	if err != nil {
		return
	}
	c.mu.Lock()
	c.reads = append(c.reads, readRec{room: room, seq: ack.Seq})
	c.mu.Unlock()
}

// sendUntilAcked retries rec with the same clientMsgId, with backoff,
// until it is acked, refused for good, or ctx ends (GiveUp after the
// traffic stopped).
func (c *client) sendUntilAcked(ctx context.Context, rec *sendRec, n int) {
	backoff := 50 * time.Millisecond
	content := fmt.Sprintf("message %d of client %d", n, c.idx)
	gaveUp := func() {
		c.mu.Lock()
		rec.gaveUp = true
		c.mu.Unlock()
	}
	for {
		conn := c.waitConn(ctx)
		if conn == nil {
			gaveUp()
			return
		}
		c.connMu.Lock()
		gw := c.curGW
		c.connMu.Unlock()
		at := time.Now()
		actx, cancel := context.WithTimeout(ctx, c.tr.cfg.SendTimeout)
		ack, err := conn.Send(actx, rec.room, content, rec.cmid)
		cancel()
		c.mu.Lock()
		if rec.attempts == 0 {
			rec.tried = at
		}
		rec.attempts++
		if err == nil {
			rec.ack, rec.ackedAt = &ack, time.Now()
			c.mu.Unlock()
			return
		}
		code := string(stack.ErrorCode(err))
		switch {
		case code == "":
			if errors.Is(err, context.DeadlineExceeded) {
				code = "timeout"
			} else {
				code = "conn"
			}
		case code == string(chat.CodeUnavailable), code == string(chat.CodeConflict),
			code == string(chat.CodeRateLimited), code == string(chat.CodeInternal):
		default:
			rec.hardErr = err
			rec.codes[code]++
			c.mu.Unlock()
			return
		}
		rec.codes[code]++
		rec.tries = append(rec.tries, try{at: at, took: time.Since(at), gw: gw, code: code, err: err.Error()})
		c.mu.Unlock()
		select {
		case <-time.After(backoff/2 + time.Duration(rand.Int64N(int64(backoff/2)+1))):
		case <-ctx.Done():
			gaveUp()
			return
		}
		backoff = min(2*backoff, time.Second)
	}
}

// current is the client's connection, nil while it reconnects.
func (c *client) current() *stack.Conn {
	c.connMu.Lock()
	defer c.connMu.Unlock()
	return c.conn
}

// waitConn waits for a connection; nil when ctx ends first.
func (c *client) waitConn(ctx context.Context) *stack.Conn {
	for {
		c.connMu.Lock()
		conn, ch := c.conn, c.connCh
		c.connMu.Unlock()
		if conn != nil {
			return conn
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return nil
		}
	}
}

// setConn hands a joined connection to the sender, unless it already
// ended (its close is then queued for the processor).
func (c *client) setConn(conn *stack.Conn) {
	c.connMu.Lock()
	defer c.connMu.Unlock()
	select {
	case <-conn.Done():
		return
	default:
	}
	c.conn = conn
	close(c.connCh)
}

// ------------------------------------------------------------- connecting

// enqueue is the push handler of connection gen: it only queues, so the
// read goroutine never waits on the processing.
func (c *client) enqueue(it qitem) {
	c.qmu.Lock()
	c.queue = append(c.queue, it)
	c.qcond.Signal()
	c.qmu.Unlock()
}

// next returns the next queued item; false when the client is closed.
func (c *client) next() (qitem, bool) {
	c.qmu.Lock()
	defer c.qmu.Unlock()
	for len(c.queue) == 0 && !c.qclose {
		c.qcond.Wait()
	}
	if c.qclose {
		return qitem{}, false
	}
	it := c.queue[0]
	c.queue = c.queue[1:]
	return it, true
}

// process owns the client's views: it connects, integrates pushes in
// arrival order, fills gaps from REST history and reconnects when the
// connection ends.
func (c *client) process(ctx context.Context) {
	c.connect(ctx, false)
	for {
		it, ok := c.next()
		if !ok {
			return
		}
		switch {
		case it.final != nil:
			c.finalSync(ctx)
			close(it.final)
		case it.gen != c.gen:
			// A connection given up during its joins.
		case it.closed:
			c.mu.Lock()
			restart := len(c.closedBy) > 0 && c.closedBy[len(c.closedBy)-1] == "1012"
			c.mu.Unlock()
			c.connect(ctx, restart)
		default:
			c.handle(ctx, it.frame)
		}
	}
}

// connect dials a live gateway (the preferred one first, then the others)
// with backoff and joins every room with the last seq the client has;
// it returns once a connection joined all rooms, or ctx ended.
func (c *client) connect(ctx context.Context, restart bool) {
	first := len(c.views) == 0
	c.mu.Lock()
	away := time.Until(c.awayUntil)
	c.mu.Unlock()
	if away > 0 {
		select {
		case <-time.After(away):
		case <-ctx.Done():
			return
		}
	}
	for attempt := 0; ctx.Err() == nil; attempt++ {
		// Docs/protocol.md, reconnecting: after 1012 at once with up to 1 s
		// of jitter, otherwise full jitter on an exponential backoff.
		var d time.Duration
		switch {
		case first && attempt == 0:
		case restart && attempt == 0:
			d = time.Duration(rand.Int64N(int64(time.Second)))
		default:
			d = time.Duration(rand.Int64N(int64(min(5*time.Second, (250*time.Millisecond)<<min(attempt, 5))) + 1))
		}
		select {
		case <-time.After(d):
		case <-ctx.Done():
			return
		}
		// First the preferred gateway; after a close, the other one first
		// (a load balancer routes away from an instance that went away).
		gw := (c.prefer + attempt) % c.tr.cfg.Gateways
		if !first {
			c.connMu.Lock()
			gw = (c.curGW + 1 + attempt) % c.tr.cfg.Gateways
			c.connMu.Unlock()
		}
		c.gen++
		gen := c.gen
		dctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		conn, err := stack.DialFunc(dctx, c.tr.s.GatewayURL(gw), c.user.Token, func(f protocol.Frame) {
			c.enqueue(qitem{gen: gen, frame: f})
		})
		cancel()
		if err != nil {
			continue
		}
		go func() {
			<-conn.Done()
			closed := time.Now()
			c.mu.Lock()
			c.closedBy = append(c.closedBy, closeReason(conn.Err()))
			for i := range c.spans {
				if c.spans[i].gen == gen {
					c.spans[i].to = closed
				}
			}
			c.mu.Unlock()
			// Senders stop using it at once; the processor reconnects
			// once it has integrated what came before the close.
			c.connMu.Lock()
			if c.conn == conn {
				c.conn = nil
				c.connCh = make(chan struct{})
			}
			c.connMu.Unlock()
			c.enqueue(qitem{gen: gen, closed: true})
		}()
		if !c.joinAll(ctx, conn) {
			_ = conn.Close()
			continue
		}
		c.mu.Lock()
		if !first {
			c.reconnects++
		}
		c.spans = append(c.spans, span{gen: gen, from: time.Now()})
		c.mu.Unlock()
		c.connMu.Lock()
		c.curGW = gw
		c.connMu.Unlock()
		c.setConn(conn)
		return
	}
}

// joinAll joins every room on conn: the first time without lastSeq (the
// ack's lastSeq is the baseline), then with the last seq the view has. A
// join refused with UNAVAILABLE is retried while the connection lives.
func (c *client) joinAll(ctx context.Context, conn *stack.Conn) bool {
	for _, r := range c.rooms {
		v := c.views[r]
		var last *int64
		if v != nil {
			last = &v.last
		}
		for attempt := 0; ; attempt++ {
			jctx, cancel := context.WithTimeout(ctx, 10*time.Second)
			ack, err := conn.Join(jctx, r, last)
			cancel()
			if err == nil {
				if v == nil {
					// No lastSeq: nothing of the room is published yet (its
					// member events leave the api's outbox just after the
					// room was created), so everything of it comes live.
					base := int64(-1)
					if ack.LastSeq != nil {
						base = *ack.LastSeq
					}
					v = &view{baseline: base, last: base, restHigh: -1}
					c.mu.Lock()
					c.views[r] = v
					c.mu.Unlock()
				}
				v.connLast = v.last
				break
			}
			select {
			case <-conn.Done():
				return false
			default:
			}
			if stack.ErrorCode(err) != chat.CodeUnavailable || attempt >= 20 || ctx.Err() != nil {
				return false
			}
			time.Sleep(time.Duration(100*(attempt+1)) * time.Millisecond)
		}
	}
	return true
}

// closeReason names how a connection ended: the close code, or "drop".
func closeReason(err error) string {
	var ce *websocket.CloseError
	if errors.As(err, &ce) {
		return strconv.Itoa(ce.Code)
	}
	return "drop"
}

// ---------------------------------------------------------------- pushes

// roomEvent is what the view needs of a log push.
type roomEvent struct {
	RoomID      string `json:"roomId"`
	Seq         *int64 `json:"seq"`
	PrevSeq     *int64 `json:"prevSeq"`
	ID          string `json:"id"`
	UserID      string `json:"userId"`
	ClientMsgID string `json:"clientMsgId"`
}

func (c *client) handle(ctx context.Context, f protocol.Frame) {
	switch f.Event {
	case protocol.EventResyncRequired:
		var r protocol.ResyncRequired
		if err := json.Unmarshal(f.Data, &r); err != nil {
			c.violation("", "bad resync_required %s", f.Data)
			return
		}
		v := c.views[r.RoomID]
		if v == nil {
			return
		}
		c.mu.Lock()
		v.resyncs++
		v.needFill = true
		c.mu.Unlock()
		if r.FromSeq > v.last {
			// A client fetching after fromSeq, as the protocol says, would
			// skip what lies between its last seq and fromSeq.
			c.violation(r.RoomID, "resync_required fromSeq %d is past the last seq the client has, %d", r.FromSeq, v.last)
		}
		return
	case protocol.EventMessage, protocol.EventMessageEdited, protocol.EventMessageDeleted,
		protocol.EventMessageRead, protocol.EventUserJoined, protocol.EventUserLeft:
	case protocol.EventError:
		c.violation("", "error push %s", f.Data)
		return
	default:
		return // presence_update, typing
	}
	var e roomEvent
	if err := json.Unmarshal(f.Data, &e); err != nil || e.Seq == nil {
		c.violation("", "%s push without a seq: %s", f.Event, f.Data)
		return
	}
	v := c.views[e.RoomID]
	if v == nil {
		c.violation(e.RoomID, "%s push of a room never joined: %s", f.Event, f.Data)
		return
	}
	s := *e.Seq
	if s <= v.connLast {
		c.violation(e.RoomID, "%s seq %d pushed after seq %d on the same connection (duplicate or out of order)", f.Event, s, v.connLast)
		return
	}
	v.connLast = s
	c.mu.Lock()
	v.pushes++
	c.mu.Unlock()
	if s <= v.last {
		if s <= v.restHigh {
			c.mu.Lock()
			v.overlaps++ // already fetched over REST while it was in flight
			c.mu.Unlock()
			return
		}
		c.violation(e.RoomID, "%s seq %d pushed again on a new connection (had up to %d)", f.Event, s, v.last)
		return
	}
	if v.needFill || e.PrevSeq == nil || *e.PrevSeq != v.last {
		if !v.needFill {
			c.mu.Lock()
			v.gaps++
			c.mu.Unlock()
		}
		c.fill(ctx, e.RoomID, v, s)
	}
	c.integrate(v, viewEvent{seq: s, event: f.Event, id: e.ID, userID: e.UserID, cmid: e.ClientMsgID, at: time.Now()})
}

func (c *client) integrate(v *view, e viewEvent) {
	c.mu.Lock()
	v.events = append(v.events, e)
	v.last = e.seq
	c.mu.Unlock()
}

func (c *client) violation(roomID, format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	c.mu.Lock()
	defer c.mu.Unlock()
	if v := c.views[roomID]; v != nil {
		v.violations = append(v.violations, msg)
		return
	}
	c.misc = append(c.misc, msg)
}

// fill fetches the messages after v.last and before upTo from REST
// history (only messages are there: other events in the gap stay
// missing) and integrates them. It retries, for up to 30 s, until the
// history reached upTo (the persister may be behind, the api down); with
// upTo < 0 it takes what the history has (the final sync).
func (c *client) fill(ctx context.Context, roomID string, v *view, upTo int64) {
	deadline := time.Now().Add(30 * time.Second)
	after := v.last
	to := upTo
	if to < 0 {
		to = math.MaxInt64
	}
	c.mu.Lock()
	v.fills = append(v.fills, [2]int64{after, to})
	c.mu.Unlock()
	for {
		// Read before the fetch, so a complete history is what it got.
		settled := c.tr.isSettled()
		q := url.Values{"after": {strconv.FormatInt(after, 10)}, "limit": {"200"}}
		hctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		h, err := c.tr.api.History(hctx, c.user, roomID, q)
		cancel()
		if err == nil {
			reached := false
			for _, m := range h.Messages {
				if m.Seq <= after {
					continue
				}
				if upTo >= 0 && m.Seq >= upTo {
					reached = true
					break
				}
				c.integrate(v, viewEvent{seq: m.Seq, event: protocol.EventMessage, id: m.ID, userID: m.UserID, cmid: m.ClientMsgID, rest: true, at: time.Now()})
				c.mu.Lock()
				v.restFilled++
				v.restHigh = max(v.restHigh, m.Seq)
				c.mu.Unlock()
				after = m.Seq
			}
			if len(h.Messages) > 0 && h.HasMore && !reached {
				continue // next page at once
			}
			if reached || upTo < 0 || settled {
				// Reached the pushed event; or the final sync; or the
				// traffic is over and the persister has everything, so
				// no later message will come to show the history
				// reached an event that is not a message itself.
				break
			}
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			c.violation(roomID, "REST history did not reach seq %d after %d within 30 s (last error %v)", upTo, after, err)
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	c.mu.Lock()
	v.needFill = false
	c.mu.Unlock()
}

// finalSync fetches what a resync_required asked for when no push
// followed it (so nothing triggered the fill).
func (c *client) finalSync(ctx context.Context) {
	for _, r := range c.rooms {
		if v := c.views[r]; v != nil && v.needFill {
			c.fill(ctx, r, v, -1)
		}
	}
}

// syncPending runs finalSync on the processor and waits for it.
func (c *client) syncPending(ctx context.Context) error {
	done := make(chan struct{})
	c.enqueue(qitem{final: done})
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
