package socketio

import (
	"bytes"
	"encoding/json"
	"strconv"

	"relay/pkg/chat"
)

// Socket.IO protocol 5 packet types.
const (
	packetConnect      = 0
	packetDisconnect   = 1
	packetEvent        = 2
	packetAck          = 3
	packetConnectError = 4
	packetBinaryEvent  = 5
	packetBinaryAck    = 6
)

// Decoding limits: a packet beyond them is malformed.
const (
	// maxNamespaceLen bounds a namespace name.
	maxNamespaceLen = 256
	// maxIDDigits keeps an ack id inside int64.
	maxIDDigits = 18
	// maxAttachments bounds the binary attachments announced by one packet.
	maxAttachments = 100
)

// mainNamespace is the only namespace served.
const mainNamespace = "/"

// packet is a decoded Socket.IO packet (the payload of an Engine.IO
// message packet).
type packet struct {
	typ int
	// nsp is the namespace; "/" when the packet names none.
	nsp string
	// id is the ack id; -1 when the packet has none.
	id int64
	// attachments is the number of binary attachments that follow a
	// BINARY_EVENT or BINARY_ACK.
	attachments int
	// data is the JSON payload, nil when absent. Its shape was checked
	// against the packet type.
	data json.RawMessage
}

// decodePacket parses a Socket.IO packet: <type>[<attachments>-][<nsp>,][<id>][<json>].
// Errors are BAD_REQUEST chat errors that say what is wrong.
func decodePacket(b []byte) (packet, error) {
	p := packet{nsp: mainNamespace, id: -1}
	if len(b) == 0 {
		return p, chat.Errorf(chat.CodeBadRequest, "empty Socket.IO packet")
	}
	if b[0] < '0' || b[0] > '6' {
		return p, chat.Errorf(chat.CodeBadRequest, "unknown Socket.IO packet type %q", truncate(string(b[:1]), 8))
	}
	p.typ = int(b[0] - '0')
	b = b[1:]
	if p.typ == packetBinaryEvent || p.typ == packetBinaryAck {
		i := bytes.IndexByte(b, '-')
		n, ok := parseDigits(b[:max(i, 0)], 3)
		if i <= 0 || !ok || n > maxAttachments {
			return p, chat.Errorf(chat.CodeBadRequest, "bad attachment count in binary Socket.IO packet")
		}
		p.attachments = int(n)
		b = b[i+1:]
	}
	if len(b) > 0 && b[0] == '/' {
		end := bytes.IndexByte(b, ',')
		if end < 0 {
			end = len(b)
		}
		if end > maxNamespaceLen {
			return p, chat.Errorf(chat.CodeBadRequest, "namespace too long")
		}
		p.nsp = string(b[:end])
		b = b[min(end+1, len(b)):]
	}
	digits := 0
	for digits < len(b) && b[digits] >= '0' && b[digits] <= '9' {
		digits++
	}
	if digits > 0 {
		id, ok := parseDigits(b[:digits], maxIDDigits)
		if !ok {
			return p, chat.Errorf(chat.CodeBadRequest, "ack id out of range")
		}
		p.id = id
		b = b[digits:]
	}
	if len(b) > 0 {
		if !json.Valid(b) {
			return p, chat.Errorf(chat.CodeBadRequest, "Socket.IO packet payload is not valid JSON")
		}
		p.data = b
	}
	return p, checkPayload(p)
}

// checkPayload checks the payload's shape against the packet type, as the
// reference parser does.
func checkPayload(p packet) error {
	first := byte(0)
	if len(p.data) > 0 {
		first = p.data[0]
	}
	switch p.typ {
	case packetConnect:
		if first != 0 && first != '{' {
			return chat.Errorf(chat.CodeBadRequest, "CONNECT payload must be an object")
		}
	case packetDisconnect:
		if first != 0 {
			return chat.Errorf(chat.CodeBadRequest, "DISCONNECT has no payload")
		}
	case packetEvent, packetBinaryEvent, packetAck, packetBinaryAck:
		if first != '[' {
			return chat.Errorf(chat.CodeBadRequest, "EVENT and ACK payloads must be arrays")
		}
	case packetConnectError:
		return chat.Errorf(chat.CodeBadRequest, "CONNECT_ERROR is sent by servers only")
	}
	return nil
}

// eventArgs splits an EVENT payload into the event name and its first
// argument (nil when there is none); further arguments are ignored.
func eventArgs(data json.RawMessage) (string, json.RawMessage, error) {
	var args []json.RawMessage
	if err := json.Unmarshal(data, &args); err != nil || len(args) == 0 {
		return "", nil, chat.Errorf(chat.CodeBadRequest, "EVENT payload must be [name, data]")
	}
	var name string
	if len(args[0]) == 0 || args[0][0] != '"' || json.Unmarshal(args[0], &name) != nil {
		return "", nil, chat.Errorf(chat.CodeBadRequest, "event name must be a string")
	}
	if len(args) < 2 {
		return name, nil, nil
	}
	return name, args[1], nil
}

// parseDigits parses at most maxDigits decimal digits (no sign).
func parseDigits(b []byte, maxDigits int) (int64, bool) {
	if len(b) == 0 || len(b) > maxDigits {
		return 0, false
	}
	var n int64
	for _, c := range b {
		if c < '0' || c > '9' {
			return 0, false
		}
		n = n*10 + int64(c-'0')
	}
	return n, true
}

// Encoders: each appends a complete Engine.IO message packet ('4' plus the
// Socket.IO packet) to dst.

// appendEvent appends EVENT [name, data] (data left out when nil). name
// must be JSON-encoded already (with its quotes).
func appendEvent(dst []byte, quotedName []byte, data []byte) []byte {
	dst = append(dst, engineMessage, '0'+packetEvent, '[')
	dst = append(dst, quotedName...)
	if data != nil {
		dst = append(dst, ',')
		dst = append(dst, data...)
	}
	return append(dst, ']')
}

// appendAck appends ACK id [data].
func appendAck(dst []byte, id int64, data []byte) []byte {
	dst = append(dst, engineMessage, '0'+packetAck)
	dst = strconv.AppendInt(dst, id, 10)
	dst = append(dst, '[')
	dst = append(dst, data...)
	return append(dst, ']')
}

// connectPacket is the CONNECT reply to the main namespace.
func connectPacket(sid string) []byte {
	return []byte(`40{"sid":"` + sid + `"}`)
}

// connectErrorPacket is the CONNECT_ERROR reply: socket.io-client raises
// connect_error with err.message = message and err.data = {code}.
func connectErrorPacket(nsp string, code chat.Code, message string) []byte {
	b, _ := json.Marshal(struct {
		Message string `json:"message"`
		Data    struct {
			Code chat.Code `json:"code"`
		} `json:"data"`
	}{Message: message, Data: struct {
		Code chat.Code `json:"code"`
	}{code}})
	dst := []byte{engineMessage, '0' + packetConnectError}
	if nsp != mainNamespace {
		dst = append(dst, nsp...)
		dst = append(dst, ',')
	}
	return append(dst, b...)
}

// disconnectPacket ends the main namespace's socket from the server side:
// the client does not reconnect by itself ("io server disconnect").
var disconnectPacket = []byte{engineMessage, '0' + packetDisconnect}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}
