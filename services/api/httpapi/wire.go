package httpapi

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/gofiber/fiber/v2"

	"relay/pkg/chat"
	"relay/pkg/store"
)

// The JSON shapes of responses. Ids are strings, seqs are numbers
// (docs/architecture.md); openapi.json describes the same shapes.

// publicUser is what anyone signed in may see of a user.
type publicUser struct {
	ID          string     `json:"id"`
	Username    string     `json:"username"`
	DisplayName string     `json:"displayName"`
	AvatarURL   string     `json:"avatarUrl"`
	IsOnline    bool       `json:"isOnline"`
	LastSeen    *time.Time `json:"lastSeen"`
	CreatedAt   time.Time  `json:"createdAt"`
}

// privateUser is a user as they see themselves.
type privateUser struct {
	publicUser
	Email string `json:"email"`
}

type authResponse struct {
	User      privateUser `json:"user"`
	Token     string      `json:"token"`
	ExpiresAt time.Time   `json:"expiresAt"`
	// RefreshToken is spent by POST /api/auth/refresh for the next pair.
	RefreshToken     string    `json:"refreshToken"`
	RefreshExpiresAt time.Time `json:"refreshExpiresAt"`
}

type memberJSON struct {
	UserID      string    `json:"userId"`
	Username    string    `json:"username"`
	DisplayName string    `json:"displayName"`
	AvatarURL   string    `json:"avatarUrl"`
	IsOnline    bool      `json:"isOnline"`
	Role        chat.Role `json:"role"`
	LastReadSeq int64     `json:"lastReadSeq"`
	JoinedAt    time.Time `json:"joinedAt"`
	// IsMuted is given only for the caller's own membership.
	IsMuted *bool `json:"isMuted,omitempty"`
}

type roomJSON struct {
	ID          string    `json:"id"`
	Name        string    `json:"name"`
	Type        string    `json:"type"`
	CreatedBy   string    `json:"createdBy"`
	CreatedAt   time.Time `json:"createdAt"`
	MemberCount int64     `json:"memberCount"`
	// IsActive is false for an archived room, which takes no new messages.
	IsActive bool `json:"isActive"`
	// MyRole is null when the caller is not a member (a channel they see).
	MyRole *chat.Role `json:"myRole"`
	// Members is set only in the response to creating a room.
	Members []memberJSON `json:"members,omitempty"`
}

type roomSummaryJSON struct {
	roomJSON
	LastMessage *messageJSON `json:"lastMessage"`
	UnreadCount int64        `json:"unreadCount"`
	LastReadSeq int64        `json:"lastReadSeq"`
	// LastSeq is the seq of the room's newest event; -1 when none.
	LastSeq int64 `json:"lastSeq"`
	// Role is the caller's role (the same as myRole, never null here).
	Role chat.Role `json:"role"`
	// IsMuted is the caller's mute setting.
	IsMuted bool `json:"isMuted"`
	// Peer is the other member of a direct room; absent for other rooms.
	Peer *peerJSON `json:"peer,omitempty"`
}

// peerJSON is a member with its user id also as id, the shape of a user.
type peerJSON struct {
	ID string `json:"id"`
	memberJSON
}

// channelJSON is one entry of the channel directory.
type channelJSON struct {
	ID          string `json:"id"`
	Name        string `json:"name"`
	Type        string `json:"type"`
	MemberCount int64  `json:"memberCount"`
	Joined      bool   `json:"joined"`
}

// uploadJSON is an uploaded file; URL is where members fetch it.
type uploadJSON struct {
	ID          string    `json:"id"`
	RoomID      string    `json:"roomId"`
	Name        string    `json:"name"`
	Size        int64     `json:"size"`
	ContentType string    `json:"contentType"`
	URL         string    `json:"url"`
	Width       *int      `json:"width,omitempty"`
	Height      *int      `json:"height,omitempty"`
	CreatedAt   time.Time `json:"createdAt"`
}

// messageJSON has the fields of protocol.Message plus the edit and delete
// state. A deleted message is a tombstone: content and metadata are absent.
type messageJSON struct {
	ID          string          `json:"id"`
	RoomID      string          `json:"roomId"`
	UserID      string          `json:"userId"`
	Username    string          `json:"username"`
	Content     *string         `json:"content,omitempty"`
	Type        string          `json:"type"`
	Metadata    json.RawMessage `json:"metadata,omitempty"`
	ClientMsgID string          `json:"clientMsgId,omitempty"`
	Seq         int64           `json:"seq"`
	CreatedAt   time.Time       `json:"createdAt"`
	IsEdited    bool            `json:"isEdited"`
	EditedAt    *time.Time      `json:"editedAt"`
	IsDeleted   bool            `json:"isDeleted"`
	DeletedAt   *time.Time      `json:"deletedAt"`
}

type historyResponse struct {
	Messages   []messageJSON `json:"messages"`
	HasMore    bool          `json:"hasMore"`
	NextBefore *int64        `json:"nextBefore"`
	NextAfter  *int64        `json:"nextAfter"`
}

type searchHitJSON struct {
	messageJSON
	Rank float32 `json:"rank"`
}

type searchResponse struct {
	Results    []searchHitJSON `json:"results"`
	NextCursor *string         `json:"nextCursor"`
}

// presenceJSON is a user's presence. LastSeen is null for a user presence
// never saw.
type presenceJSON struct {
	UserID   string     `json:"userId"`
	Status   string     `json:"status"`
	LastSeen *time.Time `json:"lastSeen"`
}

type memberPresenceJSON struct {
	UserID   string     `json:"userId"`
	Username string     `json:"username"`
	Status   string     `json:"status"`
	LastSeen *time.Time `json:"lastSeen"`
}

type typistJSON struct {
	UserID   string `json:"userId"`
	Username string `json:"username"`
}

// roomPresenceJSON lists every member (Online, in join order, whatever
// their status) and the members typing.
type roomPresenceJSON struct {
	RoomID string               `json:"roomId"`
	Online []memberPresenceJSON `json:"online"`
	Typing []typistJSON         `json:"typing"`
}

func idString(id int64) string { return strconv.FormatInt(id, 10) }

func toPublicUser(u *store.User) publicUser {
	return publicUser{
		ID: idString(u.ID), Username: u.Username, DisplayName: u.DisplayName, AvatarURL: u.AvatarURL,
		IsOnline: u.IsOnline, LastSeen: u.LastSeen, CreatedAt: u.CreatedAt,
	}
}

func toPrivateUser(u *store.User) privateUser {
	return privateUser{publicUser: toPublicUser(u), Email: u.Email}
}

func toMember(m *store.Member) memberJSON {
	return memberJSON{
		UserID: idString(m.UserID), Username: m.Username, DisplayName: m.DisplayName, AvatarURL: m.AvatarURL,
		IsOnline: m.IsOnline, Role: m.Role, LastReadSeq: m.LastReadSeq, JoinedAt: m.JoinedAt,
	}
}

func toMembers(ms []store.Member) []memberJSON {
	out := make([]memberJSON, len(ms))
	for i := range ms {
		out[i] = toMember(&ms[i])
	}
	return out
}

func toRoom(r *store.RoomView) roomJSON {
	out := roomJSON{
		ID: idString(r.ID), Name: r.Name, Type: r.Type, CreatedBy: idString(r.CreatedBy),
		CreatedAt: r.CreatedAt, MemberCount: r.MemberCount, IsActive: r.IsActive,
	}
	if r.Role != "" {
		role := r.Role
		out.MyRole = &role
	}
	return out
}

func toMessage(m *store.MessageView) messageJSON {
	out := messageJSON{
		ID: m.ID, RoomID: idString(m.RoomID), UserID: idString(m.UserID), Username: m.Username,
		Type: m.Type, Seq: m.Seq, CreatedAt: m.CreatedAt,
		IsEdited: m.IsEdited, EditedAt: m.EditedAt, IsDeleted: m.IsDeleted, DeletedAt: m.DeletedAt,
	}
	if m.ClientMsgID != nil {
		out.ClientMsgID = *m.ClientMsgID
	}
	if !m.IsDeleted {
		content := m.Content
		out.Content = &content
		if len(m.Metadata) > 0 && !bytes.Equal(m.Metadata, []byte("null")) {
			out.Metadata = m.Metadata
		}
	}
	return out
}

// decodeBody parses the request body, which must be one JSON object, into
// v. Unknown fields are ignored; every failure is BAD_REQUEST with a message
// that says what is wrong.
func decodeBody(c *fiber.Ctx, v any) error {
	return decodeJSONBody(c.Body(), v)
}

// decodeJSONBody decodes a request body holding one JSON object into v,
// with a BAD_REQUEST that names the field on a type mismatch. (The body is
// never compressed: web refuses a Content-Encoding before handlers run.)
func decodeJSONBody(body []byte, v any) error {
	body = bytes.TrimSpace(body)
	if len(body) == 0 {
		return chat.Errorf(chat.CodeBadRequest, "request body required: a JSON object")
	}
	if body[0] != '{' {
		return chat.Errorf(chat.CodeBadRequest, "request body must be a JSON object")
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	if err := dec.Decode(v); err != nil {
		var te *json.UnmarshalTypeError
		if errors.As(err, &te) && te.Field != "" {
			return chat.Wrap(chat.CodeBadRequest, err, fmt.Sprintf("field %q has the wrong type: %s expected", te.Field, jsonKind(te.Type.Kind().String())))
		}
		return chat.Wrap(chat.CodeBadRequest, err, "malformed JSON body")
	}
	if dec.More() {
		return chat.Errorf(chat.CodeBadRequest, "request body must be a single JSON object")
	}
	return nil
}

// jsonKind names a Go kind the way JSON documents do.
func jsonKind(kind string) string {
	switch kind {
	case "string":
		return "string"
	case "slice", "array":
		return "array"
	case "map", "struct":
		return "object"
	case "bool":
		return "boolean"
	default:
		return "number"
	}
}

// hasNUL reports whether any of ss contains a NUL character, which
// PostgreSQL cannot store in text; such input is refused as BAD_REQUEST.
func hasNUL(ss ...string) bool {
	for _, s := range ss {
		if strings.IndexByte(s, 0) >= 0 {
			return true
		}
	}
	return false
}

// parseID parses a user or room id: 1 to 19 decimal digits, positive, in
// range. Anything else is BAD_REQUEST naming the field.
func parseID(field, s string) (int64, error) {
	if s == "" {
		return 0, chat.Errorf(chat.CodeBadRequest, "%s required", field)
	}
	id, err := parseUint(s)
	if err != nil || id <= 0 {
		return 0, chat.Errorf(chat.CodeBadRequest, "%s must be a positive integer id in a string, got %q", field, truncate(s, 40))
	}
	return id, nil
}

// parseUint parses decimal digits only (no sign, no spaces) into an int64.
func parseUint(s string) (int64, error) {
	if s == "" || len(s) > 19 {
		return 0, errors.New("not a non-negative 64-bit integer")
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return 0, errors.New("not a non-negative 64-bit integer")
		}
	}
	return strconv.ParseInt(s, 10, 64)
}

// truncate shortens s to at most n bytes on a character boundary, for
// quoting client input in error messages.
func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n] + "…"
}

// pathID returns the :id path parameter as an id.
func pathID(c *fiber.Ctx, what string) (int64, error) {
	return parseID(what+" id", c.Params("id"))
}

// queryArg returns the query parameter name and whether it was given at
// all (an empty value counts as given, so it can be refused).
func queryArg(c *fiber.Ctx, name string) (string, bool) {
	args := c.Context().QueryArgs()
	if !args.Has(name) {
		return "", false
	}
	return string(args.Peek(name)), true
}

// querySeq parses an optional seq query parameter (a non-negative integer).
// With noneOK, -1 is accepted too: "nothing seen yet" (seq 0 is a valid
// offset), what a client that got resync_required with fromSeq -1 asks for.
func querySeq(c *fiber.Ctx, name string, noneOK bool) (*int64, error) {
	s, ok := queryArg(c, name)
	if !ok {
		return nil, nil
	}
	if noneOK && s == "-1" {
		v := int64(-1)
		return &v, nil
	}
	v, err := parseUint(s)
	if err != nil {
		return nil, chat.Errorf(chat.CodeBadRequest, "%s must be a non-negative integer seq, got %q", name, truncate(s, 40))
	}
	return &v, nil
}

// queryLimit parses an optional limit in [1, max], def when absent.
func queryLimit(c *fiber.Ctx, def, max int) (int, error) {
	s, ok := queryArg(c, "limit")
	if !ok {
		return def, nil
	}
	v, err := parseUint(s)
	if err != nil || v < 1 || v > int64(max) {
		return 0, chat.Errorf(chat.CodeBadRequest, "limit must be an integer from 1 to %d, got %q", max, truncate(s, 40))
	}
	return int(v), nil
}
