-- One job with its timeline, its attempt records and its queue's recorded
-- settings, in one round trip. Events are in time order: a 'scheduled'
-- event carries the start time it sets, so it sorts after earlier events
-- even when it was written first.
SELECT job.id,
       job.queue_name,
       job.task_name,
       job.status::text AS status,
       pgjobs_job_state(job.status, job.scheduled_at, job.attempts) AS state,
       job.args,
       job.priority,
       job.queueing_lock,
       job.lock,
       job.attempts,
       job.scheduled_at,
       job.abort_requested,
       queues.settings,
       (SELECT coalesce(
                   jsonb_agg(
                       jsonb_build_object('type', event.type, 'at', event.at)
                       ORDER BY event.at, event.id
                   ),
                   '[]'
               )
          FROM procrastinate_events AS event
         WHERE event.job_id = job.id) AS events,
       (SELECT coalesce(jsonb_agg(to_jsonb(record) ORDER BY record.attempt), '[]')
          FROM (
              SELECT attempt, outcome, worker_id, worker_name, started_at,
                     finished_at, error_type, error_message, traceback, result
                FROM pgjobs_attempts
               WHERE job_id = job.id
          ) AS record) AS attempt_rows
  FROM procrastinate_jobs AS job
  LEFT JOIN pgjobs_queues AS queues ON queues.name = job.queue_name
 WHERE job.id = %(job_id)s
