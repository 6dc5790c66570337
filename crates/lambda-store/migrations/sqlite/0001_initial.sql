-- Initial schema of the embedded SQLite store. Mirrors the reference
-- PostgreSQL schema (`meta.functions`, `meta.sessions`, `meta.users`,
-- `public.request_logs`, `public.error_logs`) without the schema prefixes.
--
-- Timestamps are INTEGER microseconds since the Unix epoch (UTC), the
-- precision of PostgreSQL's timestamptz: they compare and sort as numbers.
-- JSON values are TEXT holding serde_json output.

CREATE TABLE users (
    user_id    TEXT    NOT NULL PRIMARY KEY,
    scopes     TEXT    NOT NULL DEFAULT '',   -- space-separated, as in JWT `scope`
    created_at INTEGER NOT NULL
);

CREATE TABLE functions (
    language_title  TEXT    NOT NULL PRIMARY KEY,
    language        TEXT    NOT NULL,
    title           TEXT    NOT NULL,
    description     TEXT    NOT NULL DEFAULT '',
    kind            TEXT    NOT NULL CHECK (kind IN ('predefined', 'dynamic')),
    user_id         TEXT,
    script_content  TEXT    NOT NULL,
    schema          TEXT,                     -- JSON
    examples        TEXT    NOT NULL DEFAULT '[]', -- JSON
    compile_options TEXT,                     -- JSON
    created_at      INTEGER NOT NULL,
    updated_at      INTEGER NOT NULL
);

-- Listing is ordered by language_title within each filter.
CREATE INDEX functions_language_idx ON functions (language, language_title);
CREATE INDEX functions_kind_idx ON functions (kind, language_title);
CREATE INDEX functions_user_id_idx ON functions (user_id, language_title);

CREATE TABLE sessions (
    request_id              TEXT    NOT NULL PRIMARY KEY,
    language_title          TEXT    NOT NULL,
    language                TEXT    NOT NULL,
    user_id                 TEXT,
    script_content          TEXT    NOT NULL,
    script_hash             TEXT    NOT NULL, -- 64 hex digits
    context                 TEXT    NOT NULL, -- JSON
    compile_options         TEXT,             -- JSON
    function_language_title TEXT,
    timeout_ms              INTEGER NOT NULL,
    retain                  INTEGER NOT NULL CHECK (retain IN (0, 1)),
    status                  TEXT    NOT NULL CHECK (status IN ('active', 'expired', 'closed')),
    created_at              INTEGER NOT NULL,
    expires_at              INTEGER NOT NULL,
    execution_count         INTEGER NOT NULL DEFAULT 0,
    last_executed_at        INTEGER,
    -- For compiled languages (rust → wasm); unused until the compiler lands.
    compiled_artifact       BLOB,
    compile_status          TEXT,
    compile_error           TEXT
);

-- expire_sessions, purge_sessions and count_active_sessions.
CREATE INDEX sessions_status_expires_at_idx ON sessions (status, expires_at);
CREATE INDEX sessions_script_hash_idx ON sessions (script_hash);

CREATE TABLE request_logs (
    id               INTEGER NOT NULL PRIMARY KEY AUTOINCREMENT,
    request_id       TEXT    NOT NULL,
    language_title   TEXT    NOT NULL,
    user_id          TEXT,
    status_code      INTEGER NOT NULL,
    duration_ms      INTEGER NOT NULL,
    cached           INTEGER NOT NULL CHECK (cached IN (0, 1)),
    request_payload  TEXT    NOT NULL,        -- JSON
    response_payload TEXT    NOT NULL,        -- JSON
    runtime_metrics  TEXT    NOT NULL,        -- JSON
    error_code       TEXT,
    created_at       INTEGER NOT NULL
);

CREATE INDEX request_logs_request_id_idx ON request_logs (request_id, id);
CREATE INDEX request_logs_created_at_idx ON request_logs (created_at);

CREATE TABLE error_logs (
    id             INTEGER NOT NULL PRIMARY KEY AUTOINCREMENT,
    request_id     TEXT    NOT NULL,
    language_title TEXT    NOT NULL,
    error_code     TEXT    NOT NULL,
    message        TEXT    NOT NULL,
    details        TEXT    NOT NULL,          -- JSON
    created_at     INTEGER NOT NULL
);

CREATE INDEX error_logs_request_id_idx ON error_logs (request_id, id);
CREATE INDEX error_logs_created_at_idx ON error_logs (created_at);
