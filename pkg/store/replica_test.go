package store_test

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"testing"
	"time"

	"gorm.io/gorm"

	"relay/pkg/chat"
	"relay/pkg/store"
	"relay/pkg/testenv"
)

// Reads against a real primary and hot standby: plain reads go to the
// replica; a read that must see a room event the replica has not replayed
// goes to the primary and sees it; a replica that is down costs no error,
// and reads return to it once it is back.
func TestReadsRouteToReplicaAndFallBack(t *testing.T) {
	pair := testenv.StartPGPair(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	primary := open(t, pair.PrimaryURL)
	sqlDB, err := primary.DB()
	if err != nil {
		t.Fatal(err)
	}
	if err := store.Migrate(ctx, sqlDB); err != nil {
		t.Fatal(err)
	}
	insertEvent(t, primary, 7, 1)
	pair.WaitReplayed(t)
	replica := open(t, pair.ReplicaURL)

	var ran []store.Server
	reads := store.NewReads(primary, replica, nil)
	reads.Observe = func(s store.Server) { ran = append(ran, s) }

	maxSeq := func(db *gorm.DB, out *int64) error {
		return db.WithContext(ctx).Raw(`SELECT COALESCE(MAX(seq), 0) FROM room_events WHERE room_id = 7`).Scan(out).Error
	}
	var seq int64
	if on, err := reads.Do(ctx, func(db *gorm.DB) error { return maxSeq(db, &seq) }); err != nil || on != store.OnReplica || seq != 1 {
		t.Fatalf("plain read: on %s, seq %d, err %v; want the replica's 1", on, seq, err)
	}

	// The replica stops replaying: an event written now is only on the
	// primary, and a read that must see it goes there.
	admin, err := sql.Open("pgx", pair.ReplicaAdminURL)
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close()
	if _, err := admin.ExecContext(ctx, `SELECT pg_wal_replay_pause()`); err != nil {
		t.Fatal(err)
	}
	insertEvent(t, primary, 7, 2)
	if on, err := reads.DoAt(ctx, 7, 2, func(db *gorm.DB) error { return maxSeq(db, &seq) }); err != nil || on != store.OnPrimary || seq != 2 {
		t.Fatalf("read after seq 2 with replay paused: on %s, seq %d, err %v; want the primary's 2", on, seq, err)
	}
	// What the replica has already replayed is still read there.
	if on, err := reads.DoAt(ctx, 7, 1, func(db *gorm.DB) error { return maxSeq(db, &seq) }); err != nil || on != store.OnReplica {
		t.Fatalf("read after seq 1: on %s, err %v; want the replica", on, err)
	}
	if _, err := admin.ExecContext(ctx, `SELECT pg_wal_replay_resume()`); err != nil {
		t.Fatal(err)
	}
	pair.WaitReplayed(t)
	if on, err := reads.DoAt(ctx, 7, 2, func(db *gorm.DB) error { return maxSeq(db, &seq) }); err != nil || on != store.OnReplica || seq != 2 {
		t.Fatalf("read after seq 2, replayed: on %s, seq %d, err %v; want the replica's 2", on, seq, err)
	}

	// The read's own verdict comes back as it is, from the replica.
	notFound := chat.Errorf(chat.CodeNotFound, "no such room")
	if on, err := reads.Do(ctx, func(*gorm.DB) error { return notFound }); !errors.Is(err, notFound) || on != store.OnReplica {
		t.Fatalf("domain error: on %s, err %v", on, err)
	}

	// Replica down: reads go to the primary, without errors.
	pair.StopReplica(t)
	for i := 0; i < 3; i++ {
		if on, err := reads.Do(ctx, func(db *gorm.DB) error { return maxSeq(db, &seq) }); err != nil || on != store.OnPrimary || seq != 2 {
			t.Fatalf("replica down, read %d: on %s, seq %d, err %v; want the primary", i, on, seq, err)
		}
	}
	// Back up: reads return to it once it answers again.
	pair.StartReplica(t)
	deadline := time.Now().Add(30 * time.Second)
	for {
		on, err := reads.Do(ctx, func(db *gorm.DB) error { return maxSeq(db, &seq) })
		if err != nil {
			t.Fatal(err)
		}
		if on == store.OnReplica {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("reads never returned to the restarted replica")
		}
		time.Sleep(200 * time.Millisecond)
	}
	if len(ran) == 0 {
		t.Fatal("Observe never called")
	}
}

// Without a replica every read is the primary's.
func TestReadsWithoutReplica(t *testing.T) {
	db := testenv.DB(t)
	reads := store.NewReads(db, nil, nil)
	on, err := reads.DoAt(context.Background(), 1, 1, func(db *gorm.DB) error { return db.Exec(`SELECT 1`).Error })
	if err != nil || on != store.OnPrimary {
		t.Fatalf("on %s, err %v", on, err)
	}
}

func open(t *testing.T, url string) *gorm.DB {
	t.Helper()
	db, err := store.Open(context.Background(), url, store.Options{MaxConns: 4})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = store.Close(db) })
	return db
}

func insertEvent(t *testing.T, db *gorm.DB, room, seq int64) {
	t.Helper()
	ev, _ := json.Marshal(map[string]any{"type": "member_joined", "roomId": room})
	if err := db.Exec(`INSERT INTO room_events (room_id, seq, type, event, created_at) VALUES (?, ?, 'member_joined', ?, now())`,
		room, seq, ev).Error; err != nil {
		t.Fatal(err)
	}
}
