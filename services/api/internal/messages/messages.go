// Package messages serves a room's message history and the full-text
// Search over the rooms a user is in, both read from PostgreSQL (the
// replica when there is one, store.Reads).
package messages

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/gofiber/fiber/v2"
	"github.com/google/uuid"
	"gorm.io/gorm"

	"relay/pkg/chat"
	"relay/pkg/store"
	"relay/services/api/internal/rest"
)

// Handler serves history and search; every field is required.
type Handler struct {
	// DB checks membership.
	DB *gorm.DB
	// Reads routes the reads between the primary and the replica.
	Reads *store.Reads
}

// Page sizes, documented in openapi.json.
const (
	historyDefaultLimit = 50
	historyMaxLimit     = 200
	searchDefaultLimit  = 20
	searchMaxLimit      = 100
	maxSearchQuery      = 256
)

// History returns a page of a room's messages to its members, in ascending
// seq order. With before (or no cursor) the page is the newest messages
// older than it; with after, the oldest messages newer than it.
func (h *Handler) History(c *fiber.Ctx) error {
	id, err := rest.PathID(c, "room")
	if err != nil {
		return err
	}
	q := store.HistoryQuery{}
	if q.Before, err = rest.QuerySeq(c, "before", false); err != nil {
		return err
	}
	if q.After, err = rest.QuerySeq(c, "after", true); err != nil {
		return err
	}
	if q.Before != nil && q.After != nil {
		return chat.Errorf(chat.CodeBadRequest, "give before or after, not both")
	}
	if q.Limit, err = rest.QueryLimit(c, historyDefaultLimit, historyMaxLimit); err != nil {
		return err
	}
	ctx := c.UserContext()
	if _, err := store.Membership(ctx, h.DB, id, rest.User(c).ID); err != nil {
		return err
	}
	// The replica serves history once it has replayed what the page
	// depends on: after=N needs the event the client already has (N),
	// before=N the ones below it. The newest page reads what it has.
	var page store.HistoryPage
	read := func(db *gorm.DB) (err error) {
		page, err = store.History(ctx, db, id, q)
		return err
	}
	switch {
	case q.After != nil:
		_, err = h.Reads.DoAt(ctx, id, *q.After, read)
	case q.Before != nil:
		_, err = h.Reads.DoAt(ctx, id, *q.Before-1, read)
	default:
		_, err = h.Reads.Do(ctx, read)
	}
	if err != nil {
		return err
	}
	out := historyResponse{Messages: make([]Message, len(page.Messages)), HasMore: page.HasMore}
	for i := range page.Messages {
		out.Messages[i] = FromStore(&page.Messages[i])
	}
	if n := len(page.Messages); n > 0 {
		first, last := page.Messages[0].Seq, page.Messages[n-1].Seq
		// Going back from a before/newest page with nothing older is pointless.
		if q.After != nil || page.HasMore {
			out.NextBefore = &first
		}
		out.NextAfter = &last
	}
	return c.JSON(out)
}

// searchCursor is the opaque cursor of search pages, base64url(JSON).
type searchCursor struct {
	Rank      float32   `json:"r"`
	CreatedAt time.Time `json:"t"`
	ID        string    `json:"i"`
}

func encodeSearchCursor(c *store.SearchCursor) string {
	b, _ := json.Marshal(searchCursor{Rank: c.Rank, CreatedAt: c.CreatedAt, ID: c.ID}) // plain struct; cannot fail
	return base64.RawURLEncoding.EncodeToString(b)
}

func decodeSearchCursor(s string) (*store.SearchCursor, error) {
	bad := chat.Errorf(chat.CodeBadRequest, "cursor is not one this api returned")
	b, err := base64.RawURLEncoding.DecodeString(s)
	if err != nil {
		return nil, bad
	}
	var c searchCursor
	if err := json.Unmarshal(b, &c); err != nil || c.CreatedAt.IsZero() {
		return nil, bad
	}
	if _, err := uuid.Parse(c.ID); err != nil {
		return nil, bad
	}
	return &store.SearchCursor{Rank: c.Rank, CreatedAt: c.CreatedAt, ID: c.ID}, nil
}

// Search runs a full-text query over the caller's rooms (or one of them),
// best match first, then newest.
func (h *Handler) Search(c *fiber.Ctx) error {
	me := rest.User(c)
	text, _ := rest.QueryArg(c, "q")
	text = strings.TrimSpace(text)
	if text == "" {
		return chat.Errorf(chat.CodeBadRequest, "q required: the words to search for")
	}
	if !utf8.ValidString(text) || rest.HasNUL(text) || utf8.RuneCountInString(text) > maxSearchQuery {
		return chat.Errorf(chat.CodeBadRequest, "q must be valid UTF-8 without NUL, of at most %d characters", maxSearchQuery)
	}
	q := store.SearchQuery{UserID: me.ID, Text: text}
	var err error
	if q.Limit, err = rest.QueryLimit(c, searchDefaultLimit, searchMaxLimit); err != nil {
		return err
	}
	if raw, ok := rest.QueryArg(c, "cursor"); ok {
		if q.After, err = decodeSearchCursor(raw); err != nil {
			return err
		}
	}
	ctx := c.UserContext()
	if raw, ok := rest.QueryArg(c, "roomId"); ok {
		if q.RoomID, err = rest.ParseID("roomId", raw); err != nil {
			return err
		}
		if _, err := store.Membership(ctx, h.DB, q.RoomID, me.ID); err != nil {
			return err
		}
	}
	var hits []store.SearchHit
	var next *store.SearchCursor
	if _, err := h.Reads.Do(ctx, func(db *gorm.DB) (err error) {
		hits, next, err = store.Search(ctx, db, q)
		return err
	}); err != nil {
		return err
	}
	out := searchResponse{Results: make([]searchHitJSON, len(hits))}
	for i := range hits {
		out.Results[i] = searchHitJSON{Message: FromStore(&hits[i].MessageView), Rank: hits[i].Rank}
	}
	if next != nil {
		cur := encodeSearchCursor(next)
		out.NextCursor = &cur
	}
	return c.JSON(out)
}

// Message has the fields of protocol.Message plus the edit and delete
// state. A deleted message is a tombstone: content and metadata are absent.
type Message struct {
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
	Messages   []Message `json:"messages"`
	HasMore    bool      `json:"hasMore"`
	NextBefore *int64    `json:"nextBefore"`
	NextAfter  *int64    `json:"nextAfter"`
}

type searchHitJSON struct {
	Message
	Rank float32 `json:"rank"`
}

type searchResponse struct {
	Results    []searchHitJSON `json:"results"`
	NextCursor *string         `json:"nextCursor"`
}

// FromStore is the wire form of a stored message.
func FromStore(m *store.MessageView) Message {
	out := Message{
		ID: m.ID, RoomID: rest.IDString(m.RoomID), UserID: rest.IDString(m.UserID), Username: m.Username,
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
