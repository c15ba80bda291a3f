-- The console owns no domain data: only who may sign in, their sessions, sign-in attempts (the
-- rate limit) and the audit list of what each operator did.
CREATE SCHEMA IF NOT EXISTS console;

CREATE TABLE console.operators (
    id                     bigserial   PRIMARY KEY,
    email                  text        NOT NULL UNIQUE CHECK (email = lower(email)),
    -- Argon2id (argon2-cffi's encoded form); NULL until the operator set a password
    password_hash          text,
    -- SHA-256 of the one-time set-password token (`roac operators create`); NULL once used
    setup_digest           bytea       UNIQUE CHECK (octet_length(setup_digest) = 32),
    setup_expires_at       timestamptz,
    created_at             timestamptz NOT NULL DEFAULT now(),
    disabled_at            timestamptz
);

-- A session cookie carries the id (signed with ROAC_CONSOLE_SESSION_KEY); the row says whether
-- it still holds and what its forms' CSRF token is.
CREATE TABLE console.sessions (
    id          uuid        PRIMARY KEY,
    operator_id bigint      NOT NULL REFERENCES console.operators (id),
    csrf_token  text        NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    expires_at  timestamptz NOT NULL,
    ended_at    timestamptz
);
CREATE INDEX sessions_by_expiry ON console.sessions (expires_at);

-- Sign-in attempts in the last hours: failures per email and per client address are limited.
CREATE TABLE console.signin_attempts (
    at        timestamptz NOT NULL DEFAULT now(),
    email     text        NOT NULL,
    address   text        NOT NULL,
    succeeded boolean     NOT NULL
);
CREATE INDEX signin_attempts_by_email ON console.signin_attempts (email, at);
CREATE INDEX signin_attempts_by_address ON console.signin_attempts (address, at);

-- Every action, who did it and how it ended. A person erased through the console is named in
-- no row afterwards: their earlier rows' targets are replaced (services/console/accounts.py).
CREATE TABLE console.audit (
    id       bigserial   PRIMARY KEY,
    at       timestamptz NOT NULL DEFAULT now(),
    operator text        NOT NULL,
    action   text        NOT NULL,
    target   text        NOT NULL DEFAULT '',
    outcome  text        NOT NULL,
    detail   text        NOT NULL DEFAULT ''
);
CREATE INDEX audit_newest_first ON console.audit (at DESC, id DESC);
