-- Which installation this database belongs to: a random id, made once with the database
-- (or when an older one is first opened). Every libvirt object basphere defines carries
-- it in its metadata, and `admin reconcile` touches only objects that carry it.
CREATE TABLE installation (
    singleton INTEGER PRIMARY KEY CHECK (singleton = 1),
    id TEXT NOT NULL
) STRICT;

INSERT INTO installation (singleton, id) VALUES (1, lower(hex(randomblob(16))));
