-- The reference schema of Lambda Microservice on PostgreSQL.
--
--   meta.users, meta.functions, meta.sessions, meta.artifacts  (what the platform knows)
--   public.request_logs, public.error_logs                     (what happened)
--
-- sqlx runs each migration in a transaction under an advisory lock, so
-- controllers starting together on an empty database apply it once.
-- Timestamps are timestamptz (microseconds, UTC). JSON is jsonb. Titles
-- sort by code point (COLLATE "C"), the order the SQLite backend uses.

CREATE SCHEMA IF NOT EXISTS meta;

CREATE TABLE meta.users (
    user_id    TEXT        NOT NULL PRIMARY KEY,
    scopes     TEXT        NOT NULL DEFAULT '',   -- space-separated, as in JWT `scope`
    created_at TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE TABLE meta.functions (
    language_title  TEXT COLLATE "C" NOT NULL PRIMARY KEY,
    language        TEXT        NOT NULL,
    title           TEXT        NOT NULL,
    description     TEXT        NOT NULL DEFAULT '',
    kind            TEXT        NOT NULL CHECK (kind IN ('predefined', 'dynamic')),
    user_id         TEXT,
    script_content  TEXT        NOT NULL,
    schema          JSONB,
    examples        JSONB       NOT NULL DEFAULT '[]',
    compile_options JSONB,
    created_at      TIMESTAMPTZ NOT NULL,
    updated_at      TIMESTAMPTZ NOT NULL
);

-- Listing is ordered by language_title within each filter.
CREATE INDEX functions_language_idx ON meta.functions (language, language_title);
CREATE INDEX functions_kind_idx ON meta.functions (kind, language_title);
CREATE INDEX functions_user_id_idx ON meta.functions (user_id, language_title);

CREATE TABLE meta.sessions (
    request_id              TEXT        NOT NULL PRIMARY KEY,
    language_title          TEXT        NOT NULL,
    language                TEXT        NOT NULL,
    user_id                 TEXT,
    script_content          TEXT        NOT NULL,
    script_hash             TEXT        NOT NULL CHECK (script_hash ~ '^[0-9a-f]{64}$'),
    context                 JSONB       NOT NULL,
    compile_options         JSONB,
    function_language_title TEXT,
    timeout_ms              BIGINT      NOT NULL CHECK (timeout_ms >= 0),
    retain                  BOOLEAN     NOT NULL,
    status                  TEXT        NOT NULL CHECK (status IN ('active', 'expired', 'closed')),
    created_at              TIMESTAMPTZ NOT NULL,
    expires_at              TIMESTAMPTZ NOT NULL,
    execution_count         BIGINT      NOT NULL DEFAULT 0,
    last_executed_at        TIMESTAMPTZ,
    -- The reference columns for compiled languages. The platform keeps the
    -- compiled module in meta.artifacts, by script hash, not here: sessions
    -- of the same script (other users, other controllers, after a restart)
    -- then share one compile instead of copying megabytes of wasm into every
    -- session row. These stay NULL; a view or report may fill them from
    -- meta.artifacts by script_hash.
    compiled_artifact       BYTEA,
    compile_status          TEXT CHECK (compile_status IN ('succeeded', 'failed')),
    compile_error           JSONB
);

-- expire_sessions and purge_sessions scan by status and expiry;
-- count_active_sessions too.
CREATE INDEX sessions_status_expires_at_idx ON meta.sessions (status, expires_at);
CREATE INDEX sessions_script_hash_idx ON meta.sessions (script_hash);
CREATE INDEX sessions_user_id_idx ON meta.sessions (user_id) WHERE user_id IS NOT NULL;

-- Compiled artifacts (rust → wasm), content-addressed by script hash so that
-- every session, controller and restart reuses one compile.
CREATE TABLE meta.artifacts (
    script_hash       TEXT        NOT NULL PRIMARY KEY CHECK (script_hash ~ '^[0-9a-f]{64}$'),
    language          TEXT        NOT NULL,
    compile_status    TEXT        NOT NULL CHECK (compile_status IN ('succeeded', 'failed')),
    compiled_artifact BYTEA       NOT NULL,
    compile_error     JSONB,
    created_at        TIMESTAMPTZ NOT NULL
);

CREATE TABLE public.request_logs (
    id               BIGINT      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    request_id       TEXT        NOT NULL,
    language_title   TEXT        NOT NULL,
    user_id          TEXT,
    status_code      INTEGER     NOT NULL,
    duration_ms      BIGINT      NOT NULL,
    cached           BOOLEAN     NOT NULL,
    request_payload  JSONB       NOT NULL,
    response_payload JSONB       NOT NULL,
    runtime_metrics  JSONB       NOT NULL,
    error_code       TEXT,
    created_at       TIMESTAMPTZ NOT NULL
);

-- A session's logs in write order; retention and reports by time.
CREATE INDEX request_logs_request_id_idx ON public.request_logs (request_id, id);
CREATE INDEX request_logs_created_at_idx ON public.request_logs (created_at);

CREATE TABLE public.error_logs (
    id             BIGINT      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    request_id     TEXT        NOT NULL,
    language_title TEXT        NOT NULL,
    error_code     TEXT        NOT NULL,
    message        TEXT        NOT NULL,
    details        JSONB       NOT NULL,
    created_at     TIMESTAMPTZ NOT NULL
);

CREATE INDEX error_logs_request_id_idx ON public.error_logs (request_id, id);
CREATE INDEX error_logs_created_at_idx ON public.error_logs (created_at);
