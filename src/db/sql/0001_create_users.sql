-- Tenants, their keys and limits, and the audit trail.
CREATE TABLE users (
    id          TEXT PRIMARY KEY,
    email       TEXT NOT NULL,
    role        TEXT NOT NULL CHECK (role IN ('user', 'admin')),
    state       TEXT NOT NULL CHECK (state IN ('active', 'disabled')),
    created_at  INTEGER NOT NULL
) STRICT;

CREATE TABLE ssh_keys (
    fingerprint TEXT PRIMARY KEY,
    user_id     TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    algorithm   TEXT NOT NULL,
    public_key  TEXT NOT NULL,
    comment     TEXT NOT NULL DEFAULT '',
    created_at  INTEGER NOT NULL
) STRICT;

CREATE INDEX ssh_keys_user ON ssh_keys (user_id);

-- NULL means "the configured default".
CREATE TABLE quotas (
    user_id     TEXT PRIMARY KEY REFERENCES users (id) ON DELETE CASCADE,
    cpus        INTEGER,
    memory_mib  INTEGER,
    disk_bytes  INTEGER,
    vms         INTEGER,
    snapshots   INTEGER
) STRICT;

CREATE TABLE audit_log (
    id          INTEGER PRIMARY KEY,
    at          INTEGER NOT NULL,
    actor       TEXT NOT NULL,
    via         TEXT NOT NULL,
    action      TEXT NOT NULL,
    target      TEXT NOT NULL,
    result      TEXT NOT NULL,
    detail      TEXT NOT NULL DEFAULT ''
) STRICT;

CREATE INDEX audit_log_actor ON audit_log (actor, id);
CREATE INDEX audit_log_target ON audit_log (target, id);
