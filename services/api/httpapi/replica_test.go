package httpapi_test

import (
	"context"
	"database/sql"
	"fmt"
	"strconv"
	"testing"
	"time"

	"relay/pkg/testenv"
)

// With DATABASE_REPLICA_URL the api reads history from the hot standby;
// a page that depends on an event the replica has not replayed is read
// from the primary and has it; with the replica down history still works,
// from the primary.
func TestHistoryReadsFromReplica(t *testing.T) {
	if testenv.Short() {
		t.Skip("integration test")
	}
	pair := testenv.StartPGPair(t)
	e := newAPI(t, envOptions{pair: pair})
	ada := e.user("ada")
	room := e.room(ada, "channel", "replicated")
	rid, _ := strconv.ParseInt(room.ID, 10, 64)
	for seq := int64(1); seq <= 3; seq++ {
		e.message(room.ID, ada, seq, fmt.Sprint("m", seq))
		e.roomEvent(rid, seq)
	}
	pair.WaitReplayed(t)

	reads := func(server string) int {
		n, _ := strconv.ParseFloat(e.metric(`relay_api_db_reads_total{server="`+server+`"}`), 64)
		return int(n)
	}
	history := func(query string) []string {
		var h struct {
			Messages []struct {
				Content string `json:"content"`
			} `json:"messages"`
		}
		e.do("GET", "/api/rooms/"+room.ID+"/messages"+query, ada.token, nil).expect(t, 200, &h)
		var out []string
		for _, m := range h.Messages {
			out = append(out, m.Content)
		}
		return out
	}

	if got := fmt.Sprint(history("")); got != "[m1 m2 m3]" {
		t.Fatalf("newest page %s", got)
	}
	if got := fmt.Sprint(history("?after=1")); got != "[m2 m3]" {
		t.Fatalf("after=1 %s", got)
	}
	if r, p := reads("replica"), reads("primary"); r != 2 || p != 0 {
		t.Fatalf("replica reads %d, primary reads %d; want 2 and 0", r, p)
	}

	// The replica stops replaying; seq 4 is acked and persisted on the
	// primary only. A page that depends on it comes from the primary.
	admin, err := sql.Open("pgx", pair.ReplicaAdminURL)
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close()
	if _, err := admin.Exec(`SELECT pg_wal_replay_pause()`); err != nil {
		t.Fatal(err)
	}
	e.message(room.ID, ada, 4, "m4")
	e.roomEvent(rid, 4)
	if got := fmt.Sprint(history("?before=5")); got != "[m1 m2 m3 m4]" {
		t.Fatalf("before=5 with replay paused: %s", got)
	}
	if got := fmt.Sprint(history("?after=4")); got != "[]" {
		t.Fatalf("after=4 %s", got)
	}
	if p := reads("primary"); p != 2 {
		t.Fatalf("primary reads %d, want 2", p)
	}
	if _, err := admin.Exec(`SELECT pg_wal_replay_resume()`); err != nil {
		t.Fatal(err)
	}

	// Replica down: no errors, the primary answers.
	pair.StopReplica(t)
	for i := 0; i < 3; i++ {
		if got := fmt.Sprint(history("?after=0")); got != "[m1 m2 m3 m4]" {
			t.Fatalf("replica down: %s", got)
		}
	}
	// Search too.
	e.do("GET", "/api/search?q=m4", ada.token, nil).expect(t, 200, nil)
	if p := reads("primary"); p != 6 {
		t.Fatalf("primary reads %d, want 6", p)
	}
}

// roomEvent writes the room_events row the persister writes with a
// message, which tells how far a replica has replayed.
func (e *apiEnv) roomEvent(roomID, seq int64) {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := e.db.WithContext(ctx).Exec(
		`INSERT INTO room_events (room_id, seq, type, event, created_at) VALUES (?, ?, 'message_created', '{}', now())`,
		roomID, seq).Error; err != nil {
		e.t.Fatal(err)
	}
}
