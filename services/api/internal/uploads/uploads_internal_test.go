package uploads

import (
	"strings"
	"testing"
)

func TestCleanFileName(t *testing.T) {
	for in, want := range map[string]string{
		"photo.jpg":              "photo.jpg",
		"../../etc/passwd":       "passwd",
		`C:\Users\me\report.pdf`: "report.pdf",
		"a\r\nX-Injected: 1.txt": "aX-Injected: 1.txt",
		"invoice\u202efdp.exe":   "invoicefdp.exe",
		"\u2066x\u2069.png":      "x.png",
		"bad\xffutf8.txt":        "badutf8.txt",
		"  ..  ":                 "file",
		"dir/":                   "file",
		"":                       "file",
		"nul\x00byte.txt":        "nulbyte.txt",
		"ünïcödé 名前.txt":         "ünïcödé 名前.txt",
		strings.Repeat("é", 200): strings.Repeat("é", 126) + "…",
	} {
		if got := cleanFileName(in); got != want {
			t.Errorf("cleanFileName(%q) = %q, want %q", in, got, want)
		}
		if got := cleanFileName(in); len(got) > maxFileName {
			t.Errorf("cleanFileName(%q) is %d bytes", in, len(got))
		}
	}
}

func TestContentDisposition(t *testing.T) {
	for _, c := range []struct{ kind, name, want string }{
		{"inline", "cat.png", `inline; filename="cat.png"; filename*=UTF-8''cat.png`},
		{"attachment", `a"b\c;d%e`, `attachment; filename="a_b_c;d_e"; filename*=UTF-8''a%22b%5Cc%3Bd%25e`},
		{"attachment", "résumé 1.pdf", `attachment; filename="r_sum_ 1.pdf"; filename*=UTF-8''r%C3%A9sum%C3%A9%201.pdf`},
	} {
		got := contentDisposition(c.kind, c.name)
		if got != c.want {
			t.Errorf("contentDisposition(%q) = %q, want %q", c.name, got, c.want)
		}
		if strings.ContainsAny(got, "\r\n") {
			t.Errorf("header value with a line break: %q", got)
		}
	}
}

func TestIsUploadRequest(t *testing.T) {
	// Only what routes to the upload handler streams.
	for path, want := range map[string]bool{
		"/api/rooms/12/uploads":    true,
		"/api/rooms/12/uploads/":   false,
		"/api/rooms/x/uploads":     false,
		"/api/rooms/12/members":    false,
		"/api/rooms/12/uploads/..": false,
		"/api/uploads":             false,
	} {
		if got := isUploadPath(path); got != want {
			t.Errorf("%s: %v, want %v", path, got, want)
		}
	}
}
