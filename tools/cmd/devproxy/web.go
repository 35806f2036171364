package main

import (
	"errors"
	"io/fs"
	"net/http"
	"os"
	"path"
	"strings"
)

// ContentSecurityPolicy is sent with every file of the web app. Scripts,
// styles and connections only from this origin (the WebSocket included:
// 'self' covers ws: and wss: of the same host), images also from blob:
// (uploads are fetched with the token and shown through object URLs), no
// plugins, no framing, no <base> rewriting, forms only to this origin.
const ContentSecurityPolicy = "default-src 'self'; script-src 'self'; style-src 'self'; " +
	"img-src 'self' blob: data:; media-src 'self' blob:; connect-src 'self'; font-src 'self'; " +
	"object-src 'none'; base-uri 'none'; frame-ancestors 'none'; form-action 'self'"

// webApp serves the built single-page app (web/dist): existing files as
// they are, every other GET path that looks like an app route (no file
// extension) as index.html, so deep links work.
type webApp struct {
	root  fs.FS
	files http.Handler
}

// newWebApp returns nil when dir has no index.html (the app is not built):
// then the proxy keeps sending such paths to the api, as before.
func newWebApp(dir string) (*webApp, error) {
	if dir == "" {
		return nil, nil
	}
	root := os.DirFS(dir)
	if _, err := fs.Stat(root, "index.html"); err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, nil
		}
		return nil, err
	}
	return &webApp{root: root, files: http.FileServerFS(root)}, nil
}

func (a *webApp) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	h := w.Header()
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Content-Security-Policy", ContentSecurityPolicy)
	h.Set("Referrer-Policy", "no-referrer")
	h.Set("X-Frame-Options", "DENY")
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		h.Set("Allow", "GET, HEAD")
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		return
	}
	name := strings.TrimPrefix(path.Clean("/"+r.URL.Path), "/")
	if name == "" || name == "index.html" || !a.exists(name) {
		if name != "" && name != "index.html" && path.Ext(name) != "" {
			// A missing asset is a 404, not the app's page.
			http.NotFound(w, r)
			return
		}
		// The page itself always revalidates, so a new build is picked up.
		h.Set("Cache-Control", "no-cache")
		http.ServeFileFS(w, r, a.root, "index.html")
		return
	}
	if strings.HasPrefix(name, "assets/") {
		// Vite names built assets by content hash.
		h.Set("Cache-Control", "public, max-age=31536000, immutable")
	}
	a.files.ServeHTTP(w, r)
}

func (a *webApp) exists(name string) bool {
	st, err := fs.Stat(a.root, name)
	return err == nil && !st.IsDir()
}
