package store_test

import (
	"context"
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"github.com/google/uuid"
	"gorm.io/gorm"

	"relay/pkg/chat"
	"relay/pkg/store"
)

// queriesMessage inserts a message row directly, as the persister would.
func queriesMessage(t *testing.T, db *gorm.DB, roomID, userID, seq int64, content string, deleted bool) *store.Message {
	t.Helper()
	m := &store.Message{
		ID: uuid.Must(uuid.NewV7()).String(), RoomID: roomID, UserID: userID, Content: content, Type: "text",
		Seq: seq, UpdatedSeq: seq, CreatedAt: time.Now().UTC(),
	}
	if deleted {
		now := time.Now().UTC()
		m.IsDeleted, m.DeletedAt = true, &now
	}
	if err := db.Create(m).Error; err != nil {
		t.Fatalf("insert message: %v", err)
	}
	return m
}

func seqs(ms []store.MessageView) string {
	out := make([]int64, len(ms))
	for i, m := range ms {
		out[i] = m.Seq
	}
	return fmt.Sprint(out)
}

func ptr[T any](v T) *T { return &v }

func TestHistory(t *testing.T) {
	db := queriesDB(t)
	ctx := context.Background()
	a := queriesUser(t, db, "h1")
	r := queriesRoom(t, db, chat.RoomGroup, "g", a.ID)
	other := queriesRoom(t, db, chat.RoomGroup, "o", a.ID)
	for seq := int64(1); seq <= 9; seq += 2 { // 1 3 5 7 9: seqs are not contiguous
		queriesMessage(t, db, r.ID, a.ID, seq, fmt.Sprint("m", seq), seq == 5)
	}
	queriesMessage(t, db, other.ID, a.ID, 4, "elsewhere", false)
	meta := json.RawMessage(`{"w": 3}`)
	db.Model(&store.Message{}).Where("room_id = ? AND seq = 9", r.ID).Update("metadata", meta)

	cases := []struct {
		name    string
		q       store.HistoryQuery
		want    string
		hasMore bool
	}{
		{"newest", store.HistoryQuery{Limit: 2}, "[7 9]", true},
		{"newest all", store.HistoryQuery{Limit: 10}, "[1 3 5 7 9]", false},
		{"before", store.HistoryQuery{Before: ptr[int64](7), Limit: 2}, "[3 5]", true},
		{"before last page", store.HistoryQuery{Before: ptr[int64](3), Limit: 2}, "[1]", false},
		{"before zero", store.HistoryQuery{Before: ptr[int64](0), Limit: 2}, "[]", false},
		{"after", store.HistoryQuery{After: ptr[int64](1), Limit: 2}, "[3 5]", true},
		{"after exact end", store.HistoryQuery{After: ptr[int64](5), Limit: 2}, "[7 9]", false},
		{"after end", store.HistoryQuery{After: ptr[int64](9), Limit: 2}, "[]", false},
	}
	for _, c := range cases {
		page, err := store.History(ctx, db, r.ID, c.q)
		if err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		if got := seqs(page.Messages); got != c.want || page.HasMore != c.hasMore {
			t.Errorf("%s: got %s hasMore=%v, want %s hasMore=%v", c.name, got, page.HasMore, c.want, c.hasMore)
		}
	}

	page, _ := store.History(ctx, db, r.ID, store.HistoryQuery{Limit: 10})
	for _, m := range page.Messages {
		if m.Username != "h1" || m.RoomID != r.ID || m.Type != "text" {
			t.Errorf("message %+v", m)
		}
		if (m.Seq == 5) != m.IsDeleted || (m.Seq == 5) != (m.DeletedAt != nil) {
			t.Errorf("deleted flags of %d: %v %v", m.Seq, m.IsDeleted, m.DeletedAt)
		}
		if m.Seq == 9 && string(m.Metadata) != `{"w": 3}` {
			t.Errorf("metadata %q", m.Metadata)
		}
		if m.Seq != 9 && m.Metadata != nil {
			t.Errorf("metadata of %d should be nil: %q", m.Seq, m.Metadata)
		}
	}

	_, err := store.History(ctx, db, r.ID, store.HistoryQuery{Before: ptr[int64](1), After: ptr[int64](2), Limit: 1})
	wantCode(t, err, chat.CodeBadRequest)
}

func TestSearch(t *testing.T) {
	db := queriesDB(t)
	ctx := context.Background()
	a, b := queriesUser(t, db, "s1"), queriesUser(t, db, "s2")
	mine := queriesRoom(t, db, chat.RoomGroup, "mine", a.ID)
	theirs := queriesRoom(t, db, chat.RoomGroup, "theirs", b.ID)

	best := queriesMessage(t, db, mine.ID, a.ID, 1, "deploy deploy deploy today", false)
	older := queriesMessage(t, db, mine.ID, a.ID, 2, "the deploy went fine", false)
	newer := queriesMessage(t, db, mine.ID, a.ID, 3, "another deploy was fine", false)
	queriesMessage(t, db, mine.ID, a.ID, 4, "deleted deploy note", true)
	queriesMessage(t, db, mine.ID, a.ID, 5, "nothing relevant", false)
	queriesMessage(t, db, theirs.ID, b.ID, 1, "secret deploy plan", false)

	hits, next, err := store.Search(ctx, db, store.SearchQuery{UserID: a.ID, Text: "deploy", Limit: 10})
	if err != nil || next != nil {
		t.Fatalf("Search: %v next=%v", err, next)
	}
	var got []string
	for _, h := range hits {
		got = append(got, h.ID)
		if h.Rank <= 0 || h.Username != "s1" {
			t.Errorf("hit %+v", h)
		}
	}
	// The repeated term ranks first; equal ranks come newest first.
	if fmt.Sprint(got) != fmt.Sprint([]string{best.ID, newer.ID, older.ID}) {
		t.Fatalf("order %v, want best, newer, older", got)
	}
	if hits[0].Rank <= hits[1].Rank || hits[1].Rank != hits[2].Rank {
		t.Fatalf("ranks %v %v %v", hits[0].Rank, hits[1].Rank, hits[2].Rank)
	}

	// Paging one at a time visits the same hits in the same order.
	var paged []string
	var cur *store.SearchCursor
	for range 5 {
		hits, next, err := store.Search(ctx, db, store.SearchQuery{UserID: a.ID, Text: "deploy", Limit: 1, After: cur})
		if err != nil {
			t.Fatal(err)
		}
		for _, h := range hits {
			paged = append(paged, h.ID)
		}
		if next == nil {
			break
		}
		cur = next
	}
	if fmt.Sprint(paged) != fmt.Sprint(got) {
		t.Fatalf("paged %v, want %v", paged, got)
	}

	// b only sees their own room; a room filter narrows.
	hits, _, _ = store.Search(ctx, db, store.SearchQuery{UserID: b.ID, Text: "deploy", Limit: 10})
	if len(hits) != 1 || hits[0].Content != "secret deploy plan" {
		t.Fatalf("b's hits %+v", hits)
	}
	hits, _, _ = store.Search(ctx, db, store.SearchQuery{UserID: a.ID, Text: "deploy", RoomID: theirs.ID, Limit: 10})
	if len(hits) != 0 {
		t.Fatalf("a found %d hits in a room they are not in", len(hits))
	}
	// websearch syntax: phrases and exclusions.
	hits, _, _ = store.Search(ctx, db, store.SearchQuery{UserID: a.ID, Text: `deploy -fine`, Limit: 10})
	if len(hits) != 1 || hits[0].ID != best.ID {
		t.Fatalf("exclusion hits %+v", hits)
	}
	hits, _, err = store.Search(ctx, db, store.SearchQuery{UserID: a.ID, Text: `"!!!" OR`, Limit: 10})
	if err != nil || len(hits) != 0 {
		t.Fatalf("odd query: %v %v", hits, err)
	}
}
