package commands

import "sync"

// flights counts the client frames being handled, so a shutdown lets them
// finish before it closes the sockets: a send that Kafka stored gets its
// ack instead of vanishing with the connection. Once draining, new frames
// are refused (UNAVAILABLE) so the wait ends.
type flights struct {
	mu       sync.Mutex
	n        int
	draining bool
	// idle is closed when draining and n is zero.
	idle chan struct{}
}

// begin registers a frame about to be handled; false means the instance is
// draining and the frame must be refused.
func (f *flights) begin() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.draining {
		return false
	}
	f.n++
	return true
}

// end unregisters a frame begin accepted.
func (f *flights) end() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.n--
	if f.draining && f.n == 0 && f.idle != nil {
		close(f.idle)
		f.idle = nil
	}
}

// drain refuses frames from now on and returns a channel closed once the
// frames in flight are done.
func (f *flights) drain() <-chan struct{} {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.draining = true
	ch := make(chan struct{})
	if f.n == 0 {
		close(ch)
	} else if f.idle == nil {
		f.idle = ch
	} else {
		ch = f.idle
	}
	return ch
}

// count returns the frames in flight.
func (f *flights) count() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.n
}
