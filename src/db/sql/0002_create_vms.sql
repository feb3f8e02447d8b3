-- Base images, tenant networks and virtual machines.
CREATE TABLE images (
    name          TEXT PRIMARY KEY,
    path          TEXT NOT NULL,
    format        TEXT NOT NULL,
    virtual_size  INTEGER NOT NULL,
    os_user       TEXT NOT NULL,
    created_at    INTEGER NOT NULL
) STRICT;

-- One /24 of the pool per user; `idx` is its position in the pool.
CREATE TABLE networks (
    idx         INTEGER PRIMARY KEY,
    user_id     TEXT NOT NULL UNIQUE REFERENCES users (id) ON DELETE CASCADE,
    name        TEXT NOT NULL UNIQUE,
    bridge      TEXT NOT NULL UNIQUE,
    subnet      TEXT NOT NULL UNIQUE
) STRICT;

CREATE TABLE vms (
    id           TEXT PRIMARY KEY,
    owner        TEXT NOT NULL REFERENCES users (id),
    name         TEXT NOT NULL,
    host         TEXT NOT NULL DEFAULT 'local',
    image        TEXT NOT NULL REFERENCES images (name),
    cpus         INTEGER NOT NULL,
    memory_mib   INTEGER NOT NULL,
    disk_bytes   INTEGER NOT NULL,
    state        TEXT NOT NULL CHECK (state IN ('creating', 'ready', 'deleting')),
    network_idx  INTEGER NOT NULL REFERENCES networks (idx),
    mac          TEXT NOT NULL UNIQUE,
    ip           TEXT NOT NULL,
    domain       TEXT NOT NULL UNIQUE,
    created_at   INTEGER NOT NULL,
    UNIQUE (owner, name),
    UNIQUE (network_idx, ip)
) STRICT;

CREATE INDEX vms_ip ON vms (ip);
CREATE INDEX vms_image ON vms (image);
