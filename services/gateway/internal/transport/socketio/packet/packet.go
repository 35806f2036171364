// Package packet is Socket.IO protocol 5's packets: decoding what clients
// send, encoding what the server sends, and the mapping between them and
// the native protocol's frames (docs/protocol.md#socketio).
package packet

import (
	"bytes"
	"encoding/json"
	"strconv"

	"relay/pkg/chat"
)

// Socket.IO protocol 5 packet types.
const (
	TypeConnect      = 0
	TypeDisconnect   = 1
	TypeEvent        = 2
	TypeAck          = 3
	TypeConnectError = 4
	TypeBinaryEvent  = 5
	TypeBinaryAck    = 6
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

// MainNamespace is the only namespace served.
const MainNamespace = "/"

// engineMessage is the Engine.IO packet type that carries every Socket.IO
// packet.
const engineMessage = '4'

// Packet is a decoded Socket.IO packet (the payload of an Engine.IO
// message packet).
type Packet struct {
	// Type is one of the Type constants.
	Type int
	// Nsp is the namespace; "/" when the packet names none.
	Nsp string
	// ID is the ack id; -1 when the packet has none.
	ID int64
	// Attachments is the number of binary attachments that follow a
	// BINARY_EVENT or BINARY_ACK.
	Attachments int
	// Data is the JSON payload, nil when absent. Its shape was checked
	// against the packet type.
	Data json.RawMessage
}

// Decode parses a Socket.IO packet: <type>[<attachments>-][<nsp>,][<id>][<json>].
// Errors are BAD_REQUEST chat errors that say what is wrong.
func Decode(b []byte) (Packet, error) {
	p := Packet{Nsp: MainNamespace, ID: -1}
	if len(b) == 0 {
		return p, chat.Errorf(chat.CodeBadRequest, "empty Socket.IO packet")
	}
	if b[0] < '0' || b[0] > '6' {
		return p, chat.Errorf(chat.CodeBadRequest, "unknown Socket.IO packet type %q", Truncate(string(b[:1]), 8))
	}
	p.Type = int(b[0] - '0')
	b = b[1:]
	if p.Type == TypeBinaryEvent || p.Type == TypeBinaryAck {
		i := bytes.IndexByte(b, '-')
		n, ok := parseDigits(b[:max(i, 0)], 3)
		if i <= 0 || !ok || n > maxAttachments {
			return p, chat.Errorf(chat.CodeBadRequest, "bad attachment count in binary Socket.IO packet")
		}
		p.Attachments = int(n)
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
		p.Nsp = string(b[:end])
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
		p.ID = id
		b = b[digits:]
	}
	if len(b) > 0 {
		if !json.Valid(b) {
			return p, chat.Errorf(chat.CodeBadRequest, "Socket.IO packet payload is not valid JSON")
		}
		p.Data = b
	}
	return p, checkPayload(p)
}

// checkPayload checks the payload's shape against the packet type, as the
// reference parser does.
func checkPayload(p Packet) error {
	first := byte(0)
	if len(p.Data) > 0 {
		first = p.Data[0]
	}
	switch p.Type {
	case TypeConnect:
		if first != 0 && first != '{' {
			return chat.Errorf(chat.CodeBadRequest, "CONNECT payload must be an object")
		}
	case TypeDisconnect:
		if first != 0 {
			return chat.Errorf(chat.CodeBadRequest, "DISCONNECT has no payload")
		}
	case TypeEvent, TypeBinaryEvent, TypeAck, TypeBinaryAck:
		if first != '[' {
			return chat.Errorf(chat.CodeBadRequest, "EVENT and ACK payloads must be arrays")
		}
	case TypeConnectError:
		return chat.Errorf(chat.CodeBadRequest, "CONNECT_ERROR is sent by servers only")
	}
	return nil
}

// EventArgs splits an EVENT payload into the event name and its first
// argument (nil when there is none); further arguments are ignored.
func EventArgs(data json.RawMessage) (string, json.RawMessage, error) {
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

// AppendEvent appends EVENT [name, data] (data left out when nil). name
// must be JSON-encoded already (with its quotes).
func AppendEvent(dst []byte, quotedName []byte, data []byte) []byte {
	dst = append(dst, engineMessage, '0'+TypeEvent, '[')
	dst = append(dst, quotedName...)
	if data != nil {
		dst = append(dst, ',')
		dst = append(dst, data...)
	}
	return append(dst, ']')
}

// appendAck appends ACK id [data].
func appendAck(dst []byte, id int64, data []byte) []byte {
	dst = append(dst, engineMessage, '0'+TypeAck)
	dst = strconv.AppendInt(dst, id, 10)
	dst = append(dst, '[')
	dst = append(dst, data...)
	return append(dst, ']')
}

// Connected is the CONNECT reply to the main namespace.
func Connected(sid string) []byte {
	return []byte(`40{"sid":"` + sid + `"}`)
}

// ConnectError is the CONNECT_ERROR reply: socket.io-client raises
// connect_error with err.message = message and err.data = {code}.
func ConnectError(nsp string, code chat.Code, message string) []byte {
	b, _ := json.Marshal(struct {
		Message string `json:"message"`
		Data    struct {
			Code chat.Code `json:"code"`
		} `json:"data"`
	}{Message: message, Data: struct {
		Code chat.Code `json:"code"`
	}{code}})
	dst := []byte{engineMessage, '0' + TypeConnectError}
	if nsp != MainNamespace {
		dst = append(dst, nsp...)
		dst = append(dst, ',')
	}
	return append(dst, b...)
}

// Disconnect ends the main namespace's socket from the server side:
// the client does not reconnect by itself ("io server disconnect").
var Disconnect = []byte{engineMessage, '0' + TypeDisconnect}

// Truncate cuts s to n bytes for an error message, marking the cut.
func Truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}
