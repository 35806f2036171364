//go:build !linux

package netpoll

import "syscall"

// Poller is not available on this platform.
type Poller struct{}

// Conn is not available on this platform.
type Conn struct{}

// New returns ErrUnsupported.
func New() (*Poller, error) { return nil, ErrUnsupported }

// Add returns ErrUnsupported.
func (p *Poller) Add(syscall.Conn, func() bool) (*Conn, error) { return nil, ErrUnsupported }

// Len is zero.
func (p *Poller) Len() int { return 0 }

// Close does nothing.
func (p *Poller) Close() error { return nil }

// Remove does nothing.
func (c *Conn) Remove() {}

// Read returns ErrUnsupported.
func (c *Conn) Read([]byte) (int, error) { return 0, ErrUnsupported }

// Read returns ErrUnsupported.
func Read(syscall.RawConn, []byte) (int, error) { return 0, ErrUnsupported }
