-- The rows of a job page with their times from procrastinate's events:
-- sent (deferred), latest start, and the end once the job is finished.
SELECT candidate.id,
       candidate.queue_name,
       candidate.task_name,
       pgjobs_job_state(
           candidate.status, candidate.scheduled_at, candidate.attempts
       ) AS state,
       candidate.priority,
       candidate.queueing_lock,
       candidate.attempts,
       candidate.scheduled_at,
       times.created_at,
       times.started_at,
       CASE
           WHEN candidate.status NOT IN ('todo', 'doing') THEN times.finished_at
       END AS finished_at,
       candidate.total_matches
  FROM candidates AS candidate
  LEFT JOIN LATERAL (
      SELECT min(event.at) FILTER (WHERE event.type = 'deferred') AS created_at,
             max(event.at) FILTER (WHERE event.type = 'started') AS started_at,
             max(event.at) FILTER (
                 WHERE event.type IN ('succeeded', 'failed', 'cancelled', 'aborted')
             ) AS finished_at
        FROM procrastinate_events AS event
       WHERE event.job_id = candidate.id
  ) AS times ON true
 ORDER BY candidate.id DESC
