-- Delete one id range of finished jobs whose last event is older than the
-- cutoff. Their events and attempt records go with them (ON DELETE
-- CASCADE). The caller walks the ranges so that each transaction stays short.
WITH deleted AS (
    DELETE FROM procrastinate_jobs AS job
     WHERE job.id >= %(first_id)s
       AND job.id < %(end_id)s
       AND job.status = ANY (%(statuses)s::procrastinate_job_status[])
       AND NOT EXISTS (
           SELECT 1
             FROM procrastinate_events AS event
            WHERE event.job_id = job.id
              AND event.at >= %(cutoff)s
       )
    RETURNING 1
)
SELECT count(*) AS deleted FROM deleted
