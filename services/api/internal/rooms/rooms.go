// Package rooms serves rooms and their members: creating, listing,
// joining and leaving rooms, the public channel directory, and a room
// admin's changes. Membership changes write their member events to the
// outbox in the same transaction (pkg/store).
package rooms

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/gofiber/fiber/v2"
	"go.opentelemetry.io/otel/propagation"
	"gorm.io/gorm"

	"relay/pkg/chat"
	"relay/pkg/store"
	"relay/services/api/internal/messages"
	"relay/services/api/internal/outbox"
	"relay/services/api/internal/rest"
)

// Handler serves the room endpoints; every field is required.
type Handler struct {
	// DB holds rooms and members.
	DB *gorm.DB
	// Propagator puts the request's trace on the member events.
	Propagator propagation.TextMapPropagator
	// MaxMembers bounds the members a room is created with
	// (ROOM_CREATE_MAX_MEMBERS).
	MaxMembers int
}

type createRoomRequest struct {
	Name      string   `json:"name"`
	Type      string   `json:"type"`
	MemberIDs []string `json:"memberIds"`
}

// roomRequest is what every endpoint of one room starts from.
type roomRequest struct {
	// room is the :id of the path; me the caller.
	room int64
	me   *store.User
	ctx  context.Context
}

// parseRoom reads the room of the path (BAD_REQUEST when it is not an id)
// and the caller.
func parseRoom(c *fiber.Ctx) (roomRequest, error) {
	id, err := rest.PathID(c, "room")
	if err != nil {
		return roomRequest{}, err
	}
	return roomRequest{room: id, me: rest.User(c), ctx: c.UserContext()}, nil
}

// parseMember is parseRoom plus the member the path names (:userId).
func parseMember(c *fiber.Ctx) (roomRequest, int64, error) {
	r, err := parseRoom(c)
	if err != nil {
		return r, 0, err
	}
	user, err := rest.ParseID("user id", c.Params("userId"))
	if err != nil {
		return r, 0, err
	}
	return r, user, nil
}

type addMemberRequest struct {
	UserID string `json:"userId"`
}

// Create creates a group, channel or direct room. A direct room that
// already exists for the pair is returned with 200 instead of 201. The
// members' member_joined events go out through the outbox (outbox.go).
func (h *Handler) Create(c *fiber.Ctx) error {
	me := rest.User(c)
	var req createRoomRequest
	if err := rest.DecodeBody(c, &req); err != nil {
		return err
	}
	typ := chat.RoomType(req.Type)
	if !typ.Valid() {
		return chat.Errorf(chat.CodeBadRequest, "type must be direct, group or channel")
	}
	if rest.HasNUL(req.Name) {
		return chat.Errorf(chat.CodeBadRequest, "name must not contain NUL characters")
	}
	name := strings.TrimSpace(req.Name)
	if typ == chat.RoomDirect {
		name = "" // a direct room is named after its peer by clients
	} else if name == "" || utf8.RuneCountInString(name) > chat.MaxRoomNameLen {
		return chat.Errorf(chat.CodeBadRequest, "name must be 1 to %d characters", chat.MaxRoomNameLen)
	}
	// Nobody is put into a big room by one request: past the cap, members
	// join themselves or are added one at a time (rate-limited writes).
	if maxMembers := h.MaxMembers; len(req.MemberIDs) > maxMembers {
		return chat.Errorf(chat.CodeBadRequest, "a room is created with at most %d members besides its creator; add others one by one or let them join", maxMembers)
	}
	ids := make([]int64, len(req.MemberIDs))
	for i, raw := range req.MemberIDs {
		id, err := rest.ParseID("memberIds", raw)
		if err != nil {
			return err
		}
		ids[i] = id
	}
	ctx := c.UserContext()
	room, members, created, err := store.CreateRoom(ctx, h.DB, store.NewRoom{
		Name: name, Type: typ, CreatedBy: me.ID, MemberIDs: ids, Trace: outbox.TraceOf(ctx, h.Propagator),
	})
	if err != nil {
		return err
	}
	view := &store.RoomView{Room: *room, MemberCount: int64(len(members))}
	for _, m := range members {
		if m.UserID == me.ID {
			view.Role = m.Role
		}
	}
	out := toRoom(view)
	out.Members = toMembers(members)
	status := fiber.StatusOK
	if created {
		status = fiber.StatusCreated
	}
	return c.Status(status).JSON(out)
}

// List returns the caller's rooms with last message and unread count.
func (h *Handler) List(c *fiber.Ctx) error {
	rooms, err := store.ListRooms(c.UserContext(), h.DB, rest.User(c).ID)
	if err != nil {
		return err
	}
	out := make([]roomSummaryJSON, len(rooms))
	for i := range rooms {
		r := &rooms[i]
		out[i] = roomSummaryJSON{
			roomJSON: toRoom(&r.RoomView), UnreadCount: r.UnreadCount, LastReadSeq: r.LastReadSeq,
			LastSeq: r.LastSeq, Role: r.Role, IsMuted: r.IsMuted,
		}
		if r.LastMessage != nil {
			m := messages.FromStore(r.LastMessage)
			out[i].LastMessage = &m
		}
		if r.Peer != nil {
			out[i].Peer = &peerJSON{ID: rest.IDString(r.Peer.UserID), memberJSON: toMember(r.Peer)}
		}
	}
	return c.JSON(fiber.Map{"rooms": out})
}

// Get returns a room to its members, and a channel to anyone.
func (h *Handler) Get(c *fiber.Ctx) error {
	r, err := parseRoom(c)
	if err != nil {
		return err
	}
	v, err := store.RoomFor(r.ctx, h.DB, r.room, r.me.ID)
	if err != nil {
		return err
	}
	if v.Role == "" && v.Type != string(chat.RoomChannel) {
		return chat.Errorf(chat.CodeForbidden, "not a member of room %d", r.room)
	}
	return c.JSON(toRoom(v))
}

// Join makes the caller a member of a channel; joining again is a no-op.
func (h *Handler) Join(c *fiber.Ctx) error {
	r, err := parseRoom(c)
	if err != nil {
		return err
	}
	if _, _, err := store.JoinRoom(r.ctx, h.DB, r.room, r.me.ID, outbox.TraceOf(r.ctx, h.Propagator)); err != nil {
		return err
	}
	v, err := store.RoomFor(r.ctx, h.DB, r.room, r.me.ID)
	if err != nil {
		return err
	}
	return c.JSON(toRoom(v))
}

// Leave removes the caller from a group or channel; leaving a room one
// is not in is a no-op.
func (h *Handler) Leave(c *fiber.Ctx) error {
	r, err := parseRoom(c)
	if err != nil {
		return err
	}
	if _, err := store.LeaveRoom(r.ctx, h.DB, r.room, r.me.ID, outbox.TraceOf(r.ctx, h.Propagator)); err != nil {
		return err
	}
	return c.SendStatus(fiber.StatusNoContent)
}

// Members returns a room's members to its members.
func (h *Handler) Members(c *fiber.Ctx) error {
	r, err := parseRoom(c)
	if err != nil {
		return err
	}
	if _, err := store.Membership(r.ctx, h.DB, r.room, r.me.ID); err != nil {
		return err
	}
	members, err := store.ListMembers(r.ctx, h.DB, r.room)
	if err != nil {
		return err
	}
	out := toMembers(members)
	for i := range members {
		if members[i].UserID == r.me.ID {
			// Whether others muted the room is theirs to know.
			out[i].IsMuted = &members[i].IsMuted
		}
	}
	return c.JSON(fiber.Map{"members": out})
}

// AddMember lets a room admin add a user: 201 when added, 200 when the user
// already was a member.
func (h *Handler) AddMember(c *fiber.Ctx) error {
	r, err := parseRoom(c)
	if err != nil {
		return err
	}
	var req addMemberRequest
	if err := rest.DecodeBody(c, &req); err != nil {
		return err
	}
	userID, err := rest.ParseID("userId", req.UserID)
	if err != nil {
		return err
	}
	m, added, err := store.AddMember(r.ctx, h.DB, r.room, r.me.ID, userID, outbox.TraceOf(r.ctx, h.Propagator))
	if err != nil {
		return err
	}
	if !added {
		return c.JSON(toMember(m))
	}
	return c.Status(fiber.StatusCreated).JSON(toMember(m))
}

type updateRoomRequest struct {
	Name     *string `json:"name"`
	IsActive *bool   `json:"isActive"`
}

// Update lets a room admin rename a group or channel and archive
// (isActive false) or restore it.
func (h *Handler) Update(c *fiber.Ctx) error {
	r, err := parseRoom(c)
	if err != nil {
		return err
	}
	var req updateRoomRequest
	if err := rest.DecodeBody(c, &req); err != nil {
		return err
	}
	if req.Name == nil && req.IsActive == nil {
		return chat.Errorf(chat.CodeBadRequest, "nothing to change: give name or isActive")
	}
	p := store.RoomPatch{IsActive: req.IsActive}
	if req.Name != nil {
		name := strings.TrimSpace(*req.Name)
		if rest.HasNUL(name) || rest.HasControl(name) {
			return chat.Errorf(chat.CodeBadRequest, "name must not contain control characters")
		}
		if name == "" || utf8.RuneCountInString(name) > chat.MaxRoomNameLen {
			return chat.Errorf(chat.CodeBadRequest, "name must be 1 to %d characters", chat.MaxRoomNameLen)
		}
		p.Name = &name
	}
	v, err := store.UpdateRoom(r.ctx, h.DB, r.room, r.me.ID, p)
	if err != nil {
		return err
	}
	return c.JSON(toRoom(v))
}

type updateMemberRequest struct {
	Role    *string `json:"role"`
	IsMuted *bool   `json:"isMuted"`
}

// UpdateMember changes a member: role (admins only, never demoting the
// last admin) and isMuted (the member themself only).
func (h *Handler) UpdateMember(c *fiber.Ctx) error {
	r, userID, err := parseMember(c)
	if err != nil {
		return err
	}
	var req updateMemberRequest
	if err := rest.DecodeBody(c, &req); err != nil {
		return err
	}
	if req.Role == nil && req.IsMuted == nil {
		return chat.Errorf(chat.CodeBadRequest, "nothing to change: give role or isMuted")
	}
	if req.IsMuted != nil && userID != r.me.ID {
		return chat.Errorf(chat.CodeForbidden, "only members themselves can mute a room for themselves")
	}
	var m *store.Member
	if req.Role != nil {
		role := chat.Role(*req.Role)
		if role != chat.RoleAdmin && role != chat.RoleMember {
			return chat.Errorf(chat.CodeBadRequest, "role must be admin or member")
		}
		if m, err = store.SetMemberRole(r.ctx, h.DB, r.room, r.me.ID, userID, role); err != nil {
			return err
		}
	}
	if req.IsMuted != nil {
		if m, err = store.SetMuted(r.ctx, h.DB, r.room, r.me.ID, *req.IsMuted); err != nil {
			return err
		}
	}
	out := toMember(m)
	if userID == r.me.ID {
		out.IsMuted = &m.IsMuted
	}
	return c.JSON(out)
}

// RemoveMember removes a member: an admin removes anyone, anyone removes
// themself (leaving, as POST /leave, which hands the room on when the last
// admin goes). The member_left event goes out through the outbox.
func (h *Handler) RemoveMember(c *fiber.Ctx) error {
	r, userID, err := parseMember(c)
	if err != nil {
		return err
	}
	if err := store.RemoveMember(r.ctx, h.DB, r.room, r.me.ID, userID, outbox.TraceOf(r.ctx, h.Propagator)); err != nil {
		return err
	}
	return c.SendStatus(fiber.StatusNoContent)
}

// maxChannelPage bounds one page of the channel directory.
const maxChannelPage = 100

// channelCursor is the opaque nextCursor of the directory: base64url of
// this JSON.
type channelCursor struct {
	Name string `json:"n"`
	ID   int64  `json:"i"`
}

// Channels is the directory of active public channels, optionally
// filtered by a name substring, in name order, with whether the caller has
// joined each.
func (h *Handler) Channels(c *fiber.Ctx) error {
	q, _ := rest.QueryArg(c, "q")
	q = strings.TrimSpace(q)
	if len(q) > chat.MaxRoomNameLen*4 || rest.HasNUL(q) {
		return chat.Errorf(chat.CodeBadRequest, "q must be at most %d characters", chat.MaxRoomNameLen)
	}
	limit, err := rest.QueryLimit(c, 50, maxChannelPage)
	if err != nil {
		return err
	}
	var after *store.ChannelCursor
	if raw, ok := rest.QueryArg(c, "cursor"); ok {
		var cur channelCursor
		b, err := base64.RawURLEncoding.DecodeString(raw)
		if err != nil || len(raw) > 1024 || json.Unmarshal(b, &cur) != nil || cur.ID <= 0 {
			return chat.Errorf(chat.CodeBadRequest, "cursor is not one this api returned")
		}
		after = &store.ChannelCursor{Name: cur.Name, ID: cur.ID}
	}
	page, next, err := store.Channels(c.UserContext(), h.DB, rest.User(c).ID, q, limit, after)
	if err != nil {
		return err
	}
	out := struct {
		Channels   []channelJSON `json:"channels"`
		NextCursor string        `json:"nextCursor,omitempty"`
	}{Channels: make([]channelJSON, len(page))}
	for i, ch := range page {
		out.Channels[i] = channelJSON{ID: rest.IDString(ch.ID), Name: ch.Name, Type: string(chat.RoomChannel),
			MemberCount: ch.MemberCount, Joined: ch.Joined}
	}
	if next != nil {
		b, err := json.Marshal(channelCursor{Name: next.Name, ID: next.ID})
		if err != nil {
			return err
		}
		out.NextCursor = base64.RawURLEncoding.EncodeToString(b)
	}
	return c.JSON(out)
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
	LastMessage *messages.Message `json:"lastMessage"`
	UnreadCount int64             `json:"unreadCount"`
	LastReadSeq int64             `json:"lastReadSeq"`
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

func toMember(m *store.Member) memberJSON {
	return memberJSON{
		UserID: rest.IDString(m.UserID), Username: m.Username, DisplayName: m.DisplayName, AvatarURL: m.AvatarURL,
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
		ID: rest.IDString(r.ID), Name: r.Name, Type: r.Type, CreatedBy: rest.IDString(r.CreatedBy),
		CreatedAt: r.CreatedAt, MemberCount: r.MemberCount, IsActive: r.IsActive,
	}
	if r.Role != "" {
		role := r.Role
		out.MyRole = &role
	}
	return out
}
