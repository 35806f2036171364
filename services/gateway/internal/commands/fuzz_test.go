package commands

import (
	"encoding/json"
	"strings"
	"testing"
	"unicode/utf8"

	"relay/pkg/chat"
	"relay/pkg/protocol"
)

// FuzzDecodeEnvelope feeds arbitrary client frames to the envelope decoder
// and then to the payload parser of the event they name, as Text does. It
// never panics; every refusal is a BAD_REQUEST or TOO_LARGE the client can
// act on (never INTERNAL); and what it accepts keeps the rules the handlers
// rely on (positive ids, content within bounds and storable, canonical
// message ids).
func FuzzDecodeEnvelope(f *testing.F) {
	f.Add(sendFrame)
	f.Add([]byte(`{"event":"join_room","data":{"roomId":"1","lastSeq":-1},"ref":"1"}`))
	f.Add([]byte(`{"event":"edit_message","data":{"messageId":"0190a7d2-1111-7000-8000-000000000001","content":"x"},"ref":7}`))
	f.Add([]byte(`{"event":"delete_message","data":{"roomId":"9","messageId":"0190A7D2-1111-7000-8000-000000000001"}}`))
	f.Add([]byte(`{"event":"mark_read","data":{"roomId":"3","seq":12}}`))
	f.Add([]byte(`{"event":"typing_start","data":{"roomId":"0042"}}`))
	f.Add([]byte(`{"event":"send_message","data":{"roomId":"1","content":"\u0000","metadata":{"a":"\ud800"}}}`))
	f.Add([]byte(`[1,2]`))
	f.Add([]byte(`{"event":1}`))
	f.Fuzz(func(t *testing.T, raw []byte) {
		event, data, ref, err := decodeEnvelope(raw)
		if err != nil {
			wantCodes(t, "envelope", err, chat.CodeBadRequest)
			return
		}
		if event == "" {
			t.Fatal("an envelope without an event was accepted")
		}
		_ = ref
		_ = peekRef(raw)
		switch event {
		case protocol.EventJoinRoom:
			cmd, err := parseJoin(data)
			if err != nil {
				wantCodes(t, event, err, chat.CodeBadRequest)
				return
			}
			if cmd.room <= 0 || (cmd.lastSeq != nil && *cmd.lastSeq < -1) {
				t.Fatalf("join accepted room %d lastSeq %v", cmd.room, cmd.lastSeq)
			}
		case protocol.EventLeaveRoom, protocol.EventTypingStart, protocol.EventTypingStop:
			cmd, err := parseRoom(data)
			if err != nil {
				wantCodes(t, event, err, chat.CodeBadRequest)
				return
			}
			if cmd.room <= 0 {
				t.Fatalf("room %d accepted", cmd.room)
			}
		case protocol.EventSendMessage:
			cmd, err := parseSend(data)
			if err != nil {
				wantCodes(t, event, err, chat.CodeBadRequest, chat.CodeTooLarge)
				return
			}
			if cmd.room <= 0 || !cmd.typ.Valid() || len(cmd.metadata) > chat.MaxMetadataBytes || len(cmd.clientMsgID) > chat.MaxClientMsgIDLen {
				t.Fatalf("send accepted %+v", cmd)
			}
			checkStorableContent(t, cmd.content)
			if len(cmd.metadata) > 0 && !json.Valid(cmd.metadata) {
				t.Fatalf("send accepted metadata that is not JSON: %q", cmd.metadata)
			}
		case protocol.EventEditMessage:
			cmd, err := parseEdit(data)
			if err != nil {
				wantCodes(t, event, err, chat.CodeBadRequest, chat.CodeTooLarge)
				return
			}
			checkStorableContent(t, cmd.content)
			checkMessageID(t, cmd.message)
		case protocol.EventDeleteMessage:
			cmd, err := parseDelete(data)
			if err != nil {
				wantCodes(t, event, err, chat.CodeBadRequest)
				return
			}
			checkMessageID(t, cmd.message)
		case protocol.EventMarkRead:
			cmd, err := parseRead(data)
			if err != nil {
				wantCodes(t, event, err, chat.CodeBadRequest)
				return
			}
			if cmd.room <= 0 || cmd.seq < 0 || (cmd.message != "" && cmd.seq != 0) {
				t.Fatalf("mark_read accepted %+v", cmd)
			}
			if cmd.message != "" {
				checkMessageID(t, cmd.message)
			}
		}
	})
}

func wantCodes(t *testing.T, what string, err error, codes ...chat.Code) {
	t.Helper()
	got := chat.ErrorCode(err)
	for _, c := range codes {
		if got == c {
			if chat.ErrorMessage(err) == "" {
				t.Fatalf("%s: %s without a message", what, got)
			}
			return
		}
	}
	t.Fatalf("%s: refused with %s (%v), want one of %v", what, got, err, codes)
}

func checkStorableContent(t *testing.T, s string) {
	t.Helper()
	if strings.TrimSpace(s) == "" || len(s) > chat.MaxContentBytes || !utf8.ValidString(s) || strings.IndexByte(s, 0) >= 0 {
		t.Fatalf("content accepted that cannot be stored: %q", s)
	}
}

func checkMessageID(t *testing.T, id string) {
	t.Helper()
	if len(id) != 36 || strings.ToLower(id) != id {
		t.Fatalf("message id accepted in a non-canonical form: %q", id)
	}
}
