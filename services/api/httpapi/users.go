package httpapi

import (
	"github.com/gofiber/fiber/v2"

	"relay/pkg/store"
)

// me returns the caller's own account, email included.
func (s *Service) me(c *fiber.Ctx) error {
	return c.JSON(toPrivateUser(currentUser(c)))
}

// user returns a user's public profile (never the email or password hash).
func (s *Service) user(c *fiber.Ctx) error {
	id, err := pathID(c, "user")
	if err != nil {
		return err
	}
	u, err := store.UserByID(c.UserContext(), s.db, id)
	if err != nil {
		return err
	}
	return c.JSON(toPublicUser(u))
}
