-- +goose Up
-- What the web app needs of the schema: archived rooms and muted members (the
-- seed's rooms.is_active and room_members.is_muted), refresh tokens, uploaded
-- files, and a username index that answers prefix searches.

ALTER TABLE rooms ADD COLUMN is_active BOOLEAN NOT NULL DEFAULT TRUE;
ALTER TABLE room_members ADD COLUMN is_muted BOOLEAN NOT NULL DEFAULT FALSE;

-- Usernames are stored in lower case; text_pattern_ops lets LIKE 'prefix%'
-- use the index whatever the database's collation.
CREATE INDEX users_username_prefix ON users (username text_pattern_ops);
-- The channel directory lists active channels by name.
CREATE INDEX rooms_channels ON rooms (lower(name), id) WHERE type = 'channel' AND is_active;

-- Refresh tokens: only a SHA-256 of each is stored. A token is spent by its
-- first use (used_at), which issues the next one of the same family; a spent
-- token presented again means it was stolen or replayed, and revokes the
-- whole family (revoked_at on every row).
CREATE TABLE refresh_tokens (
    id          BIGSERIAL   PRIMARY KEY,
    family_id   UUID        NOT NULL,
    user_id     BIGINT      NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    token_hash  BYTEA       NOT NULL,
    expires_at  TIMESTAMPTZ NOT NULL,
    used_at     TIMESTAMPTZ,
    revoked_at  TIMESTAMPTZ,
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX refresh_tokens_hash ON refresh_tokens (token_hash);
CREATE INDEX refresh_tokens_family ON refresh_tokens (family_id);
CREATE INDEX refresh_tokens_user_expiry ON refresh_tokens (user_id, expires_at);

-- Uploaded files: the bytes live in the api's blob store under id (random,
-- so ids cannot be enumerated); this row says whose they are and what.
CREATE TABLE uploads (
    id           VARCHAR(32)  PRIMARY KEY,
    room_id      BIGINT       NOT NULL REFERENCES rooms (id) ON DELETE CASCADE,
    user_id      BIGINT       NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    name         VARCHAR(255) NOT NULL,
    size         BIGINT       NOT NULL,
    content_type VARCHAR(100) NOT NULL,
    width        INTEGER,
    height       INTEGER,
    created_at   TIMESTAMPTZ  NOT NULL DEFAULT now()
);
CREATE INDEX uploads_room ON uploads (room_id);
CREATE INDEX uploads_user_created ON uploads (user_id, created_at);

-- +goose Down
DROP TABLE uploads;
DROP TABLE refresh_tokens;
DROP INDEX rooms_channels;
DROP INDEX users_username_prefix;
ALTER TABLE room_members DROP COLUMN is_muted;
ALTER TABLE rooms DROP COLUMN is_active;
