package conn

import (
	"unicode/utf8"

	"relay/pkg/presence"
)

// PresenceName is the username carried in presence commands (tokens come
// from the api, which keeps names far below the limit; this only guards it).
func PresenceName(name string) string { return TruncateUTF8(name, presence.MaxUsernameLen) }

// TruncateUTF8 cuts s to at most n bytes on a rune boundary.
func TruncateUTF8(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n]
}
