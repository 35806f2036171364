package store_test

import (
	"context"
	"sync"
	"testing"

	"gorm.io/gorm"

	"relay/pkg/chat"
	"relay/pkg/store"
)

func queriesRoom(t *testing.T, db *gorm.DB, typ chat.RoomType, name string, creator int64, others ...int64) *store.Room {
	t.Helper()
	r, _, created, err := store.CreateRoom(context.Background(), db, store.NewRoom{Name: name, Type: typ, CreatedBy: creator, MemberIDs: others})
	if err != nil || !created {
		t.Fatalf("create room: created=%v err=%v", created, err)
	}
	return r
}

func TestCreateGroupRoom(t *testing.T) {
	db := queriesDB(t)
	ctx := context.Background()
	a, b, c := queriesUser(t, db, "a1"), queriesUser(t, db, "b1"), queriesUser(t, db, "c1")

	r, members, created, err := store.CreateRoom(ctx, db, store.NewRoom{
		Name: "team", Type: chat.RoomGroup, CreatedBy: a.ID, MemberIDs: []int64{b.ID, c.ID, b.ID, a.ID},
	})
	if err != nil || !created {
		t.Fatalf("CreateRoom: %v created=%v", err, created)
	}
	if r.ID == 0 || r.Name != "team" || r.Type != "group" || r.DirectKey != nil {
		t.Fatalf("room %+v", r)
	}
	if v, err := store.RoomFor(ctx, db, r.ID, a.ID); err != nil || !v.CreatedAt.Equal(r.CreatedAt) {
		t.Fatalf("created_at returned %v, stored %v (%v)", r.CreatedAt, v.CreatedAt, err)
	}
	if len(members) != 3 {
		t.Fatalf("members %+v", members)
	}
	roles := map[int64]chat.Role{}
	for _, m := range members {
		roles[m.UserID] = m.Role
		if m.LastReadSeq != -1 || m.JoinedAt.IsZero() || m.Username == "" {
			t.Errorf("member %+v", m)
		}
	}
	if roles[a.ID] != chat.RoleAdmin || roles[b.ID] != chat.RoleMember || roles[c.ID] != chat.RoleMember {
		t.Fatalf("roles %v", roles)
	}

	_, _, _, err = store.CreateRoom(ctx, db, store.NewRoom{Name: "x", Type: chat.RoomGroup, CreatedBy: a.ID, MemberIDs: []int64{b.ID, 99999}})
	wantCode(t, err, chat.CodeNotFound)
	_, _, _, err = store.CreateRoom(ctx, db, store.NewRoom{Name: "x", Type: "bogus", CreatedBy: a.ID})
	wantCode(t, err, chat.CodeBadRequest)
}

func TestDirectRoomUnique(t *testing.T) {
	db := queriesDB(t)
	ctx := context.Background()
	a, b, c := queriesUser(t, db, "a2"), queriesUser(t, db, "b2"), queriesUser(t, db, "c2")

	first, members, created, err := store.CreateRoom(ctx, db, store.NewRoom{Type: chat.RoomDirect, CreatedBy: a.ID, MemberIDs: []int64{b.ID}, Name: "ignored"})
	if err != nil || !created || len(members) != 2 || first.Name != "" {
		t.Fatalf("first: %+v %v %v %v", first, members, created, err)
	}
	if *first.DirectKey != store.DirectKey(b.ID, a.ID) {
		t.Fatalf("direct key %q", *first.DirectKey)
	}
	again, members, created, err := store.CreateRoom(ctx, db, store.NewRoom{Type: chat.RoomDirect, CreatedBy: b.ID, MemberIDs: []int64{a.ID}})
	if err != nil || created || again.ID != first.ID || len(members) != 2 {
		t.Fatalf("again: %+v %v %v %v", again, members, created, err)
	}

	_, _, _, err = store.CreateRoom(ctx, db, store.NewRoom{Type: chat.RoomDirect, CreatedBy: a.ID, MemberIDs: []int64{a.ID}})
	wantCode(t, err, chat.CodeBadRequest)
	_, _, _, err = store.CreateRoom(ctx, db, store.NewRoom{Type: chat.RoomDirect, CreatedBy: a.ID, MemberIDs: []int64{b.ID, c.ID}})
	wantCode(t, err, chat.CodeBadRequest)

	// Concurrent creations of one pair, from both sides, make one room.
	const n = 10
	ids := make([]int64, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			creator, other := b.ID, c.ID
			if i%2 == 1 {
				creator, other = other, creator
			}
			r, _, _, err := store.CreateRoom(ctx, db, store.NewRoom{Type: chat.RoomDirect, CreatedBy: creator, MemberIDs: []int64{other}})
			errs[i] = err
			if err == nil {
				ids[i] = r.ID
			}
		}()
	}
	wg.Wait()
	for i := range n {
		if errs[i] != nil || ids[i] != ids[0] {
			t.Fatalf("creation %d: id %d (first %d), err %v", i, ids[i], ids[0], errs[i])
		}
	}
	var count int64
	db.Model(&store.Room{}).Where("type = 'direct'").Count(&count)
	if count != 2 {
		t.Fatalf("%d direct rooms, want 2", count)
	}
}

func TestMembershipAndRoomFor(t *testing.T) {
	db := queriesDB(t)
	ctx := context.Background()
	a, b := queriesUser(t, db, "a3"), queriesUser(t, db, "b3")
	r := queriesRoom(t, db, chat.RoomGroup, "g", a.ID)

	if role, err := store.Membership(ctx, db, r.ID, a.ID); err != nil || role != chat.RoleAdmin {
		t.Fatalf("Membership(admin) = %q, %v", role, err)
	}
	_, err := store.Membership(ctx, db, r.ID, b.ID)
	wantCode(t, err, chat.CodeForbidden)
	_, err = store.Membership(ctx, db, r.ID+100, a.ID)
	wantCode(t, err, chat.CodeNotFound)

	v, err := store.RoomFor(ctx, db, r.ID, b.ID)
	if err != nil || v.Role != "" || v.MemberCount != 1 || v.Name != "g" {
		t.Fatalf("RoomFor(non-member) = %+v, %v", v, err)
	}
	v, err = store.RoomFor(ctx, db, r.ID, a.ID)
	if err != nil || v.Role != chat.RoleAdmin {
		t.Fatalf("RoomFor(admin) = %+v, %v", v, err)
	}
	_, err = store.RoomFor(ctx, db, r.ID+100, a.ID)
	wantCode(t, err, chat.CodeNotFound)
}

func TestJoinLeave(t *testing.T) {
	db := queriesDB(t)
	ctx := context.Background()
	a, b, c := queriesUser(t, db, "a4"), queriesUser(t, db, "b4"), queriesUser(t, db, "c4")
	ch := queriesRoom(t, db, chat.RoomChannel, "news", a.ID)
	grp := queriesRoom(t, db, chat.RoomGroup, "g", a.ID, c.ID)
	dm := queriesRoom(t, db, chat.RoomDirect, "", a.ID, b.ID)

	queriesMessage(t, db, ch.ID, a.ID, 7, "before b joined", false)
	m, joined, err := store.JoinRoom(ctx, db, ch.ID, b.ID, nil)
	if err != nil || !joined || m.Role != chat.RoleMember || m.UserID != b.ID || m.LastReadSeq != 7 {
		t.Fatalf("join: %+v %v %v", m, joined, err)
	}
	if _, joined, err = store.JoinRoom(ctx, db, ch.ID, b.ID, nil); err != nil || joined {
		t.Fatalf("join again: joined=%v err=%v", joined, err)
	}
	_, _, err = store.JoinRoom(ctx, db, grp.ID, b.ID, nil)
	wantCode(t, err, chat.CodeForbidden)
	if _, joined, err = store.JoinRoom(ctx, db, grp.ID, c.ID, nil); err != nil || joined {
		t.Fatalf("member joining own group: joined=%v err=%v", joined, err)
	}
	_, _, err = store.JoinRoom(ctx, db, ch.ID+1000, b.ID, nil)
	wantCode(t, err, chat.CodeNotFound)

	_, err = store.LeaveRoom(ctx, db, dm.ID, a.ID, nil)
	wantCode(t, err, chat.CodeForbidden)
	_, err = store.LeaveRoom(ctx, db, ch.ID+1000, a.ID, nil)
	wantCode(t, err, chat.CodeNotFound)
	if left, err := store.LeaveRoom(ctx, db, grp.ID, b.ID, nil); err != nil || left {
		t.Fatalf("non-member leave: left=%v err=%v", left, err)
	}

	// The last admin leaving promotes the longest standing member.
	if left, err := store.LeaveRoom(ctx, db, ch.ID, a.ID, nil); err != nil || !left {
		t.Fatalf("admin leave: left=%v err=%v", left, err)
	}
	if role, err := store.Membership(ctx, db, ch.ID, b.ID); err != nil || role != chat.RoleAdmin {
		t.Fatalf("b after admin left: %q %v", role, err)
	}
	if left, err := store.LeaveRoom(ctx, db, ch.ID, b.ID, nil); err != nil || !left {
		t.Fatalf("last leave: left=%v err=%v", left, err)
	}
	members, err := store.ListMembers(ctx, db, ch.ID)
	if err != nil || len(members) != 0 {
		t.Fatalf("members of emptied channel: %v %v", members, err)
	}
}

func TestAddMember(t *testing.T) {
	db := queriesDB(t)
	ctx := context.Background()
	a, b, c, d := queriesUser(t, db, "a5"), queriesUser(t, db, "b5"), queriesUser(t, db, "c5"), queriesUser(t, db, "d5")
	grp := queriesRoom(t, db, chat.RoomGroup, "g", a.ID, b.ID)
	dm := queriesRoom(t, db, chat.RoomDirect, "", a.ID, b.ID)

	m, added, err := store.AddMember(ctx, db, grp.ID, a.ID, c.ID, nil)
	if err != nil || !added || m.UserID != c.ID || m.Role != chat.RoleMember || m.LastReadSeq != -1 {
		t.Fatalf("admin adds: %+v %v %v", m, added, err)
	}
	if _, added, err = store.AddMember(ctx, db, grp.ID, a.ID, c.ID, nil); err != nil || added {
		t.Fatalf("add again: added=%v err=%v", added, err)
	}
	_, _, err = store.AddMember(ctx, db, grp.ID, b.ID, d.ID, nil)
	wantCode(t, err, chat.CodeForbidden)
	_, _, err = store.AddMember(ctx, db, grp.ID, d.ID, d.ID, nil)
	wantCode(t, err, chat.CodeForbidden)
	_, _, err = store.AddMember(ctx, db, dm.ID, a.ID, d.ID, nil)
	wantCode(t, err, chat.CodeForbidden)
	_, _, err = store.AddMember(ctx, db, grp.ID, a.ID, 987654, nil)
	wantCode(t, err, chat.CodeNotFound)
	_, _, err = store.AddMember(ctx, db, grp.ID+1000, a.ID, d.ID, nil)
	wantCode(t, err, chat.CodeNotFound)
}

func TestListRoomsUnreadAndLastMessage(t *testing.T) {
	db := queriesDB(t)
	ctx := context.Background()
	a, b := queriesUser(t, db, "a6"), queriesUser(t, db, "b6")
	grp := queriesRoom(t, db, chat.RoomGroup, "g", a.ID, b.ID)
	dm := queriesRoom(t, db, chat.RoomDirect, "", a.ID, b.ID)
	empty := queriesRoom(t, db, chat.RoomChannel, "quiet", a.ID)

	queriesMessage(t, db, grp.ID, b.ID, 10, "one", false)
	queriesMessage(t, db, grp.ID, a.ID, 11, "mine", false)
	queriesMessage(t, db, grp.ID, b.ID, 12, "two", false)
	queriesMessage(t, db, grp.ID, b.ID, 13, "gone", true)
	queriesMessage(t, db, dm.ID, b.ID, 5, "hi", false)
	// a has read the group up to seq 10.
	db.Exec("UPDATE room_members SET last_read_seq = 10 WHERE room_id = ? AND user_id = ?", grp.ID, a.ID)

	rooms, err := store.ListRooms(ctx, db, a.ID)
	if err != nil || len(rooms) != 3 {
		t.Fatalf("ListRooms = %+v, %v", rooms, err)
	}
	by := map[int64]store.RoomSummary{}
	for _, r := range rooms {
		by[r.ID] = r
	}
	g := by[grp.ID]
	if g.UnreadCount != 1 || g.LastReadSeq != 10 || g.Role != chat.RoleAdmin || g.MemberCount != 2 {
		t.Errorf("group summary %+v", g)
	}
	if g.LastMessage == nil || g.LastMessage.Content != "two" || g.LastMessage.Seq != 12 || g.LastMessage.Username != "b6" {
		t.Errorf("group last message %+v", g.LastMessage)
	}
	if g.Peer != nil {
		t.Errorf("group has a peer: %+v", g.Peer)
	}
	d := by[dm.ID]
	if d.UnreadCount != 1 || d.LastMessage == nil || d.LastMessage.Content != "hi" {
		t.Errorf("direct summary %+v", d)
	}
	if d.Peer == nil || d.Peer.UserID != b.ID || d.Peer.Username != "b6" {
		t.Errorf("direct peer %+v", d.Peer)
	}
	e := by[empty.ID]
	if e.LastMessage != nil || e.UnreadCount != 0 || e.LastReadSeq != -1 {
		t.Errorf("empty summary %+v", e)
	}
	if rooms[2].ID != empty.ID {
		t.Errorf("room without messages should sort last: %v", []int64{rooms[0].ID, rooms[1].ID, rooms[2].ID})
	}

	bRooms, err := store.ListRooms(ctx, db, b.ID)
	if err != nil || len(bRooms) != 2 {
		t.Fatalf("b's rooms %+v %v", bRooms, err)
	}
	for _, r := range bRooms {
		if r.ID == grp.ID && r.UnreadCount != 1 { // only a's "mine"
			t.Errorf("b's unread in group = %d, want 1", r.UnreadCount)
		}
	}
}
