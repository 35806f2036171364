package store

import (
	"context"
	"fmt"
	"time"

	"github.com/google/uuid"
	"gorm.io/gorm"

	"relay/pkg/chat"
)

// NewRefreshToken stores a refresh token's hash for userID, valid until
// expires. A nil family starts a new family (a sign-in); rotation passes
// the family of the token it replaces. Tokens of the user that expired are
// deleted on the way, so the table does not grow without bound.
func NewRefreshToken(ctx context.Context, db *gorm.DB, userID int64, family *uuid.UUID, hash []byte, expires time.Time) error {
	if family == nil {
		f, err := uuid.NewRandom()
		if err != nil {
			return fmt.Errorf("store: refresh family: %w", err)
		}
		family = &f
	}
	db = db.WithContext(ctx)
	if err := db.Exec(`DELETE FROM refresh_tokens WHERE user_id = ? AND expires_at < now()`, userID).Error; err != nil {
		return fmt.Errorf("store: expire refresh tokens: %w", err)
	}
	err := db.Exec(`INSERT INTO refresh_tokens (family_id, user_id, token_hash, expires_at) VALUES (?, ?, ?, ?)`,
		*family, userID, hash, expires).Error
	if err != nil {
		return fmt.Errorf("store: refresh token: %w", err)
	}
	return nil
}

// RotateRefreshToken spends the refresh token whose hash is oldHash and
// stores newHash in its place, in the same family, valid until expires. It
// returns the token's user. An unknown, expired or revoked token is
// UNAUTHORIZED. A token that was already spent is UNAUTHORIZED too, and
// revokes its whole family: either the client replayed it or someone else
// holds a copy, and neither may go on.
func RotateRefreshToken(ctx context.Context, db *gorm.DB, oldHash, newHash []byte, expires time.Time) (userID int64, err error) {
	var reused bool
	err = db.WithContext(ctx).Transaction(func(tx *gorm.DB) error {
		var rows []struct {
			FamilyID  uuid.UUID
			UserID    int64
			ExpiresAt time.Time
			UsedAt    *time.Time
			RevokedAt *time.Time
		}
		// FOR UPDATE: of two concurrent uses of one token, the second waits
		// and then sees it spent.
		err := tx.Raw(`SELECT family_id, user_id, expires_at, used_at, revoked_at FROM refresh_tokens
			WHERE token_hash = ? FOR UPDATE`, oldHash).Scan(&rows).Error
		if err != nil {
			return fmt.Errorf("store: refresh token: %w", err)
		}
		if len(rows) == 0 {
			return chat.Errorf(chat.CodeUnauthorized, "unknown refresh token")
		}
		t := rows[0]
		switch {
		case t.RevokedAt != nil:
			return chat.Errorf(chat.CodeUnauthorized, "refresh token revoked")
		case t.UsedAt != nil:
			reused = true
			if err := tx.Exec(`UPDATE refresh_tokens SET revoked_at = now() WHERE family_id = ? AND revoked_at IS NULL`,
				t.FamilyID).Error; err != nil {
				return fmt.Errorf("store: revoke refresh family: %w", err)
			}
			return nil
		case !t.ExpiresAt.After(time.Now()):
			return chat.Errorf(chat.CodeUnauthorized, "refresh token expired")
		}
		if err := tx.Exec(`UPDATE refresh_tokens SET used_at = now() WHERE token_hash = ?`, oldHash).Error; err != nil {
			return fmt.Errorf("store: spend refresh token: %w", err)
		}
		userID = t.UserID
		return NewRefreshToken(ctx, tx, t.UserID, &t.FamilyID, newHash, expires)
	})
	if err != nil {
		return 0, err
	}
	if reused {
		// Returned after the commit, so the revocation stands.
		return 0, chat.Errorf(chat.CodeUnauthorized, "refresh token already used; its sessions are signed out")
	}
	return userID, nil
}

// RevokeRefreshToken revokes the family of the refresh token whose hash is
// hash, if it belongs to userID (sign-out); revoked is false when there was
// no such live token, which is not an error.
func RevokeRefreshToken(ctx context.Context, db *gorm.DB, userID int64, hash []byte) (revoked bool, err error) {
	res := db.WithContext(ctx).Exec(`UPDATE refresh_tokens SET revoked_at = now()
		WHERE revoked_at IS NULL AND family_id = (
			SELECT family_id FROM refresh_tokens WHERE token_hash = ? AND user_id = ?)`, hash, userID)
	if res.Error != nil {
		return false, fmt.Errorf("store: revoke refresh token: %w", res.Error)
	}
	return res.RowsAffected > 0, nil
}
