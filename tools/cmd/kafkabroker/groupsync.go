package main

import (
	"encoding/binary"
	"fmt"
	"net"
	"os"
	"sync"

	"golang.org/x/sys/unix"
)

// Group commit for -sync. kfake's own SyncWrites fsyncs a partition's
// segment and index files for every batch it appends, inside its single
// cluster goroutine: a produce request touching 12 partitions costs 24
// fsyncs, one after another, and every other request (fetches too) waits
// behind them. Here kfake writes to the page cache only, and the response
// of every request that acknowledges a write is held at the connection
// until one syncfs(2) of the data directory's filesystem that started after
// the write has returned: acks still mean "on disk", the syncs of
// concurrent requests are shared, and none runs on the cluster goroutine.
//
// Why the whole filesystem and not fsync of the files that changed: on
// ext4 (one journal) every fdatasync of an appended file commits the
// journal, so the 24 segment and index files of a 12-partition produce
// cost 24 commits; one by one that measured 4–5× a syncfs on the loaded
// 2-core dev machine (p50 10 ms against 2 ms), in parallel still 2×, and a
// broker built that way doubled relay's send→ack. syncfs is one commit,
// whatever else is dirty (docs/performance.md, comparison section).

// durableKeys are the request kinds whose responses acknowledge state kfake
// persisted: Produce, OffsetCommit, CreateTopics, InitProducerID,
// AddPartitionsToTxn, AddOffsetsToTxn, EndTxn, TxnOffsetCommit.
var durableKeys = map[int16]bool{0: true, 8: true, 19: true, 22: true, 24: true, 25: true, 26: true, 28: true}

// groupSyncer runs syncs of one filesystem, sharing each among the callers
// waiting when it starts.
type groupSyncer struct {
	syncFn func() error

	mu      sync.Mutex
	cond    *sync.Cond
	started uint64 // syncs started so far
	done    uint64 // the newest sync finished (syncs finish in order)
	running bool
	err     error // of the sync numbered done
}

// newFSSyncer syncs the filesystem holding dir. The returned close syncs
// once more (what kfake wrote while shutting down) and releases the
// directory.
func newFSSyncer(dir string) (*groupSyncer, func() error, error) {
	f, err := os.Open(dir)
	if err != nil {
		return nil, nil, fmt.Errorf("open data dir for syncing: %w", err)
	}
	fd := int(f.Fd())
	syncFS := func() error { return unix.Syncfs(fd) }
	closeDir := func() error {
		err := syncFS()
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		return err
	}
	return newGroupSyncer(syncFS), closeDir, nil
}

func newGroupSyncer(fn func() error) *groupSyncer {
	g := &groupSyncer{syncFn: fn}
	g.cond = sync.NewCond(&g.mu)
	return g
}

// wait returns once a sync that started after the call finished, with its
// error. A sync already running may have missed what the caller wrote, so
// the caller needs the next one; whoever finds none running starts it.
func (g *groupSyncer) wait() error {
	g.mu.Lock()
	defer g.mu.Unlock()
	want := g.started + 1
	for g.done < want {
		if g.running {
			g.cond.Wait()
			continue
		}
		g.running = true
		g.started++
		n := g.started
		g.mu.Unlock()
		err := g.syncFn()
		g.mu.Lock()
		g.running = false
		g.done, g.err = n, err
		g.cond.Broadcast()
	}
	return g.err
}

// syncListener hands kfake connections whose durable responses wait for a
// group sync.
type syncListener struct {
	net.Listener
	g *groupSyncer
}

func (l syncListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return &syncConn{Conn: c, g: l.g, durable: map[int32]bool{}}, nil
}

// syncConn notes, as kfake reads them, which requests acknowledge writes
// (by correlation id), and holds their responses until a group sync.
// kfake reads a connection from one goroutine and writes each response with
// one Write of the whole frame (4-byte size, correlation id, body), from
// another goroutine: mu guards what both touch.
type syncConn struct {
	net.Conn
	g *groupSyncer

	mu      sync.Mutex
	durable map[int32]bool

	// The request being read: its first 12 bytes (size, api key, api
	// version, correlation id) and how much of it is left to skip.
	head  [12]byte
	headN int
	skip  int64
}

func (c *syncConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	c.scan(p[:n])
	return n, err
}

// scan follows the request framing over whatever chunks reads return.
func (c *syncConn) scan(b []byte) {
	for len(b) > 0 {
		if c.skip > 0 {
			k := min(int64(len(b)), c.skip)
			c.skip -= k
			b = b[k:]
			continue
		}
		k := copy(c.head[c.headN:], b)
		c.headN += k
		b = b[k:]
		if c.headN < len(c.head) {
			return
		}
		size := int64(int32(binary.BigEndian.Uint32(c.head[0:4])))
		key := int16(binary.BigEndian.Uint16(c.head[4:6]))
		corr := int32(binary.BigEndian.Uint32(c.head[8:12]))
		if durableKeys[key] {
			c.mu.Lock()
			c.durable[corr] = true
			c.mu.Unlock()
		}
		c.headN = 0
		c.skip = max(size-8, 0) // the body after api key, version and correlation id
	}
}

func (c *syncConn) Write(b []byte) (int, error) {
	if len(b) >= 8 {
		corr := int32(binary.BigEndian.Uint32(b[4:8]))
		c.mu.Lock()
		durable := c.durable[corr]
		delete(c.durable, corr)
		c.mu.Unlock()
		if durable {
			if err := c.g.wait(); err != nil {
				// No ack for what may not be on disk: the client sees the
				// connection fail and retries (its producer is idempotent).
				return 0, fmt.Errorf("sync data dir: %w", err)
			}
		}
	}
	return c.Conn.Write(b)
}
