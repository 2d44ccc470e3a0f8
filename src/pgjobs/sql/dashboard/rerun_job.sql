-- A fresh copy of a finished job, sent through procrastinate's own function
-- so that its triggers record the 'deferred' event and wake the workers. The
-- copy starts with no attempts and no start time.
SELECT ids[1] AS id
  FROM procrastinate_defer_jobs_v1(
           ARRAY[
               ROW(
                   %(queue_name)s::varchar,
                   %(task_name)s::varchar,
                   %(priority)s::integer,
                   %(lock)s::text,
                   %(queueing_lock)s::text,
                   %(args)s::jsonb,
                   NULL::timestamptz
               )::procrastinate_job_to_defer_v1
           ]
       ) AS ids
