-- +goose Up
-- The room log as PostgreSQL keeps it: every chat.messages record (all event
-- types), so a client that reconnects after Redis's recent history has been
-- trimmed can still be brought to the complete log in seq order. Written by
-- the persister in the same transaction as the message rows.
CREATE TABLE room_events (
    room_id    BIGINT      NOT NULL,
    seq        BIGINT      NOT NULL,
    type       VARCHAR(32) NOT NULL,
    -- The message an event is about (created, edited, deleted), so a delete
    -- can scrub the content of the events that carried it.
    message_id UUID,
    -- The record value (pkg/events.Event) as produced.
    event      JSONB       NOT NULL,
    created_at TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (room_id, seq)
);
CREATE INDEX room_events_message ON room_events (room_id, message_id) WHERE message_id IS NOT NULL;

-- +goose Down
DROP TABLE room_events;
