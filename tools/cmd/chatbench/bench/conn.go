package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/fasthttp/websocket"
	"github.com/valyala/fastjson"

	"relay/pkg/protocol"
)

// writeTimeout bounds one frame write: a gateway that stops reading must
// not stall a sender forever.
const writeTimeout = 10 * time.Second

// benchMeta is what chatbench puts in every message's metadata
// ({"bench": {...}}): the run, step, sender, counter and send time, so a
// receiver can find the message's record and its latency without a lookup.
type benchMeta struct {
	Run    string `json:"r"`
	Step   int    `json:"p"`
	Sender int    `json:"s"`
	N      int    `json:"n"`
	T      int64  `json:"t"` // unix nanos at send (one machine, one clock)
}

// conn is one bench WebSocket connection. One goroutine reads; writes are
// serialised by wmu (senders, joins and heartbeats share the socket).
type conn struct {
	r     *runner
	idx   int
	user  int
	gw    int
	ws    *websocket.Conn
	wmu   sync.Mutex
	done  chan struct{} // closed when the reader ends
	bye   atomic.Bool   // chatbench is closing it: read errors are expected
	joins chan joinResult
	// joinedN is how many of its joins were acked.
	joinedN atomic.Int32
	// acks maps Socket.IO ack ids to refs (unused by the native protocol).
	acks sioAcks

	// Reader-goroutine state. Frames are parsed with a reused fastjson
	// parser: no allocation per frame, several times cheaper than
	// encoding/json, which matters at 50,000 deliveries/s on the same two
	// cores as the stack.
	tracks map[string]*seqTrack
	buf    bytes.Buffer
	parser fastjson.Parser
}

// joinResult is a join_room answer, for callers waiting on one (artillery).
type joinResult struct {
	room int
	ok   bool
}

// dialError classifies a failed connect for the report.
func dialError(err error, resp *http.Response) string {
	if resp != nil {
		code := ""
		var eb struct {
			Error struct {
				Code string `json:"code"`
			} `json:"error"`
		}
		if raw, rerr := io.ReadAll(io.LimitReader(resp.Body, 4096)); rerr == nil && json.Unmarshal(raw, &eb) == nil {
			code = eb.Error.Code
		}
		return strings.TrimSpace(fmt.Sprintf("HTTP %d %s", resp.StatusCode, code))
	}
	switch {
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, os.ErrDeadlineExceeded):
		return "timeout"
	case errors.Is(err, context.Canceled):
		return "canceled"
	case errors.Is(err, syscall.ECONNREFUSED):
		return "connection refused"
	case errors.Is(err, syscall.EADDRNOTAVAIL):
		return "no local port (EADDRNOTAVAIL)"
	case errors.Is(err, syscall.EMFILE), errors.Is(err, syscall.ENFILE):
		return "too many open files"
	case errors.Is(err, syscall.ECONNRESET):
		return "connection reset"
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return "timeout"
	}
	return "other: " + truncate(err.Error(), 60)
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}

// dial opens connection idx for user to gateway gw and starts its reader.
func (r *runner) dial(ctx context.Context, idx, user, gw int) (*conn, error) {
	return r.dialOpts(ctx, idx, user, gw, false)
}

// dialOpts is dial; with joins, join answers are also sent on c.joins.
func (r *runner) dialOpts(ctx context.Context, idx, user, gw int, joins bool) (*conn, error) {
	d := r.dialer
	if len(r.localAddrs) > 0 {
		local := &net.TCPAddr{IP: r.localAddrs[idx%len(r.localAddrs)]}
		nd := &net.Dialer{LocalAddr: local, Timeout: 10 * time.Second}
		dd := *r.dialer
		dd.NetDialContext = nd.DialContext
		d = &dd
	}
	h := http.Header{"Authorization": {"Bearer " + r.accs[user].Token}}
	start := time.Now()
	ws, resp, err := d.DialContext(ctx, r.p.Gateways[gw], h)
	if err != nil {
		reason := dialError(err, resp)
		if resp != nil {
			resp.Body.Close()
		}
		r.connFail.Add(reason)
		return nil, fmt.Errorf("connect %s: %s", r.p.Gateways[gw], reason)
	}
	c := &conn{r: r, idx: idx, user: user, gw: gw, ws: ws, done: make(chan struct{}), tracks: map[string]*seqTrack{}}
	if err := r.tr.open(c, r.accs[user].Token); err != nil {
		_ = ws.Close()
		reason := dialError(err, nil)
		var ce *sioConnectError
		var cfe *centrifugoConnectError
		switch {
		case errors.As(err, &ce):
			reason = ce.Error()
		case errors.As(err, &cfe):
			reason = cfe.Error()
		}
		r.connFail.Add(reason)
		return nil, fmt.Errorf("connect %s: %s", r.p.Gateways[gw], reason)
	}
	// Socket.IO's time includes its open and CONNECT round trip.
	r.connectLat.Record(idx, time.Since(start))
	if joins {
		c.joins = make(chan joinResult, 1)
	}
	r.open.Add(1)
	r.gwConns[gw].Add(1)
	go c.read()
	return c, nil
}

// write sends one text frame.
func (c *conn) write(frame []byte) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if err := c.ws.SetWriteDeadline(time.Now().Add(writeTimeout)); err != nil {
		return fmt.Errorf("write: %w", err)
	}
	if err := c.ws.WriteMessage(websocket.TextMessage, frame); err != nil {
		return fmt.Errorf("write: %w", err)
	}
	return nil
}

func (c *conn) writeFrame(event, ref string, data any) error {
	raw, err := json.Marshal(data)
	if err != nil {
		return fmt.Errorf("encode %s: %w", event, err)
	}
	frame, err := c.r.tr.encode(c, event, ref, raw)
	if err != nil {
		return err
	}
	return c.write(frame)
}

// join asks to receive room (index into the run's rooms); the answer is
// handled by the reader.
func (c *conn) join(room int) error {
	c.r.joinsSent.Add(1)
	err := c.writeFrame(protocol.EventJoinRoom, "j"+strconv.Itoa(room), protocol.JoinRoom{RoomID: c.r.roomIDs[room]})
	if err != nil {
		c.r.joinFail.Add("WRITE_FAILED")
		c.r.joinsFailed.Add(1)
	}
	return err
}

// ping sends an application-level heartbeat; the ack is timed.
func (c *conn) ping() {
	ref := "p" + strconv.FormatInt(time.Now().UnixNano(), 10)
	frame, err := c.r.tr.encode(c, protocol.EventPing, ref, nil)
	if err == nil {
		err = c.write(frame)
	}
	if err != nil {
		if st := c.r.cur.Load(); st != nil {
			st.errors.Add("PING_WRITE_FAILED")
		}
	}
}

// send posts sender s's n-th message of step st to room.
func (c *conn) send(st *Step, s, n, room int, content string) {
	rec := st.rec(s, n)
	if rec == nil {
		return
	}
	t := time.Now()
	meta, err := json.Marshal(map[string]benchMeta{"bench": {Run: c.r.runID, Step: st.Index, Sender: s, N: n, T: t.UnixNano()}})
	if err != nil {
		st.onFail(rec, "ENCODE_FAILED")
		return
	}
	suffix := strconv.Itoa(st.Index) + "." + strconv.Itoa(s) + "." + strconv.Itoa(n)
	rec.recipients.Store(c.r.joined[room].Load())
	rec.sentAt.Store(t.UnixNano())
	st.sent.Add(1)
	err = c.writeFrame(protocol.EventSendMessage, "m"+suffix, protocol.SendMessage{
		RoomID: c.r.roomIDs[room], Content: content, Metadata: meta, ClientMsgID: c.r.runID + "." + suffix,
	})
	if err != nil {
		st.onFail(rec, "WRITE_FAILED")
	}
}

// close ends the connection with a normal close frame.
func (c *conn) close() {
	if c.bye.Swap(true) {
		return
	}
	c.wmu.Lock()
	_ = c.ws.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseNormalClosure, "bench done"), time.Now().Add(time.Second))
	c.wmu.Unlock()
	// The server answers the close frame and the reader then ends; don't
	// wait on a server that doesn't.
	select {
	case <-c.done:
	case <-time.After(2 * time.Second):
	}
	_ = c.ws.Close()
	<-c.done
}

// read is the connection's only reader: it handles every frame until the
// socket ends. Pings from the server are answered by the library.
func (c *conn) read() {
	defer close(c.done)
	defer c.r.open.Add(-1)
	defer c.r.gwConns[c.gw].Add(-1)
	for {
		_, rd, err := c.ws.NextReader()
		if err != nil {
			if !c.bye.Load() {
				c.r.closes.Add(closeReason(err))
			}
			return
		}
		c.buf.Reset()
		if _, err := c.buf.ReadFrom(rd); err != nil {
			if !c.bye.Load() {
				c.r.closes.Add(closeReason(err))
			}
			return
		}
		c.handle(c.buf.Bytes())
	}
}

func closeReason(err error) string {
	var ce *websocket.CloseError
	if errors.As(err, &ce) {
		return "close " + strconv.Itoa(ce.Code)
	}
	if errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF) {
		return "EOF"
	}
	if errors.Is(err, syscall.ECONNRESET) {
		return "connection reset"
	}
	return "read error: " + truncate(err.Error(), 60)
}

// handle processes one server frame; a transport that batches several
// messages in one frame (Centrifugo: one JSON per line) is split first.
func (c *conn) handle(raw []byte) {
	now := time.Now()
	if _, batched := c.r.tr.(centrifugo); batched {
		for len(raw) > 0 {
			line, rest, _ := bytes.Cut(raw, []byte{'\n'})
			raw = rest
			if len(bytes.TrimSpace(line)) > 0 {
				c.handleOne(now, line)
			}
		}
		return
	}
	c.handleOne(now, raw)
}

// handleOne processes one server message.
func (c *conn) handleOne(now time.Time, raw []byte) {
	in, ok := c.r.tr.decode(c, raw)
	if !ok {
		c.r.undecodable.Add(1)
		return
	}
	data := in.data
	switch in.event {
	case protocol.EventMessage:
		c.onLogEvent(now, data, true)
	case protocol.EventMessageEdited, protocol.EventMessageDeleted, protocol.EventMessageRead,
		protocol.EventUserJoined, protocol.EventUserLeft:
		c.onLogEvent(now, data, false)
	case protocol.EventAck:
		c.onReply(now, in.ref, data, "")
	case protocol.EventError:
		code := "UNKNOWN"
		if b := data.GetStringBytes("code"); len(b) > 0 {
			code = string(b)
		}
		c.onReply(now, in.ref, data, code)
	case protocol.EventResyncRequired:
		if st := c.r.cur.Load(); st != nil {
			st.resyncs.Add(1)
		}
	}
}

// track returns the connection's tracker of room.
func (c *conn) track(room []byte) *seqTrack {
	t := c.tracks[string(room)]
	if t == nil {
		t = &seqTrack{}
		c.tracks[string(room)] = t
	}
	return t
}

// onLogEvent accounts a room event: order for every one, delivery and
// latency for this run's messages.
func (c *conn) onLogEvent(now time.Time, d *fastjson.Value, isMessage bool) {
	seq, ok := seqOf(d, socketIOFamily(c.r.p.Protocol))
	if !ok {
		// Only a message must carry a seq: the Node seed's user_joined and
		// user_left have none.
		if isMessage {
			c.r.undecodable.Add(1)
		}
		return
	}
	var err error
	prev, hasPrev := int64(0), false
	if pv := d.Get("prevSeq"); pv != nil && pv.Type() == fastjson.TypeNumber {
		prev, err = pv.Int64()
		hasPrev = err == nil
	}
	var st *Step
	var rec *msgRec
	var sentAt int64
	if m := d.Get("metadata", "bench"); isMessage && m != nil && string(m.GetStringBytes("r")) == c.r.runID {
		if st = c.r.step(m.GetInt("p")); st != nil {
			rec = st.rec(m.GetInt("s"), m.GetInt("n"))
			sentAt = m.GetInt64("t")
		}
	} else if id := d.GetStringBytes("clientMsgId"); isMessage && m == nil &&
		len(id) > len(c.r.runID) && string(id[:len(c.r.runID)]) == c.r.runID && id[len(c.r.runID)] == '.' {
		// A server that drops metadata (the Node seed) still echoes the
		// clientMsgId <run>.<step>.<s>.<n>; the send time is the record's.
		if st, rec = c.r.parseSendRef(id[len(c.r.runID)+1:]); rec != nil {
			sentAt = rec.sentAt.Load()
		}
	}
	if st == nil {
		st = c.r.cur.Load()
	}
	v, gap := c.track(d.GetStringBytes("roomId")).observe(seq, prev, hasPrev)
	if st == nil {
		return
	}
	if gap {
		st.gaps.Add(1)
	}
	switch v {
	case duplicate:
		st.dups.Add(1)
		return
	case outOfOrder:
		st.outOfOrder.Add(1)
	}
	if rec != nil {
		rec.deliveries.Add(1)
		st.delivered.Add(1)
		st.deliver.Record(c.idx, now.Sub(time.Unix(0, sentAt)))
	}
}

// seqOf reads an event's seq: a number, or with strings a decimal string
// (kafkajs' offsets, as the Node seed sends them over Socket.IO; relay's
// seq is always a number).
func seqOf(d *fastjson.Value, strings bool) (int64, bool) {
	v := d.Get("seq")
	if v == nil {
		return 0, false
	}
	if strings && v.Type() == fastjson.TypeString {
		return parseInt(v.GetStringBytes())
	}
	n, err := v.Int64()
	return n, err == nil
}

// onReply handles an ack (code "") or an error reply by its ref: m<step>.<s>.<n>
// for sends, j<room> for joins, p<unixnano> for pings.
func (c *conn) onReply(now time.Time, ref []byte, d *fastjson.Value, code string) {
	if len(ref) == 0 {
		// An error without ref: a frame the server could not attribute.
		if st := c.r.cur.Load(); st != nil {
			st.errors.Add(code + " (no ref)")
		}
		return
	}
	switch ref[0] {
	case 'm':
		st, rec := c.r.parseSendRef(ref[1:])
		if rec == nil {
			return
		}
		if code != "" {
			st.onFail(rec, code)
			return
		}
		if st.onAck(rec) {
			sent := rec.sentAt.Load()
			st.ack.Record(c.idx, now.Sub(time.Unix(0, sent)))
			if id := d.GetStringBytes("id"); c.r.pg != nil && len(id) > 0 {
				c.r.pg.add(string(id), sent, st)
			}
		}
	case 'j':
		room, ok := parseInt(ref[1:])
		if !ok || room >= int64(len(c.r.roomIDs)) {
			return
		}
		if code != "" {
			c.r.joinFail.Add(code)
			c.r.joinsFailed.Add(1)
		} else {
			t := c.track([]byte(c.r.roomIDs[room]))
			if lv := d.Get("lastSeq"); lv != nil && lv.Type() == fastjson.TypeNumber {
				if last, err := lv.Int64(); err == nil {
					t.base(last)
				}
			}
			c.r.joined[room].Add(1)
			c.joinedN.Add(1)
			c.r.joinsOK.Add(1)
		}
		if c.joins != nil {
			select {
			case c.joins <- joinResult{room: int(room), ok: code == ""}:
			default:
			}
		}
	case 'p':
		st := c.r.cur.Load()
		if st == nil {
			return
		}
		if code != "" {
			st.errors.Add("ping " + code)
			return
		}
		if sent, ok := parseInt(ref[1:]); ok {
			st.ping.Record(c.idx, now.Sub(time.Unix(0, sent)))
		}
	}
}

// parseInt reads a non-negative decimal int64 without allocating.
func parseInt(b []byte) (int64, bool) {
	if len(b) == 0 || len(b) > 19 {
		return 0, false
	}
	var n int64
	for _, ch := range b {
		if ch < '0' || ch > '9' {
			return 0, false
		}
		if n > (math.MaxInt64-int64(ch-'0'))/10 {
			return 0, false
		}
		n = n*10 + int64(ch-'0')
	}
	return n, true
}

// parseSendRef finds the record of a send ref "<step>.<s>.<n>".
func (r *runner) parseSendRef(ref []byte) (*Step, *msgRec) {
	var f [3]int64
	for i := range f {
		j := bytes.IndexByte(ref, '.')
		if i == 2 {
			j = len(ref)
		}
		if j < 0 {
			return nil, nil
		}
		v, ok := parseInt(ref[:j])
		if !ok {
			return nil, nil
		}
		f[i] = v
		ref = ref[min(j+1, len(ref)):]
	}
	st := r.step(int(f[0]))
	if st == nil {
		return nil, nil
	}
	return st, st.rec(int(f[1]), int(f[2]))
}
