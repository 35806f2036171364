package store

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/jackc/pgx/v5/pgconn"
	"gorm.io/gorm"
	"gorm.io/gorm/clause"

	"relay/pkg/chat"
)

// PostgreSQL error codes we translate.
const (
	pgUniqueViolation     = "23505"
	pgForeignKeyViolation = "23503"
)

// uniqueViolation returns the constraint (index) name when err is a unique
// violation, or "" otherwise.
func uniqueViolation(err error) string {
	var pe *pgconn.PgError
	if errors.As(err, &pe) && pe.Code == pgUniqueViolation {
		return pe.ConstraintName
	}
	return ""
}

func foreignKeyViolation(err error) bool {
	var pe *pgconn.PgError
	return errors.As(err, &pe) && pe.Code == pgForeignKeyViolation
}

// CreateUser inserts u (ID and timestamps are filled in). A username or
// email that is already taken is a CONFLICT; the unique indexes decide, so
// concurrent registrations of one name cannot both succeed. Callers
// normalize username and email first (lower case).
func CreateUser(ctx context.Context, db *gorm.DB, u *User) error {
	// RETURNING * reads back what PostgreSQL stored (timestamps rounded to
	// microseconds), so the caller shows the same values later reads do.
	err := db.WithContext(ctx).Clauses(clause.Returning{}).Create(u).Error
	switch uniqueViolation(err) {
	case "":
	case "users_username_key":
		return chat.Wrap(chat.CodeConflict, err, "username is already taken")
	case "users_email_key":
		return chat.Wrap(chat.CodeConflict, err, "email is already registered")
	default:
		return chat.Wrap(chat.CodeConflict, err, "user already exists")
	}
	if err != nil {
		return fmt.Errorf("store: create user: %w", err)
	}
	return nil
}

// UserByID returns the user with id, or NOT_FOUND.
func UserByID(ctx context.Context, db *gorm.DB, id int64) (*User, error) {
	var u User
	err := db.WithContext(ctx).Where("id = ?", id).Take(&u).Error
	if errors.Is(err, gorm.ErrRecordNotFound) {
		return nil, chat.Errorf(chat.CodeNotFound, "user %d not found", id)
	}
	if err != nil {
		return nil, fmt.Errorf("store: user %d: %w", id, err)
	}
	return &u, nil
}

// UserByLogin returns the user whose username or email equals login
// (compared in lower case, as stored), or NOT_FOUND.
func UserByLogin(ctx context.Context, db *gorm.DB, login string) (*User, error) {
	login = strings.ToLower(strings.TrimSpace(login))
	col := "username"
	if strings.Contains(login, "@") {
		// Usernames cannot contain '@', so this picks the one index that can match.
		col = "email"
	}
	var u User
	err := db.WithContext(ctx).Where(col+" = ?", login).Take(&u).Error
	if errors.Is(err, gorm.ErrRecordNotFound) {
		return nil, chat.Errorf(chat.CodeNotFound, "user not found")
	}
	if err != nil {
		return nil, fmt.Errorf("store: user by login: %w", err)
	}
	return &u, nil
}

// MissingUsers returns those of ids that name no user, in the order given.
func MissingUsers(ctx context.Context, db *gorm.DB, ids []int64) ([]int64, error) {
	if len(ids) == 0 {
		return nil, nil
	}
	var found []int64
	if err := db.WithContext(ctx).Model(&User{}).Where("id IN ?", ids).Pluck("id", &found).Error; err != nil {
		return nil, fmt.Errorf("store: users exist: %w", err)
	}
	have := make(map[int64]bool, len(found))
	for _, id := range found {
		have[id] = true
	}
	var missing []int64
	for _, id := range ids {
		if !have[id] {
			missing = append(missing, id)
		}
	}
	return missing, nil
}
