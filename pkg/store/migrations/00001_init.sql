-- +goose Up
-- The seed's four tables, with what the ordered message log needs (DESIGN.md):
-- messages.id is the gateway's UUIDv7, messages.seq is the Kafka offset of the
-- message_created event in its room's partition.

CREATE TABLE users (
    id            BIGSERIAL PRIMARY KEY,
    username      VARCHAR(32)  NOT NULL,
    email         VARCHAR(254) NOT NULL,
    password_hash VARCHAR(100) NOT NULL,
    display_name  VARCHAR(64)  NOT NULL DEFAULT '',
    avatar_url    VARCHAR(512) NOT NULL DEFAULT '',
    is_online     BOOLEAN      NOT NULL DEFAULT FALSE,
    last_seen     TIMESTAMPTZ,
    created_at    TIMESTAMPTZ  NOT NULL DEFAULT now(),
    updated_at    TIMESTAMPTZ  NOT NULL DEFAULT now()
);
-- Usernames and emails are stored normalized (lower case) by the api.
CREATE UNIQUE INDEX users_username_key ON users (username);
CREATE UNIQUE INDEX users_email_key ON users (email);

CREATE TABLE rooms (
    id          BIGSERIAL PRIMARY KEY,
    name        VARCHAR(100) NOT NULL DEFAULT '',
    type        VARCHAR(16)  NOT NULL CHECK (type IN ('direct', 'group', 'channel')),
    -- For direct rooms "<lower user id>:<higher user id>", so a pair has one room.
    direct_key  VARCHAR(64),
    created_by  BIGINT       NOT NULL REFERENCES users (id),
    created_at  TIMESTAMPTZ  NOT NULL DEFAULT now(),
    updated_at  TIMESTAMPTZ  NOT NULL DEFAULT now(),
    CHECK ((type = 'direct') = (direct_key IS NOT NULL))
);
CREATE UNIQUE INDEX rooms_direct_key ON rooms (direct_key) WHERE direct_key IS NOT NULL;
CREATE INDEX rooms_type ON rooms (type);

CREATE TABLE room_members (
    room_id       BIGINT      NOT NULL REFERENCES rooms (id) ON DELETE CASCADE,
    user_id       BIGINT      NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    role          VARCHAR(16) NOT NULL DEFAULT 'member' CHECK (role IN ('admin', 'member')),
    -- Seq of the last event the member has read; -1 before any (seq 0 is a valid offset).
    last_read_seq BIGINT      NOT NULL DEFAULT -1,
    joined_at     TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (room_id, user_id)
);
CREATE INDEX room_members_user_id ON room_members (user_id);

CREATE TABLE messages (
    id            UUID         PRIMARY KEY,
    room_id       BIGINT       NOT NULL REFERENCES rooms (id) ON DELETE CASCADE,
    user_id       BIGINT       NOT NULL REFERENCES users (id),
    content       TEXT         NOT NULL,
    message_type  VARCHAR(16)  NOT NULL DEFAULT 'text' CHECK (message_type IN ('text', 'image', 'file')),
    metadata      JSONB,
    seq           BIGINT       NOT NULL,
    client_msg_id VARCHAR(64),
    is_edited     BOOLEAN      NOT NULL DEFAULT FALSE,
    edited_at     TIMESTAMPTZ,
    is_deleted    BOOLEAN      NOT NULL DEFAULT FALSE,
    deleted_at    TIMESTAMPTZ,
    -- Seq of the last event applied to this row (created, edited or deleted),
    -- so a replayed older edit never overwrites a newer one.
    updated_seq   BIGINT       NOT NULL,
    created_at    TIMESTAMPTZ  NOT NULL,
    search        TSVECTOR GENERATED ALWAYS AS (to_tsvector('simple', content)) STORED
);
CREATE UNIQUE INDEX messages_room_seq ON messages (room_id, seq);
CREATE INDEX messages_room_created ON messages (room_id, created_at DESC);
CREATE INDEX messages_user_id ON messages (user_id);
CREATE UNIQUE INDEX messages_user_client_msg_id ON messages (user_id, client_msg_id) WHERE client_msg_id IS NOT NULL;
CREATE INDEX messages_search ON messages USING GIN (search);

-- +goose Down
DROP TABLE messages;
DROP TABLE room_members;
DROP TABLE rooms;
DROP TABLE users;
