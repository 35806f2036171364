package httpapi_test

import (
	"context"
	"fmt"
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

// BenchmarkRoomPresence reads the presence of a room of 1000 members, 500
// of them online (connected through the real presence service) and 5
// typing.
func BenchmarkRoomPresence(b *testing.B) {
	e := newAPI(b, envOptions{})
	pub := e.startPresence(b)
	me := e.user("reader")
	err := e.db.Exec(`INSERT INTO users (username, email, password_hash, display_name)
		SELECT 'member' || s, 'member' || s || '@example.com', 'x', 'Member ' || s FROM generate_series(1, 999) s`).Error
	if err != nil {
		b.Fatal(err)
	}
	var ids []int64
	if err := e.db.Raw(`SELECT id FROM users WHERE id <> ? ORDER BY id`, me.id).Scan(&ids).Error; err != nil {
		b.Fatal(err)
	}
	members := make([]string, len(ids))
	for i, id := range ids {
		members[i] = fmt.Sprint(id)
	}
	var room roomResp
	e.do("POST", "/api/rooms", me.token, map[string]any{"name": "big", "type": "group", "memberIds": members}).expect(b, 201, &room)
	var rid int64
	fmt.Sscan(room.ID, &rid)
	ctx := context.Background()
	for i, id := range ids[:500] {
		must(b, pub.Connect(ctx, id, fmt.Sprint("member", i+1), "c"))
	}
	for i, id := range ids[:5] {
		must(b, pub.TypingStart(ctx, rid, id, fmt.Sprint("member", i+1)))
	}
	eventually(b, "500 online, 5 typing", func() (bool, string) {
		var p roomPresenceResp
		e.do("GET", "/api/rooms/"+room.ID+"/presence", me.token, nil).expect(b, 200, &p)
		online := 0
		for _, m := range p.Online {
			if m.Status == "online" {
				online++
			}
		}
		return len(p.Online) == 1000 && online == 500 && len(p.Typing) == 5, fmt.Sprintf("%d members, %d online, %d typing", len(p.Online), online, len(p.Typing))
	})
	b.Run("room_presence_1000_members", func(b *testing.B) { benchGet(b, e, me.token, "/api/rooms/"+room.ID+"/presence") })
	// The member list alone, for comparison: it is most of the cost above.
	b.Run("members_1000", func(b *testing.B) { benchGet(b, e, me.token, "/api/rooms/"+room.ID+"/members") })
	b.Run("user_presence", func(b *testing.B) { benchGet(b, e, me.token, "/api/users/"+members[0]+"/presence") })
}
