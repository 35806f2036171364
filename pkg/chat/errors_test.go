package chat

import (
	"errors"
	"fmt"
	"net/http"
	"testing"
)

func TestErrorCodeAndMessage(t *testing.T) {
	cause := errors.New("db exploded")
	wrapped := fmt.Errorf("handler: %w", Wrap(CodeNotFound, cause, "room not found"))
	if ErrorCode(wrapped) != CodeNotFound || ErrorMessage(wrapped) != "room not found" {
		t.Fatalf("code %s message %q", ErrorCode(wrapped), ErrorMessage(wrapped))
	}
	if !errors.Is(wrapped, cause) {
		t.Fatal("cause lost")
	}
	// Anything that is not an *Error is INTERNAL and its detail stays private.
	if ErrorCode(cause) != CodeInternal || ErrorMessage(cause) != "internal error" {
		t.Fatalf("plain error: %s %q", ErrorCode(cause), ErrorMessage(cause))
	}
}

func TestHTTPStatus(t *testing.T) {
	want := map[Code]int{
		CodeBadRequest: 400, CodeUnknownEvent: 400, CodeTooLarge: 413, CodeUnsupportedMediaType: 415, CodeUnauthorized: 401,
		CodeForbidden: 403, CodeNotFound: 404, CodeConflict: 409, CodeRateLimited: 429,
		CodeServerFull: 503, CodeUnavailable: 503, CodeInternal: 500, Code("SOMETHING_ELSE"): http.StatusInternalServerError,
	}
	for code, status := range want {
		if got := HTTPStatus(code); got != status {
			t.Errorf("%s: %d, want %d", code, got, status)
		}
	}
}

func TestKinds(t *testing.T) {
	for _, ok := range []RoomType{RoomDirect, RoomGroup, RoomChannel} {
		if !ok.Valid() {
			t.Errorf("%s invalid", ok)
		}
	}
	if RoomType("public").Valid() || MessageType("video").Valid() || !MessageImage.Valid() {
		t.Fatal("kind validation wrong")
	}
}
