package socketio

// The two transports of a session: HTTP long-polling (poll, post) and the
// upgrade to a WebSocket (beginUpgrade ... completeUpgrade, readWS).

import (
	"errors"
	"time"

	"github.com/fasthttp/websocket"
)

// poll answers a polling GET: it waits for packets and returns them as one
// payload.
func (s *Session) poll() ([]byte, int) {
	s.mu.Lock()
	if s.transport != transportPolling && !s.closing {
		s.mu.Unlock()
		return nil, errBadRequest
	}
	if s.getting {
		s.mu.Unlock()
		// Two polls at once: a broken client (the reference server ends it too).
		s.close("poll overlap", false)
		return nil, errBadRequest
	}
	s.getting = true
	s.mu.Unlock()
	s.srv.metrics.parked.Inc()
	defer s.srv.metrics.parked.Dec()
	// A bound for polls nobody answers (the heartbeat normally ends them).
	limit := time.NewTimer(s.srv.opts.PingInterval + s.srv.opts.PingTimeout)
	defer limit.Stop()
	var upgradeWait *time.Timer
	defer func() {
		if upgradeWait != nil {
			upgradeWait.Stop()
		}
	}()
	for {
		s.mu.Lock()
		if len(s.pending) > 0 || s.closing || s.transport != transportPolling {
			packets := s.pending
			s.pending = nil
			// The close packet goes alone, after the last packets.
			last := s.closing && (len(packets) == 0 || !s.graceful)
			if last {
				packets = [][]byte{closePacket}
			}
			s.getting = false
			s.mu.Unlock()
			notify(s.space)
			if last {
				s.finalize()
			}
			if len(packets) == 0 {
				return noopPacket, 0
			}
			n := len(packets) - 1
			for _, p := range packets {
				n += len(p)
			}
			return joinPayload(make([]byte, 0, n), packets), 0
		}
		upgrading := s.upgrading
		s.mu.Unlock()
		var upgradeC <-chan time.Time
		if upgrading {
			if upgradeWait == nil {
				upgradeWait = time.NewTimer(upgradePollWait)
			}
			upgradeC = upgradeWait.C
		}
		select {
		case <-s.wake:
		case <-s.closed:
		case <-upgradeC:
			return s.endPoll(noopPacket)
		case <-limit.C:
			return s.endPoll(noopPacket)
		}
	}
}

func (s *Session) endPoll(body []byte) ([]byte, int) {
	s.mu.Lock()
	s.getting = false
	s.mu.Unlock()
	return body, 0
}

// post handles a polling POST body (copied by the caller).
func (s *Session) post(body []byte) int {
	s.mu.Lock()
	if s.closing {
		// The client will learn on its next poll.
		s.mu.Unlock()
		return 0
	}
	if s.transport != transportPolling {
		s.mu.Unlock()
		return errBadRequest
	}
	if s.posting {
		s.mu.Unlock()
		s.close("post overlap", false)
		return errBadRequest
	}
	s.posting = true
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		s.posting = false
		s.mu.Unlock()
	}()
	packets, ok := splitPayload(body)
	if !ok {
		s.close("parse error", false)
		return errBadRequest
	}
	for _, p := range packets {
		if !s.receive(p, false) {
			s.close("parse error", false)
			return errBadRequest
		}
	}
	return 0
}

// beginUpgrade marks a probed WebSocket as upgrading the session; a
// waiting poll then returns a noop so the client can pause polling.
func (s *Session) beginUpgrade() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closing || s.transport != transportPolling || s.upgrading {
		return false
	}
	s.upgrading = true
	notify(s.wake)
	return true
}

func (s *Session) cancelUpgrade() {
	s.mu.Lock()
	s.upgrading = false
	s.mu.Unlock()
}

// canUpgrade tells whether a WebSocket may start probing this session.
func (s *Session) canUpgrade() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return !s.closing && s.transport == transportPolling && !s.upgrading
}

// completeUpgrade switches the session to ws and flushes the packets
// queued for polling over it, before any other write.
func (s *Session) completeUpgrade(ws *websocket.Conn) bool {
	s.wmu.Lock()
	s.mu.Lock()
	if s.closing {
		s.mu.Unlock()
		s.wmu.Unlock()
		return false
	}
	s.transport = transportWebSocket
	s.upgrading = false
	packets := s.pending
	s.pending = nil
	s.ws = ws
	s.mu.Unlock()
	notify(s.wake)
	notify(s.space)
	var err error
	for _, p := range packets {
		if err = ws.SetWriteDeadline(time.Now().Add(s.srv.opts.WriteTimeout)); err == nil {
			err = ws.WriteMessage(websocket.TextMessage, p)
		}
		if err != nil {
			break
		}
	}
	s.wmu.Unlock()
	s.srv.metrics.sessions.WithLabelValues(transportPolling.String()).Dec()
	s.srv.metrics.sessions.WithLabelValues(transportWebSocket.String()).Inc()
	s.srv.metrics.upgrades.Inc()
	if err != nil {
		s.close("transport error", false)
		return false
	}
	return true
}

// readWS reads the client's packets from ws until it fails or the session
// closes.
func (s *Session) readWS(ws *websocket.Conn) {
	// The heartbeat closes silent sessions; the deadline is a backstop.
	silence := s.srv.opts.PingInterval + s.srv.opts.PingTimeout + time.Second
	for {
		// Under wmu, so a close (which sets a past deadline) cannot come
		// between the check and the new deadline.
		s.wmu.Lock()
		if s.ws != ws {
			s.wmu.Unlock()
			return
		}
		_ = ws.SetReadDeadline(time.Now().Add(silence))
		s.wmu.Unlock()
		mt, data, err := ws.ReadMessage()
		if err != nil {
			reason := "transport close"
			if errors.Is(err, websocket.ErrReadLimit) {
				reason = "payload too large"
			}
			s.close(reason, false)
			return
		}
		if !s.receive(data, mt == websocket.BinaryMessage) {
			s.closeWith("parse error", true, websocket.CloseUnsupportedData)
			return
		}
	}
}

// detach forgets ws once its handler is about to return.
func (s *Session) detach(ws *websocket.Conn) {
	s.wmu.Lock()
	if s.ws == ws {
		s.ws = nil
	}
	s.wmu.Unlock()
}

// notify signals c without blocking (c has room for one signal).
func notify(c chan struct{}) {
	select {
	case c <- struct{}{}:
	default:
	}
}

// timeoutError is a write that missed its deadline; it is a net.Error so
// callers treat it like a socket timeout.
type timeoutError struct{}

func (timeoutError) Error() string   { return "socketio: write timeout (client does not poll)" }
func (timeoutError) Timeout() bool   { return true }
func (timeoutError) Temporary() bool { return true }
