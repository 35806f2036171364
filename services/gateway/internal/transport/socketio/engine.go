package socketio

import (
	"bytes"
	"encoding/json"
	"strconv"
)

// Engine.IO protocol 4 packet types, as the first byte of a packet.
const (
	engineOpen    = '0'
	engineClose   = '1'
	enginePing    = '2'
	enginePong    = '3'
	engineMessage = '4'
	engineUpgrade = '5'
	engineNoop    = '6'
	// engineBase64 starts a binary message sent over polling, base64-encoded.
	engineBase64 = 'b'
)

// recordSeparator separates the packets of a polling payload (Engine.IO 4).
const recordSeparator = 0x1e

// Engine.IO error codes of the handshake's HTTP 400 body
// ({"code": N, "message": "..."}), as the reference server sends them.
const (
	errTransportUnknown    = 0
	errUnknownSID          = 1
	errBadHandshakeMethod  = 2
	errBadRequest          = 3
	errUnsupportedProtocol = 5
)

var engineErrorMessages = map[int]string{
	errTransportUnknown:    "Transport unknown",
	errUnknownSID:          "Session ID unknown",
	errBadHandshakeMethod:  "Bad handshake method",
	errBadRequest:          "Bad request",
	errUnsupportedProtocol: "Unsupported protocol version",
}

// Static packets.
var (
	pingPacket  = []byte{enginePing}
	pongPacket  = []byte{enginePong}
	noopPacket  = []byte{engineNoop}
	closePacket = []byte{engineClose}
	probePing   = []byte("2probe")
	probePong   = []byte("3probe")
)

// openPacket is the Engine.IO handshake packet.
func openPacket(sid string, upgrades []string, o Options) []byte {
	b, _ := json.Marshal(struct {
		SID          string   `json:"sid"`
		Upgrades     []string `json:"upgrades"`
		PingInterval int64    `json:"pingInterval"`
		PingTimeout  int64    `json:"pingTimeout"`
		MaxPayload   int      `json:"maxPayload"`
	}{sid, upgrades, o.PingInterval.Milliseconds(), o.PingTimeout.Milliseconds(), o.MaxPayload})
	return append([]byte{engineOpen}, b...)
}

// splitPayload splits a polling request body into its packets. An empty
// packet (two separators in a row, or an empty body) is malformed.
func splitPayload(body []byte) ([][]byte, bool) {
	if len(body) == 0 {
		return nil, false
	}
	n := bytes.Count(body, []byte{recordSeparator}) + 1
	out := make([][]byte, 0, n)
	for len(body) > 0 {
		i := bytes.IndexByte(body, recordSeparator)
		if i < 0 {
			out = append(out, body)
			break
		}
		if i == 0 {
			return nil, false
		}
		out = append(out, body[:i])
		body = body[i+1:]
		if len(body) == 0 {
			// A trailing separator leaves an empty last packet.
			return nil, false
		}
	}
	return out, true
}

// decodeEngine splits a client's Engine.IO packet into its type and its
// payload (what follows the type byte). ok is false for an empty packet or
// a type a client may not send (open is the server's).
func decodeEngine(data []byte) (typ byte, payload []byte, ok bool) {
	if len(data) == 0 {
		return 0, nil, false
	}
	switch data[0] {
	case engineMessage, engineBase64, enginePing, enginePong, engineClose, engineNoop, engineUpgrade:
		return data[0], data[1:], true
	}
	return 0, nil, false
}

// joinPayload appends packets to dst as one polling response body.
func joinPayload(dst []byte, packets [][]byte) []byte {
	for i, p := range packets {
		if i > 0 {
			dst = append(dst, recordSeparator)
		}
		dst = append(dst, p...)
	}
	return dst
}

// engineError is the JSON body of a refused Engine.IO request.
func engineError(code int) []byte {
	return []byte(`{"code":` + strconv.Itoa(code) + `,"message":` + strconv.Quote(engineErrorMessages[code]) + `}`)
}
