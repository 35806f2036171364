package packet

import (
	"bytes"
	"encoding/json"
	"strconv"
	"strings"

	"relay/pkg/protocol"
)

// The mapping between the native protocol (docs/protocol.md) and Socket.IO:
//
//	client EVENT [name, data] with ack id N  ≡ native {"event": name, "data": data, "ref": "sio:N"}
//	client EVENT [name, data] without ack id ≡ native {"event": name, "data": data}
//	native {"event": "ack",   "ref": "sio:N", "data": d} → ACK N [d]
//	native {"event": "error", "ref": "sio:N", "data": d} → ACK N [{"error": d}]
//	native {"event": e, "data": d} (a push)              → EVENT [e, d]
//
// so a client that passes an acknowledgement callback gets the native ack
// payload, or {error: {code, message}} instead of an `error` event; one
// without a callback gets errors as `error` events, as native frames
// without ref do.

// refPrefix marks the refs made from Socket.IO ack ids.
const refPrefix = "sio:"

// Ref returns the native ref standing for ack id id ("" when id < 0).
func Ref(id int64) string {
	if id < 0 {
		return ""
	}
	return refPrefix + strconv.FormatInt(id, 10)
}

// AppendNative appends the native client frame equivalent to the event
// name with data (nil: none) and ack id (-1: none) to dst.
func AppendNative(dst []byte, name string, data json.RawMessage, id int64) []byte {
	quoted, _ := json.Marshal(name)
	dst = append(dst, `{"event":`...)
	dst = append(dst, quoted...)
	if data != nil {
		dst = append(dst, `,"data":`...)
		dst = append(dst, data...)
	}
	if id >= 0 {
		dst = append(dst, `,"ref":"`+refPrefix...)
		dst = strconv.AppendInt(dst, id, 10)
		dst = append(dst, '"')
	}
	return append(dst, '}')
}

// AppendFromNative appends the Engine.IO packet that carries the native
// server frame to dst. It reports false when frame is not a native frame
// (a bug of the caller; nothing is appended then).
func AppendFromNative(dst []byte, frame []byte) ([]byte, bool) {
	// Fast path for pushes, which every recipient converts: frames are
	// json.Marshal(protocol.Frame{...}), so `{"event":"<name>","data":{...}}`;
	// one without ref ends with the data object's brace.
	const head = `{"event":"`
	if bytes.HasPrefix(frame, []byte(head)) && bytes.HasSuffix(frame, []byte("}}")) {
		rest := frame[len(head):]
		if end := bytes.IndexByte(rest, '"'); end > 0 && bytes.IndexByte(rest[:end], '\\') < 0 &&
			bytes.HasPrefix(rest[end:], []byte(`","data":{`)) {
			data := rest[end+len(`","data":`) : len(rest)-1]
			return AppendEvent(dst, frame[len(head)-1:len(head)+end+1], data), true
		}
	}
	var f protocol.Frame
	if err := json.Unmarshal(frame, &f); err != nil || f.Event == "" {
		return dst, false
	}
	if id, ok := ackID(f.Ref); ok {
		switch f.Event {
		case protocol.EventAck:
			if f.Data == nil {
				f.Data = json.RawMessage(`{}`)
			}
			return appendAck(dst, id, f.Data), true
		case protocol.EventError:
			wrapped := make([]byte, 0, len(f.Data)+10)
			wrapped = append(wrapped, `{"error":`...)
			wrapped = append(wrapped, f.Data...)
			wrapped = append(wrapped, '}')
			return appendAck(dst, id, wrapped), true
		}
	}
	name, _ := json.Marshal(f.Event)
	if f.Data == nil {
		return AppendEvent(dst, name, nil), true
	}
	return AppendEvent(dst, name, f.Data), true
}

// ackID reads the ack id back from a ref made by Ref.
func ackID(ref string) (int64, bool) {
	digits, ok := strings.CutPrefix(ref, refPrefix)
	if !ok {
		return 0, false
	}
	return parseDigits([]byte(digits), maxIDDigits)
}
