-- 0001: durable channel streams (history, recovery, idempotent publishing).
--
-- Applied once by PostgresStore::connect inside a transaction that holds an
-- advisory lock (several nodes may start at once); the store then records
-- version 1 in switchboard_migrations. `IF NOT EXISTS` everywhere, so a schema
-- created by hand (or half by an older build) is completed, not refused.
-- Never edit a released migration: add 0002_*.sql.
--
-- Same tables as the SQLite store (src/store/migrations/0001_streams.sql);
-- integers are BIGINT, JSON is kept as TEXT (exactly as published: `jsonb`
-- would reorder keys and drop whitespace).

-- One row per channel stream. `top_offset` is the offset of the newest
-- publication ever appended (0 = none); it never goes backwards, even when
-- publications are trimmed. Appends lock this row (in channel order), which
-- serializes them per channel across nodes. `size` and `ttl_ms` are the
-- retention limits of the last append, so reads know what is still visible
-- (NULL until the first append).
CREATE TABLE IF NOT EXISTS streams (
    channel    TEXT   NOT NULL PRIMARY KEY,
    epoch      TEXT   NOT NULL,
    top_offset BIGINT NOT NULL DEFAULT 0,
    size       BIGINT,
    ttl_ms     BIGINT
);

-- Retained publications. `data` is the payload's JSON text exactly as
-- published, `info` the JSON of the publishing ClientInfo (NULL for the
-- server API), `time` milliseconds since the Unix epoch.
CREATE TABLE IF NOT EXISTS publications (
    channel  TEXT   NOT NULL,
    "offset" BIGINT NOT NULL,
    data     TEXT   NOT NULL,
    info     TEXT,
    time     BIGINT NOT NULL,
    PRIMARY KEY (channel, "offset")
);

-- TTL trimming deletes by (channel, time) without scanning a channel.
CREATE INDEX IF NOT EXISTS publications_by_time ON publications (channel, time);

-- Idempotency keys seen within their window: a repeated key answers the
-- position of the first publish instead of appending again. Keys longer than
-- a few hundred bytes (or starting with \x01) are stored as "\x01" + the hex
-- SHA-256 of the key, so any key fits the index.
CREATE TABLE IF NOT EXISTS idempotency (
    channel    TEXT   NOT NULL,
    key        TEXT   NOT NULL,
    "offset"   BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    PRIMARY KEY (channel, key)
);

CREATE INDEX IF NOT EXISTS idempotency_by_expiry ON idempotency (expires_at);
