package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
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

	"relay/pkg/chat"
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

// inbound is a server frame decoded in one pass: the fields chatbench
// reads from the envelope and from any payload (message, ack, error, join
// ack, other log events). One decode per frame, instead of protocol.Frame
// and then the payload type, keeps the reader lean at tens of thousands of
// deliveries per second; the names match pkg/protocol's payloads.
type inbound struct {
	Event string `json:"event"`
	Ref   string `json:"ref"`
	Data  struct {
		RoomID   string    `json:"roomId"`
		ID       string    `json:"id"`
		Seq      *int64    `json:"seq"`
		PrevSeq  *int64    `json:"prevSeq"`
		LastSeq  *int64    `json:"lastSeq"`
		Code     chat.Code `json:"code"`
		Metadata struct {
			Bench *benchMeta `json:"bench"`
		} `json:"metadata"`
	} `json:"data"`
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

	// Reader-goroutine state.
	tracks map[string]*seqTrack
	buf    bytes.Buffer
	in     inbound
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
	r.connectLat.Record(idx, time.Since(start))
	c := &conn{r: r, idx: idx, user: user, gw: gw, ws: ws, done: make(chan struct{}), tracks: map[string]*seqTrack{}}
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
	frame, err := json.Marshal(protocol.Frame{Event: event, Data: raw, Ref: ref})
	if err != nil {
		return fmt.Errorf("encode %s: %w", event, err)
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
	if err := c.write([]byte(`{"event":"` + protocol.EventPing + `","ref":"` + ref + `"}`)); err != nil {
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

// handle processes one server frame.
func (c *conn) handle(raw []byte) {
	now := time.Now()
	in := &c.in
	*in = inbound{}
	if err := json.Unmarshal(raw, in); err != nil {
		c.r.undecodable.Add(1)
		return
	}
	switch in.Event {
	case protocol.EventMessage:
		c.onLogEvent(now, true)
	case protocol.EventMessageEdited, protocol.EventMessageDeleted, protocol.EventMessageRead,
		protocol.EventUserJoined, protocol.EventUserLeft:
		c.onLogEvent(now, false)
	case protocol.EventAck:
		c.onReply(now, "")
	case protocol.EventError:
		c.onReply(now, string(in.Data.Code))
	case protocol.EventResyncRequired:
		if st := c.r.cur.Load(); st != nil {
			st.resyncs.Add(1)
		}
	}
}

// onLogEvent accounts a room event: order for every one, delivery and
// latency for this run's messages.
func (c *conn) onLogEvent(now time.Time, isMessage bool) {
	d := &c.in.Data
	if d.Seq == nil {
		c.r.undecodable.Add(1)
		return
	}
	var st *Step
	var rec *msgRec
	if m := d.Metadata.Bench; isMessage && m != nil && m.Run == c.r.runID {
		st = c.r.step(m.Step)
		if st != nil {
			rec = st.rec(m.Sender, m.N)
		}
	}
	if st == nil {
		st = c.r.cur.Load()
	}
	t := c.tracks[d.RoomID]
	if t == nil {
		t = &seqTrack{}
		c.tracks[d.RoomID] = t
	}
	v, gap := t.observe(*d.Seq, d.PrevSeq)
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
		st.deliver.Record(c.idx, now.Sub(time.Unix(0, d.Metadata.Bench.T)))
	}
}

// onReply handles an ack (code "") or an error reply by its ref: m<step>.<s>.<n>
// for sends, j<room> for joins, p<unixnano> for pings.
func (c *conn) onReply(now time.Time, code string) {
	ref := c.in.Ref
	if ref == "" {
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
			if c.r.pg != nil && c.in.Data.ID != "" {
				c.r.pg.add(c.in.Data.ID, sent, st)
			}
		}
	case 'j':
		room, err := strconv.Atoi(ref[1:])
		if err != nil || room < 0 || room >= len(c.r.roomIDs) {
			return
		}
		if code != "" {
			c.r.joinFail.Add(code)
			c.r.joinsFailed.Add(1)
		} else {
			t := c.tracks[c.r.roomIDs[room]]
			if t == nil {
				t = &seqTrack{}
				c.tracks[c.r.roomIDs[room]] = t
			}
			t.base(c.in.Data.LastSeq)
			c.r.joined[room].Add(1)
			c.joinedN.Add(1)
			c.r.joinsOK.Add(1)
		}
		if c.joins != nil {
			select {
			case c.joins <- joinResult{room: room, ok: code == ""}:
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
		if sent, err := strconv.ParseInt(ref[1:], 10, 64); err == nil {
			st.ping.Record(c.idx, now.Sub(time.Unix(0, sent)))
		}
	}
}

// parseSendRef finds the record of a send ref "<step>.<s>.<n>".
func (r *runner) parseSendRef(ref string) (*Step, *msgRec) {
	a, rest, ok1 := strings.Cut(ref, ".")
	b, cc, ok2 := strings.Cut(rest, ".")
	if !ok1 || !ok2 {
		return nil, nil
	}
	p, err1 := strconv.Atoi(a)
	s, err2 := strconv.Atoi(b)
	n, err3 := strconv.Atoi(cc)
	if err1 != nil || err2 != nil || err3 != nil {
		return nil, nil
	}
	st := r.step(p)
	if st == nil {
		return nil, nil
	}
	return st, st.rec(s, n)
}
