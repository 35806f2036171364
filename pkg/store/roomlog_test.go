package store_test

import (
	"context"
	"testing"

	"relay/pkg/events"
	"relay/pkg/store"
)

func TestRoomLogKeepsEveryEventAndScrubsDeleted(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	ctx := context.Background()
	keep := f.create(10, f.alice, "stays")
	gone := f.create(12, f.bob, "secret words")
	batch := []store.Change{
		keep,
		gone,
		f.edit(15, f.bob, gone.Event.MessageID, "more secret words"),
		f.read(17, f.alice, 12),
	}
	if _, err := store.ApplyBatch(ctx, f.db, batch); err != nil {
		t.Fatalf("apply: %v", err)
	}
	// The delete comes in a later batch, and the whole log is redelivered
	// after it: the scrubbed rows must stay scrubbed.
	del := f.del(20, f.alice, gone.Event.MessageID)
	for i := 0; i < 2; i++ {
		if _, err := store.ApplyBatch(ctx, f.db, append(append([]store.Change{}, batch...), del)); err != nil {
			t.Fatalf("apply %d: %v", i, err)
		}
	}

	got, err := store.RoomEvents(ctx, f.db, f.room, -1, 100)
	if err != nil {
		t.Fatal(err)
	}
	wantSeqs := []int64{10, 12, 15, 17, 20}
	if len(got) != len(wantSeqs) {
		t.Fatalf("got %d events, want %d", len(got), len(wantSeqs))
	}
	for i, e := range got {
		if e.Seq != wantSeqs[i] {
			t.Fatalf("event %d: seq %d, want %d", i, e.Seq, wantSeqs[i])
		}
		if e.Event.MessageID == gone.Event.MessageID && e.Event.Type != events.MessageDeleted && e.Event.Content != "" {
			t.Fatalf("seq %d still carries the deleted message's content %q", e.Seq, e.Event.Content)
		}
	}
	if got[0].Event.Content != "stays" || got[3].Event.Type != events.ReadMarked || got[3].Event.ReadSeq != 12 {
		t.Fatalf("unexpected events: %+v %+v", got[0].Event, got[3].Event)
	}

	page, err := store.RoomEvents(ctx, f.db, f.room, 12, 2)
	if err != nil || len(page) != 2 || page[0].Seq != 15 || page[1].Seq != 17 {
		t.Fatalf("page after 12: %+v, %v", page, err)
	}
	prev, err := store.PrevEventSeq(ctx, f.db, f.room, 15)
	if err != nil || prev == nil || *prev != 12 {
		t.Fatalf("prev of 15: %v, %v", prev, err)
	}
	if prev, err := store.PrevEventSeq(ctx, f.db, f.room, 10); err != nil || prev != nil {
		t.Fatalf("prev of the first event: %v, %v", prev, err)
	}
}

// After edits, the log's earlier events of the message carry the current
// text (a replay from PostgreSQL never shows an old one); an edit by
// someone else, which ApplyBatch does not apply, changes nothing; a
// redelivered older edit does not bring back an older text.
func TestRoomLogShowsCurrentTextAfterEdits(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	ctx := context.Background()
	m := f.create(10, f.bob, "first draft")
	batch := []store.Change{
		m,
		f.edit(11, f.bob, m.Event.MessageID, "second draft"),
		f.edit(12, f.alice, m.Event.MessageID, "not the author"),
	}
	if _, err := store.ApplyBatch(ctx, f.db, batch); err != nil {
		t.Fatal(err)
	}
	final := f.edit(13, f.bob, m.Event.MessageID, "final text")
	for range 2 { // the second round is a redelivery of everything
		if _, err := store.ApplyBatch(ctx, f.db, append(append([]store.Change{}, batch...), final)); err != nil {
			t.Fatal(err)
		}
	}
	got, err := store.RoomEvents(ctx, f.db, f.room, -1, 100)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range got {
		if e.Event.UserID == f.alice {
			continue // the refused edit keeps its own (never shown) text
		}
		if e.Event.Content != "final text" {
			t.Fatalf("seq %d (%s) carries %q, want the current text", e.Seq, e.Event.Type, e.Event.Content)
		}
	}
}
