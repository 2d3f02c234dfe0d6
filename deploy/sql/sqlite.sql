-- authbridge sql store: example schema for SQLite (one file on the MX host).
--   sqlite3 /etc/authbridge/users.sqlite < sqlite.sql
--   chown root:authbridge /etc/authbridge/users.sqlite && chmod 0640 /etc/authbridge/users.sqlite
-- authbridge opens the file read-only. Passwords are {SCHEME} values from
-- `authbridge pw`; the two rows below were made with:
--   authbridge pw -s ARGON2ID -p 'alice-example-pass'
--   authbridge pw -s SSHA512  -p 'bob-example-pass'
-- Remove them before real use.

CREATE TABLE IF NOT EXISTS mail_users (
    username    text PRIMARY KEY CHECK (username = lower(username)),
    password    text,
    active      integer NOT NULL DEFAULT 1,
    allow_nets  text,
    nologin     integer,                       -- NULL = off; any value = nologin
    reason      text
);

INSERT OR IGNORE INTO mail_users (username, password) VALUES
    ('alice@example.org', '{ARGON2ID}$argon2id$v=19$m=65536,t=3,p=1$z1ZbK3R9cE3Pmi68MJSZsw$zu5XAoPGCa75ZPNQ8VbFa3Xfx4GIOX+JenGk8VOQ77w'),
    ('bob@example.org', '{SSHA512}axxH6NC42AMM0bo2ZYkDjrvfQhCk3EBrCGtgyCgYa/JWaQUSsemccwCSISm8icBk5yPj+K2tKMq4huzZsXQY2YPMroU=');

-- App passwords (per-device passwords; `authbridge app-password add|list|revoke`), read
-- when a store has `app_passwords = true`. Times are Unix seconds; service NULL = any
-- service, else comma separated (smtp,imap) and matched against the request's service=.
-- `app-password add/revoke` and the daemon's last-used update write this table: only
-- they need the file writable (the daemon opens a read-write connection for last_used).
CREATE TABLE IF NOT EXISTS app_passwords (
    username    text NOT NULL,
    label       text NOT NULL,
    password    text NOT NULL,                 -- {SCHEME}hash, never the password
    service     text,
    expires_at  integer,
    last_used   integer,
    created_at  integer NOT NULL,
    PRIMARY KEY (username, label)
);
