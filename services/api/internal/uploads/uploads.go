// Package uploads serves file uploads to a room and their downloads by the
// room's members: the body is streamed to a blob store, the type sniffed
// (never taken from the client) and images proved by decoding their header.
package uploads

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"image"
	_ "image/gif" // DecodeConfig of the allowed image types
	_ "image/jpeg"
	_ "image/png"
	"io"
	"io/fs"
	"log/slog"
	"mime"
	"mime/multipart"
	"net/http"
	"regexp"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/gofiber/fiber/v2"
	"github.com/gofiber/fiber/v2/middleware/limiter"
	_ "golang.org/x/image/webp"
	"gorm.io/gorm"

	"relay/pkg/chat"
	"relay/pkg/store"
	"relay/services/api/internal/rest"
)

// Handler serves uploads and downloads; every field is required.
type Handler struct {
	// Blobs keeps the files' bytes.
	Blobs BlobStore
	// DB keeps their rows (store.Upload).
	DB *gorm.DB
	// Log gets failures the client cannot be told about.
	Log *slog.Logger
	// MaxBytes bounds a file (UPLOAD_MAX_BYTES).
	MaxBytes int64
	// RateLimit is the uploads per minute one user may make (UPLOAD_RATE_LIMIT).
	RateLimit int
}

// BlobStore keeps the bytes of uploaded files (diskblob.Store is the
// production implementation). Open and Delete report a missing blob as an
// fs.ErrNotExist.
type BlobStore interface {
	// Put stores everything r yields as blob id and returns its size; on
	// error nothing is stored.
	Put(ctx context.Context, id string, r io.Reader) (int64, error)
	// Open returns blob id and its size.
	Open(ctx context.Context, id string) (io.ReadCloser, int64, error)
	// Delete removes blob id.
	Delete(ctx context.Context, id string) error
}

// Upload limits, documented in openapi.json.
const (
	// MaxUploadBytes is the most UPLOAD_MAX_BYTES may allow.
	MaxUploadBytes = 1 << 30
	// multipartOverhead is what the multipart framing around the file (the
	// boundaries, part headers, small extra fields) may add to a body.
	multipartOverhead = 64 << 10
	// maxFileName bounds a stored file name (bytes).
	maxFileName = 255
	// maxImageSide and maxImagePixels bound an image's dimensions, so no
	// member's browser is handed a decompression bomb.
	maxImageSide   = 16384
	maxImagePixels = 64 << 20
)

// uploadTypes are the content types an upload may have, as sniffed from
// its first bytes (never as the client claims); images are also decoded
// far enough to prove it.
var uploadTypes = map[string]bool{
	"image/png": true, "image/jpeg": true, "image/gif": true, "image/webp": true,
	"application/pdf": true, "text/plain": true, "application/zip": true,
	// Binary content nothing more specific was recognised in: served as a
	// Download only, it cannot be rendered or run by the browser.
	"application/octet-stream": true,
}

// imageFormats maps an image type to the name image.DecodeConfig gives.
var imageFormats = map[string]string{
	"image/png": "png", "image/jpeg": "jpeg", "image/gif": "gif", "image/webp": "webp",
}

// uploadIDPattern is the shape of the ids newUploadID makes.
var uploadIDPattern = regexp.MustCompile(`^[A-Za-z0-9_-]{22}$`)

// newUploadID returns 128 random bits, base64url: unguessable, so knowing
// one upload's id tells nothing about another's.
func newUploadID() (string, error) {
	b := make([]byte, 16)
	if _, err := rand.Read(b); err != nil {
		return "", fmt.Errorf("upload id: %w", err)
	}
	return base64.RawURLEncoding.EncodeToString(b), nil
}

// IsUploadRequest tells pkg/web which requests stream their body to the
// upload handler instead of having it read (and bounded to 64 KiB).
func IsUploadRequest(c *fiber.Ctx) bool {
	return c.Method() == fiber.MethodPost && isUploadPath(c.Path())
}

// IsDownloadRequest tells pkg/web which responses are streamed files, so
// its tracing does not read them into memory to measure them.
func IsDownloadRequest(c *fiber.Ctx) bool {
	return c.Method() == fiber.MethodGet && strings.HasPrefix(c.Path(), "/api/uploads/")
}

func isUploadPath(path string) bool {
	tail, ok := strings.CutPrefix(path, "/api/rooms/")
	if !ok {
		return false
	}
	id, tail, _ := strings.Cut(tail, "/")
	_, err := rest.ParseUint(id)
	return err == nil && tail == "uploads"
}

// Limiter bounds uploads to RateLimit per minute per user
// (fixed window, in this process's memory). It runs after requireAuth.
func (h *Handler) Limiter() fiber.Handler {
	return limiter.New(limiter.Config{
		Max:          h.RateLimit,
		Expiration:   time.Minute,
		KeyGenerator: func(c *fiber.Ctx) string { return rest.IDString(rest.User(c).ID) },
		LimitReached: func(c *fiber.Ctx) error {
			return chat.Errorf(chat.CodeRateLimited, "too many uploads; retry after %s seconds", c.GetRespHeader(fiber.HeaderRetryAfter))
		},
	})
}

// Upload stores the file of a multipart/form-data body (part "file") for a
// room's members. The body is streamed: the file goes to the blob store as
// it arrives, never held in memory, and the upload fails with TOO_LARGE as
// soon as it passes the limit.
func (h *Handler) Upload(c *fiber.Ctx) error {
	roomID, err := rest.PathID(c, "room")
	if err != nil {
		return err
	}
	me, ctx := rest.User(c), c.UserContext()
	room, err := store.RoomFor(ctx, h.DB, roomID, me.ID)
	if err != nil {
		return err
	}
	if room.Role == "" {
		return chat.Errorf(chat.CodeForbidden, "not a member of room %d", roomID)
	}
	if !room.IsActive {
		return chat.Errorf(chat.CodeForbidden, "room %d is archived", roomID)
	}
	mediaType, params, err := mime.ParseMediaType(c.Get(fiber.HeaderContentType))
	if err != nil || mediaType != fiber.MIMEMultipartForm || params["boundary"] == "" {
		return chat.Errorf(chat.CodeBadRequest, "the body must be multipart/form-data with a part named file")
	}
	maxBody := h.MaxBytes + multipartOverhead
	if n := c.Request().Header.ContentLength(); n > int(maxBody) {
		return h.tooLarge()
	}
	var body io.Reader
	if c.Request().IsBodyStream() {
		body = c.Request().BodyStream()
	} else {
		// A request web.Options.StreamBody did not pick (a path spelt
		// differently): its body was read and bounded already.
		body = bytes.NewReader(c.Request().Body())
	}
	bounded := &io.LimitedReader{R: body, N: maxBody + 1}
	part, err := filePart(multipart.NewReader(bounded, params["boundary"]))
	if err != nil {
		if bounded.N <= 0 {
			return h.tooLarge()
		}
		return err
	}
	name := cleanFileName(part.FileName())
	head := bufio.NewReaderSize(part, 512)
	sniffed, _ := head.Peek(512)
	if len(sniffed) == 0 {
		return chat.Errorf(chat.CodeBadRequest, "the file is empty")
	}
	contentType := http.DetectContentType(sniffed)
	baseType, _, _ := mime.ParseMediaType(contentType)
	if !uploadTypes[baseType] {
		return chat.Errorf(chat.CodeUnsupportedMediaType,
			"files of type %s are not accepted; allowed: images (PNG, JPEG, GIF, WebP), PDF, plain text, ZIP and other binary files", baseType)
	}
	id, err := newUploadID()
	if err != nil {
		return err
	}
	file := &io.LimitedReader{R: head, N: h.MaxBytes + 1}
	src := &readErr{r: file}
	size, err := h.Blobs.Put(ctx, id, src)
	if err != nil {
		if bounded.N <= 0 || file.N <= 0 {
			return h.tooLarge()
		}
		if src.err != nil {
			// The client's body broke off or was malformed, not the store.
			return chat.Wrap(chat.CodeBadRequest, err, "the upload ended before its file part did")
		}
		return err
	}
	up := &store.Upload{ID: id, RoomID: roomID, UserID: me.ID, Name: name, Size: size, ContentType: contentType}
	fail := func(err error) error {
		if derr := h.Blobs.Delete(context.WithoutCancel(ctx), id); derr != nil {
			h.Log.ErrorContext(ctx, "removing a refused upload", "upload", id, "err", derr)
		}
		return err
	}
	if size > h.MaxBytes {
		return fail(h.tooLarge())
	}
	if format, ok := imageFormats[baseType]; ok {
		if up.Width, up.Height, err = h.imageSize(ctx, id, format); err != nil {
			return fail(err)
		}
	}
	if err := store.CreateUpload(ctx, h.DB, up); err != nil {
		return fail(err)
	}
	return c.Status(fiber.StatusCreated).JSON(toUpload(up))
}

// readErr remembers the error (other than EOF) its reader returned.
type readErr struct {
	r   io.Reader
	err error
}

func (e *readErr) Read(p []byte) (int, error) {
	n, err := e.r.Read(p)
	if err != nil && !errors.Is(err, io.EOF) {
		e.err = err
	}
	return n, err
}

func (h *Handler) tooLarge() error {
	return chat.Errorf(chat.CodeTooLarge, "files are limited to %d bytes", h.MaxBytes)
}

// filePart returns the part named file, skipping (and reading through) any
// other parts before it.
func filePart(mr *multipart.Reader) (*multipart.Part, error) {
	for {
		part, err := mr.NextPart()
		if errors.Is(err, io.EOF) {
			return nil, chat.Errorf(chat.CodeBadRequest, "the form has no part named file")
		}
		if err != nil {
			return nil, chat.Wrap(chat.CodeBadRequest, err, "malformed multipart body")
		}
		if part.FormName() == "file" {
			return part, nil
		}
		if _, err := io.Copy(io.Discard, part); err != nil {
			return nil, chat.Wrap(chat.CodeBadRequest, err, "malformed multipart body")
		}
	}
}

// imageSize reads the stored image's header: it must decode as the sniffed
// format, within the dimension limits.
func (h *Handler) imageSize(ctx context.Context, id, format string) (width, height *int, err error) {
	f, _, err := h.Blobs.Open(ctx, id)
	if err != nil {
		return nil, nil, err
	}
	defer f.Close()
	cfg, got, err := image.DecodeConfig(bufio.NewReader(f))
	if err != nil || got != format {
		return nil, nil, chat.Errorf(chat.CodeUnsupportedMediaType, "the file is not a valid %s image", format)
	}
	if cfg.Width <= 0 || cfg.Height <= 0 || cfg.Width > maxImageSide || cfg.Height > maxImageSide ||
		int64(cfg.Width)*int64(cfg.Height) > maxImagePixels {
		return nil, nil, chat.Errorf(chat.CodeUnsupportedMediaType,
			"images are limited to %d pixels a side and %d pixels in all", maxImageSide, maxImagePixels)
	}
	return &cfg.Width, &cfg.Height, nil
}

// Download serves an upload's bytes to the members of its room; to anyone
// else it does not exist. The headers keep the browser from treating the
// bytes as anything but the sniffed type, and from running anything in it.
func (h *Handler) Download(c *fiber.Ctx) error {
	id := c.Params("id")
	if !uploadIDPattern.MatchString(id) {
		return chat.Errorf(chat.CodeNotFound, "upload not found")
	}
	ctx := c.UserContext()
	up, err := store.UploadFor(ctx, h.DB, id, rest.User(c).ID)
	if err != nil {
		return err
	}
	f, size, err := h.Blobs.Open(ctx, id)
	if errors.Is(err, fs.ErrNotExist) {
		h.Log.ErrorContext(ctx, "upload row without its blob", "upload", id)
		return chat.Errorf(chat.CodeNotFound, "upload not found")
	}
	if err != nil {
		return err
	}
	disposition := "attachment"
	if _, ok := imageFormats[up.ContentType]; ok {
		disposition = "inline"
	}
	c.Set(fiber.HeaderContentType, up.ContentType)
	c.Set(fiber.HeaderXContentTypeOptions, "nosniff")
	c.Set(fiber.HeaderContentSecurityPolicy, "default-src 'none'; sandbox")
	c.Set(fiber.HeaderContentDisposition, contentDisposition(disposition, up.Name))
	// The bytes of an id never change; only members may see them.
	c.Set(fiber.HeaderCacheControl, "private, max-age=86400, immutable")
	c.Context().SetBodyStream(f, int(size)) // fasthttp closes f once sent
	return nil
}

// cleanFileName makes a client's file name safe to store and show: the
// last element of any path, valid UTF-8 without control or bidirectional
// formatting characters (which can disguise an extension), at most
// maxFileName bytes; "file" when nothing is left.
func cleanFileName(name string) string {
	if i := strings.LastIndexAny(name, `/\`); i >= 0 {
		name = name[i+1:]
	}
	name = strings.ToValidUTF8(name, "")
	name = strings.Map(func(r rune) rune {
		if unicode.IsControl(r) || unicode.Is(unicode.Bidi_Control, r) || r == utf8.RuneError {
			return -1
		}
		return r
	}, name)
	name = strings.TrimSpace(name)
	if len(name) > maxFileName {
		name = rest.Truncate(name, maxFileName-len("…"))
	}
	if name == "" || name == "." || name == ".." {
		return "file"
	}
	return name
}

// contentDisposition builds the header for a file name: an ASCII fallback
// in filename (anything else replaced by '_') and the exact name in
// filename* (RFC 6266 / 8187), percent-encoded, so no character of the name
// can end the header or add a parameter.
func contentDisposition(kind, name string) string {
	var fallback, exact strings.Builder
	for _, r := range name {
		if r >= 0x20 && r < 0x7f && r != '"' && r != '\\' && r != '%' {
			fallback.WriteRune(r)
		} else {
			fallback.WriteByte('_')
		}
	}
	for _, b := range []byte(name) {
		if isAttrChar(b) {
			exact.WriteByte(b)
		} else {
			fmt.Fprintf(&exact, "%%%02X", b)
		}
	}
	return fmt.Sprintf(`%s; filename="%s"; filename*=UTF-8''%s`, kind, fallback.String(), exact.String())
}

// isAttrChar reports whether b may appear unencoded in an RFC 8187 value.
func isAttrChar(b byte) bool {
	switch {
	case 'a' <= b && b <= 'z', 'A' <= b && b <= 'Z', '0' <= b && b <= '9':
		return true
	}
	return strings.IndexByte("!#$&+-.^_`|~", b) >= 0
}

func toUpload(u *store.Upload) uploadJSON {
	return uploadJSON{
		ID: u.ID, RoomID: rest.IDString(u.RoomID), Name: u.Name, Size: u.Size, ContentType: u.ContentType,
		URL: "/api/uploads/" + u.ID, Width: u.Width, Height: u.Height, CreatedAt: u.CreatedAt,
	}
}

// uploadJSON is an uploaded file; URL is where members fetch it.
type uploadJSON struct {
	ID          string    `json:"id"`
	RoomID      string    `json:"roomId"`
	Name        string    `json:"name"`
	Size        int64     `json:"size"`
	ContentType string    `json:"contentType"`
	URL         string    `json:"url"`
	Width       *int      `json:"width,omitempty"`
	Height      *int      `json:"height,omitempty"`
	CreatedAt   time.Time `json:"createdAt"`
}
