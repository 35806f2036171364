package auth

import (
	"bytes"
	"encoding/base64"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"relay/pkg/chat"
)

func newTokens(t *testing.T) *Tokens {
	t.Helper()
	tok, err := NewTokens("0123456789abcdef0123456789abcdef", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

func TestIssueVerifyRoundTrip(t *testing.T) {
	tok := newTokens(t)
	s, exp, err := tok.Issue(42, "ada")
	if err != nil {
		t.Fatal(err)
	}
	c, err := tok.Verify(s)
	if err != nil {
		t.Fatal(err)
	}
	if c.UserID != 42 || c.Username != "ada" || !c.ExpiresAt.Equal(exp.Truncate(time.Second)) {
		t.Fatalf("claims %+v, expiry %v", c, exp)
	}
}

func TestVerifyRefuses(t *testing.T) {
	tok := newTokens(t)
	good, _, _ := tok.Issue(42, "ada")
	other, _ := NewTokens("another-secret-of-enough-length", time.Hour)
	forged, _, _ := other.Issue(42, "ada")

	expiredTok := newTokens(t)
	expiredTok.now = func() time.Time { return time.Now().Add(-2 * time.Hour) }
	expired, _, _ := expiredTok.Issue(42, "ada")

	// alg=none: header {"alg":"none"} with the good token's claims, no signature.
	parts := strings.Split(good, ".")
	none := base64.RawURLEncoding.EncodeToString([]byte(`{"alg":"none","typ":"JWT"}`)) + "." + parts[1] + "."

	hs512, _ := jwt.NewWithClaims(jwt.SigningMethodHS512, jwt.MapClaims{
		"sub": "42", "iss": issuer, "exp": time.Now().Add(time.Hour).Unix(),
	}).SignedString([]byte("0123456789abcdef0123456789abcdef"))
	noExp, _ := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.MapClaims{"sub": "42", "iss": issuer}).
		SignedString([]byte("0123456789abcdef0123456789abcdef"))
	badSub, _ := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.MapClaims{
		"sub": "-1", "iss": issuer, "exp": time.Now().Add(time.Hour).Unix(),
	}).SignedString([]byte("0123456789abcdef0123456789abcdef"))
	tampered := parts[0] + "." + base64.RawURLEncoding.EncodeToString([]byte(`{"sub":"1","iss":"relay","exp":9999999999}`)) + "." + parts[2]

	cases := map[string]string{
		"empty": "", "garbage": "not.a.token", "wrong secret": forged, "expired": expired,
		"alg none": none, "hs512": hs512, "no expiry": noExp, "bad subject": badSub, "tampered": tampered,
	}
	for name, token := range cases {
		t.Run(name, func(t *testing.T) {
			_, err := tok.Verify(token)
			if chat.ErrorCode(err) != chat.CodeUnauthorized {
				t.Fatalf("err %v, want UNAUTHORIZED", err)
			}
		})
	}
}

func TestPasswords(t *testing.T) {
	h, err := HashPassword("correct horse")
	if err != nil {
		t.Fatal(err)
	}
	if !CheckPassword(h, "correct horse") || CheckPassword(h, "wrong horse") || CheckPassword("not a hash", "x") {
		t.Fatal("password check wrong")
	}
}

func TestNewTokensRefusesBadConfig(t *testing.T) {
	if _, err := NewTokens("", time.Hour); err == nil {
		t.Fatal("empty secret accepted")
	}
	if _, err := NewTokens("secret", 0); err == nil {
		t.Fatal("zero ttl accepted")
	}
}

func TestRefreshTokens(t *testing.T) {
	a, ha, err := NewRefreshToken()
	if err != nil {
		t.Fatal(err)
	}
	b, hb, err := NewRefreshToken()
	if err != nil {
		t.Fatal(err)
	}
	if a == b || bytes.Equal(ha, hb) {
		t.Fatal("two refresh tokens are equal")
	}
	if !bytes.Equal(HashRefreshToken(a), ha) || len(ha) != 32 {
		t.Fatalf("hash of the token differs from the one issued")
	}
	if !ValidRefreshTokenFormat(a) {
		t.Fatalf("issued token %q refused", a)
	}
	for _, bad := range []string{"", "short", a + "x", a[:len(a)-1] + "!", strings.Repeat("é", 22)} {
		if ValidRefreshTokenFormat(bad) {
			t.Errorf("malformed token %q accepted", bad)
		}
	}
}
