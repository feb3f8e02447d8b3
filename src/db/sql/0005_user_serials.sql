-- A serial for every user, never reused: a user removed and made again under the same
-- id is someone else to every connection that authenticated as the first.
CREATE TABLE sequences (
    name TEXT PRIMARY KEY,
    last INTEGER NOT NULL
) STRICT;

ALTER TABLE users ADD COLUMN serial INTEGER;
UPDATE users SET serial = rowid;
CREATE UNIQUE INDEX users_serial ON users (serial);
INSERT INTO sequences (name, last)
    VALUES ('user_serial', (SELECT coalesce(max(serial), 0) FROM users));

-- Every new user takes the next serial, whoever inserts the row.
CREATE TRIGGER users_take_serial AFTER INSERT ON users WHEN NEW.serial IS NULL
BEGIN
    UPDATE sequences SET last = last + 1 WHERE name = 'user_serial';
    UPDATE users SET serial = (SELECT last FROM sequences WHERE name = 'user_serial')
        WHERE rowid = NEW.rowid;
END;
