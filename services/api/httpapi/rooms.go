package httpapi

import (
	"relay/services/api/internal/outbox"
	"strings"
	"unicode/utf8"

	"github.com/gofiber/fiber/v2"

	"relay/pkg/chat"
	"relay/pkg/store"
)

type createRoomRequest struct {
	Name      string   `json:"name"`
	Type      string   `json:"type"`
	MemberIDs []string `json:"memberIds"`
}

type addMemberRequest struct {
	UserID string `json:"userId"`
}

// createRoom creates a group, channel or direct room. A direct room that
// already exists for the pair is returned with 200 instead of 201. The
// members' member_joined events go out through the outbox (outbox.go).
func (s *Service) createRoom(c *fiber.Ctx) error {
	me := currentUser(c)
	var req createRoomRequest
	if err := decodeBody(c, &req); err != nil {
		return err
	}
	typ := chat.RoomType(req.Type)
	if !typ.Valid() {
		return chat.Errorf(chat.CodeBadRequest, "type must be direct, group or channel")
	}
	if hasNUL(req.Name) {
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
	if maxMembers := s.cfg.Limits.RoomCreateMaxMembers; len(req.MemberIDs) > maxMembers {
		return chat.Errorf(chat.CodeBadRequest, "a room is created with at most %d members besides its creator; add others one by one or let them join", maxMembers)
	}
	ids := make([]int64, len(req.MemberIDs))
	for i, raw := range req.MemberIDs {
		id, err := parseID("memberIds", raw)
		if err != nil {
			return err
		}
		ids[i] = id
	}
	ctx := c.UserContext()
	room, members, created, err := store.CreateRoom(ctx, s.db, store.NewRoom{
		Name: name, Type: typ, CreatedBy: me.ID, MemberIDs: ids, Trace: outbox.TraceOf(ctx, s.tel.Propagator),
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

// listRooms returns the caller's rooms with last message and unread count.
func (s *Service) listRooms(c *fiber.Ctx) error {
	rooms, err := store.ListRooms(c.UserContext(), s.db, currentUser(c).ID)
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
			m := toMessage(r.LastMessage)
			out[i].LastMessage = &m
		}
		if r.Peer != nil {
			out[i].Peer = &peerJSON{ID: idString(r.Peer.UserID), memberJSON: toMember(r.Peer)}
		}
	}
	return c.JSON(fiber.Map{"rooms": out})
}

// getRoom returns a room to its members, and a channel to anyone.
func (s *Service) getRoom(c *fiber.Ctx) error {
	id, err := pathID(c, "room")
	if err != nil {
		return err
	}
	v, err := store.RoomFor(c.UserContext(), s.db, id, currentUser(c).ID)
	if err != nil {
		return err
	}
	if v.Role == "" && v.Type != string(chat.RoomChannel) {
		return chat.Errorf(chat.CodeForbidden, "not a member of room %d", id)
	}
	return c.JSON(toRoom(v))
}

// joinRoom makes the caller a member of a channel; joining again is a no-op.
func (s *Service) joinRoom(c *fiber.Ctx) error {
	id, err := pathID(c, "room")
	if err != nil {
		return err
	}
	me, ctx := currentUser(c), c.UserContext()
	if _, _, err := store.JoinRoom(ctx, s.db, id, me.ID, outbox.TraceOf(ctx, s.tel.Propagator)); err != nil {
		return err
	}
	v, err := store.RoomFor(ctx, s.db, id, me.ID)
	if err != nil {
		return err
	}
	return c.JSON(toRoom(v))
}

// leaveRoom removes the caller from a group or channel; leaving a room one
// is not in is a no-op.
func (s *Service) leaveRoom(c *fiber.Ctx) error {
	id, err := pathID(c, "room")
	if err != nil {
		return err
	}
	me, ctx := currentUser(c), c.UserContext()
	if _, err := store.LeaveRoom(ctx, s.db, id, me.ID, outbox.TraceOf(ctx, s.tel.Propagator)); err != nil {
		return err
	}
	return c.SendStatus(fiber.StatusNoContent)
}

// listMembers returns a room's members to its members.
func (s *Service) listMembers(c *fiber.Ctx) error {
	id, err := pathID(c, "room")
	if err != nil {
		return err
	}
	ctx, me := c.UserContext(), currentUser(c)
	if _, err := store.Membership(ctx, s.db, id, me.ID); err != nil {
		return err
	}
	members, err := store.ListMembers(ctx, s.db, id)
	if err != nil {
		return err
	}
	out := toMembers(members)
	for i := range members {
		if members[i].UserID == me.ID {
			// Whether others muted the room is theirs to know.
			out[i].IsMuted = &members[i].IsMuted
		}
	}
	return c.JSON(fiber.Map{"members": out})
}

// addMember lets a room admin add a user: 201 when added, 200 when the user
// already was a member.
func (s *Service) addMember(c *fiber.Ctx) error {
	id, err := pathID(c, "room")
	if err != nil {
		return err
	}
	var req addMemberRequest
	if err := decodeBody(c, &req); err != nil {
		return err
	}
	userID, err := parseID("userId", req.UserID)
	if err != nil {
		return err
	}
	ctx := c.UserContext()
	m, added, err := store.AddMember(ctx, s.db, id, currentUser(c).ID, userID, outbox.TraceOf(ctx, s.tel.Propagator))
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

// updateRoom lets a room admin rename a group or channel and archive
// (isActive false) or restore it.
func (s *Service) updateRoom(c *fiber.Ctx) error {
	id, err := pathID(c, "room")
	if err != nil {
		return err
	}
	var req updateRoomRequest
	if err := decodeBody(c, &req); err != nil {
		return err
	}
	if req.Name == nil && req.IsActive == nil {
		return chat.Errorf(chat.CodeBadRequest, "nothing to change: give name or isActive")
	}
	p := store.RoomPatch{IsActive: req.IsActive}
	if req.Name != nil {
		name := strings.TrimSpace(*req.Name)
		if hasNUL(name) || hasControl(name) {
			return chat.Errorf(chat.CodeBadRequest, "name must not contain control characters")
		}
		if name == "" || utf8.RuneCountInString(name) > chat.MaxRoomNameLen {
			return chat.Errorf(chat.CodeBadRequest, "name must be 1 to %d characters", chat.MaxRoomNameLen)
		}
		p.Name = &name
	}
	v, err := store.UpdateRoom(c.UserContext(), s.db, id, currentUser(c).ID, p)
	if err != nil {
		return err
	}
	return c.JSON(toRoom(v))
}

type updateMemberRequest struct {
	Role    *string `json:"role"`
	IsMuted *bool   `json:"isMuted"`
}

// updateMember changes a member: role (admins only, never demoting the
// last admin) and isMuted (the member themself only).
func (s *Service) updateMember(c *fiber.Ctx) error {
	roomID, err := pathID(c, "room")
	if err != nil {
		return err
	}
	userID, err := parseID("user id", c.Params("userId"))
	if err != nil {
		return err
	}
	var req updateMemberRequest
	if err := decodeBody(c, &req); err != nil {
		return err
	}
	if req.Role == nil && req.IsMuted == nil {
		return chat.Errorf(chat.CodeBadRequest, "nothing to change: give role or isMuted")
	}
	me, ctx := currentUser(c), c.UserContext()
	if req.IsMuted != nil && userID != me.ID {
		return chat.Errorf(chat.CodeForbidden, "only members themselves can mute a room for themselves")
	}
	var m *store.Member
	if req.Role != nil {
		role := chat.Role(*req.Role)
		if role != chat.RoleAdmin && role != chat.RoleMember {
			return chat.Errorf(chat.CodeBadRequest, "role must be admin or member")
		}
		if m, err = store.SetMemberRole(ctx, s.db, roomID, me.ID, userID, role); err != nil {
			return err
		}
	}
	if req.IsMuted != nil {
		if m, err = store.SetMuted(ctx, s.db, roomID, me.ID, *req.IsMuted); err != nil {
			return err
		}
	}
	out := toMember(m)
	if userID == me.ID {
		out.IsMuted = &m.IsMuted
	}
	return c.JSON(out)
}

// removeMember removes a member: an admin removes anyone, anyone removes
// themself (leaving, as POST /leave, which hands the room on when the last
// admin goes). The member_left event goes out through the outbox.
func (s *Service) removeMember(c *fiber.Ctx) error {
	roomID, err := pathID(c, "room")
	if err != nil {
		return err
	}
	userID, err := parseID("user id", c.Params("userId"))
	if err != nil {
		return err
	}
	ctx := c.UserContext()
	if err := store.RemoveMember(ctx, s.db, roomID, currentUser(c).ID, userID, outbox.TraceOf(ctx, s.tel.Propagator)); err != nil {
		return err
	}
	return c.SendStatus(fiber.StatusNoContent)
}
