package httpapi_test

import (
	"fmt"
	"net/url"
	"slices"
	"testing"
)

type summaryResp struct {
	ID          string  `json:"id"`
	Name        string  `json:"name"`
	IsActive    bool    `json:"isActive"`
	LastSeq     int64   `json:"lastSeq"`
	LastReadSeq int64   `json:"lastReadSeq"`
	UnreadCount int64   `json:"unreadCount"`
	Role        string  `json:"role"`
	IsMuted     bool    `json:"isMuted"`
	MyRole      *string `json:"myRole"`
	Peer        *struct {
		ID       string `json:"id"`
		UserID   string `json:"userId"`
		Username string `json:"username"`
	} `json:"peer"`
}

func (e *apiEnv) rooms(u testUser) map[string]summaryResp {
	e.t.Helper()
	var out struct {
		Rooms []summaryResp `json:"rooms"`
	}
	e.do("GET", "/api/rooms", u.token, nil).expect(e.t, 200, &out)
	m := map[string]summaryResp{}
	for _, r := range out.Rooms {
		m[r.ID] = r
	}
	return m
}

type memberMuted struct {
	memberResp
	IsMuted *bool `json:"isMuted"`
}

func (e *apiEnv) members(u testUser, roomID string) map[string]memberMuted {
	e.t.Helper()
	var out struct {
		Members []memberMuted `json:"members"`
	}
	e.do("GET", "/api/rooms/"+roomID+"/members", u.token, nil).expect(e.t, 200, &out)
	m := map[string]memberMuted{}
	for _, x := range out.Members {
		m[x.UserID] = x
	}
	return m
}

// GET /api/rooms carries what a room list needs: the log position, the
// caller's read position, unread count, role, mute and, for direct rooms,
// the peer.
func TestRoomListEnriched(t *testing.T) {
	e := newAPI(t, envOptions{})
	ann, ben := e.user("ann"), e.user("ben")
	g := e.room(ann, "group", "g", ben)
	var dm roomResp
	e.do("POST", "/api/rooms", ann.token, map[string]any{"type": "direct", "memberIds": []string{ben.sid}}).expect(t, 201, &dm)
	empty := e.rooms(ann)[g.ID]
	if empty.LastSeq != -1 || empty.UnreadCount != 0 || empty.Role != "admin" || empty.IsMuted || !empty.IsActive {
		t.Fatalf("empty room: %+v", empty)
	}
	e.message(g.ID, ben, 3, "one")
	e.message(g.ID, ben, 5, "two")
	e.message(g.ID, ann, 8, "mine")
	r := e.rooms(ann)[g.ID]
	if r.LastSeq != 8 || r.UnreadCount != 2 || r.LastReadSeq != -1 {
		t.Fatalf("room with messages: %+v", r)
	}
	if b := e.rooms(ben)[g.ID]; b.Role != "member" || b.UnreadCount != 1 {
		t.Fatalf("ben's view: %+v", b)
	}
	d := e.rooms(ann)[dm.ID]
	if d.Peer == nil || d.Peer.ID != ben.sid || d.Peer.UserID != ben.sid || d.Peer.Username != "ben" {
		t.Fatalf("direct room peer: %+v", d.Peer)
	}
	if r.Peer != nil {
		t.Fatalf("group has a peer: %+v", r.Peer)
	}
}

func TestRoomRenameAndArchive(t *testing.T) {
	e := newAPI(t, envOptions{})
	ada, bo := e.user("ada"), e.user("bo")
	g := e.room(ada, "group", "old name", bo)
	var room struct {
		Name     string `json:"name"`
		IsActive bool   `json:"isActive"`
	}
	e.do("PATCH", "/api/rooms/"+g.ID, ada.token, map[string]any{"name": "  new name "}).expect(t, 200, &room)
	if room.Name != "new name" || !room.IsActive {
		t.Fatalf("renamed: %+v", room)
	}
	e.do("PATCH", "/api/rooms/"+g.ID, ada.token, map[string]any{"isActive": false}).expect(t, 200, &room)
	if room.IsActive || room.Name != "new name" {
		t.Fatalf("archived: %+v", room)
	}
	if r := e.rooms(bo)[g.ID]; r.IsActive || r.Name != "new name" {
		t.Fatalf("bo's list: %+v", r)
	}
	e.do("PATCH", "/api/rooms/"+g.ID, bo.token, map[string]any{"name": "mine"}).expectError(t, 403, "FORBIDDEN")
	e.do("PATCH", "/api/rooms/"+g.ID, e.user("cy").token, map[string]any{"name": "mine"}).expectError(t, 403, "FORBIDDEN")
	e.do("PATCH", "/api/rooms/"+g.ID, ada.token, map[string]any{}).expectError(t, 400, "BAD_REQUEST")
	e.do("PATCH", "/api/rooms/"+g.ID, ada.token, map[string]any{"name": " "}).expectError(t, 400, "BAD_REQUEST")
	e.do("PATCH", "/api/rooms/"+g.ID, ada.token, map[string]any{"name": "a\u0000b"}).expectError(t, 400, "BAD_REQUEST")
	e.do("PATCH", "/api/rooms/999999", ada.token, map[string]any{"name": "x"}).expectError(t, 404, "NOT_FOUND")
	var dm roomResp
	e.do("POST", "/api/rooms", ada.token, map[string]any{"type": "direct", "memberIds": []string{bo.sid}}).expect(t, 201, &dm)
	e.do("PATCH", "/api/rooms/"+dm.ID, ada.token, map[string]any{"isActive": false}).expectError(t, 403, "FORBIDDEN")
}

func TestMemberRolesMuteAndRemoval(t *testing.T) {
	e := newAPI(t, envOptions{})
	amy, bea, cal, dan := e.user("amy"), e.user("bea"), e.user("cal"), e.user("dan")
	g := e.room(amy, "group", "team", bea, cal, dan)
	path := func(u testUser) string { return "/api/rooms/" + g.ID + "/members/" + u.sid }

	// Roles: admins only; the last admin cannot be demoted.
	e.do("PATCH", path(amy), amy.token, map[string]any{"role": "member"}).expectError(t, 409, "CONFLICT")
	e.do("PATCH", path(cal), bea.token, map[string]any{"role": "admin"}).expectError(t, 403, "FORBIDDEN")
	var m memberMuted
	e.do("PATCH", path(bea), amy.token, map[string]any{"role": "admin"}).expect(t, 200, &m)
	if m.Role != "admin" || m.IsMuted != nil {
		t.Fatalf("promoted: %+v", m)
	}
	e.do("PATCH", path(amy), amy.token, map[string]any{"role": "member"}).expect(t, 200, &m)
	if m.Role != "member" {
		t.Fatalf("demoted self: %+v", m)
	}
	e.do("PATCH", path(bea), bea.token, map[string]any{"role": "member"}).expectError(t, 409, "CONFLICT")
	e.do("PATCH", path(bea), bea.token, map[string]any{"role": "owner"}).expectError(t, 400, "BAD_REQUEST")
	e.do("PATCH", "/api/rooms/"+g.ID+"/members/999999", bea.token, map[string]any{"role": "admin"}).expectError(t, 404, "NOT_FOUND")

	// Mute: one's own only, and shown only to oneself.
	e.do("PATCH", path(cal), cal.token, map[string]any{"isMuted": true}).expect(t, 200, &m)
	if m.IsMuted == nil || !*m.IsMuted {
		t.Fatalf("muted: %+v", m)
	}
	e.do("PATCH", path(cal), bea.token, map[string]any{"isMuted": false}).expectError(t, 403, "FORBIDDEN")
	if ms := e.members(cal, g.ID); ms[cal.sid].IsMuted == nil || !*ms[cal.sid].IsMuted || ms[bea.sid].IsMuted != nil {
		t.Fatalf("cal's member list: %+v", ms)
	}
	if ms := e.members(bea, g.ID); ms[cal.sid].IsMuted != nil || ms[bea.sid].IsMuted == nil || *ms[bea.sid].IsMuted {
		t.Fatalf("bea's member list shows others' mute: %+v", ms)
	}
	if !e.rooms(cal)[g.ID].IsMuted || e.rooms(bea)[g.ID].IsMuted {
		t.Fatal("room list mute flags wrong")
	}

	// Removal: admins remove others, members only themselves.
	e.do("DELETE", path(dan), cal.token, nil).expectError(t, 403, "FORBIDDEN")
	e.do("DELETE", path(dan), bea.token, nil).expect(t, 204, nil)
	e.do("DELETE", path(dan), bea.token, nil).expectError(t, 404, "NOT_FOUND")
	e.do("GET", "/api/rooms/"+g.ID+"/members", dan.token, nil).expectError(t, 403, "FORBIDDEN")
	e.do("DELETE", path(cal), cal.token, nil).expect(t, 204, nil)
	// The last admin leaving hands the room on (to amy, the longest standing).
	e.do("DELETE", path(bea), bea.token, nil).expect(t, 204, nil)
	ms := e.members(amy, g.ID)
	if len(ms) != 1 || ms[amy.sid].Role != "admin" {
		t.Fatalf("after the last admin left: %+v", ms)
	}
	e.do("DELETE", "/api/rooms/"+g.ID+"/members/abc", amy.token, nil).expectError(t, 400, "BAD_REQUEST")
	want := []string{
		fmt.Sprintf("member_left:%d:dan", dan.id),
		fmt.Sprintf("member_left:%d:cal", cal.id),
		fmt.Sprintf("member_left:%d:bea", bea.id),
	}
	got := eventsString(e.events(), g.ID)
	if len(got) < 3 || !slices.Equal(got[len(got)-3:], want) {
		t.Fatalf("events %v, want them to end with %v", got, want)
	}

	var dm roomResp
	e.do("POST", "/api/rooms", amy.token, map[string]any{"type": "direct", "memberIds": []string{bea.sid}}).expect(t, 201, &dm)
	e.do("DELETE", "/api/rooms/"+dm.ID+"/members/"+bea.sid, amy.token, nil).expectError(t, 403, "FORBIDDEN")
	e.do("PATCH", "/api/rooms/"+dm.ID+"/members/"+bea.sid, amy.token, map[string]any{"role": "member"}).expectError(t, 403, "FORBIDDEN")
}

func TestChannelDirectory(t *testing.T) {
	e := newAPI(t, envOptions{})
	owner, viewer := e.user("owner"), e.user("viewer")
	names := []string{"Gamma", "alpha", "Beta", "delta 100%", "epsilon"}
	ids := map[string]string{}
	for _, n := range names {
		ids[n] = e.room(owner, "channel", n).ID
	}
	e.room(owner, "group", "alpha group")
	e.do("PATCH", "/api/rooms/"+ids["epsilon"], owner.token, map[string]any{"isActive": false}).expect(t, 200, nil)
	e.do("POST", "/api/rooms/"+ids["Beta"]+"/join", viewer.token, nil).expect(t, 200, nil)

	type page struct {
		Channels []struct {
			ID          string `json:"id"`
			Name        string `json:"name"`
			Type        string `json:"type"`
			MemberCount int64  `json:"memberCount"`
			Joined      bool   `json:"joined"`
		} `json:"channels"`
		NextCursor string `json:"nextCursor"`
	}
	list := func(query string) ([]string, page) {
		t.Helper()
		var p page
		e.do("GET", "/api/channels"+query, viewer.token, nil).expect(t, 200, &p)
		var out []string
		for _, c := range p.Channels {
			out = append(out, c.Name)
		}
		return out, p
	}
	all, p := list("")
	if !slices.Equal(all, []string{"alpha", "Beta", "delta 100%", "Gamma"}) || p.NextCursor != "" {
		t.Fatalf("directory %v (next %q)", all, p.NextCursor)
	}
	for _, c := range p.Channels {
		if c.Joined != (c.Name == "Beta") || c.Type != "channel" {
			t.Fatalf("entry %+v", c)
		}
		if c.Name == "Beta" && c.MemberCount != 2 {
			t.Fatalf("Beta has %d members", c.MemberCount)
		}
	}
	// Pages follow each other without gaps or repeats.
	var paged []string
	cursor := ""
	for i := 0; i < 5; i++ {
		q := "?limit=3"
		if cursor != "" {
			q += "&cursor=" + url.QueryEscape(cursor)
		}
		names, p := list(q)
		paged = append(paged, names...)
		if cursor = p.NextCursor; cursor == "" {
			break
		}
	}
	if !slices.Equal(paged, all) {
		t.Fatalf("paged %v, want %v", paged, all)
	}
	if got, _ := list("?q=ETA"); !slices.Equal(got, []string{"Beta"}) {
		t.Fatalf("q=ETA: %v", got)
	}
	if got, _ := list("?q=" + url.QueryEscape("%")); !slices.Equal(got, []string{"delta 100%"}) {
		t.Fatalf("q=%%: %v", got)
	}
	e.do("GET", "/api/channels?cursor=garbage!", viewer.token, nil).expectError(t, 400, "BAD_REQUEST")
	e.do("GET", "/api/channels?limit=0", viewer.token, nil).expectError(t, 400, "BAD_REQUEST")
	e.do("GET", "/api/channels", "", nil).expectError(t, 401, "UNAUTHORIZED")
}
