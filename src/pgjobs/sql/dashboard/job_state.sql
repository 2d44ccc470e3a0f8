SELECT pgjobs_job_state(status, scheduled_at, attempts) AS state
  FROM procrastinate_jobs
 WHERE id = %(job_id)s
