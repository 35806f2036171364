package httpapi

import (
	"encoding/base64"
	"encoding/json"
	"strings"

	"github.com/gofiber/fiber/v2"

	"relay/pkg/chat"
	"relay/pkg/store"
)

// maxChannelPage bounds one page of the channel directory.
const maxChannelPage = 100

// channelCursor is the opaque nextCursor of the directory: base64url of
// this JSON.
type channelCursor struct {
	Name string `json:"n"`
	ID   int64  `json:"i"`
}

// listChannels is the directory of active public channels, optionally
// filtered by a name substring, in name order, with whether the caller has
// joined each.
func (s *Service) listChannels(c *fiber.Ctx) error {
	q, _ := queryArg(c, "q")
	q = strings.TrimSpace(q)
	if len(q) > chat.MaxRoomNameLen*4 || hasNUL(q) {
		return chat.Errorf(chat.CodeBadRequest, "q must be at most %d characters", chat.MaxRoomNameLen)
	}
	limit, err := queryLimit(c, 50, maxChannelPage)
	if err != nil {
		return err
	}
	var after *store.ChannelCursor
	if raw, ok := queryArg(c, "cursor"); ok {
		var cur channelCursor
		b, err := base64.RawURLEncoding.DecodeString(raw)
		if err != nil || len(raw) > 1024 || json.Unmarshal(b, &cur) != nil || cur.ID <= 0 {
			return chat.Errorf(chat.CodeBadRequest, "cursor is not one this api returned")
		}
		after = &store.ChannelCursor{Name: cur.Name, ID: cur.ID}
	}
	page, next, err := store.Channels(c.UserContext(), s.db, currentUser(c).ID, q, limit, after)
	if err != nil {
		return err
	}
	out := struct {
		Channels   []channelJSON `json:"channels"`
		NextCursor string        `json:"nextCursor,omitempty"`
	}{Channels: make([]channelJSON, len(page))}
	for i, ch := range page {
		out.Channels[i] = channelJSON{ID: idString(ch.ID), Name: ch.Name, Type: string(chat.RoomChannel),
			MemberCount: ch.MemberCount, Joined: ch.Joined}
	}
	if next != nil {
		b, err := json.Marshal(channelCursor{Name: next.Name, ID: next.ID})
		if err != nil {
			return err
		}
		out.NextCursor = base64.RawURLEncoding.EncodeToString(b)
	}
	return c.JSON(out)
}
