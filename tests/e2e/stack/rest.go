package stack

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"time"

	"relay/pkg/chat"
	"relay/pkg/web"
)

// API is a REST client of the api, shaped after docs and openapi.json;
// its types decode only the fields the tests look at.
type API struct {
	base string
	http *http.Client
}

// NewAPI returns a client of the api at base (http://host:port).
func NewAPI(base string) *API {
	return &API{base: base, http: &http.Client{Timeout: 10 * time.Second}}
}

// APIError is a non-2xx answer: its status and the error body's code.
type APIError struct {
	Status  int
	Code    chat.Code
	Message string
}

func (e *APIError) Error() string {
	return fmt.Sprintf("api: %d %s: %s", e.Status, e.Code, e.Message)
}

// ErrorCode returns the code of an *APIError or *ProtocolError in err's
// chain, or "" when there is none.
func ErrorCode(err error) chat.Code {
	var ae *APIError
	if errors.As(err, &ae) {
		return ae.Code
	}
	var pe *ProtocolError
	if errors.As(err, &pe) {
		return pe.Code
	}
	return ""
}

// User is a signed-in account.
type User struct {
	ID       string `json:"id"`
	Username string `json:"username"`
	// Token is the JWT for REST and /ws.
	Token string `json:"-"`
}

// Member is an entry of a room's member list.
type Member struct {
	UserID      string    `json:"userId"`
	Username    string    `json:"username"`
	Role        chat.Role `json:"role"`
	LastReadSeq int64     `json:"lastReadSeq"`
}

// Room is a room as the api returns it.
type Room struct {
	ID          string     `json:"id"`
	Name        string     `json:"name"`
	Type        string     `json:"type"`
	MemberCount int64      `json:"memberCount"`
	MyRole      *chat.Role `json:"myRole"`
	Members     []Member   `json:"members"`
}

// RoomSummary is an entry of GET /api/rooms.
type RoomSummary struct {
	Room
	LastMessage *HistoryMessage `json:"lastMessage"`
	UnreadCount int64           `json:"unreadCount"`
	LastReadSeq int64           `json:"lastReadSeq"`
}

// HistoryMessage is a message of GET /api/rooms/:id/messages.
type HistoryMessage struct {
	ID          string     `json:"id"`
	RoomID      string     `json:"roomId"`
	UserID      string     `json:"userId"`
	Username    string     `json:"username"`
	Content     *string    `json:"content"`
	Type        string     `json:"type"`
	ClientMsgID string     `json:"clientMsgId"`
	Seq         int64      `json:"seq"`
	IsEdited    bool       `json:"isEdited"`
	EditedAt    *time.Time `json:"editedAt"`
	IsDeleted   bool       `json:"isDeleted"`
	DeletedAt   *time.Time `json:"deletedAt"`
}

// History is one page of a room's messages, ascending by seq.
type History struct {
	Messages   []HistoryMessage `json:"messages"`
	HasMore    bool             `json:"hasMore"`
	NextBefore *int64           `json:"nextBefore"`
	NextAfter  *int64           `json:"nextAfter"`
}

// Do sends a JSON request (body may be nil) with token as bearer (may be
// empty) and decodes a 2xx JSON answer into out (may be nil). A non-2xx
// answer is an *APIError.
func (a *API) Do(ctx context.Context, method, path, token string, body, out any) error {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return fmt.Errorf("api: encode: %w", err)
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, a.base+path, rd)
	if err != nil {
		return fmt.Errorf("api: %w", err)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := a.http.Do(req)
	if err != nil {
		return fmt.Errorf("api: %s %s: %w", method, path, err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(io.LimitReader(resp.Body, 8<<20))
	if err != nil {
		return fmt.Errorf("api: %s %s: read: %w", method, path, err)
	}
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		var eb web.ErrorBody
		if json.Unmarshal(raw, &eb) != nil || eb.Error.Code == "" {
			return &APIError{Status: resp.StatusCode, Message: fmt.Sprintf("%s %s: body %q", method, path, raw)}
		}
		return &APIError{Status: resp.StatusCode, Code: eb.Error.Code, Message: eb.Error.Message}
	}
	if out != nil && len(raw) > 0 {
		if err := json.Unmarshal(raw, out); err != nil {
			return fmt.Errorf("api: %s %s: decode %q: %w", method, path, raw, err)
		}
	}
	return nil
}

// Register creates an account (email <username>@example.test) and returns
// it signed in.
func (a *API) Register(ctx context.Context, username, password string) (*User, error) {
	var resp struct {
		User  User   `json:"user"`
		Token string `json:"token"`
	}
	body := map[string]string{"username": username, "email": username + "@example.test", "password": password}
	if err := a.Do(ctx, http.MethodPost, "/api/auth/register", "", body, &resp); err != nil {
		return nil, err
	}
	resp.User.Token = resp.Token
	return &resp.User, nil
}

// Login signs in with a username or email.
func (a *API) Login(ctx context.Context, login, password string) (*User, error) {
	var resp struct {
		User  User   `json:"user"`
		Token string `json:"token"`
	}
	if err := a.Do(ctx, http.MethodPost, "/api/auth/login", "", map[string]string{"login": login, "password": password}, &resp); err != nil {
		return nil, err
	}
	resp.User.Token = resp.Token
	return &resp.User, nil
}

// CreateRoom creates a room of typ (direct, group, channel) as u with the
// other members given.
func (a *API) CreateRoom(ctx context.Context, u *User, name, typ string, members ...*User) (*Room, error) {
	ids := make([]string, len(members))
	for i, m := range members {
		ids[i] = m.ID
	}
	var r Room
	err := a.Do(ctx, http.MethodPost, "/api/rooms", u.Token, map[string]any{"name": name, "type": typ, "memberIds": ids}, &r)
	if err != nil {
		return nil, err
	}
	return &r, nil
}

// Rooms lists u's rooms with unread counts.
func (a *API) Rooms(ctx context.Context, u *User) ([]RoomSummary, error) {
	var resp struct {
		Rooms []RoomSummary `json:"rooms"`
	}
	if err := a.Do(ctx, http.MethodGet, "/api/rooms", u.Token, nil, &resp); err != nil {
		return nil, err
	}
	return resp.Rooms, nil
}

// Members lists a room's members.
func (a *API) Members(ctx context.Context, u *User, roomID string) ([]Member, error) {
	var resp struct {
		Members []Member `json:"members"`
	}
	if err := a.Do(ctx, http.MethodGet, "/api/rooms/"+roomID+"/members", u.Token, nil, &resp); err != nil {
		return nil, err
	}
	return resp.Members, nil
}

// History returns one page of a room's history; q holds before, after and
// limit (may be nil).
func (a *API) History(ctx context.Context, u *User, roomID string, q url.Values) (*History, error) {
	path := "/api/rooms/" + roomID + "/messages"
	if len(q) > 0 {
		path += "?" + q.Encode()
	}
	var h History
	if err := a.Do(ctx, http.MethodGet, path, u.Token, nil, &h); err != nil {
		return nil, err
	}
	return &h, nil
}

// AllHistory pages backwards through a room's whole history and returns
// it in ascending seq order.
func (a *API) AllHistory(ctx context.Context, u *User, roomID string) ([]HistoryMessage, error) {
	var pages [][]HistoryMessage
	q := url.Values{"limit": {"200"}}
	for {
		h, err := a.History(ctx, u, roomID, q)
		if err != nil {
			return nil, err
		}
		pages = append(pages, h.Messages)
		if !h.HasMore || h.NextBefore == nil {
			break
		}
		q.Set("before", fmt.Sprint(*h.NextBefore))
	}
	var out []HistoryMessage
	for i := len(pages) - 1; i >= 0; i-- {
		out = append(out, pages[i]...)
	}
	return out, nil
}
