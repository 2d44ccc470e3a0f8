-- pgjobs' own tables, created in the configured schema beside procrastinate's.
-- Runs with search_path set to that schema, inside the migration transaction.

CREATE TABLE pgjobs_meta (
    key text PRIMARY KEY,
    value text NOT NULL
);

-- One row per attempt that has something to record: a failure (error type,
-- message, traceback), a non-null result, or a recovery by another worker.
-- A successful attempt that returns None writes nothing here.
CREATE TABLE pgjobs_attempts (
    job_id bigint NOT NULL REFERENCES procrastinate_jobs (id) ON DELETE CASCADE,
    attempt integer NOT NULL,
    outcome text NOT NULL,
    worker_id bigint,
    worker_name text,
    started_at timestamptz,
    finished_at timestamptz NOT NULL DEFAULT now(),
    result jsonb,
    error_type text,
    error_message text,
    traceback text,
    on_failed_at timestamptz,
    PRIMARY KEY (job_id, attempt)
);

-- Settings of each configured queue, written by init_jobs for the dashboard.
CREATE TABLE pgjobs_queues (
    name varchar(128) PRIMARY KEY,
    settings jsonb NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now()
);

-- procrastinate's own queueing-lock index covers only 'todo' jobs. A
-- singleton key must also block while its job runs, so this index covers
-- 'doing' too. The database enforces it, so concurrent sends cannot race.
CREATE UNIQUE INDEX pgjobs_singleton_active_idx
    ON procrastinate_jobs (queueing_lock)
    WHERE status IN ('todo', 'doing') AND queueing_lock IS NOT NULL;
