// Package rest holds the api's REST conventions every handler package
// shares: one JSON object per request body, ids as decimal strings, the
// path and query arguments, and the user the authentication middleware
// admitted. Every refusal is a chat BAD_REQUEST whose message says what is
// wrong.
package rest

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/gofiber/fiber/v2"

	"relay/pkg/chat"
	"relay/pkg/store"
)

// IDString is the wire form of a user or room id: a decimal string.
func IDString(id int64) string { return strconv.FormatInt(id, 10) }

// userKey is the Locals key of the authenticated *store.User.
type userKey struct{}

// SetUser records the user a request was authenticated as.
func SetUser(c *fiber.Ctx, u *store.User) { c.Locals(userKey{}, u) }

// User returns the user the request was authenticated as (SetUser); nil
// on a route without authentication.
func User(c *fiber.Ctx) *store.User {
	u, _ := c.Locals(userKey{}).(*store.User)
	return u
}

// DecodeBody parses the request body, which must be one JSON object, into
// v. Unknown fields are ignored; every failure is BAD_REQUEST with a message
// that says what is wrong.
func DecodeBody(c *fiber.Ctx, v any) error {
	return DecodeJSONBody(c.Body(), v)
}

// DecodeJSONBody decodes a request body holding one JSON object into v,
// with a BAD_REQUEST that names the field on a type mismatch. (The body is
// never compressed: web refuses a Content-Encoding before handlers run.)
func DecodeJSONBody(body []byte, v any) error {
	body = bytes.TrimSpace(body)
	if len(body) == 0 {
		return chat.Errorf(chat.CodeBadRequest, "request body required: a JSON object")
	}
	if body[0] != '{' {
		return chat.Errorf(chat.CodeBadRequest, "request body must be a JSON object")
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	if err := dec.Decode(v); err != nil {
		var te *json.UnmarshalTypeError
		if errors.As(err, &te) && te.Field != "" {
			return chat.Wrap(chat.CodeBadRequest, err, fmt.Sprintf("field %q has the wrong type: %s expected", te.Field, jsonKind(te.Type.Kind().String())))
		}
		return chat.Wrap(chat.CodeBadRequest, err, "malformed JSON body")
	}
	if dec.More() {
		return chat.Errorf(chat.CodeBadRequest, "request body must be a single JSON object")
	}
	return nil
}

// jsonKind names a Go kind the way JSON documents do.
func jsonKind(kind string) string {
	switch kind {
	case "string":
		return "string"
	case "slice", "array":
		return "array"
	case "map", "struct":
		return "object"
	case "bool":
		return "boolean"
	default:
		return "number"
	}
}

// HasNUL reports whether any of ss contains a NUL character, which
// PostgreSQL cannot store in text; such input is refused as BAD_REQUEST.
func HasNUL(ss ...string) bool {
	for _, s := range ss {
		if strings.IndexByte(s, 0) >= 0 {
			return true
		}
	}
	return false
}

// ParseID parses a user or room id: 1 to 19 decimal digits, positive, in
// range. Anything else is BAD_REQUEST naming the field.
func ParseID(field, s string) (int64, error) {
	if s == "" {
		return 0, chat.Errorf(chat.CodeBadRequest, "%s required", field)
	}
	id, err := ParseUint(s)
	if err != nil || id <= 0 {
		return 0, chat.Errorf(chat.CodeBadRequest, "%s must be a positive integer id in a string, got %q", field, Truncate(s, 40))
	}
	return id, nil
}

// ParseUint parses decimal digits only (no sign, no spaces) into an int64.
func ParseUint(s string) (int64, error) {
	if s == "" || len(s) > 19 {
		return 0, errors.New("not a non-negative 64-bit integer")
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return 0, errors.New("not a non-negative 64-bit integer")
		}
	}
	return strconv.ParseInt(s, 10, 64)
}

// Truncate shortens s to at most n bytes on a character boundary, for
// quoting client input in error messages.
func Truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n] + "…"
}

// PathID returns the :id path parameter as an id.
func PathID(c *fiber.Ctx, what string) (int64, error) {
	return ParseID(what+" id", c.Params("id"))
}

// QueryArg returns the query parameter name and whether it was given at
// all (an empty value counts as given, so it can be refused).
func QueryArg(c *fiber.Ctx, name string) (string, bool) {
	args := c.Context().QueryArgs()
	if !args.Has(name) {
		return "", false
	}
	return string(args.Peek(name)), true
}

// QuerySeq parses an optional seq query parameter (a non-negative integer).
// With noneOK, -1 is accepted too: "nothing seen yet" (seq 0 is a valid
// offset), what a client that got resync_required with fromSeq -1 asks for.
func QuerySeq(c *fiber.Ctx, name string, noneOK bool) (*int64, error) {
	s, ok := QueryArg(c, name)
	if !ok {
		return nil, nil
	}
	if noneOK && s == "-1" {
		v := int64(-1)
		return &v, nil
	}
	v, err := ParseUint(s)
	if err != nil {
		return nil, chat.Errorf(chat.CodeBadRequest, "%s must be a non-negative integer seq, got %q", name, Truncate(s, 40))
	}
	return &v, nil
}

// QueryLimit parses an optional limit in [1, max], def when absent.
func QueryLimit(c *fiber.Ctx, def, max int) (int, error) {
	s, ok := QueryArg(c, "limit")
	if !ok {
		return def, nil
	}
	v, err := ParseUint(s)
	if err != nil || v < 1 || v > int64(max) {
		return 0, chat.Errorf(chat.CodeBadRequest, "limit must be an integer from 1 to %d, got %q", max, Truncate(s, 40))
	}
	return int(v), nil
}

// HasControl reports whether s contains a control character, which a
// name or display text must not hold.
func HasControl(s string) bool {
	return strings.IndexFunc(s, unicode.IsControl) >= 0
}
