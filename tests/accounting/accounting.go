// Package accounting is the bookkeeping of the reliability tests: which
// sends were acked and at which seq, what each client received on each of
// its connections, and what PostgreSQL holds; Check turns that into the
// counts the fault suite reports (docs/reliability.md): an acked message
// is lost when PostgreSQL lacks it at its acked seq, or when a client that
// should have it never got it; a duplicate is any second copy (a
// clientMsgId persisted twice, a seq pushed twice on one connection).
package accounting

import (
	"fmt"
	"slices"
	"sort"
	"strings"
	"sync"
)

// Ledger records one room's sends and deliveries. It is safe for
// concurrent use.
type Ledger struct {
	mu sync.Mutex
	// acked: clientMsgId → the seq its ack gave.
	acked map[string]int64
	// sent counts clientMsgIds begun; unacked ones may or may not be
	// persisted (their ack was lost with the fault).
	sent map[string]bool
	// got: client → seq → times received on one connection (a seq
	// received again on a later connection after a rejoin is a replay,
	// not a duplicate); conn numbers the client's current connection.
	got  map[string]map[int64]bool
	dups map[string][]string
}

// New returns an empty ledger.
func New() *Ledger {
	return &Ledger{acked: map[string]int64{}, sent: map[string]bool{}, got: map[string]map[int64]bool{}, dups: map[string][]string{}}
}

// Sent records that a send with clientMsgId cmid was begun.
func (l *Ledger) Sent(cmid string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.sent[cmid] = true
}

// Acked records the ack of cmid at seq. A second ack of one clientMsgId
// (a retry) must carry the same seq, else it is a duplicate.
func (l *Ledger) Acked(cmid string, seq int64) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.sent[cmid] = true
	if prev, ok := l.acked[cmid]; ok && prev != seq {
		l.dups["acks"] = append(l.dups["acks"], fmt.Sprintf("%s acked at seq %d and again at %d", cmid, prev, seq))
		return
	}
	l.acked[cmid] = seq
}

// AckedSeqs returns the acked seqs.
func (l *Ledger) AckedSeqs() []int64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := make([]int64, 0, len(l.acked))
	for _, s := range l.acked {
		out = append(out, s)
	}
	slices.Sort(out)
	return out
}

// Connection returns the recorder of one connection of client: Got
// records each message pushed on it.
func (l *Ledger) Connection(client string) *Conn {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.got[client] == nil {
		l.got[client] = map[int64]bool{}
	}
	return &Conn{l: l, client: client, seen: map[int64]bool{}}
}

// Conn is one connection of one client.
type Conn struct {
	l      *Ledger
	client string
	seen   map[int64]bool
}

// Got records a message push at seq on this connection.
func (c *Conn) Got(seq int64) {
	c.l.mu.Lock()
	defer c.l.mu.Unlock()
	if c.seen[seq] {
		c.l.dups[c.client] = append(c.l.dups[c.client], fmt.Sprintf("seq %d pushed twice on one connection", seq))
		return
	}
	c.seen[seq] = true
	c.l.got[c.client][seq] = true
}

// Missing returns the acked seqs client has not received (yet).
func (l *Ledger) Missing(client string) []int64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []int64
	for _, s := range l.acked {
		if !l.got[client][s] {
			out = append(out, s)
		}
	}
	slices.Sort(out)
	return out
}

// Persisted is one row of the room's history.
type Persisted struct {
	ClientMsgID string
	Seq         int64
}

// Report is the outcome of Check.
type Report struct {
	Sent, Acked, Persisted int
	// Lost counts acked messages missing from PostgreSQL (or at another
	// seq than acked) plus (client, acked message) pairs never received.
	Lost int
	// Duplicates counts second copies: rows, acks, pushes on a connection.
	Duplicates int
	// Problems describes each lost or duplicated message (a few per kind).
	Problems []string
}

// OK reports whether nothing was lost or duplicated.
func (r Report) OK() bool { return r.Lost == 0 && r.Duplicates == 0 }

// String is the one-line summary the tests log.
func (r Report) String() string {
	s := fmt.Sprintf("sent %d, acked %d, persisted %d, lost %d, duplicates %d", r.Sent, r.Acked, r.Persisted, r.Lost, r.Duplicates)
	if len(r.Problems) > 0 {
		s += ": " + strings.Join(r.Problems, "; ")
	}
	return s
}

// Check compares the ledger with the room's persisted rows; receivers are
// the clients that were in the room throughout and must have every acked
// message.
func (l *Ledger) Check(rows []Persisted, receivers ...string) Report {
	l.mu.Lock()
	defer l.mu.Unlock()
	r := Report{Sent: len(l.sent), Acked: len(l.acked), Persisted: len(rows)}
	add := func(format string, args ...any) {
		if len(r.Problems) < 20 {
			r.Problems = append(r.Problems, fmt.Sprintf(format, args...))
		}
	}
	byID := map[string][]int64{}
	for _, row := range rows {
		byID[row.ClientMsgID] = append(byID[row.ClientMsgID], row.Seq)
	}
	for id, seqs := range byID {
		if len(seqs) > 1 {
			r.Duplicates += len(seqs) - 1
			add("%s persisted %d times (seqs %v)", id, len(seqs), seqs)
		}
	}
	ids := make([]string, 0, len(l.acked))
	for id := range l.acked {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	for _, id := range ids {
		seq := l.acked[id]
		if got := byID[id]; len(got) == 0 || !slices.Contains(got, seq) {
			r.Lost++
			add("%s acked at seq %d, persisted at %v", id, seq, got)
		}
	}
	for _, c := range receivers {
		for _, id := range ids {
			if !l.got[c][l.acked[id]] {
				r.Lost++
				add("%s never got %s (seq %d)", c, id, l.acked[id])
			}
		}
	}
	kinds := make([]string, 0, len(l.dups))
	for k := range l.dups {
		kinds = append(kinds, k)
	}
	sort.Strings(kinds)
	for _, k := range kinds {
		r.Duplicates += len(l.dups[k])
		for _, d := range l.dups[k] {
			add("%s: %s", k, d)
		}
	}
	return r
}
