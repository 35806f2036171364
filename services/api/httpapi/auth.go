package httpapi

import (
	"context"
	"regexp"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/gofiber/fiber/v2"
	"github.com/gofiber/fiber/v2/middleware/limiter"

	"relay/pkg/auth"
	"relay/pkg/chat"
	"relay/pkg/store"
	"relay/pkg/web"
	"relay/services/api/internal/rest"
)

// Account limits, documented in openapi.json.
const (
	minPassword     = 8
	maxPassword     = 72 // bcrypt ignores bytes past 72
	maxEmail        = 254
	maxDisplayName  = 64
	maxLoginRequest = 254
)

var usernamePattern = regexp.MustCompile(`^[a-z0-9_.-]{3,32}$`)

type registerRequest struct {
	Username    string `json:"username"`
	Email       string `json:"email"`
	Password    string `json:"password"`
	DisplayName string `json:"displayName"`
}

type loginRequest struct {
	Login    string `json:"login"`
	Password string `json:"password"`
}

// register creates an account and signs the new user in.
func (s *Service) register(c *fiber.Ctx) error {
	var req registerRequest
	if err := rest.DecodeBody(c, &req); err != nil {
		return err
	}
	if rest.HasNUL(req.Username, req.Email, req.Password, req.DisplayName) {
		return chat.Errorf(chat.CodeBadRequest, "fields must not contain NUL characters")
	}
	typed := strings.TrimSpace(req.Username)
	u := &store.User{
		Username:    strings.ToLower(typed),
		Email:       strings.ToLower(strings.TrimSpace(req.Email)),
		DisplayName: strings.TrimSpace(req.DisplayName),
	}
	if !usernamePattern.MatchString(u.Username) {
		return chat.Errorf(chat.CodeBadRequest, "username must be 3 to 32 characters of a-z, 0-9, '_', '.' and '-'")
	}
	if len(u.Email) > maxEmail || s.validate.Var(u.Email, "required,email") != nil {
		return chat.Errorf(chat.CodeBadRequest, "email must be a valid address of at most %d characters", maxEmail)
	}
	if len(req.Password) < minPassword || len(req.Password) > maxPassword {
		return chat.Errorf(chat.CodeBadRequest, "password must be %d to %d bytes", minPassword, maxPassword)
	}
	if utf8.RuneCountInString(u.DisplayName) > maxDisplayName {
		return chat.Errorf(chat.CodeBadRequest, "displayName must be at most %d characters", maxDisplayName)
	}
	if u.DisplayName == "" {
		u.DisplayName = typed // keeps the capitals the user typed
	}
	hash, err := auth.HashPassword(req.Password)
	if err != nil {
		return err
	}
	u.PasswordHash = hash
	if err := store.CreateUser(c.UserContext(), s.db, u); err != nil {
		return err
	}
	resp, err := s.signIn(c.UserContext(), u)
	if err != nil {
		return err
	}
	return c.Status(fiber.StatusCreated).JSON(resp)
}

// login checks a username or email and password and issues a token. Unknown
// users and wrong passwords get the same answer, after the same work.
func (s *Service) login(c *fiber.Ctx) error {
	var req loginRequest
	if err := rest.DecodeBody(c, &req); err != nil {
		return err
	}
	if strings.TrimSpace(req.Login) == "" || req.Password == "" {
		return chat.Errorf(chat.CodeBadRequest, "login and password required")
	}
	if rest.HasNUL(req.Login, req.Password) {
		return chat.Errorf(chat.CodeBadRequest, "fields must not contain NUL characters")
	}
	if len(req.Login) > maxLoginRequest {
		return chat.Errorf(chat.CodeBadRequest, "login must be at most %d characters", maxLoginRequest)
	}
	u, err := store.UserByLogin(c.UserContext(), s.db, req.Login)
	if err != nil && chat.ErrorCode(err) != chat.CodeNotFound {
		return err
	}
	hash := s.dummyHash
	if u != nil {
		hash = u.PasswordHash
	}
	if !auth.CheckPassword(hash, req.Password) || u == nil {
		return chat.Errorf(chat.CodeUnauthorized, "invalid login or password")
	}
	resp, err := s.signIn(c.UserContext(), u)
	if err != nil {
		return err
	}
	return c.JSON(resp)
}

// signIn issues an access token and the first refresh token of a new
// family.
func (s *Service) signIn(ctx context.Context, u *store.User) (*authResponse, error) {
	refresh, hash, err := auth.NewRefreshToken()
	if err != nil {
		return nil, err
	}
	refreshExp := time.Now().Add(s.cfg.RefreshTTL).UTC().Truncate(time.Second)
	if err := store.NewRefreshToken(ctx, s.db, u.ID, nil, hash, refreshExp); err != nil {
		return nil, err
	}
	return s.tokenResponse(u, refresh, refreshExp)
}

func (s *Service) tokenResponse(u *store.User, refresh string, refreshExp time.Time) (*authResponse, error) {
	token, exp, err := s.tokens.Issue(u.ID, u.Username)
	if err != nil {
		return nil, err
	}
	return &authResponse{User: toPrivateUser(u), Token: token, ExpiresAt: exp,
		RefreshToken: refresh, RefreshExpiresAt: refreshExp}, nil
}

type refreshRequest struct {
	RefreshToken string `json:"refreshToken"`
}

// refreshTokenArg returns the request's refresh token, or BAD_REQUEST (an
// empty one) or UNAUTHORIZED (one that cannot be ours).
func refreshTokenArg(c *fiber.Ctx) (string, error) {
	var req refreshRequest
	if err := rest.DecodeBody(c, &req); err != nil {
		return "", err
	}
	if req.RefreshToken == "" {
		return "", chat.Errorf(chat.CodeBadRequest, "refreshToken required")
	}
	if !auth.ValidRefreshTokenFormat(req.RefreshToken) {
		return "", chat.Errorf(chat.CodeUnauthorized, "invalid refresh token")
	}
	return req.RefreshToken, nil
}

// refresh spends a refresh token for a new access token and a new refresh
// token of the same family. A token used twice revokes its family (see
// store.RotateRefreshToken).
func (s *Service) refresh(c *fiber.Ctx) error {
	old, err := refreshTokenArg(c)
	if err != nil {
		return s.unauthorized(c, err)
	}
	next, hash, err := auth.NewRefreshToken()
	if err != nil {
		return err
	}
	ctx := c.UserContext()
	refreshExp := time.Now().Add(s.cfg.RefreshTTL).UTC().Truncate(time.Second)
	userID, err := store.RotateRefreshToken(ctx, s.db, auth.HashRefreshToken(old), hash, refreshExp)
	if err != nil {
		return s.unauthorized(c, err)
	}
	u, err := store.UserByID(ctx, s.db, userID)
	if err != nil {
		return err
	}
	resp, err := s.tokenResponse(u, next, refreshExp)
	if err != nil {
		return err
	}
	return c.JSON(resp)
}

// logout revokes the family of the caller's refresh token (this sign-in on
// every device it was refreshed to). An unknown or already revoked token is
// not an error: the outcome the caller wants holds either way. Access
// tokens already issued stay valid until they expire (minutes).
func (s *Service) logout(c *fiber.Ctx) error {
	var req refreshRequest
	if err := rest.DecodeBody(c, &req); err != nil {
		return err
	}
	if req.RefreshToken == "" {
		return chat.Errorf(chat.CodeBadRequest, "refreshToken required")
	}
	if auth.ValidRefreshTokenFormat(req.RefreshToken) {
		if _, err := store.RevokeRefreshToken(c.UserContext(), s.db, rest.User(c).ID, auth.HashRefreshToken(req.RefreshToken)); err != nil {
			return err
		}
	}
	return c.SendStatus(fiber.StatusNoContent)
}

// requireAuth admits requests with a valid bearer token whose user still
// exists and makes that user available to the handler. The user id always
// comes from the token.
func (s *Service) requireAuth(c *fiber.Ctx) error {
	header := c.Get(fiber.HeaderAuthorization)
	scheme, token, _ := strings.Cut(header, " ")
	if header == "" {
		return s.unauthorized(c, chat.Errorf(chat.CodeUnauthorized, "missing bearer token"))
	}
	if !strings.EqualFold(scheme, "Bearer") || strings.TrimSpace(token) == "" {
		return s.unauthorized(c, chat.Errorf(chat.CodeUnauthorized, "authorization must be a bearer token"))
	}
	claims, err := s.tokens.Verify(strings.TrimSpace(token))
	if err != nil {
		return s.unauthorized(c, err)
	}
	u, err := store.UserByID(c.UserContext(), s.db, claims.UserID)
	if err != nil {
		if chat.ErrorCode(err) == chat.CodeNotFound {
			return s.unauthorized(c, chat.Errorf(chat.CodeUnauthorized, "the token's account no longer exists"))
		}
		return err
	}
	rest.SetUser(c, u)
	return c.Next()
}

func (s *Service) unauthorized(c *fiber.Ctx, err error) error {
	c.Set(fiber.HeaderWWWAuthenticate, `Bearer realm="relay"`)
	return err
}

// authLimiter bounds /api/auth/* to cfg.AuthRateLimit requests per minute
// per client IP (fixed window, in this process's memory).
func (s *Service) authLimiter() fiber.Handler {
	return limiter.New(limiter.Config{
		Max:          s.cfg.AuthRateLimit,
		Expiration:   time.Minute,
		KeyGenerator: s.clientIP,
		LimitReached: func(c *fiber.Ctx) error {
			return chat.Errorf(chat.CodeRateLimited, "too many authentication requests; retry after %s seconds", c.GetRespHeader(fiber.HeaderRetryAfter))
		},
	})
}

// clientIP is the client's address: the peer, or behind a trusted proxy
// the address it forwarded (web.ClientIP).
func (s *Service) clientIP(c *fiber.Ctx) string {
	return web.ClientIP(c, s.trusted)
}
