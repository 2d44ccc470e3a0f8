-- Candidates of a job page that match a search: the job id, the singleton
-- key, or a value anywhere in the payload. The three tests are an OR of
-- three indexes (primary key, pgjobs_jobs_singleton_key_idx and the GIN
-- index pgjobs_jobs_payload_idx); the other filters apply to the matches.
candidates AS (
    SELECT id, queue_name, task_name, status, priority, queueing_lock,
           attempts, scheduled_at
      FROM procrastinate_jobs
     WHERE (
           id = %(search_id)s::bigint
           OR queueing_lock = %(search)s::text
           OR (args -> 'payload') @? %(search_path)s::jsonpath
       )
       AND id < %(before)s
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
