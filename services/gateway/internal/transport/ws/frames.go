// Package ws is the native WebSocket transport at /ws: the upgrade, RFC
// 6455 frames read and written on the hijacked TCP connection, the reader
// that the poller (netpoll) runs only while a connection has input, and
// batched writes.
package ws

import (
	"encoding/binary"
	"errors"
	"fmt"
	"unicode/utf8"

	"github.com/fasthttp/websocket"

	"relay/services/gateway/internal/conn"
)

// WebSocket opcodes (RFC 6455 §5.2).
const (
	OpContinuation byte = 0x0
	OpText         byte = 0x1
	OpBinary       byte = 0x2
	OpClose        byte = 0x8
	OpPing         byte = 0x9
	OpPong         byte = 0xA
)

// maxControlPayload is the largest payload of a control frame (§5.5).
const maxControlPayload = 125

// frameError is a client frame that breaks RFC 6455 (or the read limit):
// the connection is closed with d.
type frameError struct {
	d    conn.Disconnect
	text string
}

func (e *frameError) Error() string { return fmt.Sprintf("websocket: %s (close %d)", e.text, e.d.Code) }

func protocolError(text string) error {
	return &frameError{d: conn.DisconnectProtocol, text: text}
}

// errReadLimit is a message above WS_READ_LIMIT, refused from its header.
var errReadLimit = &frameError{d: conn.DisconnectTooBig, text: "message too big"}

// frameHeader is a parsed frame header.
type frameHeader struct {
	fin    bool
	rsv    byte
	op     byte
	masked bool
	mask   [4]byte
	length uint64
	// size is the header's own length in bytes.
	size int
}

// parseHeader parses the frame header at the start of b; ok is false
// while b holds less than a whole header.
func parseHeader(b []byte) (h frameHeader, ok bool) {
	if len(b) < 2 {
		return h, false
	}
	h.fin = b[0]&0x80 != 0
	h.rsv = b[0] & 0x70
	h.op = b[0] & 0x0F
	h.masked = b[1]&0x80 != 0
	h.size = 2
	switch n := b[1] & 0x7F; n {
	case 126:
		if len(b) < 4 {
			return h, false
		}
		h.length = uint64(binary.BigEndian.Uint16(b[2:]))
		h.size = 4
	case 127:
		if len(b) < 10 {
			return h, false
		}
		h.length = binary.BigEndian.Uint64(b[2:])
		h.size = 10
	default:
		h.length = uint64(n)
	}
	if h.masked {
		if len(b) < h.size+4 {
			return h, false
		}
		copy(h.mask[:], b[h.size:])
		h.size += 4
	}
	return h, true
}

// frameReader assembles a client's frames from the bytes its connection
// delivers, however they are split. It keeps a partial frame (and a
// fragmented message) between reads, allocated only while there is one.
type frameReader struct {
	// limit is the largest message (WS_READ_LIMIT).
	limit int64
	// pending is the start of a frame not yet complete.
	pending []byte
	// msg is the payload so far of a fragmented message of opcode msgOp
	// (0 when none is open).
	msg   []byte
	msgOp byte
}

// feed parses every complete frame of what was pending followed by data,
// calling handle with each message (text or binary, fragments joined) and
// each control frame, in order. payload is only valid during the call.
// data is unmasked in place. feed stops at the first error of handle, or
// at a frame that breaks the protocol (a *frameError), checked from its
// header: an oversized message is refused before its payload is read.
func (r *frameReader) feed(data []byte, handle func(op byte, payload []byte) error) error {
	fromPending := len(r.pending) > 0
	if fromPending {
		r.pending = append(r.pending, data...)
		data = r.pending
	}
	for {
		h, ok := parseHeader(data)
		if !ok {
			break
		}
		if err := r.check(&h); err != nil {
			r.reset()
			return err
		}
		end := h.size + int(h.length)
		if len(data) < end {
			r.keep(data, end, fromPending)
			return nil
		}
		payload := data[h.size:end]
		unmask(payload, h.mask)
		data = data[end:]
		if err := r.dispatch(&h, payload, handle); err != nil {
			r.reset()
			return err
		}
	}
	r.keep(data, len(data), fromPending)
	return nil
}

// check validates a header before its payload: only what a client may
// send, with no extension negotiated.
func (r *frameReader) check(h *frameHeader) error {
	switch {
	case h.rsv != 0:
		return protocolError("reserved bits set")
	case !h.masked:
		return protocolError("client frame not masked")
	case h.length>>63 != 0:
		return protocolError("invalid payload length")
	}
	switch h.op {
	case OpClose, OpPing, OpPong:
		if !h.fin {
			return protocolError("fragmented control frame")
		}
		if h.length > maxControlPayload {
			return protocolError("control frame too long")
		}
		return nil
	case OpContinuation:
		if r.msgOp == 0 {
			return protocolError("continuation frame without a message")
		}
	case OpText, OpBinary:
		if r.msgOp != 0 {
			return protocolError("new message inside a fragmented one")
		}
	default:
		return protocolError("unknown opcode")
	}
	if h.length > uint64(r.limit) || uint64(len(r.msg))+h.length > uint64(r.limit) {
		return errReadLimit
	}
	return nil
}

func (r *frameReader) dispatch(h *frameHeader, payload []byte, handle func(byte, []byte) error) error {
	switch {
	case h.op >= OpClose:
		return handle(h.op, payload)
	case h.op != OpContinuation && h.fin:
		// The common case: a whole message in one frame, not copied.
		return handle(h.op, payload)
	case h.op != OpContinuation:
		r.msgOp = h.op
		r.msg = append([]byte(nil), payload...)
		return nil
	}
	r.msg = append(r.msg, payload...)
	if !h.fin {
		return nil
	}
	op, msg := r.msgOp, r.msg
	r.msg, r.msgOp = nil, 0
	return handle(op, msg)
}

// keep stores rest (the start of a frame of total length want, when
// known) for the next feed, or frees the pending buffer when rest is empty.
// inPending says rest is the tail of pending rather than the caller's.
func (r *frameReader) keep(rest []byte, want int, inPending bool) {
	if len(rest) == 0 {
		r.pending = nil
		return
	}
	if inPending {
		// rest is the tail of pending: move it to the front.
		r.pending = r.pending[:copy(r.pending, rest)]
		return
	}
	// Reserve the whole frame (up to a bound: the length is the client's
	// word) so a large frame arriving in pieces grows the buffer once.
	buf := make([]byte, len(rest), max(len(rest), min(want, 64<<10)))
	copy(buf, rest)
	r.pending = buf
}

func (r *frameReader) reset() {
	r.pending, r.msg, r.msgOp = nil, nil, 0
}

// unmask XORs b with the masking key (§5.3), eight bytes at a time.
func unmask(b []byte, key [4]byte) {
	k := uint64(binary.LittleEndian.Uint32(key[:]))
	k |= k << 32
	i := 0
	for ; i+8 <= len(b); i += 8 {
		binary.LittleEndian.PutUint64(b[i:], binary.LittleEndian.Uint64(b[i:])^k)
	}
	for ; i < len(b); i++ {
		b[i] ^= key[i&3]
	}
}

// appendFrame appends payload as one final, unmasked frame of opcode op
// (RFC 6455 §5.2; a server never masks).
func appendFrame(buf []byte, op byte, payload []byte) []byte {
	b0 := 0x80 | op
	switch n := len(payload); {
	case n < 126:
		buf = append(buf, b0, byte(n))
	case n <= 0xFFFF:
		buf = append(buf, b0, 126)
		buf = binary.BigEndian.AppendUint16(buf, uint16(n))
	default:
		buf = append(buf, b0, 127)
		buf = binary.BigEndian.AppendUint64(buf, uint64(n))
	}
	return append(buf, payload...)
}

// closeReply validates the payload of a client's close frame (§5.5.1)
// and returns the close frame that answers it (the same code, or none).
func closeReply(payload []byte) ([]byte, error) {
	switch {
	case len(payload) == 0:
		return nil, nil
	case len(payload) == 1:
		return nil, protocolError("close frame with a one-byte payload")
	}
	code := int(binary.BigEndian.Uint16(payload))
	if !validCloseCode(code) {
		return nil, protocolError("invalid close code")
	}
	if !utf8.Valid(payload[2:]) {
		return nil, protocolError("close reason is not UTF-8")
	}
	return websocket.FormatCloseMessage(code, ""), nil
}

// validCloseCode tells whether a peer may send code (§7.4).
func validCloseCode(code int) bool {
	return (code >= 1000 && code <= 1003) || (code >= 1007 && code <= 1014) || (code >= 3000 && code <= 4999)
}

var errPeerClosed = errors.New("websocket: peer sent close")

// AppendClientFrame appends payload as one client frame of opcode op,
// masked as RFC 6455 requires of clients; fin false leaves the message open
// for continuation frames. Tests and load tools speak to /ws with it.
func AppendClientFrame(buf []byte, fin bool, op byte, payload []byte) []byte {
	b0 := op
	if fin {
		b0 |= 0x80
	}
	switch n := len(payload); {
	case n < 126:
		buf = append(buf, b0, 0x80|byte(n))
	case n <= 0xFFFF:
		buf = append(buf, b0, 0x80|126)
		buf = binary.BigEndian.AppendUint16(buf, uint16(n))
	default:
		buf = append(buf, b0, 0x80|127)
		buf = binary.BigEndian.AppendUint64(buf, uint64(n))
	}
	mask := [4]byte{0x37, 0xfa, 0x21, 0x3d}
	buf = append(buf, mask[:]...)
	start := len(buf)
	buf = append(buf, payload...)
	unmask(buf[start:], mask)
	return buf
}

// ParseFrame parses the whole unmasked frame (as a server sends) at the
// start of b: its opcode, its payload and its length in b; ok is false
// while b holds less than a whole frame. Tests and load tools read /ws
// with it.
func ParseFrame(b []byte) (op byte, payload []byte, n int, ok bool) {
	h, ok := parseHeader(b)
	if !ok || h.masked || uint64(len(b)-h.size) < h.length {
		return 0, nil, 0, false
	}
	n = h.size + int(h.length)
	return h.op, b[h.size:n], n, true
}
