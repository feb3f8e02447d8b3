-- The guest RAM a snapshot of a running VM stores in the VM's qcow2 overlay: it is
-- held against the owner's disk quota as long as the snapshot exists.
ALTER TABLE snapshots ADD COLUMN memory_bytes INTEGER NOT NULL DEFAULT 0;
