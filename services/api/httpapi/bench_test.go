package httpapi_test

import (
	"io"
	"net/http"
	"testing"
)

// Benchmarks of the read paths over HTTP on a seeded database: one user in
// benchRooms groups of benchPerRoom messages each, all unread. Run with
//
//	go test ./httpapi -run '^$' -bench . -benchtime 3s
const (
	benchRooms   = 50
	benchPerRoom = 2000
)

func seedBench(b *testing.B) (*apiEnv, testUser, string) {
	e := newAPI(b, envOptions{})
	me, other := e.user("reader"), e.user("writer")
	var firstRoom string
	for i := range benchRooms {
		r := e.room(me, "group", "room", other)
		if i == 0 {
			firstRoom = r.ID
		}
	}
	// Messages by the other user, seqs 0..n-1 per room, spread over the last
	// hour, a fifth of them about each topic.
	err := e.db.Exec(`INSERT INTO messages (id, room_id, user_id, content, message_type, seq, updated_seq, created_at)
		SELECT gen_random_uuid(), r.id, ?, 'message ' || s || ' about the ' ||
			(ARRAY['deploy', 'lunch', 'release', 'bug', 'review'])[1 + s % 5] || ' of team ' || (s % 17),
			'text', s, s, now() - interval '1 second' * (? - s)
		FROM rooms r, generate_series(0, ? - 1) s`, other.id, benchPerRoom, benchPerRoom).Error
	if err != nil {
		b.Fatal(err)
	}
	if err := e.db.Exec(`ANALYZE`).Error; err != nil {
		b.Fatal(err)
	}
	return e, me, firstRoom
}

func benchGet(b *testing.B, e *apiEnv, token, path string) {
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 64}}
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			req, _ := http.NewRequest("GET", e.url+path, nil)
			req.Header.Set("Authorization", "Bearer "+token)
			res, err := client.Do(req)
			if err != nil {
				b.Error(err)
				return
			}
			_, _ = io.Copy(io.Discard, res.Body)
			res.Body.Close()
			if res.StatusCode != 200 {
				b.Errorf("%s: status %d", path, res.StatusCode)
				return
			}
		}
	})
}

func BenchmarkReads(b *testing.B) {
	e, me, room := seedBench(b)
	b.Run("me", func(b *testing.B) { benchGet(b, e, me.token, "/api/me") })
	b.Run("rooms_list_50_rooms_100k_unread", func(b *testing.B) { benchGet(b, e, me.token, "/api/rooms") })
	b.Run("history_newest_50", func(b *testing.B) { benchGet(b, e, me.token, "/api/rooms/"+room+"/messages") })
	b.Run("history_before_mid_200", func(b *testing.B) {
		benchGet(b, e, me.token, "/api/rooms/"+room+"/messages?before=1000&limit=200")
	})
	b.Run("search_rare_term", func(b *testing.B) { benchGet(b, e, me.token, "/api/search?q=1999") })
	b.Run("search_common_term_20k_hits", func(b *testing.B) { benchGet(b, e, me.token, "/api/search?q=deploy") })
	b.Run("search_common_term_one_room", func(b *testing.B) {
		benchGet(b, e, me.token, "/api/search?q=deploy&roomId="+room)
	})
}
