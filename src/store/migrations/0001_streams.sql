-- 0001: durable channel streams (history, recovery, idempotent publishing).
--
-- Applied once by SqliteStore::open inside a transaction; the store then sets
-- PRAGMA user_version = 1. Never edit a released migration: add 0002_*.sql.

-- One row per channel stream. `top_offset` is the offset of the newest
-- publication ever appended (0 = none); it never goes backwards, even when
-- publications are trimmed. `size` and `ttl_ms` are the retention limits of
-- the last append, so reads after a restart know what is still visible
-- (NULL until the first append).
CREATE TABLE streams (
    channel    TEXT    NOT NULL PRIMARY KEY,
    epoch      TEXT    NOT NULL,
    top_offset INTEGER NOT NULL DEFAULT 0,
    size       INTEGER,
    ttl_ms     INTEGER
) WITHOUT ROWID;

-- Retained publications. `data` is the payload's JSON text exactly as
-- published, `info` the JSON of the publishing ClientInfo (NULL for the
-- server API), `time` milliseconds since the Unix epoch.
CREATE TABLE publications (
    channel  TEXT    NOT NULL,
    "offset" INTEGER NOT NULL,
    data     TEXT    NOT NULL,
    info     TEXT,
    time     INTEGER NOT NULL,
    PRIMARY KEY (channel, "offset")
) WITHOUT ROWID;

-- TTL trimming deletes by (channel, time) without scanning a channel.
CREATE INDEX publications_by_time ON publications (channel, time);

-- Idempotency keys seen within their window: a repeated key answers the
-- position of the first publish instead of appending again.
CREATE TABLE idempotency (
    channel    TEXT    NOT NULL,
    key        TEXT    NOT NULL,
    "offset"   INTEGER NOT NULL,
    expires_at INTEGER NOT NULL,
    PRIMARY KEY (channel, key)
) WITHOUT ROWID;

CREATE INDEX idempotency_by_expiry ON idempotency (expires_at);
