-- The job that rerun_job or cancel_job acts on, locked until the action
-- commits so that no worker claims or finishes it in between.
SELECT id,
       queue_name,
       task_name,
       status::text AS status,
       pgjobs_job_state(status, scheduled_at, attempts) AS state,
       priority,
       lock,
       queueing_lock,
       args
  FROM procrastinate_jobs
 WHERE id = %(job_id)s
   FOR UPDATE
