-- procrastinate's cancel: a waiting job becomes 'cancelled'; a running one
-- gets abort_requested. Its worker learns of it by notification or by
-- polling, and then cancels the handler's task.
SELECT procrastinate_cancel_job_v1(%(job_id)s, true, false) AS id
