package httpapi_test

import (
	"bytes"
	"crypto/rand"
	"encoding/json"
	"image"
	"image/color"
	"image/png"
	"io"
	"mime/multipart"
	"net/http"
	"net/textproto"
	"strings"
	"testing"

	"relay/services/api/httpapi"
)

type uploadResp struct {
	ID          string `json:"id"`
	RoomID      string `json:"roomId"`
	Name        string `json:"name"`
	Size        int64  `json:"size"`
	ContentType string `json:"contentType"`
	URL         string `json:"url"`
	Width       *int   `json:"width"`
	Height      *int   `json:"height"`
}

// upload posts content as the part file (named name) of a multipart body,
// checking the response against openapi.json.
func (e *apiEnv) upload(token, roomID, name string, content []byte) response {
	e.t.Helper()
	var body bytes.Buffer
	w := multipart.NewWriter(&body)
	_ = w.WriteField("note", "fields before the file are skipped")
	h := textproto.MIMEHeader{}
	quote := strings.NewReplacer(`\`, `\\`, `"`, `\"`)
	h.Set("Content-Disposition", `form-data; name="file"; filename="`+quote.Replace(name)+`"`)
	h.Set("Content-Type", "image/png") // a lie, whatever the content: never believed
	part, err := w.CreatePart(h)
	if err != nil {
		e.t.Fatal(err)
	}
	part.Write(content)
	w.Close()
	req, _ := http.NewRequest("POST", e.url+"/api/rooms/"+roomID+"/uploads", &body)
	req.Header.Set("Content-Type", w.FormDataContentType())
	return e.roundTrip(req, token, true)
}

func (e *apiEnv) roundTrip(req *http.Request, token string, check bool) response {
	e.t.Helper()
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	res, err := e.client.Do(req)
	if err != nil {
		e.t.Fatalf("%s %s: %v", req.Method, req.URL.Path, err)
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	if err != nil {
		e.t.Fatal(err)
	}
	if check {
		lv, err := openAPI()
		if err != nil {
			e.t.Fatal(err)
		}
		lv.checkResponse(e.t, req, res, b)
	}
	return response{status: res.StatusCode, header: res.Header, body: b}
}

func (e *apiEnv) download(token, url string) response {
	e.t.Helper()
	req, _ := http.NewRequest("GET", e.url+url, nil)
	// Error bodies are JSON and checked; file bodies are whatever they are.
	r := e.roundTrip(req, token, false)
	if r.status != 200 {
		var eb struct {
			Error struct{ Code string } `json:"error"`
		}
		if json.Unmarshal(r.body, &eb) != nil || eb.Error.Code == "" {
			e.t.Fatalf("GET %s: %d with a body that is no error: %s", url, r.status, r.body)
		}
	}
	return r
}

func pngImage(t *testing.T, w, h int) []byte {
	t.Helper()
	img := image.NewRGBA(image.Rect(0, 0, w, h))
	img.Set(1, 1, color.RGBA{R: 200, A: 255})
	var b bytes.Buffer
	if err := png.Encode(&b, img); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

func TestUploads(t *testing.T) {
	e := newAPI(t, envOptions{config: func(c *httpapi.Config) { c.UploadMaxBytes = 4 << 20 }})
	ann, ben, eve := e.user("ann"), e.user("ben"), e.user("eve")
	g := e.room(ann, "group", "photos", ben)

	// An image: stored, measured, served inline to members only.
	pic := pngImage(t, 40, 30)
	var up uploadResp
	e.upload(ann.token, g.ID, "../../etc/cat.png", pic).expect(t, 201, &up)
	if up.Name != "cat.png" || up.ContentType != "image/png" || up.Size != int64(len(pic)) ||
		up.Width == nil || *up.Width != 40 || *up.Height != 30 || up.URL != "/api/uploads/"+up.ID || up.RoomID != g.ID {
		t.Fatalf("upload %+v", up)
	}
	r := e.download(ben.token, up.URL)
	if r.status != 200 || !bytes.Equal(r.body, pic) {
		t.Fatalf("download: %d, %d bytes", r.status, len(r.body))
	}
	for h, want := range map[string]string{
		"Content-Type":            "image/png",
		"X-Content-Type-Options":  "nosniff",
		"Content-Security-Policy": "default-src 'none'; sandbox",
		"Content-Disposition":     `inline; filename="cat.png"; filename*=UTF-8''cat.png`,
	} {
		if got := r.header.Get(h); got != want {
			t.Errorf("%s: %q, want %q", h, got, want)
		}
	}
	if r := e.download(eve.token, up.URL); r.status != 404 {
		t.Fatalf("non-member download: %d", r.status)
	}
	if r := e.download("", up.URL); r.status != 401 {
		t.Fatalf("anonymous download: %d", r.status)
	}
	for _, id := range []string{"AAAAAAAAAAAAAAAAAAAAAA", "..%2F..%2Fetc%2Fpasswd", "x"} {
		if r := e.download(ben.token, "/api/uploads/"+id); r.status != 404 {
			t.Fatalf("download %s: %d", id, r.status)
		}
	}
	e.upload(eve.token, g.ID, "x.png", pic).expectError(t, 403, "FORBIDDEN")
	e.upload(ann.token, "999999", "x.png", pic).expectError(t, 404, "NOT_FOUND")

	// A hostile file name cannot break out of the header or hide its type.
	var txt uploadResp
	e.upload(ann.token, g.ID, "evil\"; filename=x.html\u202egnp.exe \u00e9", []byte("just some text\n")).expect(t, 201, &txt)
	if txt.ContentType != "text/plain; charset=utf-8" || txt.Name != "evil\"; filename=x.htmlgnp.exe \u00e9" {
		t.Fatalf("text upload %+v", txt)
	}
	r = e.download(ben.token, txt.URL)
	want := `attachment; filename="evil_; filename=x.htmlgnp.exe _"; filename*=UTF-8''evil%22%3B%20filename%3Dx.htmlgnp.exe%20%C3%A9`
	if cd := r.header.Get("Content-Disposition"); cd != want || r.header.Get("Content-Type") != "text/plain; charset=utf-8" {
		t.Fatalf("Content-Disposition %q, want %q", cd, want)
	}

	// Streamed: a file larger than the api's 1 MiB in-memory body bound.
	big := make([]byte, 3<<20)
	rand.Read(big)
	var bin uploadResp
	e.upload(ann.token, g.ID, "data.bin", big).expect(t, 201, &bin)
	if bin.ContentType != "application/octet-stream" || bin.Size != int64(len(big)) || bin.Width != nil {
		t.Fatalf("binary upload %+v", bin)
	}
	if r := e.download(ben.token, bin.URL); !bytes.Equal(r.body, big) {
		t.Fatalf("binary download differs (%d bytes)", len(r.body))
	}

	// Refused content.
	e.upload(ann.token, g.ID, "x.png", make([]byte, 4<<20+1)).expectError(t, 413, "TOO_LARGE")
	e.upload(ann.token, g.ID, "page.html", []byte("<!DOCTYPE html><script>alert(1)</script>")).expectError(t, 415, "UNSUPPORTED_MEDIA_TYPE")
	e.upload(ann.token, g.ID, "x.svg", []byte(`<?xml version="1.0"?><svg xmlns="http://www.w3.org/2000/svg"><script>alert(1)</script></svg>`)).expectError(t, 415, "UNSUPPORTED_MEDIA_TYPE")
	e.upload(ann.token, g.ID, "fake.png", append(pic[:16:16], make([]byte, 100)...)).expectError(t, 415, "UNSUPPORTED_MEDIA_TYPE")
	e.upload(ann.token, g.ID, "huge.png", pngImage(t, 20000, 1)).expectError(t, 415, "UNSUPPORTED_MEDIA_TYPE")
	e.upload(ann.token, g.ID, "empty.txt", nil).expectError(t, 400, "BAD_REQUEST")
	// Not multipart, or no file part.
	req, _ := http.NewRequest("POST", e.url+"/api/rooms/"+g.ID+"/uploads", strings.NewReader("{}"))
	req.Header.Set("Content-Type", "application/json")
	e.roundTrip(req, ann.token, true).expectError(t, 400, "BAD_REQUEST")
	var body bytes.Buffer
	w := multipart.NewWriter(&body)
	w.WriteField("other", "x")
	w.Close()
	req, _ = http.NewRequest("POST", e.url+"/api/rooms/"+g.ID+"/uploads", &body)
	req.Header.Set("Content-Type", w.FormDataContentType())
	e.roundTrip(req, ann.token, true).expectError(t, 400, "BAD_REQUEST")
	// A body cut off inside the file part stores nothing.
	var cut bytes.Buffer
	w = multipart.NewWriter(&cut)
	fw, _ := w.CreateFormFile("file", "cut.bin")
	fw.Write(big[:100000])
	req, _ = http.NewRequest("POST", e.url+"/api/rooms/"+g.ID+"/uploads", bytes.NewReader(cut.Bytes()))
	req.Header.Set("Content-Type", w.FormDataContentType())
	e.roundTrip(req, ann.token, true).expectError(t, 400, "BAD_REQUEST")
	var rows int64
	if err := e.db.Raw("SELECT count(*) FROM uploads").Scan(&rows).Error; err != nil || rows != 3 {
		t.Fatalf("%d upload rows (%v), want 3", rows, err)
	}

	// Archived rooms take no uploads.
	e.do("PATCH", "/api/rooms/"+g.ID, ann.token, map[string]any{"isActive": false}).expect(t, 200, nil)
	e.upload(ann.token, g.ID, "x.png", pic).expectError(t, 403, "FORBIDDEN")
	// Files stay readable in an archived room.
	if r := e.download(ben.token, up.URL); r.status != 200 {
		t.Fatalf("download from an archived room: %d", r.status)
	}
}

func TestUploadRateLimit(t *testing.T) {
	e := newAPI(t, envOptions{config: func(c *httpapi.Config) { c.UploadRateLimit = 3 }})
	ann, ben := e.user("ann"), e.user("ben")
	g := e.room(ann, "group", "g", ben)
	for range 3 {
		e.upload(ann.token, g.ID, "a.txt", []byte("hello")).expect(t, 201, nil)
	}
	e.upload(ann.token, g.ID, "a.txt", []byte("hello")).expectError(t, 429, "RATE_LIMITED")
	// Per user: another member is not held back.
	e.upload(ben.token, g.ID, "b.txt", []byte("hello")).expect(t, 201, nil)
}
