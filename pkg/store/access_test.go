package store_test

import (
	"context"
	"slices"
	"testing"

	"github.com/google/uuid"

	"relay/pkg/chat"
	"relay/pkg/store"
)

func TestAccessReads(t *testing.T) {
	db := queriesDB(t)
	ctx := context.Background()
	a, b, c := queriesUser(t, db, "acc-a"), queriesUser(t, db, "acc-b"), queriesUser(t, db, "acc-c")
	group := queriesRoom(t, db, chat.RoomGroup, "acc-group", a.ID, b.ID)
	channel := queriesRoom(t, db, chat.RoomChannel, "acc-channel", a.ID)

	if got, found, err := store.RoomAccess(ctx, db, group.ID, a.ID); err != nil || !found || got.Role != chat.RoleAdmin || got.RoomType != chat.RoomGroup {
		t.Fatalf("creator: %+v %v %v", got, found, err)
	}
	if got, found, err := store.RoomAccess(ctx, db, channel.ID, c.ID); err != nil || !found || got.Role != "" || got.RoomType != chat.RoomChannel {
		t.Fatalf("non-member of a channel: %+v %v %v", got, found, err)
	}
	if _, found, err := store.RoomAccess(ctx, db, 1<<40, a.ID); err != nil || found {
		t.Fatalf("unknown room: found %v, %v", found, err)
	}

	m := queriesMessage(t, db, group.ID, b.ID, 1, "hi", true)
	if got, found, err := store.MessageAuthorship(ctx, db, m.ID); err != nil || !found || got != (store.Authorship{RoomID: group.ID, UserID: b.ID, Deleted: true}) {
		t.Fatalf("authorship %+v %v %v", got, found, err)
	}
	if _, found, err := store.MessageAuthorship(ctx, db, uuid.Must(uuid.NewV7()).String()); err != nil || found {
		t.Fatalf("unknown message: found %v, %v", found, err)
	}

	rooms, err := store.RoomsOf(ctx, db, a.ID)
	slices.Sort(rooms)
	if err != nil || !slices.Equal(rooms, []int64{group.ID, channel.ID}) {
		t.Fatalf("rooms of a: %v %v", rooms, err)
	}
	members, err := store.MembersOf(ctx, db, []int64{group.ID, channel.ID}, 1)
	if err != nil || len(members) != 1 || !slices.Equal(members[channel.ID], []int64{a.ID}) {
		t.Fatalf("members (rooms of at most 1): %v %v", members, err)
	}
	members, err = store.MembersOf(ctx, db, []int64{group.ID}, 10)
	got := members[group.ID]
	slices.Sort(got)
	if err != nil || !slices.Equal(got, []int64{a.ID, b.ID}) {
		t.Fatalf("members of the group: %v %v", got, err)
	}
}
