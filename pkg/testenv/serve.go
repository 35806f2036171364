package testenv

import (
	"context"
	"net"
	"sync"
	"testing"
	"time"
)

// Service is how every relay service is run: Run until ctx ends, then
// Close (safe to call more than once).
type Service interface {
	Run(ctx context.Context, ln net.Listener) error
	Close() error
}

// Serve runs svc on a loopback port and returns its address and a stop
// function, which the test's cleanup also calls: it cancels Run, waits for
// it to return (at most 30 s) and closes svc twice, reporting any error or
// a Run that does not stop through t. stop runs once however often called.
func Serve(t testing.TB, svc Service) (addr string, stop func()) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- svc.Run(ctx, ln) }()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			select {
			case err := <-done:
				if err != nil {
					t.Errorf("Run: %v", err)
				}
			case <-time.After(30 * time.Second):
				t.Errorf("Run did not return within 30s of cancel")
			}
			for range 2 {
				if err := svc.Close(); err != nil {
					t.Errorf("Close: %v", err)
				}
			}
		})
	}
	t.Cleanup(stop)
	return ln.Addr().String(), stop
}
