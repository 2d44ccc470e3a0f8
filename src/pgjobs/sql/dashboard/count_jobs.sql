-- Exact number of jobs in a queue and/or state: waiting and running jobs
-- from pgjobs_jobs_live_idx, finished ones from pgjobs_job_counts.
SELECT (
    SELECT count(*)
      FROM procrastinate_jobs
     WHERE status IN ('todo', 'doing')
       AND status = ANY (%(statuses)s::procrastinate_job_status[])
       AND (%(queue)s::varchar IS NULL OR queue_name = %(queue)s::varchar)
       AND (
           %(state)s::text IS NULL
           OR pgjobs_job_state(status, scheduled_at, attempts) = %(state)s::text
       )
) + (
    SELECT coalesce(sum(jobs), 0)
      FROM pgjobs_job_counts
     WHERE status = ANY (%(statuses)s::procrastinate_job_status[])
       AND (%(queue)s::varchar IS NULL OR queue_name = %(queue)s::varchar)
) AS total
