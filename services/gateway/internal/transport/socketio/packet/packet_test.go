package packet

import (
	"encoding/json"
	"strings"
	"testing"

	"relay/pkg/chat"
	"relay/pkg/protocol"
)

func TestDecodePacket(t *testing.T) {
	t.Parallel()
	ok := []struct {
		in          string
		typ         int
		nsp         string
		id          int64
		attachments int
		data        string
	}{
		{`0`, TypeConnect, "/", -1, 0, ""},
		{`0{"token":"abc"}`, TypeConnect, "/", -1, 0, `{"token":"abc"}`},
		{`0/admin,{"token":"abc"}`, TypeConnect, "/admin", -1, 0, `{"token":"abc"}`},
		{`0/admin`, TypeConnect, "/admin", -1, 0, ""},
		{`1`, TypeDisconnect, "/", -1, 0, ""},
		{`2["send_message",{"roomId":"1"}]`, TypeEvent, "/", -1, 0, `["send_message",{"roomId":"1"}]`},
		{`212["join_room",{"roomId":"1"}]`, TypeEvent, "/", 12, 0, `["join_room",{"roomId":"1"}]`},
		{`2/chat,7["x"]`, TypeEvent, "/chat", 7, 0, `["x"]`},
		{`31[{}]`, TypeAck, "/", 1, 0, `[{}]`},
		{`51-["upload",{"_placeholder":true,"num":0}]`, TypeBinaryEvent, "/", -1, 1, `["upload",{"_placeholder":true,"num":0}]`},
		{`52-3["upload",{"_placeholder":true,"num":0},{"_placeholder":true,"num":1}]`, TypeBinaryEvent, "/", 3, 2, `["upload",{"_placeholder":true,"num":0},{"_placeholder":true,"num":1}]`},
		{`61-4[{"_placeholder":true,"num":0}]`, TypeBinaryAck, "/", 4, 1, `[{"_placeholder":true,"num":0}]`},
	}
	for _, c := range ok {
		p, err := Decode([]byte(c.in))
		if err != nil {
			t.Errorf("decode %q: %v", c.in, err)
			continue
		}
		if p.Type != c.typ || p.Nsp != c.nsp || p.ID != c.id || p.Attachments != c.attachments || string(p.Data) != c.data {
			t.Errorf("decode %q = %+v (data %s)", c.in, p, p.Data)
		}
	}
	bad := []struct{ in, want string }{
		{``, "empty"},
		{`7`, "unknown Socket.IO packet type"},
		{`x["a"]`, "unknown Socket.IO packet type"},
		{`2["a"`, "not valid JSON"},
		{`2["a"]junk`, "not valid JSON"},
		{`2{"a":1}`, "must be arrays"},
		{`2"a"`, "must be arrays"},
		{`0["a"]`, "CONNECT payload must be an object"},
		{`1{}`, "DISCONNECT has no payload"},
		{`4{"message":"x"}`, "servers only"},
		{`5["a"]`, "attachment count"},
		{`5x-["a"]`, "attachment count"},
		{`5101-["a"]`, "attachment count"},
		{`21234567890123456789["a"]`, "ack id out of range"},
		{`2/` + strings.Repeat("n", 300) + `,["a"]`, "namespace too long"},
	}
	for _, c := range bad {
		_, err := Decode([]byte(c.in))
		if err == nil || !strings.Contains(err.Error(), c.want) || chat.ErrorCode(err) != chat.CodeBadRequest {
			t.Errorf("decode %q: err %v, want BAD_REQUEST containing %q", c.in, err, c.want)
		}
	}
}

func TestEventArgs(t *testing.T) {
	t.Parallel()
	name, data, err := EventArgs(json.RawMessage(`["send_message",{"roomId":"1"},"ignored"]`))
	if err != nil || name != "send_message" || string(data) != `{"roomId":"1"}` {
		t.Fatalf("got %q %s %v", name, data, err)
	}
	name, data, err = EventArgs(json.RawMessage(`["ping"]`))
	if err != nil || name != "ping" || data != nil {
		t.Fatalf("got %q %s %v", name, data, err)
	}
	for _, in := range []string{`[]`, `[1,{}]`, `[null]`, `[{"a":1}]`} {
		if _, _, err := EventArgs(json.RawMessage(in)); chat.ErrorCode(err) != chat.CodeBadRequest {
			t.Errorf("EventArgs(%s): %v, want BAD_REQUEST", in, err)
		}
	}
}

// TestAppendFromNative checks the mapping of every kind of native server
// frame, and that the fast path for pushes agrees with the general one.
func TestAppendFromNative(t *testing.T) {
	t.Parallel()
	frame := func(event, ref, data string) []byte {
		f := protocol.Frame{Event: event, Ref: ref}
		if data != "" {
			f.Data = json.RawMessage(data)
		}
		b, err := json.Marshal(f)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	cases := []struct {
		in   []byte
		want string
	}{
		{frame("message", "", `{"id":"m1","content":"he said \"hi\" }}","metadata":{"ref":"x"}}`),
			`42["message",{"id":"m1","content":"he said \"hi\" }}","metadata":{"ref":"x"}}]`},
		{frame("typing", "", `{"roomId":"1","typing":true}`), `42["typing",{"roomId":"1","typing":true}]`},
		{frame("ack", "sio:7", `{"roomId":"1","lastSeq":null}`), `437[{"roomId":"1","lastSeq":null}]`},
		{frame("ack", "sio:0", `{}`), `430[{}]`},
		{frame("ack", "sio:3", ""), `433[{}]`},
		{frame("error", "sio:12", `{"code":"FORBIDDEN","message":"not a member"}`), `4312[{"error":{"code":"FORBIDDEN","message":"not a member"}}]`},
		{frame("error", "", `{"code":"BAD_REQUEST","message":"x"}`), `42["error",{"code":"BAD_REQUEST","message":"x"}]`},
		{frame("resync_required", "", `{"roomId":"1","fromSeq":5}`), `42["resync_required",{"roomId":"1","fromSeq":5}]`},
		{frame("odd\"name", "", `{}`), `42["odd\"name",{}]`},
		{frame("ping_like", "", ""), `42["ping_like"]`},
		// A ref the bridge did not make is not an ack id: the frame is an event.
		{frame("ack", "c1", `{}`), `42["ack",{}]`},
	}
	for _, c := range cases {
		got, ok := AppendFromNative([]byte("keep"), c.in)
		if !ok || string(got) != "keep"+c.want {
			t.Errorf("AppendFromNative(%s) = %s %v, want %s", c.in, got, ok, c.want)
		}
		// Whatever path was taken, the packet decodes back.
		if p, err := Decode(got[len("keep")+1:]); err != nil {
			t.Errorf("%s does not decode: %v (%+v)", got, err, p)
		}
	}
	for _, in := range []string{``, `not json`, `{"data":{}}`, `[1,2]`} {
		if got, ok := AppendFromNative(nil, []byte(in)); ok || len(got) != 0 {
			t.Errorf("AppendFromNative(%q) = %q %v, want refused", in, got, ok)
		}
	}
}

// event is a client event as a session decodes it.
type event struct {
	Name string
	Data json.RawMessage
	ID   int64
}

func TestAppendNativeFrame(t *testing.T) {
	t.Parallel()
	cases := []struct {
		ev   event
		want protocol.Frame
	}{
		{event{Name: "send_message", Data: json.RawMessage(`{"roomId":"1"}`), ID: 4}, protocol.Frame{Event: "send_message", Data: json.RawMessage(`{"roomId":"1"}`), Ref: "sio:4"}},
		{event{Name: "ping", ID: -1}, protocol.Frame{Event: "ping"}},
		{event{Name: `we"ird`, Data: json.RawMessage(`"str"`), ID: 0}, protocol.Frame{Event: `we"ird`, Data: json.RawMessage(`"str"`), Ref: "sio:0"}},
	}
	for _, c := range cases {
		b := AppendNative(nil, c.ev.Name, c.ev.Data, c.ev.ID)
		var got protocol.Frame
		if err := json.Unmarshal(b, &got); err != nil {
			t.Fatalf("%s: %v", b, err)
		}
		if got.Event != c.want.Event || got.Ref != c.want.Ref || string(got.Data) != string(c.want.Data) {
			t.Errorf("AppendNative(%+v) = %s", c.ev, b)
		}
	}
	if Ref(-1) != "" || Ref(9) != "sio:9" {
		t.Errorf("Ref: %q %q", Ref(-1), Ref(9))
	}
}

func TestConnectErrorPacket(t *testing.T) {
	t.Parallel()
	if got := string(ConnectError("/", chat.CodeUnauthorized, "token expired")); got != `44{"message":"token expired","data":{"code":"UNAUTHORIZED"}}` {
		t.Errorf("main: %s", got)
	}
	if got := string(ConnectError("/admin", chat.CodeBadRequest, "Invalid namespace")); got != `44/admin,{"message":"Invalid namespace","data":{"code":"BAD_REQUEST"}}` {
		t.Errorf("admin: %s", got)
	}
}

// BenchmarkAppendFromNative: the per-recipient cost of turning a pushed
// message frame into its Socket.IO packet.
func BenchmarkAppendFromNative(b *testing.B) {
	frame, _ := json.Marshal(protocol.Frame{Event: "message", Data: json.RawMessage(
		`{"id":"0190a7d2-6a10-7c3e-8d21-0b5f2c9e7a44","roomId":"42","userId":"7","username":"alice","content":"Hello, world!","type":"text","seq":1188,"prevSeq":1187,"createdAt":"2026-11-26T21:04:05.123456Z"}`)})
	ack, _ := json.Marshal(protocol.Frame{Event: "ack", Ref: "sio:17", Data: json.RawMessage(`{"id":"0190a7d2-6a10-7c3e-8d21-0b5f2c9e7a44","roomId":"42","seq":1188,"createdAt":"2026-11-26T21:04:05.123456Z"}`)})
	for _, c := range []struct {
		name  string
		frame []byte
	}{{"push", frame}, {"ack", ack}} {
		b.Run(c.name, func(b *testing.B) {
			var buf []byte
			b.ReportAllocs()
			for b.Loop() {
				buf, _ = AppendFromNative(buf[:0], c.frame)
			}
		})
	}
}
