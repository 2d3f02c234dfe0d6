-- authbridge sql store: example schema for PostgreSQL (shared by several MX hosts).
--   createuser authbridge && createdb -O postgres mail && psql -d mail -f postgresql.sql
-- Passwords are {SCHEME} values from `authbridge pw` (or `doveadm pw`); the two rows
-- below were made with:
--   authbridge pw -s ARGON2ID -p 'alice-example-pass'
--   authbridge pw -s SSHA512  -p 'bob-example-pass'
-- Remove them before real use.

CREATE TABLE IF NOT EXISTS mail_users (
    username    text PRIMARY KEY CHECK (username = lower(username)),  -- full address
    password    text,                          -- NULL: no password (login always fails)
    active      boolean NOT NULL DEFAULT true, -- false: refused on every MX at once
    allow_nets  text,                          -- Dovecot allow_nets, e.g. '192.0.2.0/24'
    nologin     boolean NOT NULL DEFAULT false,
    reason      text                           -- sent with nologin
);

-- authbridge only reads: give it SELECT and nothing else.
GRANT SELECT ON mail_users TO authbridge;
-- With [rehash] and an update_query, it also writes the password column:
--   GRANT UPDATE (password) ON mail_users TO authbridge;

INSERT INTO mail_users (username, password) VALUES
    ('alice@example.org', '{ARGON2ID}$argon2id$v=19$m=65536,t=3,p=1$z1ZbK3R9cE3Pmi68MJSZsw$zu5XAoPGCa75ZPNQ8VbFa3Xfx4GIOX+JenGk8VOQ77w'),
    ('bob@example.org', '{SSHA512}axxH6NC42AMM0bo2ZYkDjrvfQhCk3EBrCGtgyCgYa/JWaQUSsemccwCSISm8icBk5yPj+K2tKMq4huzZsXQY2YPMroU=')
ON CONFLICT (username) DO NOTHING;

-- App passwords (per-device passwords; `authbridge app-password add|list|revoke`), read
-- when a store has `app_passwords = true`. Times are Unix seconds; service NULL = any
-- service, else comma separated (smtp,imap) and matched against the request's service=.
CREATE TABLE IF NOT EXISTS app_passwords (
    username    text NOT NULL,                 -- as in mail_users
    label       text NOT NULL,                 -- unique per user: phone, laptop, ...
    password    text NOT NULL,                 -- {SCHEME}hash, never the password
    service     text,
    expires_at  bigint,
    last_used   bigint,
    created_at  bigint NOT NULL,
    PRIMARY KEY (username, label)
);
GRANT SELECT ON app_passwords TO authbridge;
-- The daemon writes last_used (at most once an hour per app password):
GRANT UPDATE (last_used) ON app_passwords TO authbridge;
-- `authbridge app-password add` and `revoke` run as an admin role that may
--   INSERT and DELETE on app_passwords (or grant them to authbridge if it runs them).
