package bench

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// pgPollInterval is how often the persisted poller asks PostgreSQL: it is
// the resolution of send→persisted (each latency is rounded up to the poll
// that found the row), and keeps the poller's own load small.
const pgPollInterval = 50 * time.Millisecond

// pgPollBatch bounds the ids asked for in one query.
const pgPollBatch = 5000

// pendingRow is an acked message not yet seen in PostgreSQL.
type pendingRow struct {
	id     string
	sentAt int64 // unix nanos
	step   *Step
}

// persistPoller measures send→persisted: acked message ids are queued by
// the readers and looked up by primary key until they appear.
type persistPoller struct {
	pool    *pgxpool.Pool
	mu      sync.Mutex
	pending []pendingRow
	errs    atomic.Int64
	lastErr atomic.Value // string
}

func newPersistPoller(ctx context.Context, url string) (*persistPoller, error) {
	cfg, err := pgxpool.ParseConfig(url)
	if err != nil {
		return nil, fmt.Errorf("--pg: %w", err)
	}
	cfg.MaxConns = 2
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("connect PostgreSQL: %w", err)
	}
	pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if err := pool.Ping(pctx); err != nil {
		pool.Close()
		return nil, fmt.Errorf("connect PostgreSQL: %w", err)
	}
	return &persistPoller{pool: pool}, nil
}

func (p *persistPoller) add(id string, sentAt int64, st *Step) {
	p.mu.Lock()
	p.pending = append(p.pending, pendingRow{id: id, sentAt: sentAt, step: st})
	p.mu.Unlock()
}

// Pending is how many acked messages were not found yet.
func (p *persistPoller) Pending() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.pending)
}

// Run polls until ctx ends.
func (p *persistPoller) Run(ctx context.Context) {
	t := time.NewTicker(pgPollInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			if err := p.poll(ctx); err != nil && ctx.Err() == nil {
				p.errs.Add(1)
				p.lastErr.Store(err.Error())
			}
		}
	}
}

func (p *persistPoller) poll(ctx context.Context) error {
	p.mu.Lock()
	batch := p.pending[:min(len(p.pending), pgPollBatch)]
	batch = append([]pendingRow(nil), batch...)
	p.mu.Unlock()
	if len(batch) == 0 {
		return nil
	}
	ids := make([]string, len(batch))
	for i, r := range batch {
		ids[i] = r.id
	}
	qctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	rows, err := p.pool.Query(qctx, `SELECT id::text FROM messages WHERE id = ANY($1::uuid[])`, ids)
	if err != nil {
		return fmt.Errorf("poll messages: %w", err)
	}
	found, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return fmt.Errorf("poll messages: %w", err)
	}
	now := time.Now().UnixNano()
	seen := make(map[string]struct{}, len(found))
	for _, id := range found {
		seen[id] = struct{}{}
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	// The batch is the head of pending (appends only add at the tail), so
	// it is replaced by what was not found, then the newer tail.
	keep := p.pending[:0]
	for i, r := range p.pending {
		if _, ok := seen[r.id]; ok && i < len(batch) {
			r.step.persist.Record(i, time.Duration(now-r.sentAt))
			r.step.persisted.Add(1)
			continue
		}
		keep = append(keep, r)
	}
	clear(p.pending[len(keep):])
	p.pending = keep
	return nil
}

// Close releases the pool.
func (p *persistPoller) Close() { p.pool.Close() }

// lagPoller reads the persister's GET /lag once a second.
type lagPoller struct {
	url    string
	http   *http.Client
	max    atomic.Int64
	last   atomic.Int64
	reads  atomic.Int64
	errors atomic.Int64
}

func newLagPoller(base string) *lagPoller {
	return &lagPoller{url: base + "/lag", http: &http.Client{Timeout: 2 * time.Second}}
}

func (l *lagPoller) read(ctx context.Context) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, l.url, nil)
	if err != nil {
		return fmt.Errorf("lag: %w", err)
	}
	resp, err := l.http.Do(req)
	if err != nil {
		return fmt.Errorf("lag: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("lag: HTTP %d", resp.StatusCode)
	}
	var body struct {
		Total int64 `json:"total"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
		return fmt.Errorf("lag: %w", err)
	}
	l.last.Store(body.Total)
	l.reads.Add(1)
	for {
		m := l.max.Load()
		if body.Total <= m || l.max.CompareAndSwap(m, body.Total) {
			return nil
		}
	}
}

// Run reads once a second until ctx ends.
func (l *lagPoller) Run(ctx context.Context) {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			if l.read(ctx) != nil && ctx.Err() == nil {
				l.errors.Add(1)
			}
		}
	}
}

// LagStats is the persister's lag seen during the run: records of the log
// not yet persisted, summed over partitions (GET /lag "total").
type LagStats struct {
	Max    int64 `json:"max"`
	Final  int64 `json:"final"`
	Reads  int64 `json:"reads"`
	Errors int64 `json:"errors"`
}
