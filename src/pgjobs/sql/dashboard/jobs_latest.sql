-- Candidates of a job page without queue, state or search filters: the
-- primary key read backwards from the cursor.
candidates AS (
    SELECT id, queue_name, task_name, status, priority, queueing_lock,
           attempts, scheduled_at, NULL::bigint AS total_matches
      FROM procrastinate_jobs
     WHERE id < %(before)s
       AND (%(task)s::varchar IS NULL OR task_name = %(task)s::varchar)
     ORDER BY id DESC
     LIMIT %(limit)s OFFSET %(offset)s
)
