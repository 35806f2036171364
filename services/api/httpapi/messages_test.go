package httpapi_test

import (
	"encoding/json"
	"fmt"
	"net/url"
	"slices"
	"testing"

	"relay/pkg/chat"
)

type historyResp struct {
	Messages []struct {
		ID          string          `json:"id"`
		RoomID      string          `json:"roomId"`
		UserID      string          `json:"userId"`
		Username    string          `json:"username"`
		Content     *string         `json:"content"`
		Type        string          `json:"type"`
		Metadata    json.RawMessage `json:"metadata"`
		ClientMsgID string          `json:"clientMsgId"`
		Seq         int64           `json:"seq"`
		IsEdited    bool            `json:"isEdited"`
		IsDeleted   bool            `json:"isDeleted"`
		DeletedAt   *string         `json:"deletedAt"`
	} `json:"messages"`
	HasMore    bool   `json:"hasMore"`
	NextBefore *int64 `json:"nextBefore"`
	NextAfter  *int64 `json:"nextAfter"`
}

func (h historyResp) seqs() []int64 {
	out := []int64{}
	for _, m := range h.Messages {
		out = append(out, m.Seq)
	}
	return out
}

func TestHistory(t *testing.T) {
	e := newAPI(t, envOptions{})
	a, b, outsider := e.user("wes"), e.user("xena"), e.user("yuri")
	g := e.room(a, "group", "log", b)
	for seq := int64(10); seq <= 100; seq += 10 { // 10..100, not contiguous
		e.message(g.ID, b, seq, fmt.Sprint("message ", seq))
	}
	gone := e.message(g.ID, a, 105, "oops")
	e.db.Exec(`UPDATE messages SET is_deleted = true, deleted_at = now(), metadata = '{"k": 1}' WHERE id = ?`, gone.ID)
	e.db.Exec(`UPDATE messages SET metadata = '{"w": 640}', client_msg_id = 'c-7', is_edited = true, edited_at = now() WHERE room_id = ? AND seq = 100`, g.ID)

	get := func(query string) historyResp {
		t.Helper()
		var h historyResp
		e.do("GET", "/api/rooms/"+g.ID+"/messages"+query, b.token, nil).expect(t, 200, &h)
		return h
	}
	// Newest page, then walk back with nextBefore until the start.
	h := get("?limit=4")
	if !slices.Equal(h.seqs(), []int64{80, 90, 100, 105}) || !h.HasMore || *h.NextBefore != 80 || *h.NextAfter != 105 {
		t.Fatalf("newest page %v hasMore=%v before=%v after=%v", h.seqs(), h.HasMore, h.NextBefore, h.NextAfter)
	}
	var all []int64
	all = append(h.seqs(), all...)
	for h.NextBefore != nil {
		h = get(fmt.Sprintf("?limit=4&before=%d", *h.NextBefore))
		all = append(h.seqs(), all...)
	}
	if !slices.Equal(all, []int64{10, 20, 30, 40, 50, 60, 70, 80, 90, 100, 105}) || h.HasMore {
		t.Fatalf("walking back gave %v", all)
	}
	// Forward from a seq with after.
	h = get("?after=50&limit=3")
	if !slices.Equal(h.seqs(), []int64{60, 70, 80}) || !h.HasMore || *h.NextAfter != 80 || *h.NextBefore != 60 {
		t.Fatalf("after page %v hasMore=%v", h.seqs(), h.HasMore)
	}
	h = get("?after=80")
	if !slices.Equal(h.seqs(), []int64{90, 100, 105}) || h.HasMore {
		t.Fatalf("after tail %v hasMore=%v", h.seqs(), h.HasMore)
	}
	h = get("?after=105")
	if len(h.Messages) != 0 || h.HasMore || h.NextAfter != nil || h.NextBefore != nil {
		t.Fatalf("after the end: %+v", h)
	}
	if h := get("?before=0"); len(h.Messages) != 0 {
		t.Fatalf("before 0: %v", h.seqs())
	}
	// Default page size is 50: everything fits.
	h = get("")
	if len(h.Messages) != 11 || h.HasMore || h.NextBefore != nil {
		t.Fatalf("default page %v hasMore=%v before=%v", h.seqs(), h.HasMore, h.NextBefore)
	}

	// Item shape; the deleted message is a tombstone.
	for _, m := range h.Messages {
		if m.RoomID != g.ID || m.ID == "" || m.Type != "text" {
			t.Errorf("message %+v", m)
		}
		switch m.Seq {
		case 105:
			if !m.IsDeleted || m.Content != nil || m.Metadata != nil || m.DeletedAt == nil || m.UserID != a.sid || m.Username != "wes" {
				t.Errorf("tombstone %+v", m)
			}
		case 100:
			if m.Content == nil || *m.Content != "message 100" || string(m.Metadata) != `{"w":640}` || m.ClientMsgID != "c-7" || !m.IsEdited {
				t.Errorf("edited message %+v (metadata %s)", m, m.Metadata)
			}
		default:
			if m.IsDeleted || m.Content == nil || m.Username != "xena" || m.UserID != b.sid {
				t.Errorf("message %+v", m)
			}
		}
	}
	// Wire shape: ids are strings, seq a number, tombstone has no content key.
	var rawPage struct {
		Messages []map[string]any `json:"messages"`
	}
	e.do("GET", "/api/rooms/"+g.ID+"/messages?after=100", a.token, nil).expect(t, 200, &rawPage)
	tomb := rawPage.Messages[0]
	if _, has := tomb["content"]; has {
		t.Errorf("tombstone has content: %v", tomb)
	}
	if _, ok := tomb["seq"].(float64); !ok {
		t.Errorf("seq is not a number: %v", tomb)
	}
	if _, ok := tomb["roomId"].(string); !ok {
		t.Errorf("roomId is not a string: %v", tomb)
	}

	// Authorization and bad input.
	path := "/api/rooms/" + g.ID + "/messages"
	e.do("GET", path, outsider.token, nil).expectError(t, 403, chat.CodeForbidden)
	e.do("GET", "/api/rooms/31337/messages", a.token, nil).expectError(t, 404, chat.CodeNotFound)
	e.do("GET", path, "", nil).expectError(t, 401, chat.CodeUnauthorized)
	for _, q := range []string{
		"?limit=0", "?limit=201", "?limit=-1", "?limit=abc", "?limit=", "?limit=1e3",
		"?before=-1", "?before=x", "?before=", "?before=99999999999999999999",
		"?after=1.5", "?after=%2B3", "?after=-2", "?before=10&after=5",
	} {
		e.do("GET", path+q, a.token, nil).expectError(t, 400, chat.CodeBadRequest)
	}
	e.do("GET", "/api/rooms/abc/messages", a.token, nil).expectError(t, 400, chat.CodeBadRequest)
	h = get("?limit=200")
	if len(h.Messages) != 11 {
		t.Fatalf("limit 200: %d messages", len(h.Messages))
	}
	// after=-1 is "from the very first" (seq 0 is a valid offset).
	if from := get("?after=-1&limit=3"); len(from.Messages) != 3 || from.Messages[0].Seq != h.Messages[0].Seq {
		t.Fatalf("after=-1: %+v", from.Messages)
	}
}

type searchResp struct {
	Results []struct {
		ID       string  `json:"id"`
		RoomID   string  `json:"roomId"`
		Content  *string `json:"content"`
		Rank     float64 `json:"rank"`
		Seq      int64   `json:"seq"`
		Username string  `json:"username"`
	} `json:"results"`
	NextCursor *string `json:"nextCursor"`
}

func (s searchResp) ids() []string {
	out := []string{}
	for _, r := range s.Results {
		out = append(out, r.ID)
	}
	return out
}

func TestSearch(t *testing.T) {
	e := newAPI(t, envOptions{})
	a, b, c := e.user("zack"), e.user("amy"), e.user("ben")
	ab := e.room(a, "group", "ab", b)
	bc := e.room(b, "group", "bc", c)
	ch := e.room(c, "channel", "open")

	best := e.message(ab.ID, b, 1, "release release release tonight")
	older := e.message(ab.ID, a, 2, "the release is ready")
	newer := e.message(ab.ID, b, 3, "one more release note")
	gone := e.message(ab.ID, b, 4, "release secret deleted")
	e.db.Exec("UPDATE messages SET is_deleted = true, deleted_at = now() WHERE id = ?", gone.ID)
	e.message(ab.ID, b, 5, "unrelated words")
	hidden := e.message(bc.ID, c, 1, "release plans a must not see")
	e.message(ch.ID, c, 1, "release in a channel a has not joined")

	search := func(token, query string) searchResp {
		t.Helper()
		var s searchResp
		e.do("GET", "/api/search?"+query, token, nil).expect(t, 200, &s)
		return s
	}
	s := search(a.token, "q=release")
	if want := []string{best.ID, newer.ID, older.ID}; !slices.Equal(s.ids(), want) || s.NextCursor != nil {
		t.Fatalf("ranking %v, want %v (cursor %v)", s.ids(), want, s.NextCursor)
	}
	if s.Results[0].Rank <= s.Results[1].Rank || s.Results[0].Content == nil || s.Results[0].Username != "amy" {
		t.Fatalf("results %+v", s.Results)
	}
	// Paging with the opaque cursor visits the same order.
	var paged []string
	query := "q=release&limit=1"
	for range 10 {
		s = search(a.token, query)
		paged = append(paged, s.ids()...)
		if s.NextCursor == nil {
			break
		}
		query = "q=release&limit=1&cursor=" + url.QueryEscape(*s.NextCursor)
	}
	if want := []string{best.ID, newer.ID, older.ID}; !slices.Equal(paged, want) {
		t.Fatalf("paged %v, want %v", paged, want)
	}
	// b is in both groups; narrowing by room works.
	if s := search(b.token, "q=release"); len(s.Results) != 4 {
		t.Fatalf("b's results %v", s.ids())
	}
	if s := search(b.token, "q=release&roomId="+bc.ID); !slices.Equal(s.ids(), []string{hidden.ID}) {
		t.Fatalf("b's results in bc %v", s.ids())
	}
	if s := search(a.token, `q="release is ready"`); !slices.Equal(s.ids(), []string{older.ID}) {
		t.Fatalf("phrase results %v", s.ids())
	}
	if s := search(a.token, "q=nothingmatches"); len(s.Results) != 0 || s.NextCursor != nil {
		t.Fatalf("no-match results %+v", s)
	}

	// a is not in bc (403), and cannot search a channel they have not joined.
	e.do("GET", "/api/search?q=release&roomId="+bc.ID, a.token, nil).expectError(t, 403, chat.CodeForbidden)
	e.do("GET", "/api/search?q=release&roomId="+ch.ID, a.token, nil).expectError(t, 403, chat.CodeForbidden)
	e.do("GET", "/api/search?q=release&roomId=424242", a.token, nil).expectError(t, 404, chat.CodeNotFound)
	for _, q := range []string{
		"", "q=", "q=%20%20", "q=release&limit=0", "q=release&limit=101", "q=release&limit=x",
		"q=release&roomId=abc", "q=release&roomId=", "q=release&cursor=", "q=release&cursor=!!!",
		"q=release&cursor=eyJ4IjoxfQ", "q=a%00b", "q=%FF%FE", "q=" + url.QueryEscape(string(make([]byte, 300))),
	} {
		e.do("GET", "/api/search?"+q, a.token, nil).expectError(t, 400, chat.CodeBadRequest)
	}
}
