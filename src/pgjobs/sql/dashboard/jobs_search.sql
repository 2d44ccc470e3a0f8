-- Candidates of a job page that match a search: the job id, the singleton
-- key, or a value anywhere in the payload. Each kind of match is read from
-- its own index: the primary key, pgjobs_jobs_singleton_key_idx, and the
-- GIN index pgjobs_jobs_payload_idx for finished jobs. Waiting and running
-- jobs are not in the GIN index, so their payloads are read one by one.
-- Written as one OR, the planner cannot estimate a jsonpath match and may
-- read the whole table backwards instead. The matches carry their columns,
-- so no join back to the table follows.
matches AS MATERIALIZED (
    SELECT id, queue_name, task_name, status, priority, queueing_lock,
           attempts, scheduled_at
      FROM procrastinate_jobs
     WHERE id = %(search_id)s::bigint
    UNION
    SELECT id, queue_name, task_name, status, priority, queueing_lock,
           attempts, scheduled_at
      FROM procrastinate_jobs
     WHERE queueing_lock = %(search)s::text
    UNION
    SELECT id, queue_name, task_name, status, priority, queueing_lock,
           attempts, scheduled_at
      FROM procrastinate_jobs
     WHERE status NOT IN ('todo', 'doing')
       AND (args -> 'payload') @? %(search_path)s::jsonpath
    UNION
    SELECT id, queue_name, task_name, status, priority, queueing_lock,
           attempts, scheduled_at
      FROM procrastinate_jobs
     WHERE status IN ('todo', 'doing')
       AND (args -> 'payload') @? %(search_path)s::jsonpath
),
-- total_matches counts every match that passes the filters, computed
-- before LIMIT, so the page needs no second scan to count them.
candidates AS (
    SELECT *, count(*) OVER () AS total_matches
      FROM matches
     WHERE id < %(before)s
       AND status = ANY (%(statuses)s::procrastinate_job_status[])
       AND (%(queue)s::varchar IS NULL OR queue_name = %(queue)s::varchar)
       AND (
           %(state)s::text IS NULL
           OR pgjobs_job_state(status, scheduled_at, attempts) = %(state)s::text
       )
       AND (%(task)s::varchar IS NULL OR task_name = %(task)s::varchar)
     ORDER BY id DESC
     LIMIT %(limit)s OFFSET %(offset)s
)
