package httpapi

import (
	"net/url"
	"strings"
	"unicode/utf8"

	"github.com/gofiber/fiber/v2"

	"relay/pkg/chat"
	"relay/pkg/store"
	"relay/services/api/internal/rest"
)

// me returns the caller's own account, email included.
func (s *Service) me(c *fiber.Ctx) error {
	return c.JSON(toPrivateUser(rest.User(c)))
}

// user returns a user's public profile (never the email or password hash).
func (s *Service) user(c *fiber.Ctx) error {
	id, err := rest.PathID(c, "user")
	if err != nil {
		return err
	}
	u, err := store.UserByID(c.UserContext(), s.db, id)
	if err != nil {
		return err
	}
	return c.JSON(toPublicUser(u))
}

// maxAvatarURL bounds avatarUrl (the column's size).
const maxAvatarURL = 512

type updateMeRequest struct {
	DisplayName *string `json:"displayName"`
	AvatarURL   *string `json:"avatarUrl"`
}

// updateMe changes the caller's profile: displayName and avatarUrl (an
// absolute http(s) URL, or "" for none); absent fields stay as they are.
func (s *Service) updateMe(c *fiber.Ctx) error {
	var req updateMeRequest
	if err := rest.DecodeBody(c, &req); err != nil {
		return err
	}
	me := rest.User(c)
	var p store.ProfilePatch
	if req.DisplayName != nil {
		name := strings.TrimSpace(*req.DisplayName)
		if rest.HasNUL(name) || rest.HasControl(name) {
			return chat.Errorf(chat.CodeBadRequest, "displayName must not contain control characters")
		}
		if name == "" {
			name = me.Username
		}
		if utf8.RuneCountInString(name) > maxDisplayName {
			return chat.Errorf(chat.CodeBadRequest, "displayName must be at most %d characters", maxDisplayName)
		}
		p.DisplayName = &name
	}
	if req.AvatarURL != nil {
		raw := strings.TrimSpace(*req.AvatarURL)
		if raw != "" {
			u, err := url.Parse(raw)
			if err != nil || len(raw) > maxAvatarURL || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || rest.HasControl(raw) {
				return chat.Errorf(chat.CodeBadRequest, "avatarUrl must be an absolute http(s) URL of at most %d characters, or empty", maxAvatarURL)
			}
		}
		p.AvatarURL = &raw
	}
	u, err := store.UpdateProfile(c.UserContext(), s.db, me.ID, p)
	if err != nil {
		return err
	}
	return c.JSON(toPrivateUser(u))
}

// maxUserSearch bounds one page of user search.
const maxUserSearch = 50

// searchUsers finds users by username prefix (case-insensitive), for
// starting a direct conversation. Only public profiles are returned.
func (s *Service) searchUsers(c *fiber.Ctx) error {
	q, _ := rest.QueryArg(c, "q")
	q = strings.ToLower(strings.TrimSpace(q))
	if q == "" {
		return chat.Errorf(chat.CodeBadRequest, "q required: the start of a username")
	}
	if len(q) > 32 || rest.HasNUL(q) {
		return chat.Errorf(chat.CodeBadRequest, "q must be at most 32 characters")
	}
	limit, err := rest.QueryLimit(c, 20, maxUserSearch)
	if err != nil {
		return err
	}
	users, err := store.SearchUsers(c.UserContext(), s.db, q, limit)
	if err != nil {
		return err
	}
	out := make([]publicUser, len(users))
	for i := range users {
		out[i] = toPublicUser(&users[i])
	}
	return c.JSON(fiber.Map{"users": out})
}
