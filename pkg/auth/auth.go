// Package auth issues and verifies the api's JWTs and hashes passwords.
package auth

import (
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"golang.org/x/crypto/bcrypt"

	"relay/pkg/chat"
)

const issuer = "relay"

// Claims are what a verified token says about its bearer.
type Claims struct {
	// UserID is the authenticated user.
	UserID int64
	// Username is the user's name at the time the token was issued.
	Username string
	// ExpiresAt is when the token stops being accepted.
	ExpiresAt time.Time
}

type tokenClaims struct {
	Username string `json:"username"`
	jwt.RegisteredClaims
}

// Tokens signs and verifies HS256 tokens with one secret.
type Tokens struct {
	secret []byte
	ttl    time.Duration
	now    func() time.Time
}

// NewTokens returns a Tokens; secret must be non-empty and ttl positive.
func NewTokens(secret string, ttl time.Duration) (*Tokens, error) {
	if secret == "" || ttl <= 0 {
		return nil, errors.New("auth: secret and positive ttl required")
	}
	return &Tokens{secret: []byte(secret), ttl: ttl, now: time.Now}, nil
}

// Issue returns a signed token for the user and its expiry.
func (t *Tokens) Issue(userID int64, username string) (string, time.Time, error) {
	now := t.now()
	exp := now.Add(t.ttl)
	tok := jwt.NewWithClaims(jwt.SigningMethodHS256, tokenClaims{
		Username: username,
		RegisteredClaims: jwt.RegisteredClaims{
			Issuer:    issuer,
			Subject:   strconv.FormatInt(userID, 10),
			IssuedAt:  jwt.NewNumericDate(now),
			NotBefore: jwt.NewNumericDate(now.Add(-time.Minute)),
			ExpiresAt: jwt.NewNumericDate(exp),
		},
	})
	s, err := tok.SignedString(t.secret)
	if err != nil {
		return "", time.Time{}, fmt.Errorf("auth: sign: %w", err)
	}
	return s, exp, nil
}

// Verify checks a token's signature (HS256 only: alg=none and every other
// algorithm are refused), issuer and expiry. Failures are UNAUTHORIZED.
func (t *Tokens) Verify(token string) (Claims, error) {
	if token == "" {
		return Claims{}, chat.Errorf(chat.CodeUnauthorized, "missing token")
	}
	var c tokenClaims
	_, err := jwt.ParseWithClaims(token, &c, func(*jwt.Token) (any, error) { return t.secret, nil },
		jwt.WithValidMethods([]string{jwt.SigningMethodHS256.Alg()}),
		jwt.WithIssuer(issuer),
		jwt.WithExpirationRequired(),
		jwt.WithTimeFunc(t.now),
	)
	if err != nil {
		if errors.Is(err, jwt.ErrTokenExpired) {
			return Claims{}, chat.Wrap(chat.CodeUnauthorized, err, "token expired")
		}
		return Claims{}, chat.Wrap(chat.CodeUnauthorized, err, "invalid token")
	}
	id, err := strconv.ParseInt(c.Subject, 10, 64)
	if err != nil || id <= 0 {
		return Claims{}, chat.Errorf(chat.CodeUnauthorized, "invalid token subject")
	}
	return Claims{UserID: id, Username: c.Username, ExpiresAt: c.ExpiresAt.Time}, nil
}

// HashPassword returns a bcrypt hash of password.
func HashPassword(password string) (string, error) {
	h, err := bcrypt.GenerateFromPassword([]byte(password), bcrypt.DefaultCost)
	if err != nil {
		return "", fmt.Errorf("auth: hash: %w", err)
	}
	return string(h), nil
}

// CheckPassword reports whether password matches hash.
func CheckPassword(hash, password string) bool {
	return bcrypt.CompareHashAndPassword([]byte(hash), []byte(password)) == nil
}
