package auth

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"fmt"
)

// refreshTokenBytes is the entropy of a refresh token: 256 bits, so
// guessing one is out of the question and a plain hash suffices to store it
// (no salt or slow hash needed, unlike a password).
const refreshTokenBytes = 32

// NewRefreshToken returns a new opaque refresh token and the hash under
// which it is stored; the token itself is only ever given to the client.
func NewRefreshToken() (token string, hash []byte, err error) {
	b := make([]byte, refreshTokenBytes)
	if _, err := rand.Read(b); err != nil {
		return "", nil, fmt.Errorf("auth: refresh token: %w", err)
	}
	token = base64.RawURLEncoding.EncodeToString(b)
	return token, HashRefreshToken(token), nil
}

// HashRefreshToken returns the stored form of a refresh token (SHA-256).
func HashRefreshToken(token string) []byte {
	h := sha256.Sum256([]byte(token))
	return h[:]
}

// ValidRefreshTokenFormat reports whether s could be a token NewRefreshToken
// issued, so garbage is refused before it costs a database lookup.
func ValidRefreshTokenFormat(s string) bool {
	if len(s) != base64.RawURLEncoding.EncodedLen(refreshTokenBytes) {
		return false
	}
	_, err := base64.RawURLEncoding.DecodeString(s)
	return err == nil
}
