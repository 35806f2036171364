package bench

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strconv"
	"time"

	"github.com/valyala/fastjson"

	"relay/pkg/protocol"
)

// centrifugo is Centrifugo's client protocol in its JSON form (v2, the one
// Centrifugo v4 and later speak at /connection/websocket): a command is
// {"id":N,"<method>":{...}}, its reply {"id":N,"<method>":{...}} or
// {"id":N,"error":{"code":C,"message":"..."}}; publications come as
// {"push":{"channel":"c","pub":{"data":...,"offset":O}}}; the server pings
// with {} and wants {} back. One frame may carry several messages, one per
// line. chatbench maps its events onto it so the same measurement code
// drives relay and Centrifugo: join_room is subscribe (channel = room id),
// send_message is publish (data = the send_message payload, so the
// publication carries the same metadata), and a publication is a message
// whose seq is the publication's offset in the channel's history.
//
// Centrifugo must run with client publish and subscribe allowed and
// insecure client mode (no token): docs/performance.md shows the
// configuration used.
type centrifugo struct{}

// centrifugoIDBase keeps command ids above 0 (Centrifugo rejects id 0 on a
// command that wants a reply) and above the connect command's id 1.
const centrifugoIDBase = 2

func (centrifugo) open(c *conn, _ string) error {
	_ = c.ws.SetReadDeadline(time.Now().Add(sioHandshakeTimeout))
	defer func() { _ = c.ws.SetReadDeadline(time.Time{}) }()
	if err := c.write([]byte(`{"id":1,"connect":{"name":"chatbench"}}`)); err != nil {
		return err
	}
	for {
		_, msg, err := c.ws.ReadMessage()
		if err != nil {
			return fmt.Errorf("centrifugo connect: %w", err)
		}
		for _, line := range bytes.Split(msg, []byte{'\n'}) {
			line = bytes.TrimSpace(line)
			if len(line) == 0 {
				continue
			}
			v, err := c.parser.ParseBytes(line)
			if err != nil {
				return fmt.Errorf("centrifugo connect: undecodable reply %q", truncate(string(line), 40))
			}
			if v.GetInt("id") != 1 {
				if isCentrifugoPing(v) {
					if err := c.write([]byte("{}")); err != nil {
						return err
					}
				}
				continue
			}
			if e := v.Get("error"); e != nil {
				return &centrifugoConnectError{code: e.GetInt("code"), msg: string(e.GetStringBytes("message"))}
			}
			if v.Get("connect") == nil {
				return fmt.Errorf("centrifugo connect: unexpected reply %q", truncate(string(line), 40))
			}
			return nil
		}
	}
}

// centrifugoConnectError is a connect command the server refused.
type centrifugoConnectError struct {
	code int
	msg  string
}

func (e *centrifugoConnectError) Error() string {
	return fmt.Sprintf("CONNECT_ERROR %d %s", e.code, truncate(e.msg, 40))
}

// centrifugoZero stands for an omitted offset (read only, shared).
var centrifugoZero = fastjson.MustParse("0")

// isCentrifugoPing is the server's ping: an empty object.
func isCentrifugoPing(v *fastjson.Value) bool {
	o, err := v.Object()
	return err == nil && o.Len() == 0
}

func (centrifugo) encode(c *conn, event, ref string, data []byte) ([]byte, error) {
	var method string
	switch event {
	case protocol.EventJoinRoom:
		method = "subscribe"
	case protocol.EventSendMessage:
		method = "publish"
	default:
		// Centrifugo has no application ping or typing: compare mode runs
		// without heartbeats, and nothing else is sent.
		return nil, fmt.Errorf("encode %s: not a Centrifugo command", event)
	}
	var room struct {
		RoomID string `json:"roomId"`
	}
	if err := json.Unmarshal(data, &room); err != nil || room.RoomID == "" {
		return nil, fmt.Errorf("encode %s: no roomId in %q", event, truncate(string(data), 40))
	}
	channel, err := json.Marshal(room.RoomID)
	if err != nil {
		return nil, fmt.Errorf("encode %s: %w", event, err)
	}
	b := make([]byte, 0, 48+len(channel)+len(data))
	b = append(b, `{"id":`...)
	b = strconv.AppendUint(b, c.acks.add(ref)+centrifugoIDBase, 10)
	b = append(b, `,"`...)
	b = append(b, method...)
	b = append(b, `":{"channel":`...)
	b = append(b, channel...)
	if method == "publish" {
		b = append(b, `,"data":`...)
		b = append(b, data...)
	}
	return append(b, "}}"...), nil
}

// decode maps one Centrifugo message onto chatbench's events: replies
// become ack/error with the ref their command was sent with (a subscribe
// reply's offset is the join's lastSeq), publications become message with
// seq = offset. Pings are answered here.
func (centrifugo) decode(c *conn, raw []byte) (inbound, bool) {
	v, err := c.parser.ParseBytes(raw)
	if err != nil || v.Type() != fastjson.TypeObject {
		return inbound{}, false
	}
	if isCentrifugoPing(v) {
		if err := c.write([]byte("{}")); err != nil && !c.bye.Load() {
			c.r.closes.Add("PONG_WRITE_FAILED")
		}
		return inbound{}, true
	}
	if push := v.Get("push"); push != nil {
		pub := push.Get("pub")
		if pub == nil {
			return inbound{}, true // join/leave/disconnect pushes: nothing to measure
		}
		data := pub.Get("data")
		if data == nil || data.Type() != fastjson.TypeObject {
			return inbound{}, false
		}
		// offset is omitted when 0 (a channel without history).
		seq := pub.Get("offset")
		if seq == nil {
			seq = centrifugoZero
		}
		data.Set("seq", seq)
		return inbound{event: protocol.EventMessage, data: data}, true
	}
	id := v.GetUint64("id")
	if id < centrifugoIDBase {
		return inbound{}, false
	}
	ref, ok := c.acks.take(id - centrifugoIDBase)
	if !ok {
		return inbound{}, false
	}
	if e := v.Get("error"); e != nil {
		var a fastjson.Arena
		e.Set("code", a.NewString("CENTRIFUGO_"+strconv.Itoa(e.GetInt("code"))))
		return inbound{event: protocol.EventError, ref: []byte(ref), data: e}, true
	}
	in := inbound{event: protocol.EventAck, ref: []byte(ref)}
	if sub := v.Get("subscribe"); sub != nil {
		if off := sub.Get("offset"); off != nil {
			sub.Set("lastSeq", off)
		}
		in.data = sub
	} else if pub := v.Get("publish"); pub != nil {
		in.data = pub
	} else {
		return inbound{}, false
	}
	return in, true
}
