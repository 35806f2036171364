package commands

import (
	"bytes"
	"encoding/json"
	"errors"
	"reflect"
	"strings"
	"unicode/utf8"

	"github.com/google/uuid"

	"relay/pkg/chat"
	"relay/pkg/protocol"
)

// envelope is a client frame before its payload is decoded. Ref is kept
// raw so a wrong-typed ref does not hide the event.
type envelope struct {
	Event string          `json:"event"`
	Data  json.RawMessage `json:"data"`
	Ref   json.RawMessage `json:"ref"`
}

// decodeEnvelope parses a client frame. It returns the ref whenever it
// could be read, also together with an error, so the error can carry it.
func decodeEnvelope(raw []byte) (event string, data json.RawMessage, ref string, err error) {
	trimmed := bytes.TrimLeft(raw, " \t\r\n")
	if len(trimmed) == 0 || trimmed[0] != '{' {
		if json.Valid(raw) {
			return "", nil, "", chat.Errorf(chat.CodeBadRequest, "frame must be a JSON object")
		}
		return "", nil, "", chat.Errorf(chat.CodeBadRequest, "frame is not valid JSON")
	}
	var env envelope
	uerr := json.Unmarshal(raw, &env)
	var syntax *json.SyntaxError
	if errors.As(uerr, &syntax) || (uerr != nil && !isTypeError(uerr)) {
		return "", nil, "", chat.Errorf(chat.CodeBadRequest, "frame is not valid JSON")
	}
	ref, refErr := decodeRef(env.Ref)
	if refErr != nil {
		return "", nil, "", refErr
	}
	if uerr != nil {
		return "", nil, ref, typeError(uerr, "")
	}
	if env.Event == "" {
		return "", nil, ref, chat.Errorf(chat.CodeBadRequest, "event is required")
	}
	return env.Event, env.Data, ref, nil
}

func decodeRef(raw json.RawMessage) (string, error) {
	if len(raw) == 0 || string(raw) == "null" {
		return "", nil
	}
	var ref string
	if err := json.Unmarshal(raw, &ref); err != nil {
		return "", chat.Errorf(chat.CodeBadRequest, "ref must be a string")
	}
	return ref, nil
}

// peekRef reads only the ref of a frame that is not handled otherwise (too
// large), so its error can still carry the ref when the frame is JSON.
func peekRef(raw []byte) string {
	var env struct {
		Ref json.RawMessage `json:"ref"`
	}
	if json.Unmarshal(raw, &env) != nil {
		return ""
	}
	ref, _ := decodeRef(env.Ref)
	return ref
}

func isTypeError(err error) bool {
	var te *json.UnmarshalTypeError
	return errors.As(err, &te)
}

// typeError turns a JSON type mismatch into a BAD_REQUEST naming the field.
func typeError(err error, prefix string) error {
	var te *json.UnmarshalTypeError
	if !errors.As(err, &te) {
		return chat.Errorf(chat.CodeBadRequest, "%s is not valid JSON", strings.TrimSuffix(prefix, "."))
	}
	want := "a JSON " + te.Type.Kind().String()
	switch te.Type.Kind() {
	case reflect.String:
		want = "a string"
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64, reflect.Pointer:
		want = "an integer"
	case reflect.Bool:
		want = "a boolean"
	case reflect.Struct, reflect.Map:
		want = "an object"
	}
	field := te.Field
	if field == "" {
		field = strings.TrimSuffix(prefix, ".")
	} else {
		field = prefix + field
	}
	return chat.Errorf(chat.CodeBadRequest, "%s must be %s", field, want)
}

// decodeData decodes a frame's data object into T. Absent data or null
// decodes to the zero T, whose required fields the caller then reports.
func decodeData[T any](data json.RawMessage) (T, error) {
	var v T
	trimmed := bytes.TrimSpace(data)
	if len(trimmed) == 0 || string(trimmed) == "null" {
		return v, nil
	}
	if trimmed[0] != '{' {
		return v, chat.Errorf(chat.CodeBadRequest, "data must be an object")
	}
	if err := json.Unmarshal(trimmed, &v); err != nil {
		return v, typeError(err, "data.")
	}
	return v, nil
}

// parseID parses a positive decimal id given as a JSON string (all ids are
// strings on the wire: docs/architecture.md, "Decisions and why").
func parseID(field, s string) (int64, error) {
	if s == "" {
		return 0, chat.Errorf(chat.CodeBadRequest, "%s is required", field)
	}
	if len(s) > 19 || s[0] == '0' {
		return 0, chat.Errorf(chat.CodeBadRequest, "%s must be a positive decimal id", field)
	}
	var id int64
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c < '0' || c > '9' {
			return 0, chat.Errorf(chat.CodeBadRequest, "%s must be a positive decimal id", field)
		}
		id = id*10 + int64(c-'0')
		if id < 0 {
			return 0, chat.Errorf(chat.CodeBadRequest, "%s is out of range", field)
		}
	}
	return id, nil
}

// parseMessageID checks a message id is a UUID and returns its canonical form.
func parseMessageID(s string) (string, error) {
	if s == "" {
		return "", chat.Errorf(chat.CodeBadRequest, "messageId is required")
	}
	id, err := uuid.Parse(s)
	if err != nil || len(s) != 36 {
		return "", chat.Errorf(chat.CodeBadRequest, "messageId must be a UUID")
	}
	return id.String(), nil
}

// checkContent applies the content rules of send_message and edit_message.
func checkContent(s string) error {
	if strings.TrimSpace(s) == "" {
		return chat.Errorf(chat.CodeBadRequest, "content must not be empty")
	}
	if len(s) > chat.MaxContentBytes {
		return chat.Errorf(chat.CodeTooLarge, "content exceeds %d bytes", chat.MaxContentBytes)
	}
	// PostgreSQL text cannot hold NUL; the persister would dead-letter it.
	if !utf8.ValidString(s) || strings.IndexByte(s, 0) >= 0 {
		return chat.Errorf(chat.CodeBadRequest, "content must be valid UTF-8 without NUL characters")
	}
	return nil
}

// Decoded client commands: validated, with ids parsed.

type joinCmd struct {
	room    int64
	lastSeq *int64
}

type roomCmd struct {
	room int64
}

type sendCmd struct {
	room        int64
	content     string
	typ         chat.MessageType
	metadata    json.RawMessage
	clientMsgID string
}

type editCmd struct {
	room    int64
	message string
	content string
}

type deleteCmd struct {
	room    int64
	message string
}

type readCmd struct {
	room int64
	seq  int64
	// message is the message read up to when the client named it instead
	// of seq (seq is then looked up).
	message string
}

func parseJoin(data json.RawMessage) (joinCmd, error) {
	p, err := decodeData[protocol.JoinRoom](data)
	if err != nil {
		return joinCmd{}, err
	}
	room, err := parseID("roomId", p.RoomID)
	if err != nil {
		return joinCmd{}, err
	}
	if p.LastSeq != nil && *p.LastSeq < -1 {
		return joinCmd{}, chat.Errorf(chat.CodeBadRequest, "lastSeq must be -1 or more")
	}
	return joinCmd{room: room, lastSeq: p.LastSeq}, nil
}

// parseRoom decodes the {roomId} payloads: leave_room, typing_start, typing_stop.
func parseRoom(data json.RawMessage) (roomCmd, error) {
	p, err := decodeData[protocol.TypingRequest](data)
	if err != nil {
		return roomCmd{}, err
	}
	room, err := parseID("roomId", p.RoomID)
	return roomCmd{room: room}, err
}

func parseSend(data json.RawMessage) (sendCmd, error) {
	p, err := decodeData[protocol.SendMessage](data)
	if err != nil {
		return sendCmd{}, err
	}
	room, err := parseID("roomId", p.RoomID)
	if err != nil {
		return sendCmd{}, err
	}
	if err := checkContent(p.Content); err != nil {
		return sendCmd{}, err
	}
	typ := chat.MessageType(p.Type)
	if typ == "" {
		typ = chat.MessageText
	}
	if !typ.Valid() {
		return sendCmd{}, chat.Errorf(chat.CodeBadRequest, "type must be text, image or file")
	}
	meta := bytes.TrimSpace(p.Metadata)
	if string(meta) == "null" {
		meta = nil
	}
	if len(meta) > 0 {
		if meta[0] != '{' {
			return sendCmd{}, chat.Errorf(chat.CodeBadRequest, "metadata must be an object")
		}
		if len(meta) > chat.MaxMetadataBytes {
			return sendCmd{}, chat.Errorf(chat.CodeTooLarge, "metadata exceeds %d bytes", chat.MaxMetadataBytes)
		}
		// jsonb refuses \u0000; the persister would dead-letter it.
		if bytes.Contains(meta, []byte(`\u0000`)) {
			return sendCmd{}, chat.Errorf(chat.CodeBadRequest, "metadata must not contain NUL characters")
		}
	}
	if err := checkClientMsgID(p.ClientMsgID); err != nil {
		return sendCmd{}, err
	}
	return sendCmd{room: room, content: p.Content, typ: typ, metadata: meta, clientMsgID: p.ClientMsgID}, nil
}

// checkClientMsgID allows up to chat.MaxClientMsgIDLen visible ASCII
// characters (no spaces or controls), so it is safe in keys and logs.
func checkClientMsgID(s string) error {
	if len(s) > chat.MaxClientMsgIDLen {
		return chat.Errorf(chat.CodeBadRequest, "clientMsgId exceeds %d characters", chat.MaxClientMsgIDLen)
	}
	for i := 0; i < len(s); i++ {
		if s[i] < 0x21 || s[i] > 0x7e {
			return chat.Errorf(chat.CodeBadRequest, "clientMsgId must be visible ASCII characters")
		}
	}
	return nil
}

func parseEdit(data json.RawMessage) (editCmd, error) {
	p, err := decodeData[protocol.EditMessage](data)
	if err != nil {
		return editCmd{}, err
	}
	room, err := optionalRoom(p.RoomID)
	if err != nil {
		return editCmd{}, err
	}
	msg, err := parseMessageID(p.MessageID)
	if err != nil {
		return editCmd{}, err
	}
	if err := checkContent(p.Content); err != nil {
		return editCmd{}, err
	}
	return editCmd{room: room, message: msg, content: p.Content}, nil
}

func parseDelete(data json.RawMessage) (deleteCmd, error) {
	p, err := decodeData[protocol.DeleteMessage](data)
	if err != nil {
		return deleteCmd{}, err
	}
	room, err := optionalRoom(p.RoomID)
	if err != nil {
		return deleteCmd{}, err
	}
	msg, err := parseMessageID(p.MessageID)
	if err != nil {
		return deleteCmd{}, err
	}
	return deleteCmd{room: room, message: msg}, nil
}

func parseRead(data json.RawMessage) (readCmd, error) {
	p, err := decodeData[protocol.MarkRead](data)
	if err != nil {
		return readCmd{}, err
	}
	room, err := parseID("roomId", p.RoomID)
	if err != nil {
		return readCmd{}, err
	}
	if p.Seq == nil {
		if p.MessageID == "" {
			return readCmd{}, chat.Errorf(chat.CodeBadRequest, "seq or messageId is required")
		}
		msg, err := parseMessageID(p.MessageID)
		if err != nil {
			return readCmd{}, err
		}
		return readCmd{room: room, message: msg}, nil
	}
	if *p.Seq < 0 {
		return readCmd{}, chat.Errorf(chat.CodeBadRequest, "seq must be 0 or more")
	}
	return readCmd{room: room, seq: *p.Seq}, nil
}

// optionalRoom parses a roomId that may be left out (0 then): edits and
// deletes in the seed's form name only the message.
func optionalRoom(raw string) (int64, error) {
	if raw == "" {
		return 0, nil
	}
	return parseID("roomId", raw)
}
