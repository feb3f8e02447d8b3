-- Keys that must prove possession: one added with `key add` logs in to nothing until a
-- connection authenticated with that very key runs `key confirm CODE`. Several users
-- may have the same key pending; the first to confirm it gets it.
CREATE TABLE pending_keys (
    id          INTEGER PRIMARY KEY,
    fingerprint TEXT NOT NULL,
    user_id     TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    algorithm   TEXT NOT NULL,
    public_key  TEXT NOT NULL,
    comment     TEXT NOT NULL DEFAULT '',
    -- SHA-256 of the code `key add` printed; it works once.
    code_hash   TEXT NOT NULL,
    attempts    INTEGER NOT NULL DEFAULT 0,
    created_at  INTEGER NOT NULL,
    expires_at  INTEGER NOT NULL
) STRICT;

CREATE INDEX pending_keys_fingerprint ON pending_keys (fingerprint);
CREATE UNIQUE INDEX pending_keys_user_key ON pending_keys (user_id, fingerprint);

-- A signup's key is proven the same way: the status page shows the code.
ALTER TABLE signups ADD COLUMN key_code TEXT;
ALTER TABLE signups ADD COLUMN key_confirmed_at INTEGER;

-- An open signup no longer holds its key against everyone by an index: only one with a
-- confirmed email, for a bounded time, and that is checked where keys are taken.
DROP INDEX signups_open_key;
CREATE INDEX signups_key ON signups (fingerprint);
