-- Account requests from the web form, and the mail that goes out about them.
CREATE TABLE signups (
    id               INTEGER PRIMARY KEY,
    user_id          TEXT NOT NULL,
    email            TEXT NOT NULL,
    public_key       TEXT NOT NULL,
    fingerprint      TEXT NOT NULL,
    algorithm        TEXT NOT NULL,
    comment          TEXT NOT NULL DEFAULT '',
    reason           TEXT NOT NULL,
    state            TEXT NOT NULL CHECK (state IN ('pending_email', 'pending_approval', 'approved', 'rejected')),
    -- SHA-256 of the confirmation token. It works once (state pending_email); it is
    -- kept so that a second click can be told the link was already used.
    token_hash       TEXT UNIQUE,
    token_expires_at INTEGER NOT NULL,
    -- SHA-256 of the token of the status page, which keeps working.
    status_hash      TEXT NOT NULL UNIQUE,
    remote_addr      TEXT NOT NULL DEFAULT '',
    created_at       INTEGER NOT NULL,
    confirmed_at     INTEGER,
    decided_by       TEXT,
    decided_at       INTEGER,
    decision_reason  TEXT
) STRICT;

-- One open request per id and per key.
CREATE UNIQUE INDEX signups_open_user ON signups (user_id)
    WHERE state IN ('pending_email', 'pending_approval');
CREATE UNIQUE INDEX signups_open_key ON signups (fingerprint)
    WHERE state IN ('pending_email', 'pending_approval');
CREATE INDEX signups_email ON signups (email, created_at);

CREATE TABLE mail_outbox (
    id               INTEGER PRIMARY KEY,
    recipient        TEXT NOT NULL,
    subject          TEXT NOT NULL,
    body             TEXT NOT NULL,
    created_at       INTEGER NOT NULL,
    attempts         INTEGER NOT NULL DEFAULT 0,
    next_attempt_at  INTEGER NOT NULL,
    last_error       TEXT,
    sent_at          INTEGER
) STRICT;

CREATE INDEX mail_outbox_due ON mail_outbox (next_attempt_at) WHERE sent_at IS NULL;
