package main

import (
	"encoding/binary"
	"errors"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// Every wait returns only after a sync that started after it was called;
// waiters arriving together share syncs.
func TestGroupSyncerSharesSyncsThatStartAfterTheCall(t *testing.T) {
	type span struct{ start, end time.Time }
	var (
		mu    sync.Mutex
		syncs []span
	)
	g := newGroupSyncer(func() error {
		s := span{start: time.Now()}
		time.Sleep(5 * time.Millisecond)
		s.end = time.Now()
		mu.Lock()
		syncs = append(syncs, s)
		mu.Unlock()
		return nil
	})
	const waiters = 64
	var wg sync.WaitGroup
	calls := make([]span, waiters)
	for i := range waiters {
		wg.Go(func() {
			time.Sleep(time.Duration(i%8) * time.Millisecond)
			calls[i].start = time.Now()
			if err := g.wait(); err != nil {
				t.Error(err)
			}
			calls[i].end = time.Now()
		})
	}
	wg.Wait()
	mu.Lock()
	defer mu.Unlock()
	if len(syncs) >= waiters/2 {
		t.Errorf("%d syncs for %d waiters: not shared", len(syncs), waiters)
	}
	for i, c := range calls {
		covered := false
		for _, s := range syncs {
			if !s.start.Before(c.start) && !s.end.After(c.end) {
				covered = true
				break
			}
		}
		if !covered {
			t.Fatalf("waiter %d returned without a sync started after its call", i)
		}
	}
}

func TestGroupSyncerReportsFailure(t *testing.T) {
	boom := errors.New("disk gone")
	var fail atomic.Bool
	fail.Store(true)
	g := newGroupSyncer(func() error {
		if fail.Load() {
			return boom
		}
		return nil
	})
	if err := g.wait(); !errors.Is(err, boom) {
		t.Fatalf("wait = %v, want %v", err, boom)
	}
	fail.Store(false)
	if err := g.wait(); err != nil {
		t.Fatalf("wait after recovery = %v", err)
	}
}

// request frames a Kafka request header (api key, version, correlation id)
// and body.
func request(key int16, corr int32, body int) []byte {
	b := make([]byte, 12+body)
	binary.BigEndian.PutUint32(b[0:4], uint32(8+body))
	binary.BigEndian.PutUint16(b[4:6], uint16(key))
	binary.BigEndian.PutUint16(b[6:8], 9)
	binary.BigEndian.PutUint32(b[8:12], uint32(corr))
	for i := 12; i < len(b); i++ {
		b[i] = byte(i) // body bytes that look like headers must not confuse the scan
	}
	return b
}

// The scan finds the durable requests of a stream however reads split it,
// and only their responses wait for a sync.
func TestSyncConnHoldsOnlyDurableResponses(t *testing.T) {
	var stream []byte
	want := map[int32]bool{}
	for i := range int32(40) {
		key := []int16{0, 1, 3, 8, 18, 22}[i%6] // produce, fetch, metadata, offset commit, api versions, init producer id
		stream = append(stream, request(key, 1000+i, int(i*7)%50)...)
		if durableKeys[key] {
			want[1000+i] = true
		}
	}
	for _, chunk := range []int{1, 2, 3, 5, 12, 13, 64, len(stream)} {
		var syncs atomic.Int64
		c := &syncConn{g: newGroupSyncer(func() error { syncs.Add(1); return nil }), durable: map[int32]bool{}}
		for rest := stream; len(rest) > 0; {
			n := min(chunk, len(rest))
			c.scan(rest[:n])
			rest = rest[n:]
		}
		if len(c.durable) != len(want) {
			t.Fatalf("chunks of %d: durable %v, want %v", chunk, c.durable, want)
		}
		for corr := range want {
			if !c.durable[corr] {
				t.Fatalf("chunks of %d: request %d not marked durable", chunk, corr)
			}
		}
		// Responses: only the durable ones sync first.
		server, client := net.Pipe()
		go func() { _, _ = io.Copy(io.Discard, client) }()
		c.Conn = server
		for i := range int32(40) {
			resp := make([]byte, 12)
			binary.BigEndian.PutUint32(resp[0:4], 8)
			binary.BigEndian.PutUint32(resp[4:8], uint32(1000+i))
			before := syncs.Load()
			if _, err := c.Write(resp); err != nil {
				t.Fatal(err)
			}
			if got := syncs.Load() - before; (got == 1) != want[1000+i] {
				t.Fatalf("chunks of %d: response %d synced %d times, durable %v", chunk, 1000+i, got, want[1000+i])
			}
		}
		if len(c.durable) != 0 {
			t.Fatalf("durable ids left after their responses: %v", c.durable)
		}
		server.Close()
		client.Close()
	}
}

// A failed sync fails the write: no ack for what may not be on disk.
func TestSyncConnRefusesAckWhenSyncFails(t *testing.T) {
	server, client := net.Pipe()
	defer client.Close()
	go func() { _, _ = io.Copy(io.Discard, client) }()
	c := &syncConn{Conn: server, g: newGroupSyncer(func() error { return errors.New("EIO") }), durable: map[int32]bool{}}
	c.scan(request(0, 7, 3))
	resp := make([]byte, 8)
	binary.BigEndian.PutUint32(resp[0:4], 4)
	binary.BigEndian.PutUint32(resp[4:8], 7)
	if _, err := c.Write(resp); err == nil {
		t.Fatal("a produce response went out although the sync failed")
	}
}
