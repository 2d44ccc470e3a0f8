-- Job counts per queue. Waiting and running jobs are counted from the
-- partial index pgjobs_jobs_live_idx; finished ones from the counters that
-- the triggers of migration 0002 keep in pgjobs_job_counts.
WITH live AS (
    SELECT queue_name,
           count(*) FILTER (
               WHERE status = 'todo' AND attempts = 0
                 AND (scheduled_at IS NULL OR scheduled_at <= now())
           ) AS queued,
           count(*) FILTER (
               WHERE status = 'todo' AND attempts = 0 AND scheduled_at > now()
           ) AS scheduled,
           count(*) FILTER (WHERE status = 'todo' AND attempts > 0) AS retrying,
           count(*) FILTER (WHERE status = 'doing') AS running,
           min(scheduled_at) FILTER (
               WHERE status = 'todo' AND scheduled_at <= now()
           ) AS oldest_ready_scheduled_at,
           -- Ids grow with time, so the smallest id is the job sent first.
           min(id) FILTER (
               WHERE status = 'todo' AND scheduled_at IS NULL
           ) AS oldest_ready_id
      FROM procrastinate_jobs
     WHERE status IN ('todo', 'doing')
     GROUP BY queue_name
),
finished AS (
    SELECT queue_name,
           sum(jobs) FILTER (WHERE status = 'succeeded') AS succeeded,
           sum(jobs) FILTER (WHERE status = 'failed') AS failed,
           sum(jobs) FILTER (WHERE status = 'cancelled') AS cancelled,
           sum(jobs) FILTER (WHERE status = 'aborted') AS aborted,
           -- 'aborting' is a status procrastinate no longer writes since 3.0.
           sum(jobs) FILTER (WHERE status = 'aborting') AS aborting
      FROM pgjobs_job_counts
     GROUP BY queue_name
    HAVING sum(jobs) <> 0
),
counts AS (
    SELECT coalesce(live.queue_name, finished.queue_name, queues.name) AS queue,
           coalesce(live.queued, 0) AS queued,
           coalesce(live.scheduled, 0) AS scheduled,
           coalesce(live.running, 0) + coalesce(finished.aborting, 0) AS running,
           coalesce(live.retrying, 0) AS retrying,
           coalesce(finished.succeeded, 0) AS succeeded,
           coalesce(finished.failed, 0) AS failed,
           coalesce(finished.cancelled, 0) AS cancelled,
           coalesce(finished.aborted, 0) AS aborted,
           extract(epoch FROM now() - least(
               live.oldest_ready_scheduled_at,
               (SELECT min(event.at)
                  FROM procrastinate_events AS event
                 WHERE event.job_id = live.oldest_ready_id
                   AND event.type = 'deferred')
           ))::float8 AS oldest_ready_age_seconds,
           queues.settings
      FROM live
      FULL JOIN finished ON finished.queue_name = live.queue_name
      FULL JOIN pgjobs_queues AS queues
             ON queues.name = coalesce(live.queue_name, finished.queue_name)
)
-- The clock row makes the result one row long even with no queue at all.
SELECT clock.generated_at, counts.*
  FROM (SELECT now() AS generated_at) AS clock
  LEFT JOIN counts ON true
