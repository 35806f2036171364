package store

import (
	"context"
	"errors"
	"fmt"
	"time"

	"gorm.io/gorm"
	"gorm.io/gorm/clause"

	"relay/pkg/chat"
)

// Upload is a row of uploads: a file's owner, room and what it is. The
// bytes are in the api's blob store under ID.
type Upload struct {
	// ID is random (not a sequence), so ids cannot be guessed.
	ID     string `gorm:"primaryKey"`
	RoomID int64
	UserID int64
	// Name is the file name as the uploader gave it, sanitized.
	Name string
	Size int64
	// ContentType is the type sniffed from the content, not the client's.
	ContentType string
	// Width and Height are an image's dimensions; nil for other files.
	Width     *int
	Height    *int
	CreatedAt time.Time
}

// CreateUpload stores the metadata of an upload whose bytes are stored.
func CreateUpload(ctx context.Context, db *gorm.DB, u *Upload) error {
	err := db.WithContext(ctx).Clauses(clause.Returning{}).Omit("CreatedAt").Create(u).Error
	if foreignKeyViolation(err) {
		return chat.Wrap(chat.CodeNotFound, err, "room or user no longer exists")
	}
	if err != nil {
		return fmt.Errorf("store: create upload: %w", err)
	}
	return nil
}

// UploadFor returns upload id if userID is a member of its room; an
// unknown id and a non-member get the same NOT_FOUND, so nobody learns
// which ids exist in rooms they cannot see.
func UploadFor(ctx context.Context, db *gorm.DB, id string, userID int64) (*Upload, error) {
	var u Upload
	err := db.WithContext(ctx).Raw(`SELECT up.* FROM uploads up
		JOIN room_members m ON m.room_id = up.room_id AND m.user_id = ?
		WHERE up.id = ?`, userID, id).Take(&u).Error
	if errors.Is(err, gorm.ErrRecordNotFound) {
		return nil, chat.Errorf(chat.CodeNotFound, "upload not found")
	}
	if err != nil {
		return nil, fmt.Errorf("store: upload: %w", err)
	}
	return &u, nil
}
