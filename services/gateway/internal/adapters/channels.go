package adapters

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"

	"go.opentelemetry.io/otel/propagation"

	"relay/pkg/chat"
	"relay/pkg/web"
	"relay/services/gateway/internal/frame"
)

// Channels joins users to channels through the api: the gateway never
// writes PostgreSQL.
type Channels struct {
	// APIURL is the api's base URL.
	APIURL string
	// Client makes the calls (its Timeout bounds one).
	Client *http.Client
	// Propagator carries the trace to the api.
	Propagator propagation.TextMapPropagator
}

// Join makes the user a member of a channel through the api, forwarding
// the user's own token.
func (ch *Channels) Join(ctx context.Context, room int64, token string) error {
	url := strings.TrimSuffix(ch.APIURL, "/") + "/api/rooms/" + frame.RoomString(room) + "/join"
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, nil)
	if err != nil {
		return fmt.Errorf("api request: %w", err)
	}
	req.Header.Set("Authorization", "Bearer "+token)
	ch.Propagator.Inject(ctx, propagation.HeaderCarrier(req.Header))
	resp, err := ch.Client.Do(req)
	if err != nil {
		return chat.Wrap(chat.CodeUnavailable, err, "could not join the channel; retry")
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	if resp.StatusCode >= 200 && resp.StatusCode < 300 {
		return nil
	}
	var eb web.ErrorBody
	if json.Unmarshal(body, &eb) == nil {
		switch eb.Error.Code {
		case chat.CodeNotFound, chat.CodeForbidden, chat.CodeUnauthorized, chat.CodeBadRequest:
			return chat.Errorf(eb.Error.Code, "%s", eb.Error.Message)
		}
	}
	return chat.Wrap(chat.CodeUnavailable, fmt.Errorf("api join: status %d: %s", resp.StatusCode, truncate(string(body), 200)), "could not join the channel; retry")
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}
