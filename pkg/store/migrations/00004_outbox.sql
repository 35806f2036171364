-- +goose Up
-- The api's transactional outbox: the member_joined / member_left events of a
-- membership change, written in the same transaction as the change, so an
-- event exists exactly when its change committed. The api's relay produces
-- the rows to chat.messages in id order and deletes each once Kafka acked it
-- (at-least-once: a crash between the ack and the delete produces it again).
CREATE TABLE outbox (
    id         BIGSERIAL   PRIMARY KEY,
    room_id    BIGINT      NOT NULL,
    -- The record value (pkg/events.Event) to produce.
    event      JSONB       NOT NULL,
    -- W3C trace context of the request that made the change (carrier keys to
    -- values), so the record continues its trace; NULL when there is none.
    trace      JSONB,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- Wakes the relay (LISTEN outbox) when rows commit; a notification is sent
-- at commit, once per transaction, and lost ones are covered by the relay's
-- polling fallback.
-- +goose StatementBegin
CREATE FUNCTION outbox_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('outbox', '');
    RETURN NULL;
END;
$$;
-- +goose StatementEnd
CREATE TRIGGER outbox_notify AFTER INSERT ON outbox
    FOR EACH STATEMENT EXECUTE FUNCTION outbox_notify();

-- +goose Down
DROP TRIGGER outbox_notify ON outbox;
DROP FUNCTION outbox_notify();
DROP TABLE outbox;
