-- Snapshots of VMs (internal qcow2 snapshots in libvirt) and per-user snapshot policy.
CREATE TABLE snapshots (
    id           INTEGER PRIMARY KEY,
    vm_id        TEXT NOT NULL REFERENCES vms (id) ON DELETE CASCADE,
    owner        TEXT NOT NULL,
    name         TEXT NOT NULL,
    state        TEXT NOT NULL CHECK (state IN ('creating', 'ready', 'deleting')),
    created_at   INTEGER NOT NULL,
    expires_at   INTEGER,
    description  TEXT NOT NULL DEFAULT '',
    UNIQUE (vm_id, name)
) STRICT;

CREATE INDEX snapshots_owner ON snapshots (owner, vm_id);

-- NULL means "the configured default"; an expiry of 0 seconds means "never".
ALTER TABLE quotas ADD COLUMN snapshot_expire_secs INTEGER;
ALTER TABLE quotas ADD COLUMN snapshot_keep_last INTEGER;
