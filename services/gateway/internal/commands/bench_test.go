package commands

import (
	"testing"

	"relay/pkg/protocol"
)

// Run with:
//   cd services/gateway && go test ./internal/... -run '^$' -bench . -benchmem

var sendFrame = []byte(`{"event":"send_message","ref":"c42","data":{"roomId":"12345","content":"hello there, how is it going?","type":"text","metadata":{"replyTo":"0190a7d2-1111-7000-8000-000000000001"},"clientMsgId":"m-000123"}}`)

func BenchmarkDecodeSendMessage(b *testing.B) {
	b.ReportAllocs()
	b.SetBytes(int64(len(sendFrame)))
	for b.Loop() {
		event, data, ref, err := decodeEnvelope(sendFrame)
		if err != nil || event != protocol.EventSendMessage || ref != "c42" {
			b.Fatal(event, err)
		}
		cmd, err := parseSend(data)
		if err != nil || cmd.room != 12345 {
			b.Fatal(err)
		}
	}
}
