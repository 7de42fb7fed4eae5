-- The control plane's accounts and tokens (dc-auth): people (users, password
-- grant), services (clients, client-credentials grant), the refresh tokens
-- issued to people, and the public halves of the JWT signing keys. Passwords
-- and client secrets are stored as argon2id PHC strings, refresh tokens as the
-- SHA-256 of the token; no plaintext secret or token is stored. The private
-- signing keys live in the encrypted secrets store, never here.
CREATE TABLE dc_auth_users (
    name TEXT PRIMARY KEY,
    role TEXT NOT NULL,
    password_hash TEXT NOT NULL,
    disabled INTEGER NOT NULL DEFAULT 0,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL
);

CREATE TABLE dc_auth_clients (
    client_id TEXT PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    role TEXT NOT NULL,
    secret_hash TEXT NOT NULL,
    disabled INTEGER NOT NULL DEFAULT 0,
    created_at TEXT NOT NULL
);

-- Every refresh token ever issued, until it expires: a token is used once
-- (used_at), its successor shares its family_id, and presenting a used token
-- again revokes the whole family (revoked_at).
CREATE TABLE dc_auth_refresh_tokens (
    id TEXT PRIMARY KEY,
    family_id TEXT NOT NULL,
    subject TEXT NOT NULL,
    subject_kind TEXT NOT NULL,
    token_hash TEXT NOT NULL UNIQUE,
    issued_at TEXT NOT NULL,
    expires_at TEXT NOT NULL,
    used_at TEXT,
    revoked_at TEXT
);
CREATE INDEX dc_auth_refresh_tokens_family ON dc_auth_refresh_tokens (family_id);
CREATE INDEX dc_auth_refresh_tokens_subject ON dc_auth_refresh_tokens (subject_kind, subject);

-- Public keys that verify access tokens, by key id (the JWT `kid`). The newest
-- key without retired_at signs; a retired key verifies until its grace period
-- (auth.key_grace_secs) has passed.
CREATE TABLE dc_auth_keys (
    kid TEXT PRIMARY KEY,
    algorithm TEXT NOT NULL,
    public_key TEXT NOT NULL,
    created_at TEXT NOT NULL,
    retired_at TEXT
);
