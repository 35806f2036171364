package httpapi

import (
	"time"

	"relay/pkg/store"
	"relay/services/api/internal/rest"
)

// The JSON shapes of the responses of the handlers in this package (users,
// accounts, presence). Ids are strings, seqs are numbers
// (docs/architecture.md); openapi.json describes the same shapes.

// publicUser is what anyone signed in may see of a user.
type publicUser struct {
	ID          string     `json:"id"`
	Username    string     `json:"username"`
	DisplayName string     `json:"displayName"`
	AvatarURL   string     `json:"avatarUrl"`
	IsOnline    bool       `json:"isOnline"`
	LastSeen    *time.Time `json:"lastSeen"`
	CreatedAt   time.Time  `json:"createdAt"`
}

// privateUser is a user as they see themselves.
type privateUser struct {
	publicUser
	Email string `json:"email"`
}

type authResponse struct {
	User      privateUser `json:"user"`
	Token     string      `json:"token"`
	ExpiresAt time.Time   `json:"expiresAt"`
	// RefreshToken is spent by POST /api/auth/refresh for the next pair.
	RefreshToken     string    `json:"refreshToken"`
	RefreshExpiresAt time.Time `json:"refreshExpiresAt"`
}

// presenceJSON is a user's presence. LastSeen is null for a user presence
// never saw.
type presenceJSON struct {
	UserID   string     `json:"userId"`
	Status   string     `json:"status"`
	LastSeen *time.Time `json:"lastSeen"`
}

type memberPresenceJSON struct {
	UserID   string     `json:"userId"`
	Username string     `json:"username"`
	Status   string     `json:"status"`
	LastSeen *time.Time `json:"lastSeen"`
}

type typistJSON struct {
	UserID   string `json:"userId"`
	Username string `json:"username"`
}

// roomPresenceJSON lists every member (Online, in join order, whatever
// their status) and the members typing.
type roomPresenceJSON struct {
	RoomID string               `json:"roomId"`
	Online []memberPresenceJSON `json:"online"`
	Typing []typistJSON         `json:"typing"`
}

func toPublicUser(u *store.User) publicUser {
	return publicUser{
		ID: rest.IDString(u.ID), Username: u.Username, DisplayName: u.DisplayName, AvatarURL: u.AvatarURL,
		IsOnline: u.IsOnline, LastSeen: u.LastSeen, CreatedAt: u.CreatedAt,
	}
}

func toPrivateUser(u *store.User) privateUser {
	return privateUser{publicUser: toPublicUser(u), Email: u.Email}
}
