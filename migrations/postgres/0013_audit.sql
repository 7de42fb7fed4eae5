-- The audit log of the control plane (dc-api): one row per state-changing
-- request (every non-GET under /api/v1, the token endpoint included, failed
-- logins too): who (subject and role; none when it was not authenticated),
-- what (method, route template, target id, answered status), when, from
-- where (the client address) and the request id. Never a secret: no body,
-- no token, no password.
CREATE TABLE dc_audit (
    id BIGSERIAL PRIMARY KEY,
    at TIMESTAMPTZ NOT NULL,
    subject TEXT,
    role TEXT,
    method TEXT NOT NULL,
    route TEXT NOT NULL,
    target TEXT,
    status INTEGER NOT NULL,
    client_addr TEXT,
    request_id TEXT
);
CREATE INDEX dc_audit_at ON dc_audit (at);
CREATE INDEX dc_audit_subject ON dc_audit (subject, id);
