//go:build linux

package netpoll

import (
	"errors"
	"fmt"
	"io"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// wakeID is the epoll data of the poller's own eventfd; connections are
// numbered from 1.
const wakeID = 0

// rearmRetry is how long a connection whose re-arming failed (the kernel
// is out of memory) waits before its handler is run again anyway.
const rearmRetry = 100 * time.Millisecond

// Poller watches connections with one epoll instance and one goroutine
// blocked in epoll_wait.
type Poller struct {
	epfd int
	// wake is an eventfd that ends the loop on Close.
	wake int
	done chan struct{}

	// ctl is held shared by every epoll_ctl and exclusively by Close, so
	// none runs on a closed epoll descriptor (whose number may belong to
	// another poller by then).
	ctl    sync.RWMutex
	closed bool

	mu   sync.Mutex
	next uint64
	// conns maps the epoll data (an id never reused, unlike a file
	// descriptor) to its connection, so a late event of a removed
	// connection finds nothing instead of a new connection on the same fd.
	conns map[uint64]*Conn
}

// Conn is a connection registered with a Poller.
type Conn struct {
	p      *Poller
	id     uint64
	rc     syscall.RawConn
	handle func() bool

	mu      sync.Mutex
	removed bool
}

// New starts a Poller.
func New() (*Poller, error) {
	epfd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("netpoll: epoll_create1: %w", err)
	}
	wake, err := unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK)
	if err != nil {
		_ = unix.Close(epfd)
		return nil, fmt.Errorf("netpoll: eventfd: %w", err)
	}
	ev := event(unix.EPOLLIN, wakeID)
	if err := unix.EpollCtl(epfd, unix.EPOLL_CTL_ADD, wake, &ev); err != nil {
		_ = unix.Close(wake)
		_ = unix.Close(epfd)
		return nil, fmt.Errorf("netpoll: epoll_ctl: %w", err)
	}
	p := &Poller{epfd: epfd, wake: wake, done: make(chan struct{}), conns: make(map[uint64]*Conn)}
	go p.loop()
	return p, nil
}

// event builds an epoll_event carrying id in its 64 bits of data.
func event(events uint32, id uint64) unix.EpollEvent {
	ev := unix.EpollEvent{Events: events}
	ev.Fd = int32(uint32(id))
	ev.Pad = int32(uint32(id >> 32))
	return ev
}

func eventID(ev *unix.EpollEvent) uint64 {
	return uint64(uint32(ev.Fd)) | uint64(uint32(ev.Pad))<<32
}

// armed is what a connection waits for: input, the peer's FIN, and (always
// reported) errors and hang-ups, once per arming.
const armed = unix.EPOLLIN | unix.EPOLLRDHUP | unix.EPOLLONESHOT

func (p *Poller) loop() {
	defer close(p.done)
	events := make([]unix.EpollEvent, 256)
	for {
		n, err := unix.EpollWait(p.epfd, events, -1)
		if err != nil {
			if errors.Is(err, unix.EINTR) {
				continue
			}
			return
		}
		for i := range events[:n] {
			id := eventID(&events[i])
			if id == wakeID {
				return
			}
			p.mu.Lock()
			c := p.conns[id]
			p.mu.Unlock()
			if c != nil {
				go c.run()
			}
		}
	}
}

// Add registers conn, armed: handle runs on a goroutine of its own each
// time conn has input (or its peer hung up or it failed), never twice at
// once for the same conn, since the registration is one-shot and re-armed
// only after handle returned true. handle should read with Conn.Read until
// ErrWouldBlock; returning false ends the watch (call Remove before
// closing conn).
func (p *Poller) Add(conn syscall.Conn, handle func() bool) (*Conn, error) {
	rc, err := conn.SyscallConn()
	if err != nil {
		return nil, fmt.Errorf("netpoll: %w", err)
	}
	p.ctl.RLock()
	defer p.ctl.RUnlock()
	if p.closed {
		return nil, ErrClosed
	}
	p.mu.Lock()
	p.next++
	c := &Conn{p: p, id: p.next, rc: rc, handle: handle}
	p.conns[c.id] = c
	p.mu.Unlock()
	var ctlErr error
	err = rc.Control(func(fd uintptr) {
		ev := event(armed, c.id)
		ctlErr = unix.EpollCtl(p.epfd, unix.EPOLL_CTL_ADD, int(fd), &ev)
	})
	if err == nil {
		err = ctlErr
	}
	if err != nil {
		p.forget(c.id)
		return nil, fmt.Errorf("netpoll: register: %w", err)
	}
	return c, nil
}

func (p *Poller) forget(id uint64) {
	p.mu.Lock()
	delete(p.conns, id)
	p.mu.Unlock()
}

// Len is the number of registered connections.
func (p *Poller) Len() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.conns)
}

// Close stops the poller. Registered connections are no longer watched
// (a turn running finishes, without re-arming); closing them is the
// caller's business.
func (p *Poller) Close() error {
	p.ctl.Lock()
	defer p.ctl.Unlock()
	if p.closed {
		return nil
	}
	p.closed = true
	p.mu.Lock()
	p.conns = map[uint64]*Conn{}
	p.mu.Unlock()
	var one = [8]byte{1}
	if _, err := unix.Write(p.wake, one[:]); err != nil {
		return fmt.Errorf("netpoll: wake: %w", err)
	}
	<-p.done
	return errors.Join(unix.Close(p.wake), unix.Close(p.epfd))
}

// run is one turn of the connection's handler, then its re-arming.
func (c *Conn) run() {
	for c.handle() {
		err := c.rearm()
		if err == nil || errors.Is(err, ErrClosed) {
			return
		}
		// Not watched any more: serve it by polling rather than lose it.
		time.Sleep(rearmRetry)
	}
}

// rearm watches c again after a turn. It is done under c.mu and inside
// Control, which holds the descriptor open: a Remove or a Close meanwhile
// can never let it touch a descriptor reused by another connection.
func (c *Conn) rearm() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.removed {
		return nil
	}
	c.p.ctl.RLock()
	defer c.p.ctl.RUnlock()
	if c.p.closed {
		return ErrClosed
	}
	var ctlErr error
	err := c.rc.Control(func(fd uintptr) {
		ev := event(armed, c.id)
		ctlErr = unix.EpollCtl(c.p.epfd, unix.EPOLL_CTL_MOD, int(fd), &ev)
	})
	if err != nil {
		// Closed: nothing left to watch.
		return nil
	}
	return ctlErr
}

// Remove stops watching c; call it before closing the connection, so its
// descriptor number can be reused safely. It is idempotent.
func (c *Conn) Remove() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.removed {
		return
	}
	c.removed = true
	c.p.forget(c.id)
	c.p.ctl.RLock()
	defer c.p.ctl.RUnlock()
	if c.p.closed {
		return
	}
	// An error means the descriptor is closed already, which removed it.
	_ = c.rc.Control(func(fd uintptr) {
		_ = unix.EpollCtl(c.p.epfd, unix.EPOLL_CTL_DEL, int(fd), nil)
	})
}

// Read reads what is ready without waiting: ErrWouldBlock when nothing
// is, io.EOF once the peer finished (or the socket was shut down).
func (c *Conn) Read(b []byte) (int, error) {
	return Read(c.rc, b)
}

// Read is Conn.Read for any raw connection.
func Read(rc syscall.RawConn, b []byte) (n int, err error) {
	cerr := rc.Read(func(fd uintptr) bool {
		for {
			n, err = unix.Read(int(fd), b)
			if !errors.Is(err, unix.EINTR) {
				break
			}
		}
		// true: never wait in Go's poller; EAGAIN is the answer.
		return true
	})
	if cerr != nil {
		return 0, cerr
	}
	switch {
	case errors.Is(err, unix.EAGAIN):
		return 0, ErrWouldBlock
	case err != nil:
		return 0, err
	case n == 0 && len(b) > 0:
		return 0, io.EOF
	}
	return n, nil
}
