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

-- procrastinate keeps one job per schedule tick with a unique row per
-- (task, schedule, tick) in procrastinate_periodic_defers, and deletes the
-- rows of older ticks as it goes. A worker whose clock runs behind, or that
-- lags a tick behind its peers, then finds no row for an older tick and
-- defers it a second time. This trigger skips a tick that is not newer than
-- one already deferred. The lock per schedule keeps two workers from both
-- passing the check before either commits.
CREATE FUNCTION pgjobs_skip_stale_tick_v1()
    RETURNS trigger
    LANGUAGE plpgsql
AS $$
BEGIN
    PERFORM pg_advisory_xact_lock(
        hashtext('pgjobs.schedule_tick'),
        hashtext(current_schema() || '/' || NEW.task_name || '/' || NEW.periodic_id)
    );
    IF EXISTS (
        SELECT 1
          FROM procrastinate_periodic_defers tick
         WHERE tick.task_name = NEW.task_name
           AND tick.periodic_id = NEW.periodic_id
           AND tick.defer_timestamp >= NEW.defer_timestamp
    ) THEN
        RETURN NULL;
    END IF;
    RETURN NEW;
END;
$$;

CREATE TRIGGER pgjobs_skip_stale_tick_v1
    BEFORE INSERT ON procrastinate_periodic_defers
    FOR EACH ROW EXECUTE FUNCTION pgjobs_skip_stale_tick_v1();
