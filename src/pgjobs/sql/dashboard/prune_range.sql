-- The id range that prune walks, and its cutoff time from the server clock.
SELECT min(id) AS first_id,
       max(id) AS last_id,
       now() - make_interval(secs => %(age)s) AS cutoff
  FROM procrastinate_jobs
