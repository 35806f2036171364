package fault

import (
	"cmp"
	"context"
	"fmt"
	"maps"
	"slices"
	"strings"
	"testing"
	"time"

	"relay/pkg/events"
	"relay/tests/e2e/stack"
)

// row is one fault's line of the table.
type row struct {
	name, what string
	// sent: clientMsgIds sent; acked: those acked; unacked: given up
	// (the ack was lost in the fault, or never came).
	sent, acked, unacked int
	// persisted: rows of the traffic's rooms in PostgreSQL; storedUnacked:
	// the rows among them whose send got no ack.
	persisted, storedUnacked int
	// delivered: (client, message) pairs in the clients' views; expected:
	// (client, acked message) pairs; restFilled: pairs the client fetched
	// over REST after a resync_required or a gap.
	delivered, expected, restFilled int
	// duplicates: second copies anywhere (log, rows, one client's view);
	// lost: acked messages missing from PostgreSQL plus (client, acked
	// message) pairs missing from the views.
	duplicates, lost int
	// recovery: fault end until the first message sent after it was acked
	// and with every member; -1 when none was. recoveryAll: until every
	// steady client had such a message.
	recovery, recoveryAll time.Duration
	// boundFirst and boundAll are the stated bounds they were held to.
	boundFirst, boundAll time.Duration
	// ackPause: the longest time without any ack while the traffic ran.
	ackPause time.Duration
	// slowestAck: the longest time from a send's first attempt to its ack,
	// over the steady clients.
	slowestAck time.Duration
	// readsDelivered: (client, acked read event) pairs pushed;
	// readsExcused: those missing inside a range the client filled over
	// REST (which has messages only).
	readsDelivered, readsExcused int
	// reconnects of clients, resync_required pushes, gaps seen (prevSeq
	// not the last seq).
	reconnects, resyncs, gaps int
	// churns: connections closed by the clients themselves (ChurnEvery).
	churns int
	// codes counts the failed send attempts by error code ("timeout":
	// no reply in time, "conn": the connection ended first).
	codes  map[string]int
	failed bool
}

// problems collects failures by kind and reports a few examples of each.
type problems struct {
	t     *testing.T
	kinds []string
	count map[string]int
	ex    map[string][]string
}

func (p *problems) add(kind, format string, args ...any) {
	if p.count == nil {
		p.count, p.ex = map[string]int{}, map[string][]string{}
	}
	if p.count[kind] == 0 {
		p.kinds = append(p.kinds, kind)
	}
	p.count[kind]++
	if len(p.ex[kind]) < 5 {
		p.ex[kind] = append(p.ex[kind], fmt.Sprintf(format, args...))
	}
}

func (p *problems) report() {
	for _, k := range p.kinds {
		p.t.Errorf("%s: %d, e.g.\n  %s", k, p.count[k], strings.Join(p.ex[k], "\n  "))
	}
}

// userMsg is a clientMsgId of one user.
type userMsg struct{ user, cmid string }

// check compares what the clients saw and were acked with the Kafka log
// (the ground truth for seqs) and PostgreSQL, fails t on every broken
// guarantee and returns the counts.
func check(t *testing.T, ctx context.Context, s *stack.Stack, tr *traffic, f fault, end, stopAt time.Time) row {
	t.Helper()
	p := &problems{t: t}
	defer p.report()
	var r row

	// Sends and acks.
	r.codes = map[string]int{}
	sends := map[userMsg]*sendRec{}
	acked := map[string]map[int64]*sendRec{} // room -> seq -> send
	var ackTimes []time.Time
	var slowest *sendRec
	for _, c := range tr.clients {
		c.mu.Lock()
		for _, rec := range c.sends {
			r.sent++
			sends[userMsg{rec.userID, rec.cmid}] = rec
			for code, n := range rec.codes {
				r.codes[code] += n
			}
			for _, a := range rec.tries {
				if a.code == "timeout" || rec.ack == nil {
					t.Logf("client %d %s (room %s, acked %v): attempt at +%v on gateway%d failed after %v: %s",
						c.idx, rec.cmid, rec.room, ackOf(rec), a.at.Sub(tr.began).Round(time.Millisecond), a.gw, a.took.Round(time.Millisecond), a.err)
				}
			}
			switch {
			case rec.hardErr != nil:
				p.add("sends refused for good", "client %d %s: %v", c.idx, rec.cmid, rec.hardErr)
			case rec.ack == nil:
				r.unacked++
			default:
				r.acked++
				ackTimes = append(ackTimes, rec.ackedAt)
				// Steady clients only: a churning client's time away
				// between attempts is its own doing.
				if d := rec.ackedAt.Sub(rec.tried); !c.churner() && d > r.slowestAck {
					r.slowestAck, slowest = d, rec
				}
				if rec.ack.ClientMsgID != rec.cmid || rec.ack.RoomID != rec.room {
					p.add("acks not matching their send", "%s in room %s acked as %+v", rec.cmid, rec.room, *rec.ack)
				}
				if acked[rec.room] == nil {
					acked[rec.room] = map[int64]*sendRec{}
				}
				if other := acked[rec.room][rec.ack.Seq]; other != nil {
					p.add("two sends acked with one seq", "%s and %s at seq %d", other.cmid, rec.cmid, rec.ack.Seq)
				}
				acked[rec.room][rec.ack.Seq] = rec
			}
		}
		c.mu.Unlock()
	}
	r.ackPause = longestPause(ackTimes, tr.began, stopAt)
	if slowest != nil {
		var b strings.Builder
		for _, a := range slowest.tries {
			fmt.Fprintf(&b, "\n  +%v gateway%d, %v: %s", a.at.Sub(tr.began).Round(time.Millisecond), a.gw, a.took.Round(time.Millisecond), a.err)
		}
		t.Logf("slowest ack of a steady client: %s, first sent at +%v, acked %v later after %d attempts; failed ones:%s", slowest.cmid,
			slowest.tried.Sub(tr.began).Round(time.Millisecond), r.slowestAck.Round(time.Millisecond), slowest.attempts, b.String())
	}
	reads := map[string][]int64{} // room -> seqs of acked read events
	for _, c := range tr.clients {
		c.mu.Lock()
		for _, rd := range c.reads {
			reads[rd.room] = append(reads[rd.room], rd.seq)
		}
		c.mu.Unlock()
	}

	// The Kafka log: every acked send at its seq, once per clientMsgId.
	logs := map[string]map[int64]stack.Record{}
	inLog := map[userMsg][]int64{}
	topic, err := s.TopicLog(ctx)
	if err != nil {
		t.Fatalf("topic log: %v", err)
	}
	for _, rm := range tr.rooms {
		logs[rm.id] = map[int64]stack.Record{}
		for _, rec := range topic[rm.id] {
			logs[rm.id][rec.Seq] = rec
			if rec.Event.Type != events.MessageCreated {
				continue
			}
			k := userMsg{fmt.Sprint(rec.Event.UserID), rec.Event.ClientMsgID}
			inLog[k] = append(inLog[k], rec.Seq)
			if sends[k] == nil {
				p.add("log records nobody sent", "room %s seq %d: user %s clientMsgId %q", rm.id, rec.Seq, k.user, k.cmid)
			}
		}
	}
	for k, seqs := range inLog {
		if len(seqs) > 1 {
			r.duplicates += len(seqs) - 1
			p.add("clientMsgIds stored twice in the log", "user %s %s at seqs %v (acked as %v)", k.user, k.cmid, seqs, ackOf(sends[k]))
		}
	}
	for room, bySeq := range acked {
		for seq, rec := range bySeq {
			lr, ok := logs[room][seq]
			if !ok || lr.Event.Type != events.MessageCreated || lr.Event.MessageID != rec.ack.ID || lr.Event.ClientMsgID != rec.cmid {
				p.add("acked sends not in the log at their seq", "%s room %s seq %d id %s", rec.cmid, room, seq, rec.ack.ID)
			}
		}
	}

	// PostgreSQL: every acked send once, by id and by clientMsgId; rows
	// without an ack only for sends that got none.
	type dbRow struct {
		id, room, user, cmid string
		seq                  int64
	}
	roomIDs := make([]string, len(tr.rooms))
	for i, rm := range tr.rooms {
		roomIDs[i] = rm.id
	}
	rs, err := s.SQL().QueryContext(ctx, `SELECT id::text, room_id::text, user_id::text, seq, coalesce(client_msg_id, '')
		FROM messages WHERE room_id::text = ANY($1)`, roomIDs)
	if err != nil {
		t.Fatalf("rows: %v", err)
	}
	byID := map[string]dbRow{}
	byCmid := map[userMsg][]dbRow{}
	for rs.Next() {
		var d dbRow
		if err := rs.Scan(&d.id, &d.room, &d.user, &d.seq, &d.cmid); err != nil {
			t.Fatalf("rows: %v", err)
		}
		r.persisted++
		byID[d.id] = d
		k := userMsg{d.user, d.cmid}
		byCmid[k] = append(byCmid[k], d)
		lr, ok := logs[d.room][d.seq]
		if !ok || lr.Event.MessageID != d.id {
			p.add("rows not in the log", "%+v", d)
		}
		switch rec := sends[k]; {
		case rec == nil:
			p.add("rows nobody sent", "%+v", d)
		case rec.ack == nil:
			r.storedUnacked++
		case rec.ack.ID != d.id:
			r.duplicates++
			p.add("rows of an acked clientMsgId with another id", "%s acked as %s (seq %d), row %s (seq %d)", rec.cmid, rec.ack.ID, rec.ack.Seq, d.id, d.seq)
		}
	}
	if err := rs.Err(); err != nil {
		t.Fatalf("rows: %v", err)
	}
	rs.Close()
	for k, ds := range byCmid {
		if len(ds) > 1 {
			r.duplicates += len(ds) - 1
			p.add("clientMsgIds stored twice in PostgreSQL", "user %s %s: %v", k.user, k.cmid, ds)
		}
	}
	for room, bySeq := range acked {
		for seq, rec := range bySeq {
			d, ok := byID[rec.ack.ID]
			switch {
			case !ok:
				r.lost++
				p.add("acked messages not in PostgreSQL", "%s room %s seq %d id %s", rec.cmid, room, seq, rec.ack.ID)
			case d.seq != seq || d.room != room || d.cmid != rec.cmid:
				p.add("rows not matching their ack", "ack %s room %s seq %d, row %+v", rec.cmid, room, seq, d)
			}
		}
	}
	for room, bySeq := range logs {
		for seq, lr := range bySeq {
			if lr.Event.Type == events.MessageCreated && len(inLog[userMsg{fmt.Sprint(lr.Event.UserID), lr.Event.ClientMsgID}]) == 1 {
				if _, ok := byID[lr.Event.MessageID]; !ok {
					p.add("log messages not persisted", "room %s seq %d id %s", room, seq, lr.Event.MessageID)
				}
			}
		}
	}

	// The clients' views: every acked message of their rooms once, in seq
	// order, each the log's message at that seq.
	for _, c := range tr.clients {
		c.mu.Lock()
		if c.current() == nil {
			p.add("clients not connected at the end", "client %d (closes: %v)", c.idx, c.closedBy)
		}
		for _, v := range c.misc {
			p.add("protocol violations", "client %d: %s", c.idx, v)
		}
		r.reconnects += c.reconnects
		r.churns += c.churns
		for _, room := range c.rooms {
			v := c.views[room]
			if v == nil {
				p.add("rooms never joined", "client %d room %s", c.idx, room)
				continue
			}
			r.resyncs += v.resyncs
			r.gaps += v.gaps
			for _, msg := range v.violations {
				if strings.Contains(msg, "duplicate") || strings.Contains(msg, "again") {
					r.duplicates++
				}
				p.add("protocol violations", "client %d room %s: %s", c.idx, room, msg)
			}
			seen := map[userMsg]int64{}
			have := map[int64]bool{}
			var prev int64 = v.baseline
			for _, e := range v.events {
				if e.seq <= prev {
					p.add("views out of seq order", "client %d room %s: %d after %d", c.idx, room, e.seq, prev)
				}
				prev = e.seq
				lr, ok := logs[room][e.seq]
				if !ok {
					p.add("events delivered that are not in the log", "client %d room %s seq %d %s", c.idx, room, e.seq, e.event)
					continue
				}
				if e.event != "message" {
					if lr.Event.Type == events.MessageCreated {
						p.add("events delivered that differ from the log", "client %d room %s seq %d: %s, the log has %s", c.idx, room, e.seq, e.event, lr.Event.Type)
					}
					continue
				}
				if lr.Event.Type != events.MessageCreated || lr.Event.MessageID != e.id {
					p.add("messages delivered that differ from the log", "client %d room %s seq %d id %s", c.idx, room, e.seq, e.id)
					continue
				}
				r.delivered++
				if e.rest {
					r.restFilled++
				}
				have[e.seq] = true
				k := userMsg{e.userID, e.cmid}
				if first, dup := seen[k]; dup {
					r.duplicates++
					p.add("clientMsgIds delivered twice to one client", "client %d room %s: %s at seqs %d and %d", c.idx, room, e.cmid, first, e.seq)
				}
				seen[k] = e.seq
			}
			// Read events: exactly like messages, except inside the ranges
			// the client fetched over REST, which has messages only.
			for _, seq := range reads[room] {
				lr, ok := logs[room][seq]
				if !ok || lr.Event.Type != events.ReadMarked {
					p.add("acked reads not in the log at their seq", "room %s seq %d", room, seq)
					continue
				}
				if seq <= v.baseline {
					continue
				}
				if _, found := slices.BinarySearchFunc(v.events, seq, func(e viewEvent, seq int64) int { return cmp.Compare(e.seq, seq) }); found {
					r.readsDelivered++
					continue
				}
				if inFill(v.fills, seq) {
					r.readsExcused++
					continue
				}
				r.lost++
				p.add("acked read events a client never got (outside REST-filled ranges)", "client %d room %s seq %d", c.idx, room, seq)
			}
			var missing []int64
			for seq, rec := range acked[room] {
				if seq <= v.baseline {
					p.add("acked seqs before a client's baseline", "client %d room %s: %s seq %d <= %d", c.idx, room, rec.cmid, seq, v.baseline)
					continue
				}
				r.expected++
				if !have[seq] {
					missing = append(missing, seq)
				}
			}
			if len(missing) > 0 {
				slices.Sort(missing)
				r.lost += len(missing)
				p.add("acked messages a client never got", "client %d room %s: %d, seqs %v (view up to %d)", c.idx, room, len(missing), head(missing, 10), v.last)
			}
		}
		c.mu.Unlock()
	}

	// Recovery: the first send begun after the fault's end that was acked
	// and pushed to every member connected when it was acked (a member
	// whose connection ended before the push, or who was away, churning,
	// gets it on resume: its absence is not the system's recovery). First:
	// of any client; all: the last steady client's (one that never
	// churns) first such send.
	r.recovery, r.recoveryAll = -1, -1
	firstOf := map[*client]time.Duration{}
	for _, rm := range tr.rooms {
		for seq, rec := range acked[rm.id] {
			if rec.first.Before(end) {
				continue
			}
			done, ok := rec.ackedAt, true
			for _, m := range rm.members {
				at, need := pushedTo(m, rm.id, seq, rec.ackedAt)
				if !need {
					continue
				}
				if at.IsZero() {
					ok = false
					break
				}
				if at.After(done) {
					done = at
				}
			}
			if !ok {
				continue
			}
			d := done.Sub(end)
			if r.recovery < 0 || d < r.recovery {
				r.recovery = d
			}
			sender := tr.sender(rec)
			if prev, seen := firstOf[sender]; !seen || d < prev {
				firstOf[sender] = d
			}
		}
	}
	for _, c := range tr.clients {
		if c.churner() {
			continue
		}
		d, ok := firstOf[c]
		if !ok {
			p.add("steady clients that never sent again", "client %d: no send begun after the fault's end was acked and delivered", c.idx)
			r.recoveryAll = -1
			break
		}
		r.recoveryAll = max(r.recoveryAll, d)
	}
	if r.recovery < 0 {
		p.add("no recovery", "no message sent after the fault's end was acked and delivered to all its room's members (traffic stopped %v after it)", stopAt.Sub(end).Round(time.Millisecond))
	}
	r.boundFirst, r.boundAll = cmp.Or(f.maxFirst, maxRecovery), cmp.Or(f.maxAll, maxRecovery)
	if r.recovery > r.boundFirst {
		p.add("slow recovery", "the first message sent after the fault's end was acked and delivered %v after it; the bound is %v", r.recovery, r.boundFirst)
	}
	if r.recoveryAll > r.boundAll {
		p.add("slow recovery", "every steady client sent again (acked and delivered) only %v after the fault's end; the bound is %v", r.recoveryAll, r.boundAll)
	}
	return r
}

// pushedTo says whether m had a connection open when the message at seq
// of room was acked (then it needs the push) and when m integrated it on
// that connection (zero: not before it ended).
func pushedTo(m *client, room string, seq int64, acked time.Time) (time.Time, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	var sp *span
	for i := range m.spans {
		if !m.spans[i].from.After(acked) && (m.spans[i].to.IsZero() || m.spans[i].to.After(acked)) {
			sp = &m.spans[i]
		}
	}
	if sp == nil {
		return time.Time{}, false
	}
	v := m.views[room]
	if v == nil {
		return time.Time{}, true
	}
	i, found := slices.BinarySearchFunc(v.events, seq, func(e viewEvent, seq int64) int { return cmp.Compare(e.seq, seq) })
	if !found || (!sp.to.IsZero() && v.events[i].at.After(sp.to)) {
		return time.Time{}, true
	}
	return v.events[i].at, true
}

// inFill reports whether seq lies inside one of the REST-filled ranges.
func inFill(fills [][2]int64, seq int64) bool {
	for _, f := range fills {
		if seq > f[0] && seq < f[1] {
			return true
		}
	}
	return false
}

func ackOf(rec *sendRec) string {
	if rec == nil || rec.ack == nil {
		return "none"
	}
	return fmt.Sprintf("%s seq %d", rec.ack.ID, rec.ack.Seq)
}

func head[T any](s []T, n int) []T {
	if len(s) > n {
		return s[:n]
	}
	return s
}

// longestPause is the longest interval between from, the acks and to.
func longestPause(ts []time.Time, from, to time.Time) time.Duration {
	ts = append([]time.Time{from}, ts...)
	ts = append(ts, to)
	slices.SortFunc(ts, func(a, b time.Time) int { return a.Compare(b) })
	var longest time.Duration
	for i := 1; i < len(ts); i++ {
		if d := ts[i].Sub(ts[i-1]); d > longest && !ts[i].After(to) {
			longest = d
		}
	}
	return longest
}

func (r row) summary() string {
	return fmt.Sprintf("%s: sent %d, acked %d (unacked %d), persisted %d (%d unacked), delivered %d of %d expected (%d over REST), read events %d pushed + %d in REST gaps, duplicates %d, lost %d, recovery %s (every steady client %s), longest ack pause %s, slowest ack %s, reconnects %d (%d churn), resyncs %d, gaps %d, failed attempts: %s",
		r.name, r.sent, r.acked, r.unacked, r.persisted, r.storedUnacked, r.delivered, r.expected, r.restFilled, r.readsDelivered, r.readsExcused,
		r.duplicates, r.lost, fmtDur(r.recovery), fmtDur(r.recoveryAll), fmtDur(r.ackPause), fmtDur(r.slowestAck), r.reconnects, r.churns, r.resyncs, r.gaps, fmtCodes(r.codes))
}

// fmtCodes lists failed attempts by code, most frequent first.
func fmtCodes(codes map[string]int) string {
	if len(codes) == 0 {
		return "none"
	}
	keys := slices.Collect(maps.Keys(codes))
	slices.SortFunc(keys, func(a, b string) int {
		if codes[a] != codes[b] {
			return codes[b] - codes[a]
		}
		return strings.Compare(a, b)
	})
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = fmt.Sprintf("%s %d", k, codes[k])
	}
	return strings.Join(parts, ", ")
}

func fmtDur(d time.Duration) string {
	switch {
	case d < 0:
		return "never"
	case d < time.Second:
		return fmt.Sprintf("%d ms", d.Milliseconds())
	default:
		return fmt.Sprintf("%.1f s", d.Seconds())
	}
}

// renderTable is the Markdown table of docs/reliability.md.
func renderTable(rows []row) string {
	var b strings.Builder
	b.WriteString("| fault | sent | acked | persisted | delivered | duplicates | lost | recovery: first / every client (bound) | longest ack pause | slowest ack | unacked (stored) | reconnects (churn) | resyncs (REST-filled) | failed attempts | result |\n")
	b.WriteString("|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|---|---|\n")
	for _, r := range rows {
		result := "pass"
		if r.failed {
			result = "FAIL"
		}
		fmt.Fprintf(&b, "| %s: %s | %d | %d | %d | %d / %d | %d | %d | %s / %s (%s / %s) | %s | %s | %d (%d) | %d (%d) | %d (%d) | %s | %s |\n",
			r.name, r.what, r.sent, r.acked, r.persisted, r.delivered, r.expected, r.duplicates, r.lost,
			fmtDur(r.recovery), fmtDur(r.recoveryAll), fmtDur(r.boundFirst), fmtDur(r.boundAll), fmtDur(r.ackPause), fmtDur(r.slowestAck), r.unacked, r.storedUnacked, r.reconnects, r.churns, r.resyncs, r.restFilled, fmtCodes(r.codes), result)
	}
	return b.String()
}
