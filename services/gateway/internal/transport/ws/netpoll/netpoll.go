// Package netpoll runs a function when a connection has something to read,
// from one epoll goroutine per Poller, so that a silent connection holds no
// goroutine of its own (its reader exists only while there is input). On
// platforms without epoll, New returns ErrUnsupported and callers keep a
// goroutine per connection.
package netpoll

import "errors"

// ErrUnsupported is returned by New where there is no epoll.
var ErrUnsupported = errors.New("netpoll: not supported on this platform")

// ErrWouldBlock is returned by Conn.Read when nothing is ready to read.
var ErrWouldBlock = errors.New("netpoll: nothing to read")

// ErrClosed is returned by Add once the Poller is closed.
var ErrClosed = errors.New("netpoll: poller closed")
