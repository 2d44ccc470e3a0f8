-- Indexes and counters that keep the dashboard fast at millions of jobs.
-- Runs with search_path set to the configured schema, inside the migration
-- transaction.

-- Workers must not change jobs while the counters are seeded below, or a job
-- that finishes in between would be counted twice or not at all. This lock
-- blocks writes to the jobs table, not reads, until the migration commits.
LOCK TABLE procrastinate_jobs IN SHARE ROW EXCLUSIVE MODE;

-- Job lists, newest first, per queue and status, in two partial indexes:
-- waiting and running jobs in one, finished jobs in the other. A send or a
-- claim then writes to the small first index only, and a job's finish to
-- the second. The first also serves the counts of waiting and running jobs
-- per queue without reading the table (finished jobs are counted in
-- pgjobs_job_counts instead). A filter on the status alone reads these
-- indexes once per queue and merges the results.
CREATE INDEX pgjobs_jobs_live_idx
    ON procrastinate_jobs (queue_name, status, id)
    INCLUDE (scheduled_at, attempts)
    WHERE status IN ('todo', 'doing');

CREATE INDEX pgjobs_jobs_finished_idx
    ON procrastinate_jobs (queue_name, status, id)
    WHERE status NOT IN ('todo', 'doing');

-- Search by singleton key in every state (procrastinate's own index covers
-- only waiting jobs).
CREATE INDEX pgjobs_jobs_singleton_key_idx
    ON procrastinate_jobs (queueing_lock)
    WHERE queueing_lock IS NOT NULL;

-- Search for a value anywhere inside the payload of a finished job. The
-- default jsonb_ops class indexes keys and values on their own, so a
-- jsonpath such as '$.** ? (@ == "x")' can use it, which jsonb_path_ops
-- cannot. Waiting and running jobs stay out of it: each claim would write
-- every payload key again; search reads them through pgjobs_jobs_live_idx.
CREATE INDEX pgjobs_jobs_payload_idx
    ON procrastinate_jobs USING gin ((args -> 'payload'))
    WHERE status NOT IN ('todo', 'doing');

-- The state a user sees, derived from procrastinate's status. A job waiting
-- after a failed attempt is 'retrying' even before its retry time comes.
-- A plain SQL function without SET clauses, so the planner inlines it.
CREATE FUNCTION pgjobs_job_state(
    status procrastinate_job_status,
    scheduled_at timestamptz,
    attempts integer
) RETURNS text
    LANGUAGE sql
    STABLE
AS $$
    SELECT CASE
        WHEN status = 'todo' AND attempts > 0 THEN 'retrying'
        WHEN status = 'todo' AND scheduled_at > now() THEN 'scheduled'
        WHEN status = 'todo' THEN 'queued'
        WHEN status IN ('doing', 'aborting') THEN 'running'
        ELSE status::text
    END
$$;

-- Counts of finished jobs (every status but 'todo' and 'doing') per queue
-- and status. Each connection adds to its own shard row, chosen from its
-- backend pid, so workers finishing jobs at the same time rarely wait for
-- each other's row lock. The count is the sum over the shards.
CREATE TABLE pgjobs_job_counts (
    queue_name varchar(128) NOT NULL,
    status procrastinate_job_status NOT NULL,
    shard smallint NOT NULL,
    jobs bigint NOT NULL,
    PRIMARY KEY (queue_name, status, shard)
);

-- PL/pgSQL keeps the plans of these statements for the session, while an
-- SQL-language function is planned again in each transaction (before
-- PostgreSQL 18). Once the shard row exists, a plain UPDATE is cheaper than
-- an upsert; the upsert covers the first job of a row and a concurrent first.
CREATE FUNCTION pgjobs_add_job_count(
    _queue_name varchar,
    _status procrastinate_job_status,
    _delta bigint
) RETURNS void
    LANGUAGE plpgsql
AS $$
DECLARE
    _shard smallint := (pg_backend_pid() % 16)::smallint;
BEGIN
    UPDATE pgjobs_job_counts
       SET jobs = jobs + _delta
     WHERE queue_name = _queue_name AND status = _status AND shard = _shard;
    IF NOT FOUND THEN
        INSERT INTO pgjobs_job_counts AS c (queue_name, status, shard, jobs)
        VALUES (_queue_name, _status, _shard, _delta)
        ON CONFLICT (queue_name, status, shard)
        DO UPDATE SET jobs = c.jobs + _delta;
    END IF;
END;
$$;

CREATE FUNCTION pgjobs_count_finished_job() RETURNS trigger
    LANGUAGE plpgsql
AS $$
BEGIN
    IF TG_OP = 'UPDATE' AND OLD.status NOT IN ('todo', 'doing') THEN
        PERFORM pgjobs_add_job_count(OLD.queue_name, OLD.status, -1);
    END IF;
    IF NEW.status NOT IN ('todo', 'doing') THEN
        PERFORM pgjobs_add_job_count(NEW.queue_name, NEW.status, 1);
    END IF;
    RETURN NULL;
END;
$$;

-- Deletes come in bulk (prune, procrastinate's remove_old_jobs), so they are
-- counted once per statement from the transition table, not once per row.
CREATE FUNCTION pgjobs_count_deleted_jobs() RETURNS trigger
    LANGUAGE plpgsql
AS $$
BEGIN
    PERFORM pgjobs_add_job_count(queue_name, status, -count(*))
       FROM deleted_jobs
      WHERE status NOT IN ('todo', 'doing')
      GROUP BY queue_name, status;
    RETURN NULL;
END;
$$;

CREATE FUNCTION pgjobs_reset_job_counts() RETURNS trigger
    LANGUAGE plpgsql
AS $$
BEGIN
    DELETE FROM pgjobs_job_counts;
    RETURN NULL;
END;
$$;

-- Rebuild the counters from the jobs table, for repair and bulk loads made
-- with triggers disabled. Writers must be blocked while it runs.
CREATE FUNCTION pgjobs_rebuild_job_counts() RETURNS void
    LANGUAGE sql
AS $$
    DELETE FROM pgjobs_job_counts;
    INSERT INTO pgjobs_job_counts (queue_name, status, shard, jobs)
    SELECT queue_name, status, 0, count(*)
      FROM procrastinate_jobs
     WHERE status NOT IN ('todo', 'doing')
     GROUP BY queue_name, status;
$$;

-- The WHEN clauses keep sends and claims (todo, then doing) free of any
-- trigger call: only a change into or out of a finished status counts.
CREATE TRIGGER pgjobs_count_inserted_job
    AFTER INSERT ON procrastinate_jobs
    FOR EACH ROW
    WHEN (NEW.status NOT IN ('todo', 'doing'))
    EXECUTE FUNCTION pgjobs_count_finished_job();

CREATE TRIGGER pgjobs_count_updated_job
    AFTER UPDATE OF status, queue_name ON procrastinate_jobs
    FOR EACH ROW
    WHEN (
        (OLD.status NOT IN ('todo', 'doing') OR NEW.status NOT IN ('todo', 'doing'))
        AND (OLD.status <> NEW.status OR OLD.queue_name <> NEW.queue_name)
    )
    EXECUTE FUNCTION pgjobs_count_finished_job();

CREATE TRIGGER pgjobs_count_deleted_jobs
    AFTER DELETE ON procrastinate_jobs
    REFERENCING OLD TABLE AS deleted_jobs
    FOR EACH STATEMENT
    EXECUTE FUNCTION pgjobs_count_deleted_jobs();

CREATE TRIGGER pgjobs_reset_job_counts
    AFTER TRUNCATE ON procrastinate_jobs
    FOR EACH STATEMENT
    EXECUTE FUNCTION pgjobs_reset_job_counts();

SELECT pgjobs_rebuild_job_counts();

-- The trigger functions run on whatever connection changes a job, including
-- a caller's own connection with its own search_path, so they name their
-- schema explicitly. pgjobs_job_state stays unpinned so that it is inlined;
-- it reads no table.
DO $pin$
DECLARE
    fn regprocedure;
BEGIN
    FOR fn IN
        SELECT p.oid::regprocedure
          FROM pg_proc p
         WHERE p.pronamespace = current_schema()::regnamespace
           AND p.proname IN (
               'pgjobs_add_job_count',
               'pgjobs_count_finished_job',
               'pgjobs_count_deleted_jobs',
               'pgjobs_reset_job_counts',
               'pgjobs_rebuild_job_counts'
           )
    LOOP
        EXECUTE format(
            'ALTER FUNCTION %s SET search_path = pg_catalog, %I',
            fn, current_schema()
        );
    END LOOP;
END
$pin$;
