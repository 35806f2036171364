package httpapi_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"relay/pkg/chat"
	"relay/pkg/kafka"
)

func TestUsers(t *testing.T) {
	e := newAPI(t, envOptions{})
	a, b := e.user("frank"), e.user("grace")
	var got map[string]any
	e.do("GET", "/api/users/"+b.sid, a.token, nil).expect(t, 200, &got)
	for _, k := range []string{"id", "username", "displayName", "avatarUrl", "isOnline", "lastSeen", "createdAt"} {
		if _, ok := got[k]; !ok {
			t.Errorf("profile lacks %s: %v", k, got)
		}
	}
	for _, k := range []string{"email", "passwordHash", "password_hash", "PasswordHash"} {
		if _, ok := got[k]; ok {
			t.Errorf("profile leaks %s: %v", k, got)
		}
	}
	if got["id"] != b.sid || got["username"] != "grace" || got["displayName"] != "GRACE" {
		t.Errorf("profile %v", got)
	}
	e.do("GET", "/api/users/999999", a.token, nil).expectError(t, 404, chat.CodeNotFound)
	for _, bad := range []string{"abc", "-1", "0", "+5", "1.5", "99999999999999999999", "9223372036854775808", "%20"} {
		e.do("GET", "/api/users/"+bad, a.token, nil).expectError(t, 400, chat.CodeBadRequest)
	}
	e.do("GET", "/api/users/"+b.sid, "", nil).expectError(t, 401, chat.CodeUnauthorized)
}

func TestCreateAndReadRooms(t *testing.T) {
	e := newAPI(t, envOptions{})
	a, b, c := e.user("hank"), e.user("ivy"), e.user("jack")

	g := e.room(a, "group", "  Team  ", b, b, a)
	if g.Name != "Team" || g.Type != "group" || g.CreatedBy != a.sid || g.MemberCount != 2 || g.MyRole == nil || *g.MyRole != "admin" {
		t.Fatalf("group %+v", g)
	}
	roles := map[string]string{}
	for _, m := range g.Members {
		roles[m.UserID] = m.Role
	}
	if len(g.Members) != 2 || roles[a.sid] != "admin" || roles[b.sid] != "member" {
		t.Fatalf("members %+v", g.Members)
	}
	ch := e.room(a, "channel", "news")

	// A member reads the group; an outsider may not; anyone reads a channel.
	var got roomResp
	e.do("GET", "/api/rooms/"+g.ID, b.token, nil).expect(t, 200, &got)
	if got.ID != g.ID || got.MyRole == nil || *got.MyRole != "member" || got.MemberCount != 2 || !got.CreatedAt.Equal(g.CreatedAt) {
		t.Fatalf("room as member %+v", got)
	}
	e.do("GET", "/api/rooms/"+g.ID, c.token, nil).expectError(t, 403, chat.CodeForbidden)
	e.do("GET", "/api/rooms/"+ch.ID, c.token, nil).expect(t, 200, &got)
	if got.MyRole != nil || got.Type != "channel" {
		t.Fatalf("channel as outsider %+v", got)
	}
	e.do("GET", "/api/rooms/424242", a.token, nil).expectError(t, 404, chat.CodeNotFound)
	e.do("GET", "/api/rooms/x1", a.token, nil).expectError(t, 400, chat.CodeBadRequest)

	var list struct {
		Rooms []struct {
			roomResp
			UnreadCount int64 `json:"unreadCount"`
			LastReadSeq int64 `json:"lastReadSeq"`
			LastMessage *struct {
				Content string `json:"content"`
			} `json:"lastMessage"`
		} `json:"rooms"`
	}
	e.do("GET", "/api/rooms", b.token, nil).expect(t, 200, &list)
	if len(list.Rooms) != 1 || list.Rooms[0].ID != g.ID || list.Rooms[0].LastMessage != nil || list.Rooms[0].LastReadSeq != -1 {
		t.Fatalf("b's rooms %+v", list.Rooms)
	}
	e.do("GET", "/api/rooms", c.token, nil).expect(t, 200, &list)
	if len(list.Rooms) != 0 {
		t.Fatalf("c's rooms %+v", list.Rooms)
	}

	// Bad creations.
	bad := map[string]any{
		"unknown type":      map[string]any{"name": "x", "type": "public"},
		"missing type":      map[string]any{"name": "x"},
		"missing name":      map[string]any{"type": "group"},
		"blank name":        map[string]any{"type": "channel", "name": "   "},
		"long name":         map[string]any{"type": "group", "name": strings.Repeat("n", 101)},
		"numeric member id": map[string]any{"type": "group", "name": "x", "memberIds": []int{int(b.id)}},
		"bad member id":     map[string]any{"type": "group", "name": "x", "memberIds": []string{"abc"}},
		"negative id":       map[string]any{"type": "group", "name": "x", "memberIds": []string{"-3"}},
		"too many members":  map[string]any{"type": "group", "name": "x", "memberIds": slices.Repeat([]string{b.sid}, 1001)},
		"memberIds object":  map[string]any{"type": "group", "name": "x", "memberIds": map[string]string{"a": "b"}},
		"direct alone":      map[string]any{"type": "direct"},
		"direct with self":  map[string]any{"type": "direct", "memberIds": []string{a.sid}},
		"direct with two":   map[string]any{"type": "direct", "memberIds": []string{b.sid, c.sid}},
		"not an object":     raw(`["group"]`),
		"NUL in name":       map[string]any{"type": "group", "name": "a\x00b"},
	}
	for name, body := range bad {
		t.Run(name, func(t *testing.T) {
			e.do("POST", "/api/rooms", a.token, body).expectError(t, 400, chat.CodeBadRequest)
		})
	}
	msg := e.do("POST", "/api/rooms", a.token, map[string]any{"type": "group", "name": "x", "memberIds": []string{b.sid, "777777"}}).
		expectError(t, 404, chat.CodeNotFound)
	if !strings.Contains(msg, "777777") {
		t.Errorf("message %q does not name the unknown user", msg)
	}
	e.do("POST", "/api/rooms", a.token, map[string]any{"type": "direct", "memberIds": []string{"777777"}}).expectError(t, 404, chat.CodeNotFound)
}

func TestDirectRoomUniqueness(t *testing.T) {
	e := newAPI(t, envOptions{})
	a, b, c, d := e.user("kate"), e.user("liam"), e.user("mia"), e.user("noah")

	var first, again roomResp
	e.do("POST", "/api/rooms", a.token, map[string]any{"type": "direct", "name": "ignored", "memberIds": []string{b.sid}}).expect(t, 201, &first)
	if first.Type != "direct" || first.Name != "" || len(first.Members) != 2 {
		t.Fatalf("direct %+v", first)
	}
	e.do("POST", "/api/rooms", b.token, map[string]any{"type": "direct", "memberIds": []string{a.sid}}).expect(t, 200, &again)
	if again.ID != first.ID || len(again.Members) != 2 || again.MyRole == nil {
		t.Fatalf("again %+v, want room %s", again, first.ID)
	}
	e.do("POST", "/api/rooms", a.token, map[string]any{"type": "direct", "memberIds": []string{b.sid}}).expect(t, 200, &again)
	if again.ID != first.ID {
		t.Fatalf("third ask gave room %s", again.ID)
	}
	// A direct room cannot be left, joined or added to.
	e.do("POST", "/api/rooms/"+first.ID+"/leave", a.token, nil).expectError(t, 403, chat.CodeForbidden)
	e.do("POST", "/api/rooms/"+first.ID+"/join", c.token, nil).expectError(t, 403, chat.CodeForbidden)
	e.do("POST", "/api/rooms/"+first.ID+"/members", a.token, map[string]string{"userId": c.sid}).expectError(t, 403, chat.CodeForbidden)

	// Concurrent creations by both sides make one room.
	const n = 8
	ids := make([]string, n)
	statuses := make([]int, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			from, to := c, d
			if i%2 == 1 {
				from, to = d, c
			}
			var r roomResp
			res := e.do("POST", "/api/rooms", from.token, map[string]any{"type": "direct", "memberIds": []string{to.sid}})
			statuses[i] = res.status
			if res.status == 200 || res.status == 201 {
				res.expect(t, res.status, &r)
				ids[i] = r.ID
			}
		}()
	}
	wg.Wait()
	created := 0
	for i := range n {
		if ids[i] == "" || ids[i] != ids[0] {
			t.Fatalf("creation %d: status %d room %q (first %q)", i, statuses[i], ids[i], ids[0])
		}
		if statuses[i] == 201 {
			created++
		}
	}
	if created != 1 {
		t.Fatalf("%d creations answered 201, want 1: %v", created, statuses)
	}
	// Exactly one room's worth of member_joined events exists for the pair.
	if evs := eventsString(e.events(), ids[0]); len(evs) != 2 {
		t.Fatalf("events of the concurrent direct room: %v", evs)
	}
}

func TestMembershipAndEvents(t *testing.T) {
	e := newAPI(t, envOptions{})
	a, b, c, d := e.user("olga"), e.user("paul"), e.user("quin"), e.user("rosa")
	ch := e.room(a, "channel", "general", b)
	g := e.room(a, "group", "private", b)

	// Anyone joins a channel; again is a no-op.
	var r roomResp
	e.do("POST", "/api/rooms/"+ch.ID+"/join", c.token, nil).expect(t, 200, &r)
	if r.ID != ch.ID || r.MyRole == nil || *r.MyRole != "member" || r.MemberCount != 3 {
		t.Fatalf("after join %+v", r)
	}
	e.do("POST", "/api/rooms/"+ch.ID+"/join", c.token, nil).expect(t, 200, &r)
	if r.MemberCount != 3 {
		t.Fatalf("joining again changed the room: %+v", r)
	}
	// Groups are joined only by being added.
	e.do("POST", "/api/rooms/"+g.ID+"/join", c.token, nil).expectError(t, 403, chat.CodeForbidden)
	e.do("POST", "/api/rooms/55555/join", c.token, nil).expectError(t, 404, chat.CodeNotFound)

	// Members list: members only.
	var ms struct {
		Members []memberResp `json:"members"`
	}
	e.do("GET", "/api/rooms/"+ch.ID+"/members", c.token, nil).expect(t, 200, &ms)
	if len(ms.Members) != 3 || ms.Members[0].UserID != a.sid || ms.Members[0].Role != "admin" || ms.Members[2].UserID != c.sid {
		t.Fatalf("channel members %+v", ms.Members)
	}
	e.do("GET", "/api/rooms/"+g.ID+"/members", c.token, nil).expectError(t, 403, chat.CodeForbidden)
	e.do("GET", "/api/rooms/55555/members", c.token, nil).expectError(t, 404, chat.CodeNotFound)

	// Adding members: admins only.
	var m memberResp
	e.do("POST", "/api/rooms/"+g.ID+"/members", a.token, map[string]string{"userId": d.sid}).expect(t, 201, &m)
	if m.UserID != d.sid || m.Role != "member" || m.Username != "rosa" || m.LastReadSeq != -1 {
		t.Fatalf("added %+v", m)
	}
	e.do("POST", "/api/rooms/"+g.ID+"/members", a.token, map[string]string{"userId": d.sid}).expect(t, 200, &m)
	e.do("POST", "/api/rooms/"+g.ID+"/members", b.token, map[string]string{"userId": c.sid}).expectError(t, 403, chat.CodeForbidden)
	e.do("POST", "/api/rooms/"+g.ID+"/members", c.token, map[string]string{"userId": c.sid}).expectError(t, 403, chat.CodeForbidden)
	e.do("POST", "/api/rooms/"+g.ID+"/members", a.token, map[string]string{"userId": "888888"}).expectError(t, 404, chat.CodeNotFound)
	e.do("POST", "/api/rooms/"+g.ID+"/members", a.token, map[string]string{"userId": "x"}).expectError(t, 400, chat.CodeBadRequest)
	e.do("POST", "/api/rooms/"+g.ID+"/members", a.token, map[string]any{"userId": c.id}).expectError(t, 400, chat.CodeBadRequest)
	e.do("POST", "/api/rooms/"+g.ID+"/members", a.token, map[string]any{}).expectError(t, 400, chat.CodeBadRequest)
	e.do("POST", "/api/rooms/"+g.ID+"/members", a.token, nil).expectError(t, 400, chat.CodeBadRequest)
	e.do("GET", "/api/rooms/"+g.ID+"/members", d.token, nil).expect(t, 200, &ms)
	if len(ms.Members) != 3 {
		t.Fatalf("group members %+v", ms.Members)
	}

	// Leaving; again is a no-op; the last admin leaving hands admin on.
	e.do("POST", "/api/rooms/"+ch.ID+"/leave", c.token, nil).expect(t, 204, nil)
	e.do("POST", "/api/rooms/"+ch.ID+"/leave", c.token, nil).expect(t, 204, nil)
	e.do("GET", "/api/rooms/"+ch.ID+"/members", c.token, nil).expectError(t, 403, chat.CodeForbidden)
	e.do("POST", "/api/rooms/"+g.ID+"/leave", a.token, nil).expect(t, 204, nil)
	e.do("POST", "/api/rooms/"+g.ID+"/members", b.token, map[string]string{"userId": c.sid}).expect(t, 201, nil)
	e.do("POST", "/api/rooms/55555/leave", c.token, nil).expectError(t, 404, chat.CodeNotFound)

	// Every change is on the room's log, in order, once.
	evs := e.events()
	wantCh := []string{
		fmt.Sprintf("member_joined:%d:olga:admin", a.id),
		fmt.Sprintf("member_joined:%d:paul:member", b.id),
		fmt.Sprintf("member_joined:%d:quin:member", c.id),
		fmt.Sprintf("member_left:%d:quin", c.id),
	}
	if got := eventsString(evs, ch.ID); !slices.Equal(got, wantCh) {
		t.Errorf("channel events\n got %v\nwant %v", got, wantCh)
	}
	wantG := []string{
		fmt.Sprintf("member_joined:%d:olga:admin", a.id),
		fmt.Sprintf("member_joined:%d:paul:member", b.id),
		fmt.Sprintf("member_joined:%d:rosa:member", d.id),
		fmt.Sprintf("member_left:%d:olga", a.id),
		fmt.Sprintf("member_joined:%d:quin:member", c.id),
	}
	if got := eventsString(evs, g.ID); !slices.Equal(got, wantG) {
		t.Errorf("group events\n got %v\nwant %v", got, wantG)
	}
	for _, ev := range evs {
		if ev.At.IsZero() || time.Since(ev.At) > time.Hour {
			t.Errorf("event time %v", ev.At)
		}
	}
}

func TestUnreadCountsAndLastMessage(t *testing.T) {
	e := newAPI(t, envOptions{})
	a, b := e.user("uma"), e.user("vic")
	g := e.room(a, "group", "chatty", b)
	dm := e.room(a, "direct", "", b)
	quiet := e.room(a, "channel", "quiet")

	e.message(g.ID, b, 3, "first")
	e.message(g.ID, a, 4, "mine")
	e.message(g.ID, b, 6, "second")
	del := e.message(g.ID, b, 8, "regret")
	e.db.Exec("UPDATE messages SET is_deleted = true, deleted_at = now() WHERE id = ?", del.ID)
	e.message(dm.ID, b, 5, "psst")
	e.db.Exec("UPDATE room_members SET last_read_seq = 3 WHERE room_id = ? AND user_id = ?", g.ID, a.id)

	var list struct {
		Rooms []struct {
			ID          string `json:"id"`
			UnreadCount int64  `json:"unreadCount"`
			LastReadSeq int64  `json:"lastReadSeq"`
			LastMessage *struct {
				Content  string `json:"content"`
				Seq      int64  `json:"seq"`
				Username string `json:"username"`
			} `json:"lastMessage"`
			Peer *memberResp `json:"peer"`
		} `json:"rooms"`
	}
	e.do("GET", "/api/rooms", a.token, nil).expect(t, 200, &list)
	if len(list.Rooms) != 3 {
		t.Fatalf("rooms %+v", list.Rooms)
	}
	for _, r := range list.Rooms {
		switch r.ID {
		case g.ID:
			// Unread: b's "second" only (3 is read, 4 is mine, 8 is deleted).
			if r.UnreadCount != 1 || r.LastReadSeq != 3 || r.LastMessage == nil || r.LastMessage.Content != "second" || r.LastMessage.Username != "vic" {
				t.Errorf("group %+v %+v", r, r.LastMessage)
			}
		case dm.ID:
			if r.UnreadCount != 1 || r.LastMessage == nil || r.LastMessage.Seq != 5 || r.Peer == nil || r.Peer.UserID != b.sid {
				t.Errorf("direct %+v", r)
			}
		case quiet.ID:
			if r.UnreadCount != 0 || r.LastMessage != nil || r.Peer != nil {
				t.Errorf("quiet %+v", r)
			}
		}
	}
	if list.Rooms[2].ID != quiet.ID {
		t.Errorf("the room without messages should come last: %v", list.Rooms)
	}
	e.do("GET", "/api/rooms", b.token, nil).expect(t, 200, &list)
	for _, r := range list.Rooms {
		if r.ID == g.ID && r.UnreadCount != 1 { // a's "mine"
			t.Errorf("b's unread in the group: %d, want 1", r.UnreadCount)
		}
		if r.ID == dm.ID && (r.UnreadCount != 0 || r.Peer == nil || r.Peer.UserID != a.sid) {
			t.Errorf("b's direct room %+v", r)
		}
	}
}

func TestJoinersStartWithHistoryRead(t *testing.T) {
	e := newAPI(t, envOptions{})
	a, b, c := e.user("will"), e.user("xia"), e.user("yan")
	ch := e.room(a, "channel", "busy")
	g := e.room(a, "group", "club")
	for seq := int64(1); seq <= 3; seq++ {
		e.message(ch.ID, a, seq, "old news")
		e.message(g.ID, a, seq, "old news")
	}
	e.do("POST", "/api/rooms/"+ch.ID+"/join", b.token, nil).expect(t, 200, nil)
	e.do("POST", "/api/rooms/"+g.ID+"/members", a.token, map[string]string{"userId": c.sid}).expect(t, 201, nil)
	unread := func(u testUser, roomID string) int64 {
		t.Helper()
		var list struct {
			Rooms []struct {
				ID          string `json:"id"`
				UnreadCount int64  `json:"unreadCount"`
			} `json:"rooms"`
		}
		e.do("GET", "/api/rooms", u.token, nil).expect(t, 200, &list)
		for _, r := range list.Rooms {
			if r.ID == roomID {
				return r.UnreadCount
			}
		}
		t.Fatalf("room %s not in the list", roomID)
		return 0
	}
	if n := unread(b, ch.ID); n != 0 {
		t.Fatalf("joiner starts with %d unread", n)
	}
	if n := unread(c, g.ID); n != 0 {
		t.Fatalf("added member starts with %d unread", n)
	}
	e.message(ch.ID, a, 10, "fresh")
	if n := unread(b, ch.ID); n != 1 {
		t.Fatalf("after a new message: %d unread, want 1", n)
	}
	// History from before joining is readable.
	var h historyResp
	e.do("GET", "/api/rooms/"+ch.ID+"/messages", b.token, nil).expect(t, 200, &h)
	if len(h.Messages) != 4 {
		t.Fatalf("joiner sees %d messages, want 4", len(h.Messages))
	}
}

// flakyPublisher fails the first attempt of every event, then accepts it;
// the relay retries without letting a room's later events overtake.
type flakyPublisher struct {
	mu       sync.Mutex
	attempts map[string]int
	accepted []string
}

func (p *flakyPublisher) PublishBatch(_ context.Context, records []kafka.Record) (int, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for i, r := range records {
		e := r.Event
		key := fmt.Sprintf("%s:%d:%d", e.Type, e.RoomID, e.UserID)
		p.attempts[key]++
		if p.attempts[key] == 1 {
			return i, errors.New("transient (test)")
		}
		p.accepted = append(p.accepted, key)
	}
	return len(records), nil
}

func TestPublishRetriesTransientFailure(t *testing.T) {
	p := &flakyPublisher{attempts: map[string]int{}}
	e := newAPI(t, envOptions{publisher: p})
	a, b := e.user("abe"), e.user("bea")
	ch := e.room(a, "channel", "retry")
	e.do("POST", "/api/rooms/"+ch.ID+"/join", b.token, nil).expect(t, 200, nil)
	e.do("POST", "/api/rooms/"+ch.ID+"/leave", b.token, nil).expect(t, 204, nil)
	e.drained()
	p.mu.Lock()
	defer p.mu.Unlock()
	want := []string{
		"member_joined:" + ch.ID + ":" + a.sid,
		"member_joined:" + ch.ID + ":" + b.sid,
		"member_left:" + ch.ID + ":" + b.sid,
	}
	if !slices.Equal(p.accepted, want) {
		t.Fatalf("accepted %v, want %v", p.accepted, want)
	}
}
