-- Candidates of a job page filtered by queue and/or state. Each (queue,
-- status) pair is one range of pgjobs_jobs_live_idx or
-- pgjobs_jobs_finished_idx. Each range is read backwards from the cursor for
-- at most limit + offset rows, and the ranges are merged by id. Without a
-- queue filter, the queue names come from a loose index scan of
-- procrastinate_jobs_queue_name_idx_v1, one probe per queue.
queue_names AS (
    (SELECT queue_name FROM procrastinate_jobs ORDER BY queue_name LIMIT 1)
    UNION ALL
    SELECT (SELECT next.queue_name
              FROM procrastinate_jobs AS next
             WHERE next.queue_name > previous.queue_name
             ORDER BY next.queue_name
             LIMIT 1)
      FROM queue_names AS previous
     WHERE previous.queue_name IS NOT NULL
),
-- MATERIALIZED keeps a given queue name from being folded into the scan
-- below as a constant; see the ORDER BY there.
queues AS MATERIALIZED (
    SELECT %(queue)s::varchar AS queue_name
     WHERE %(queue)s::varchar IS NOT NULL
    UNION ALL
    SELECT queue_name
      FROM queue_names
     WHERE %(queue)s::varchar IS NULL AND queue_name IS NOT NULL
),
-- Only ids are read from the indexes here, so the scans are index-only
-- unless a waiting state or a task is filtered. The rows are fetched below.
-- The extra status test in each branch lets the planner use the partial
-- index that contains that status.
picked AS (
    SELECT pick.id
      FROM queues
     CROSS JOIN unnest(%(statuses)s::procrastinate_job_status[]) AS wanted(status)
     CROSS JOIN LATERAL (
        (SELECT id
           FROM procrastinate_jobs
          WHERE queue_name = queues.queue_name
            AND status = wanted.status
            AND status IN ('todo', 'doing')
            AND id < %(before)s
            AND (
                %(state)s::text IS NULL
                OR pgjobs_job_state(status, scheduled_at, attempts) = %(state)s::text
            )
            AND (%(task)s::varchar IS NULL OR task_name = %(task)s::varchar)
          -- Ordering by the whole index key is the same as by id here, since
          -- queue and status are fixed. It keeps the planner from reading the
          -- primary key backwards with a filter, which for a rare status
          -- would read the whole table.
          ORDER BY queue_name DESC, status DESC, id DESC
          LIMIT %(limit)s + %(offset)s)
        UNION ALL
        (SELECT id
           FROM procrastinate_jobs
          WHERE queue_name = queues.queue_name
            AND status = wanted.status
            AND status NOT IN ('todo', 'doing')
            AND id < %(before)s
            AND (%(task)s::varchar IS NULL OR task_name = %(task)s::varchar)
          ORDER BY queue_name DESC, status DESC, id DESC
          LIMIT %(limit)s + %(offset)s)
     ) AS pick
     ORDER BY pick.id DESC
     LIMIT %(limit)s OFFSET %(offset)s
),
candidates AS (
    SELECT job.id, job.queue_name, job.task_name, job.status, job.priority,
           job.queueing_lock, job.attempts, job.scheduled_at,
           NULL::bigint AS total_matches
      FROM picked
      JOIN procrastinate_jobs AS job ON job.id = picked.id
)
