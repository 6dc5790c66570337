-- Compiled artifacts (rust → wasm), content-addressed by script hash so that
-- every session, controller and restart reuses one compile.
CREATE TABLE artifacts (
    script_hash       TEXT    NOT NULL PRIMARY KEY, -- 64 hex digits
    language          TEXT    NOT NULL,
    compile_status    TEXT    NOT NULL CHECK (compile_status IN ('succeeded', 'failed')),
    compiled_artifact BLOB    NOT NULL,
    compile_error     TEXT,                        -- JSON
    created_at        INTEGER NOT NULL
);
